import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import type { NodeTrace } from '../../src/node/trace.js';
import { Disposer, RawClient, tempDir } from '../helpers.js';
import { fileContents } from '../sqlite-files.js';

const disposer = new Disposer();
const Batching = suite('node: batching keeps the replication guarantees');
Batching.after.each(() => disposer.dispose());

Batching('pipelined puts share batches, yet each reply follows its own acks, in order, stores identical', async () => {
  const traces: NodeTrace[] = [];
  const cluster = disposer.add(
    await startInProcessCluster({ dataDir: await tempDir(disposer), onNode: (node) => node.trace$.subscribe((t) => traces.push(t)) }),
    (c) => c.close(),
  );
  const connections = await Promise.all(Array.from({ length: 4 }, () => RawClient.open(cluster.primary.url, disposer)));
  const perConnection = 500;
  const idOf = (c: number, i: number) => c * perConnection + i;
  // Every connection writes its own counter key over and over, and shared keys k0..k9.
  connections.forEach((client, c) => {
    for (let i = 0; i < perConnection; i += 1) {
      client.send({ id: idOf(c, i), op: 'put', key: i % 2 ? `own${c}` : `k${i % 10}`, value: { c, i } });
    }
  });
  const replies = await Promise.all(connections.map(async (client) => {
    const got: Record<string, any>[] = [];
    for (let i = 0; i < perConnection; i += 1) got.push(await client.next());
    return got;
  }));
  replies.forEach((got, c) => {
    assert.ok(got.every((reply) => reply['ok'] === true), 'every put succeeded');
    assert.equal(got.map((reply) => reply['id']), Array.from({ length: perConnection }, (_, i) => idOf(c, i)), 'each connection\'s replies come in order');
  });

  const n0 = traces.filter((t) => t.node === 'n0');
  const writes = n0.flatMap((t) => (t.event === 'applied' ? [t.writes] : []));
  assert.ok(Math.max(...writes) > 1, `some batch carried several writes (largest ${Math.max(...writes)})`);
  assert.is(writes.reduce((a, b) => a + b, 0), 4 * perConnection);

  // The primary queues writes in the order it reads them: the nth put it traces is seq n.
  const seqOf = new Map<unknown, number>();
  for (const t of n0) if (t.event === 'request' && t.op === 'put') seqOf.set(t.id, seqOf.size + 1);
  assert.is(seqOf.size, 4 * perConnection, 'every put was traced once, with its own id');

  // I1 per write: both replicas acked its seq before its reply; batches are applied in turn.
  const acked = new Map([['n1', 0], ['n2', 0]]);
  let nextSeq = 1;
  let repliesSeen = 0;
  for (const event of n0) {
    if (event.event === 'applied') {
      assert.is(event.first, nextSeq, 'batches are consecutive');
      nextSeq = event.last + 1;
    } else if (event.event === 'ack') {
      acked.set(event.from, Math.max(acked.get(event.from) ?? 0, event.seq));
    } else if (event.event === 'reply') {
      const seq = seqOf.get(event.id)!;
      assert.ok(seq < nextSeq, `the reply to put ${event.id} (seq ${seq}) follows the batch that applied it`);
      assert.ok(Math.min(...acked.values()) >= seq, `the reply to put ${event.id} (seq ${seq}) follows both acks of it (${[...acked].join(', ')})`);
      repliesSeen += 1;
    }
  }
  assert.is(repliesSeen, 4 * perConnection, 'every reply was traced and checked');

  // I2: the same order everywhere, so each connection's own key holds its last write.
  const files = await Promise.all(cluster.specs.map((spec) => fileContents(spec.dataFile!)));
  assert.equal(files[1], files[0]);
  assert.equal(files[2], files[0]);
  connections.forEach((_, c) => assert.equal(files[0]![`own${c}`], { c, i: perConnection - 1 }));
  for (const node of cluster.nodes) assert.is(node.storage.state.seq, 4 * perConnection);
});

Batching.run();
