import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { KvClient } from '../../src/client/client.js';
import { KvNode } from '../../src/node/node.js';
import type { NodeTrace } from '../../src/node/trace.js';
import { openStore } from '../../src/storage/open-store.js';
import { proofFor } from '../../src/protocol/auth.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { fileContents, fileSessions, readSqlite } from '../sqlite-files.js';
import { FailingStore, GatedStore, storedCount, storedValue } from '../stores.js';

const disposer = new Disposer();

interface Started extends InProcessCluster {
  traces: NodeTrace[];
  dataDir: string;
  client(): KvClient;
}

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<Started> {
  const dataDir = options.dataDir ?? (await tempDir(disposer));
  const traces: NodeTrace[] = [];
  const cluster = await startInProcessCluster({
    dataDir,
    onNode: (node) => node.trace$.subscribe((event) => traces.push(event)),
    ...options,
  });
  disposer.add(cluster, (c) => c.close());
  return {
    ...cluster,
    traces,
    dataDir,
    client: () => disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close()),
  };
}

/** The contents of every node's own SQLite file, read directly. */
async function files(cluster: Started): Promise<Record<string, unknown>[]> {
  return Promise.all(cluster.specs.map((spec) => fileContents(spec.dataFile!)));
}

const Replication = suite('node: primary-backup replication');
Replication.after.each(() => disposer.dispose());

Replication('puts, overwrites and dels reach every replica\'s own SQLite file', async () => {
  const cluster = await start();
  const client = cluster.client();
  await client.put('color', 'blue');
  await client.put('count', 1);
  await client.put('color', 'green');
  await client.put('gone', { soon: true });
  assert.is(await client.del('gone'), true);
  assert.is(await client.del('never'), false);
  const expected = { color: 'green', count: 1 };
  assert.equal(await files(cluster), [expected, expected, expected]);
  for (const node of cluster.nodes) assert.equal(node.storage.state, { epoch: 1, seq: 6 });
});

Replication('the client\'s reply waits for the slowest replica\'s ack', async () => {
  const dataDir = await tempDir(disposer);
  const gated = new GatedStore(await openStore('normal', path.join(dataDir, 'n2-own.sqlite')));
  const cluster = await start({ dataDir, perNode: { n2: { store: gated } } });
  const client = cluster.client();
  await client.put('warm', 'up');
  gated.closeGate();
  let replied = false;
  const put = client.put('slow', 'write').then(() => (replied = true));
  await waitFor('the batch to reach n2', () => gated.arrived === 2);
  await waitFor('n1 to ack it', () => cluster.traces.some((t) => t.node === 'n0' && t.event === 'ack' && t.from === 'n1' && t.seq === 2));
  assert.is(replied, false, 'replied before n2 acknowledged');
  assert.is(storedValue(cluster.primary.storage, 'slow'), 'write', 'the primary applies first');
  gated.openGate();
  await within('the reply', put);
  const n0 = cluster.traces.filter((t) => t.node === 'n0');
  const ackFromN2 = n0.findIndex((t) => t.event === 'ack' && t.from === 'n2' && t.seq === 2);
  const reply = n0.findIndex((t, index) => index > n0.findIndex((r) => r.event === 'request' && r.key === 'slow') && t.event === 'reply');
  assert.ok(ackFromN2 >= 0 && reply > ackFromN2, 'the reply is traced after the last ack');
});

Replication('1,000 concurrent puts over 10 keys from 8 connections leave three identical stores', async () => {
  const cluster = await start();
  const clients = Array.from({ length: 8 }, () => cluster.client());
  await Promise.all(
    clients.map((client, c) =>
      Promise.all(Array.from({ length: 125 }, (_, i) => client.put(`key${(c * 125 + i) % 10}`, { c, i }))),
    ),
  );
  const [primary, ...replicas] = await files(cluster);
  assert.is(Object.keys(primary!).length, 10);
  for (const replica of replicas) assert.equal(replica, primary);
  for (const node of cluster.nodes) assert.equal(node.storage.state, { epoch: 1, seq: 1000 });
});

Replication('a put that fails on the primary is answered with the error and not forwarded', async () => {
  const dataDir = await tempDir(disposer);
  const failing = new FailingStore(await openStore('normal', path.join(dataDir, 'n0-own.sqlite')));
  const cluster = await start({ dataDir, perNode: { n0: { store: failing } } });
  const client = cluster.client();
  await client.put('doomed', 1).then(
    () => assert.unreachable('the put should fail'),
    (error: { code: string; message: string }) => {
      assert.is(error.code, 'INTERNAL');
      assert.match(error.message, /disk full/);
    },
  );
  assert.not.ok(cluster.traces.some((t) => t.event === 'forwarded'), 'nothing was forwarded');
  for (const replica of cluster.replicas) assert.equal(replica.storage.state.seq, 0);
  failing.failing = false;
  await client.put('fine', 2);
  // The failed put did not use up a seq: the next write is seq 1 everywhere.
  for (const node of cluster.nodes) assert.equal(node.storage.state.seq, 1);
  const replicaFiles = await Promise.all(cluster.specs.slice(1).map((spec) => fileContents(spec.dataFile!)));
  assert.equal(replicaFiles, [{ fine: 2 }, { fine: 2 }]);
});

Replication('a client request to a replica gets NOT_PRIMARY with the primary\'s address', async () => {
  const cluster = await start();
  const raw = await RawClient.open(cluster.replicas[0]!.url, disposer);
  const reply = await raw.ask({ id: 1, op: 'put', key: 'a', value: 1 });
  assert.is(reply['error'].code, 'NOT_PRIMARY');
  assert.is(reply['error'].primary, cluster.primary.url);
  assert.is((await raw.ask({ id: 2, op: 'get', key: 'a' }))['error'].code, 'NOT_PRIMARY');
});

Replication('forged replication frames are refused and change nothing', async () => {
  const cluster = await start({ secret: 'cluster-secret' });
  await cluster.client().put('real', 'value');
  const replica = cluster.replicas[0]!;
  const append = { op: 'append', epoch: 9, first: 2, ops: [['p', 'real', 'forged']] };

  // (1) From a client connection that never said hello.
  const client = await RawClient.open(replica.url, disposer);
  assert.is((await client.ask({ id: 1, ...append }))['error'].code, 'FORBIDDEN');

  // (2) Claiming to be n0 from another loopback address.
  const elsewhere = await RawClient.open(replica.url, disposer, '127.0.0.99');
  assert.is((await elsewhere.ask({ id: 2, op: 'hello', from: 'n0', epoch: 1 }))['error'].code, 'FORBIDDEN');
  assert.is((await elsewhere.ask({ id: 3, ...append }))['error'].code, 'FORBIDDEN');

  // (3) From the primary's own address, but without the secret.
  const sameHost = await RawClient.open(replica.url, disposer, cluster.specs[0]!.host);
  const hello = await sameHost.ask({ id: 4, op: 'hello', from: 'n0', epoch: 1 });
  assert.type(hello['challenge'], 'string');
  const auth = await sameHost.ask({ id: 5, op: 'auth', proof: proofFor('not-the-secret', hello['challenge'], 'n0', replica.name) });
  assert.is(auth['error'].code, 'UNAUTHORIZED');
  assert.is((await sameHost.ask({ id: 6, ...append }))['error'].code, 'FORBIDDEN');

  // (4) A snapshot that would replace everything, from a connection that never proved itself.
  const snapshot = { op: 'snapshot', epoch: 9, seq: 100, part: 0, entries: [['real', 'forged', 1, null]], watermark: 0, done: true };
  assert.is((await client.ask({ id: 8, ...snapshot }))['error'].code, 'FORBIDDEN');
  assert.is((await sameHost.ask({ id: 9, ...snapshot }))['error'].code, 'FORBIDDEN');

  // (5) A name that is not the primary's.
  assert.is((await sameHost.ask({ id: 7, op: 'hello', from: 'n2', epoch: 1 }))['error'].code, 'FORBIDDEN');

  assert.is(storedValue(replica.storage, 'real'), 'value');
  assert.equal(replica.storage.state.seq, 1);
  const refusals = cluster.traces.filter((t) => t.node === replica.name && t.event === 'rejected');
  assert.ok(refusals.length >= 5, `refusals are traced (${refusals.length})`);
  assert.ok(refusals.some((t) => t.event === 'rejected' && t.address === '127.0.0.99'));
});

Replication('the source-address check holds without a secret too', async () => {
  const cluster = await start();
  const replica = cluster.replicas[1]!;
  const elsewhere = await RawClient.open(replica.url, disposer, '127.0.0.98');
  assert.is((await elsewhere.ask({ id: 1, op: 'hello', from: 'n0', epoch: 1 }))['error'].code, 'FORBIDDEN');
  assert.is((await elsewhere.ask({ id: 2, op: 'append', epoch: 1, first: 1, ops: [['p', 'x', '1']] }))['error'].code, 'FORBIDDEN');
  assert.is(storedValue(replica.storage, 'x'), undefined);
});

for (const order of [['n0', 'n1', 'n2'], ['n2', 'n1', 'n0'], ['n1', 'n0', 'n2']]) {
  Replication(`start order ${order.join(', ')}: every node fully started in turn`, async () => {
    const cluster = await start({ order });
    const client = cluster.client();
    await client.put('order', order.join(''));
    assert.equal((await files(cluster)).map((f) => f['order']), [order.join(''), order.join(''), order.join('')]);
  });
}

/**
 * Puts until one succeeds (every replica of the view acked it); each failure must be
 * UNAVAILABLE. The client's own retries wait between tries; past the deadline it fails.
 */
async function putUntilAcked(client: KvClient, key: string, value: unknown, deadlineMs = 20_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      await client.put(key, value as never);
      return;
    } catch (error) {
      assert.is((error as { code: string }).code, 'UNAVAILABLE');
      if (Date.now() > end) throw new Error(`no put of ${key} was acknowledged within ${deadlineMs} ms`);
    }
  }
}

Replication('a stopped replica leaves the view and puts resume without it; it catches up and rejoins when back', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 300 } });
  const client = cluster.client();
  await client.put('before', 1);
  const n1 = cluster.replicas[0]!;
  await n1.close();
  // Until the hub calls n1 dead, a put waits for it and times out; then the view leaves it out.
  await putUntilAcked(client, 'during', 2, 10_000);
  // The put was answered only once the primary held a view without n1, and n2 had acked it.
  const n0 = cluster.traces.filter((t) => t.node === 'n0');
  const asked = n0.map((t) => t.event === 'request' && t.key === 'during').lastIndexOf(true);
  const request = n0[asked];
  assert.ok(request?.event === 'request', 'the put that succeeded was traced');
  const answered = n0.findIndex((t, index) => index > asked && t.event === 'reply' && t.ok && t.id === request.id);
  const withoutN1 = n0.findIndex((t) => t.event === 'view' && !t.replicas.includes('n1'));
  // Writes come one at a time, so the last batch applied before the reply holds this put
  // (applied by this try, or by an earlier try of the same tag).
  const seq = Math.max(...n0.slice(0, answered).flatMap((t) => (t.event === 'applied' ? [t.last] : [])));
  const ackedByN2 = n0.findIndex((t) => t.event === 'ack' && t.from === 'n2' && t.seq >= seq);
  assert.ok(withoutN1 >= 0 && answered > withoutN1, `the put was answered after the view without n1 (events ${withoutN1} and ${answered})`);
  assert.ok(ackedByN2 >= 0 && answered > ackedByN2, `the put was answered after n2 acked it (events ${ackedByN2} and ${answered})`);
  const { view } = await client.status();
  assert.equal(view?.replicas, ['n2']);
  assert.match(view?.changes.at(-1)?.why ?? '', /n1/, 'the last view change was about n1');
  assert.is(await client.get('during'), 2, 'what the view acknowledged is read');

  const back = disposer.add(
    new KvNode({ ...n1.options, port: 0, store: undefined, dataFile: path.join(dataDir, 'n1.sqlite') }),
    (node) => node.close(),
  );
  await back.init();
  await back.startServices();
  await waitFor('n1 to rejoin the view', async () => (await client.status()).view?.replicas.includes('n1'), 15_000);
  // The hub names n1 a beat before n0 takes that view on: a put acknowledged meanwhile waits for n2 alone.
  await waitFor('n0 to take the view with n1 on', () => cluster.primary.servingView?.replicas.includes('n1'));
  await client.put('after', 3);
  assert.is(storedValue(back.storage, 'during'), 2, 'n1 caught up with what was written without it');
  assert.is(storedValue(back.storage, 'after'), 3, 'and takes part again');
  assert.equal(back.storage.state.seq, cluster.primary.storage.state.seq);
});

async function rows(file: string): Promise<string> {
  return JSON.stringify(await readSqlite(file, 'SELECT key, value FROM keyv ORDER BY key'));
}

Replication('a replica further behind than the log is restored from a snapshot, deletes included', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 300, replicationLogEntriesMax: 5 } });
  const client = cluster.client();
  for (let i = 0; i < 10; i += 1) await client.put(`k${i}`, i);
  const n1 = cluster.replicas[0]!;
  await n1.close();
  // Waves of writes while n1 is down: several batches, of which the log keeps the newest.
  for (let wave = 0; wave < 3; wave += 1) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => client.put(`w${wave}-${i}`, wave).catch(() => undefined)));
  }
  await client.del('k0').catch(() => undefined);
  await client.put('k1', 'changed').catch(() => undefined);

  const back = disposer.add(new KvNode({ ...n1.options, port: 0, dataFile: path.join(dataDir, 'n1.sqlite') }), (n) => n.close());
  await back.init();
  await back.startServices();
  await putUntilAcked(client, 'after', 'snapshot');
  // n1 may have left the view while it was down: then it is caught up as a candidate.
  await waitFor('n1 to hold every write', () => storedValue(back.storage, 'after') === 'snapshot', 15_000);
  const fromN0 = (state: string) => cluster.traces.filter((t) => t.node === 'n0' && t.event === 'peer' && t.peer === 'n1' && t.state === state);
  assert.ok(fromN0('snapshot').length > 0, 'n1 was sent a snapshot');
  // n1 holds the data once its restore finished; n0 hears so with the last part's reply.
  const caughtUp = await waitFor('n0 to hear n1 caught up', () => fromN0('caught-up').at(-1));
  assert.ok(caughtUp.event === 'peer' && (caughtUp.keys ?? 0) > 10, 'the snapshot carried more keys than the log could (the rows are compared below)');
  assert.is(storedValue(back.storage, 'k0'), undefined, 'a key deleted while n1 was down is gone');
  assert.is(storedValue(back.storage, 'k1'), 'changed');
  assert.is(storedValue(back.storage, 'after'), 'snapshot');
  assert.equal(back.storage.state, cluster.primary.storage.state);
  await back.close();
  assert.ok((await rows(path.join(dataDir, 'n1.sqlite'))) === (await rows(cluster.specs[0]!.dataFile!)), 'n1 holds the primary\'s rows');
  // And the client's session (its tags): a retry after a failover to n1 is recognized.
  const sessions = (file: string) => fileSessions(file).then((found) => JSON.stringify(found));
  const restored = await sessions(path.join(dataDir, 'n1.sqlite'));
  assert.ok(restored.includes(client.id), 'the snapshot carried the client\'s session');
  assert.is(restored, await sessions(cluster.specs[0]!.dataFile!));
});

Replication('a replica that lost its data file rejoins a restarted primary through a snapshot', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = await start({ dataDir, replicas: 1, nodeOptions: { ackTimeoutMs: 300 } });
  const client = cluster.client();
  await Promise.all(Array.from({ length: 50 }, (_, i) => client.put(`k${i}`, { i })));
  const [n0, n1] = [cluster.primary, cluster.replicas[0]!];
  await n1.close();
  await n0.close();
  // The primary comes back with its data (its log starts empty at seq 50); n1 with an empty file.
  const primary = disposer.add(new KvNode({ ...n0.options, port: 0 }), (n) => n.close());
  const replica = disposer.add(new KvNode({ ...n1.options, port: 0, dataFile: path.join(dataDir, 'n1-new.sqlite') }), (n) => n.close());
  await primary.init();
  await replica.init();
  await primary.startServices();
  await replica.startServices();
  await putUntilAcked(client, 'k50', { i: 50 });
  // The restarted primary goes on in the epoch of the view it holds; the replica matches it.
  assert.is(replica.storage.state.seq, 51);
  assert.equal(replica.storage.state, primary.storage.state);
  assert.equal(storedValue(replica.storage, 'k7'), { i: 7 });
  assert.is(await storedCount(replica.storage), 51);
});

Replication.run();
