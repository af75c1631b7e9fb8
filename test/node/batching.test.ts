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
  // Every connection writes its own counter key over and over, and shared keys k0..k9.
  connections.forEach((client, c) => {
    for (let i = 0; i < perConnection; i += 1) {
      client.send({ id: i, op: 'put', key: i % 2 ? `own${c}` : `k${i % 10}`, value: { c, i } });
    }
  });
  const replies = await Promise.all(connections.map(async (client) => {
    const got: Record<string, any>[] = [];
    for (let i = 0; i < perConnection; i += 1) got.push(await client.next());
    return got;
  }));
  for (const got of replies) assert.ok(got.every((reply) => reply['ok'] === true), 'every put succeeded');

  const primaryBatches = traces.filter((t) => t.node === 'n0' && t.event === 'applied');
  const writes = primaryBatches.map((t) => (t.event === 'applied' ? t.writes : 0));
  assert.ok(Math.max(...writes) > 1, `some batch carried several writes (largest ${Math.max(...writes)})`);
  assert.is(writes.reduce((a, b) => a + b, 0), 4 * perConnection);

  // I1 per write: the ack that covers a write's seq comes from both replicas before the write's reply.
  const n0 = traces.filter((t) => t.node === 'n0');
  const lastAckAt = (seq: number) => Math.max(...['n1', 'n2'].map((r) => n0.findIndex((t) => t.event === 'ack' && t.from === r && t.seq >= seq)));
  let nextSeq = 1;
  for (const [index, event] of n0.entries()) {
    if (event.event !== 'applied') continue;
    const acked = lastAckAt(event.last);
    assert.ok(acked > index, `batch ${event.first}..${event.last} acked by both after it was applied`);
    assert.is(event.first, nextSeq, 'batches are consecutive');
    nextSeq = event.last + 1;
  }
  const replyIndexes = n0.flatMap((t, i) => (t.event === 'reply' ? [i] : []));
  assert.ok(replyIndexes.length === 0 || replyIndexes[0]! > lastAckAt(1), 'no reply before the first acks');

  // I2: the same order everywhere, so each connection's own key holds its last write.
  const files = await Promise.all(cluster.specs.map((spec) => fileContents(spec.dataFile!)));
  assert.equal(files[1], files[0]);
  assert.equal(files[2], files[0]);
  connections.forEach((_, c) => assert.equal(files[0]![`own${c}`], { c, i: perConnection - 1 }));
  for (const node of cluster.nodes) assert.is(node.storage.state.seq, 4 * perConnection);
});

Batching.run();
