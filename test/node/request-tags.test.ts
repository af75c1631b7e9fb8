/**
 * Request tags over real sockets and SQLite files: a retried write is applied at most
 * once and gets its first reply, on the same primary and on the one that took over.
 */
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { KvClient } from '../../src/client/client.js';
import { REQUEST_TAG_WINDOW } from '../../src/constants.js';
import type { KvNode } from '../../src/node/node.js';
import { openStore } from '../../src/storage/open-store.js';
import { Disposer, RawClient, tempDir, waitFor } from '../helpers.js';
import { fileSessions } from '../sqlite-files.js';
import { GatedStore } from '../stores.js';

const disposer = new Disposer();

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<InProcessCluster> {
  const dataDir = options.dataDir ?? (await tempDir(disposer));
  return disposer.add(await startInProcessCluster({ dataDir, ...options }), (cluster) => cluster.close());
}

const Tags = suite('node: request tags (a retried write is applied at most once)');
Tags.after.each(() => disposer.dispose());

Tags('a retried put or del is not applied again and gets its first reply; the sessions are on every file', async () => {
  const cluster = await start();
  const raw = await RawClient.open(cluster.primary.url, disposer);
  assert.equal(await raw.ask({ id: 1, op: 'put', key: 'n', value: 'first', client: 'c-a', req: 1 }), { id: 1, ok: true, version: 1 });
  assert.equal(await raw.ask({ id: 2, op: 'del', key: 'gone', client: 'c-a', req: 2 }), { id: 2, ok: true, found: false, version: 2 });
  assert.equal(await raw.ask({ id: 3, op: 'put', key: 'd', value: 1, client: 'c-a', req: 3 }), { id: 3, ok: true, version: 3 });
  assert.equal(await raw.ask({ id: 4, op: 'del', key: 'd', client: 'c-a', req: 4 }), { id: 4, ok: true, found: true, version: 4 });
  // Another client writes after them.
  assert.equal(await raw.ask({ id: 5, op: 'put', key: 'n', value: 'second', client: 'c-b', req: 1 }), { id: 5, ok: true, version: 5 });
  const seq = cluster.primary.storage.state.seq;

  // Every retry answers as the first try did, version included, and nothing is written.
  assert.equal(await raw.ask({ id: 6, op: 'put', key: 'n', value: 'first', client: 'c-a', req: 1 }), { id: 6, ok: true, version: 1 });
  assert.equal(await raw.ask({ id: 7, op: 'del', key: 'gone', client: 'c-a', req: 2 }), { id: 7, ok: true, found: false, version: 2 });
  assert.equal(await raw.ask({ id: 8, op: 'del', key: 'd', client: 'c-a', req: 4 }), { id: 8, ok: true, found: true, version: 4 }, 'found, as the first time, though d is gone now');
  assert.equal(await raw.ask({ id: 9, op: 'get', key: 'n' }), { id: 9, ok: true, found: true, value: 'second', version: 5 });
  assert.is(cluster.primary.storage.state.seq, seq, 'no retry reached the store');

  // An untagged write is applied each time it is sent, as before.
  await raw.ask({ id: 10, op: 'put', key: 'u', value: 1 });
  await raw.ask({ id: 11, op: 'put', key: 'u', value: 1 });
  assert.is(cluster.primary.storage.state.seq, seq + 2);

  const expected = [
    { client: 'c-a', req: 4, seq: 4, results: ['t4', 'p3', 'f2', 'p1'] },
    { client: 'c-b', req: 1, seq: 5, results: ['p5'] },
  ];
  for (const spec of cluster.specs) {
    await waitFor(`${spec.name}'s sessions`, async () => JSON.stringify(await fileSessions(spec.dataFile!)) === JSON.stringify(expected));
  }
});

Tags('copies of one tagged write in flight at once are applied once, and all get its reply', async () => {
  const cluster = await start();
  const raw = await RawClient.open(cluster.primary.url, disposer);
  const other = await RawClient.open(cluster.primary.url, disposer);
  const before = cluster.primary.storage.state.seq;
  // The same write on two connections, pipelined: a retry over a new connection while the
  // first is still replicating.
  for (let copy = 0; copy < 5; copy += 1) {
    raw.send({ id: copy, op: 'put', key: 'k', value: 'once', client: 'c-x', req: 7 });
    other.send({ id: copy, op: 'del', key: 'k', client: 'c-y', req: 1 });
  }
  const dels = [];
  for (let copy = 0; copy < 5; copy += 1) {
    const put = await raw.next();
    assert.equal(put, { id: copy, ok: true, version: put['version'] });
    dels.push(await other.next());
  }
  const { found, version } = dels[0]!;
  assert.equal(dels, dels.map((_, copy) => ({ id: copy, ok: true, found, version })));
  assert.is(cluster.primary.storage.state.seq, before + 2, 'one put and one del');
});

Tags(`a request more than REQUEST_TAG_WINDOW (${REQUEST_TAG_WINDOW}) behind the client's newest is UNAVAILABLE, expired, and not applied`, async () => {
  const cluster = await start();
  const raw = await RawClient.open(cluster.primary.url, disposer);
  for (let req = 1; req <= REQUEST_TAG_WINDOW + 1; req += 1) raw.send({ id: req, op: 'put', key: `k${req % 4}`, value: req, client: 'c-w', req });
  for (let req = 1; req <= REQUEST_TAG_WINDOW + 1; req += 1) assert.is((await raw.next())['ok'], true);
  const seq = cluster.primary.storage.state.seq;
  assert.equal(await raw.ask({ id: 'in', op: 'put', key: 'k', value: 0, client: 'c-w', req: 2 }), { id: 'in', ok: true, version: 2 }, 'the oldest inside the window, with its first reply');
  const stale = await raw.ask({ id: 'out', op: 'put', key: 'k', value: 0, client: 'c-w', req: 1 });
  assert.is(stale['error']?.code, 'UNAVAILABLE');
  assert.is(stale['error']?.expired, true, 'retrying cannot tell the outcome');
  assert.match(stale['error']?.message, /req 1 of client c-w is older than the last 256 requests/);
  assert.is(cluster.primary.storage.state.seq, seq);
});

Tags('a put answered UNAVAILABLE (a replica held its ack) and retried is applied once; the retry waits for the replica', async () => {
  const dataDir = await tempDir(disposer);
  const held = new GatedStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 300 }, perNode: { n1: { store: held } } });
  const raw = await RawClient.open(cluster.primary.url, disposer);
  const before = cluster.primary.storage.state.seq;
  held.closeGate();
  const first = await raw.ask({ id: 1, op: 'put', key: 'k', value: 'v', client: 'c-u', req: 1 });
  assert.is(first['error']?.code, 'UNAVAILABLE');
  // The retry finds the write applied: it is not applied again, and waits for n1 as the first did.
  const again = await raw.ask({ id: 2, op: 'put', key: 'k', value: 'v', client: 'c-u', req: 1 });
  assert.is(again['error']?.code, 'UNAVAILABLE');
  raw.send({ id: 3, op: 'put', key: 'k', value: 'v', client: 'c-u', req: 1 });
  held.openGate();
  assert.equal(await raw.next(), { id: 3, ok: true, version: before + 1 });
  assert.is(cluster.primary.storage.state.seq, before + 1);
});

Tags('the client library retries a write after the primary dies; the new primary does not apply it twice', async () => {
  const cluster = await start({ nodeOptions: { ackTimeoutMs: 500 } });
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await client.put('k', 'before');
  // A write that n0 applied and replicated, but whose reply never came: n0 dies after the
  // replicas acknowledged it and before it answered. The raw frame stands for that client,
  // with a req above the ones the library gives its next writes (2, 3).
  const raw = await RawClient.open(cluster.primary.url, disposer);
  assert.equal(await raw.ask({ id: 1, op: 'put', key: 'counted', value: 1, client: client.id, req: 10 }), { id: 1, ok: true, version: 2 });
  const seq = cluster.primary.storage.state.seq;
  await client.put('k', 'after');
  await cluster.primary.close();

  const hub = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await waitFor('a replica to take over', async () => (await hub.status()).view?.primary !== 'n0', 15_000);
  const primary = cluster.replicas.find((node) => node.name === (cluster.hub.views.view?.primary ?? '')) as KvNode;
  const taken = primary.storage.state.seq;
  // The retry goes to the new primary through the client library (it looks kv up again).
  assert.is((await client.request({ op: 'put', key: 'counted', value: 1, client: client.id, req: 10 }))['ok'], true);
  assert.is(primary.storage.state.seq, taken, 'the new primary recognized the retry');
  assert.ok(taken >= seq + 1);
  assert.is(await client.get('k'), 'after');
  await client.put('k', 'later');
  assert.is(await client.get('k'), 'later');
});


Tags(`a client keeps its writes within REQUEST_TAG_WINDOW (${REQUEST_TAG_WINDOW}) of its oldest; closing it rejects those that wait`, async () => {
  const dataDir = await tempDir(disposer);
  const held = new GatedStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 20_000 }, perNode: { n1: { store: held } } });
  const client = new KvClient({ hubUrl: cluster.hubUrl });
  await client.put('warm', 1);
  const base = cluster.primary.storage.state.seq;
  held.closeGate();
  // Nothing settles while n1 holds the batches (`warm` did): 256 writes go out, 44 wait.
  const outcomes = Array.from({ length: REQUEST_TAG_WINDOW + 44 }, (_, i) =>
    client.put(`k${i}`, i).then(() => 'ok', (error: { message: string }) => error.message),
  );
  await waitFor('the window of writes on the primary', () => cluster.primary.storage.state.seq === base + REQUEST_TAG_WINDOW);
  await client.close();
  const results = await Promise.all(outcomes);
  assert.is(results.filter((message) => /the client is closed/.test(message)).length, 44, 'the writes past the window never left');
  held.openGate();
});

Tags.run();
