/**
 * The data API over real sockets and SQLite files (docs/PROTOCOL.md, "Versions,
 * conditional writes, counters, expiry, listing"): each condition and error, counters,
 * expiry (also across a failover), listing and clearing with writes going on.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { KvClient } from '../../src/client/client.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { readSqlite } from '../sqlite-files.js';

const disposer = new Disposer();

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<{ cluster: InProcessCluster; raw: RawClient }> {
  const dataDir = options.dataDir ?? (await tempDir(disposer));
  const cluster = disposer.add(await startInProcessCluster({ dataDir, ...options }), (c) => c.close());
  return { cluster, raw: await RawClient.open(cluster.primary.url, disposer) };
}

/** The rows of every node's file, compared as text: replicas hold what the primary decided. */
async function files(cluster: InProcessCluster): Promise<string[]> {
  return Promise.all(cluster.specs.map(async (spec) => JSON.stringify(await readSqlite(spec.dataFile!, 'SELECT key, value, expires, version FROM keyv ORDER BY key'))));
}

const Api = suite('node: the data API over real sockets and files');
Api.after.each(() => disposer.dispose());

Api('the session of PROTOCOL.md: versions, a CAS, a lock with expiry, a counter, a listing, a clear', async () => {
  const { cluster, raw } = await start();
  assert.equal(await raw.ask({ id: 1, op: 'put', key: 'color', value: 'blue' }), { id: 1, ok: true, version: 1 });
  assert.equal(await raw.ask({ id: 2, op: 'get', key: 'color' }), { id: 2, ok: true, found: true, value: 'blue', version: 1 });
  assert.equal(await raw.ask({ id: 3, op: 'put', key: 'color', value: 'red', ifVersion: 1 }), { id: 3, ok: true, version: 2 });
  assert.equal(await raw.ask({ id: 4, op: 'put', key: 'color', value: 'green', ifVersion: 1 }), {
    id: 4, ok: false, error: { code: 'CONFLICT', message: 'color is at version 2, not 1', found: true, version: 2 },
  });
  const lock = await raw.ask({ id: 5, op: 'put', key: 'lock', value: 'me', ifVersion: 0, ttlMs: 10_000 });
  assert.equal(lock, { id: 5, ok: true, version: 3 });
  const held = await raw.ask({ id: 6, op: 'get', key: 'lock' });
  assert.is(held['version'], 3);
  assert.ok(Math.abs(held['expiresAt'] - (Date.now() + 10_000)) < 2_000, `expiresAt ${held['expiresAt']}`);
  assert.is((await raw.ask({ id: 7, op: 'put', key: 'lock', value: 'you', ifVersion: 0 }))['error']?.code, 'CONFLICT', 'a lock held is not taken');
  assert.equal(await raw.ask({ id: 8, op: 'incr', key: 'hits', by: 1 }), { id: 8, ok: true, value: 1, version: 4 });
  assert.equal(await raw.ask({ id: 9, op: 'del', key: 'lock', ifVersion: 3 }), { id: 9, ok: true, found: true, version: 5 });
  for (const [index, name] of ['ann', 'bob', 'cy'].entries()) await raw.ask({ id: 10 + index, op: 'put', key: `user:${17 + index}`, value: { name } });
  assert.equal(await raw.ask({ id: 13, op: 'list', prefix: 'user:', after: 'user:17', limit: 1 }), {
    id: 13, ok: true, entries: [{ key: 'user:18', value: { name: 'bob' }, version: 7 }], more: true, version: 8,
  });
  assert.equal(await raw.ask({ id: 14, op: 'clear', prefix: 'user:' }), { id: 14, ok: true, deleted: 3, more: false, version: 9 });
  assert.equal(await raw.ask({ id: 15, op: 'list', prefix: 'user:' }), { id: 15, ok: true, entries: [], more: false, version: 9 });
  // Only results were replicated: every file holds the same rows, versions and expiry.
  await waitFor('the replicas to hold every write', async () => new Set(await files(cluster)).size === 1);
});

Api('conditions: a failed one writes nothing and uses no seq; ifVersion 0 means absent, an expired key is absent', async () => {
  const { cluster, raw } = await start();
  await raw.ask({ id: 1, op: 'put', key: 'k', value: 1 });
  const seq = cluster.primary.storage.state.seq;
  for (const [frame, found, version] of [
    [{ op: 'put', key: 'k', value: 2, ifVersion: 0 }, true, 1],
    [{ op: 'put', key: 'k', value: 2, ifVersion: 7 }, true, 1],
    [{ op: 'del', key: 'k', ifVersion: 2 }, true, 1],
    [{ op: 'incr', key: 'k', ifVersion: 9 }, true, 1],
    [{ op: 'put', key: 'absent', value: 2, ifVersion: 1 }, false, 0],
    [{ op: 'del', key: 'absent', ifVersion: 1 }, false, 0],
  ] as const) {
    const reply = await raw.ask({ id: 2, ...frame });
    assert.is(reply['error']?.code, 'CONFLICT', JSON.stringify(frame));
    assert.is(reply['error'].found, found, JSON.stringify(frame));
    assert.is(reply['error'].version, version, JSON.stringify(frame));
  }
  assert.is(cluster.primary.storage.state.seq, seq, 'no conflict used a seq (a gap would stall the replicas)');
  assert.equal(await raw.ask({ id: 3, op: 'del', key: 'absent' }), { id: 3, ok: true, found: false, version: seq + 1 }, 'a del of an absent key takes a seq');
  assert.equal(await raw.ask({ id: 4, op: 'get', key: 'absent' }), { id: 4, ok: true, found: false }, 'and its version stays 0');
  // An expired key is absent for conditions too, even before the primary deleted it.
  await raw.ask({ id: 5, op: 'put', key: 'brief', value: 1, ttlMs: 1 });
  await waitFor('brief to expire', async () => (await raw.ask({ id: 6, op: 'get', key: 'brief' }))['found'] === false);
  assert.is((await raw.ask({ id: 7, op: 'put', key: 'brief', value: 2, ifVersion: 0 }))['ok'], true);
});

Api('conditions in one batch see the writes before them in that batch', async () => {
  const { raw } = await start();
  // Pipelined on one connection: they reach the primary together and are decided in order.
  raw.send({ id: 1, op: 'put', key: 'k', value: 'a', ifVersion: 0 });
  raw.send({ id: 2, op: 'put', key: 'k', value: 'b', ifVersion: 0 });
  raw.send({ id: 3, op: 'incr', key: 'n' });
  raw.send({ id: 4, op: 'incr', key: 'n', by: 2 });
  raw.send({ id: 5, op: 'del', key: 'k', ifVersion: 1 });
  const replies = new Map<number, Record<string, any>>();
  for (let i = 0; i < 5; i += 1) {
    const reply = await raw.next();
    replies.set(reply['id'], reply);
  }
  assert.equal(replies.get(1), { id: 1, ok: true, version: 1 });
  assert.equal(replies.get(2)!['error'], { code: 'CONFLICT', message: 'k is at version 1, not 0', found: true, version: 1 });
  assert.equal(replies.get(3), { id: 3, ok: true, value: 1, version: 2 });
  assert.equal(replies.get(4), { id: 4, ok: true, value: 3, version: 3 });
  assert.equal(replies.get(5), { id: 5, ok: true, found: true, version: 4 });
});

Api('incr: an absent key counts as 0, by defaults to 1, a value that is not a number or a result that is not finite is BAD_REQUEST', async () => {
  const { cluster, raw } = await start();
  assert.equal(await raw.ask({ id: 1, op: 'incr', key: 'n' }), { id: 1, ok: true, value: 1, version: 1 });
  assert.equal(await raw.ask({ id: 2, op: 'incr', key: 'n', by: -0.5 }), { id: 2, ok: true, value: 0.5, version: 2 });
  await raw.ask({ id: 3, op: 'put', key: 's', value: '5' });
  const seq = cluster.primary.storage.state.seq;
  const text = await raw.ask({ id: 4, op: 'incr', key: 's' });
  assert.is(text['error']?.code, 'BAD_REQUEST');
  assert.match(text['error'].message, /not a number/);
  await raw.ask({ id: 5, op: 'put', key: 'big', value: 1.7e308 });
  assert.is((await raw.ask({ id: 6, op: 'incr', key: 'big', by: 1.7e308 }))['error']?.code, 'BAD_REQUEST');
  assert.is(cluster.primary.storage.state.seq, seq + 1, 'only the put of big was written');
  assert.equal(await raw.ask({ id: 7, op: 'get', key: 'n' }), { id: 7, ok: true, found: true, value: 0.5, version: 2 });
});

Api('a retried incr or clear is applied once and gets its first reply, value included', async () => {
  const { cluster, raw } = await start();
  const incr = { op: 'incr', key: 'n', by: 5, client: 'c-i', req: 1 };
  assert.equal(await raw.ask({ id: 1, ...incr }), { id: 1, ok: true, value: 5, version: 1 });
  await raw.ask({ id: 2, op: 'incr', key: 'n', by: 1 });
  assert.equal(await raw.ask({ id: 3, ...incr }), { id: 3, ok: true, value: 5, version: 1 }, 'the first reply, though n is 6 now');
  for (let i = 0; i < 3; i += 1) await raw.ask({ id: 4, op: 'put', key: `s:${i}`, value: i });
  const clear = { op: 'clear', prefix: 's:', limit: 2, client: 'c-i', req: 2 };
  const first = await raw.ask({ id: 5, ...clear });
  assert.equal(first, { id: 5, ok: true, deleted: 2, more: true, version: 6 });
  assert.equal(await raw.ask({ id: 6, ...clear }), { ...first, id: 6 });
  assert.is(cluster.primary.storage.state.seq, 6);
});

Api('expiry: a put without ttl clears it, an incr keeps it; an expired key is never read, then deleted by the primary on every node', async () => {
  const { cluster, raw } = await start();
  await raw.ask({ id: 1, op: 'put', key: 'k', value: 1, ttlMs: 60_000 });
  const expiresAt = (await raw.ask({ id: 2, op: 'get', key: 'k' }))['expiresAt'];
  assert.type(expiresAt, 'number');
  assert.is((await raw.ask({ id: 3, op: 'incr', key: 'k' }))['ok'], true);
  assert.is((await raw.ask({ id: 4, op: 'get', key: 'k' }))['expiresAt'], expiresAt, 'an incr keeps the expiry');
  await raw.ask({ id: 5, op: 'put', key: 'k', value: 1 });
  assert.not.ok('expiresAt' in (await raw.ask({ id: 6, op: 'get', key: 'k' })), 'a put without one clears it');
  // expiresAt in the past, or both forms at once, are refused.
  assert.is((await raw.ask({ id: 7, op: 'put', key: 'p', value: 1, expiresAt: Date.now() - 1_000 }))['error']?.code, 'BAD_REQUEST');
  assert.is((await raw.ask({ id: 8, op: 'put', key: 'p', value: 1, expiresAt: Date.now() + 1_000, ttlMs: 5 }))['error']?.code, 'BAD_REQUEST');
  // A key that expires: never returned by get or list, and gone from every file soon after.
  const put = await raw.ask({ id: 9, op: 'put', key: 'e:1', value: 'soon', ttlMs: 300 });
  await waitFor('e:1 to expire', async () => (await raw.ask({ id: 10, op: 'get', key: 'e:1' }))['found'] === false);
  assert.equal((await raw.ask({ id: 11, op: 'list', prefix: 'e:' }))['entries'], []);
  await waitFor('the expiry delete on every file', async () => {
    const rows = await Promise.all(cluster.specs.map((spec) => readSqlite(spec.dataFile!, `SELECT key FROM keyv WHERE key = 'e:1'`)));
    return rows.every((found) => found.length === 0);
  });
  assert.ok(cluster.primary.storage.state.seq > put['version'], 'the delete took a seq of its own');
});

Api('an expiry delete spares a key written again after it expired', async () => {
  const { cluster, raw } = await start();
  await raw.ask({ id: 1, op: 'put', key: 'renewed', value: 'old', ttlMs: 200 });
  await waitFor('it to expire', async () => (await raw.ask({ id: 2, op: 'get', key: 'renewed' }))['found'] === false);
  await raw.ask({ id: 3, op: 'put', key: 'renewed', value: 'new' });
  // Let the expirer run several rounds: it must not delete the new version.
  const seq = cluster.primary.storage.state.seq;
  await raw.ask({ id: 4, op: 'put', key: 'later', value: 1, ttlMs: 1 });
  await waitFor('a later expiry delete (the expirer ran)', () => cluster.primary.storage.state.seq >= seq + 2);
  assert.equal(await raw.ask({ id: 5, op: 'get', key: 'renewed' }), { id: 5, ok: true, found: true, value: 'new', version: seq });
});

Api('expiry across a failover: the new primary reads the key as the old one did, then deletes it when it expires', async () => {
  const { cluster, raw } = await start();
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await raw.ask({ id: 1, op: 'put', key: 'session', value: 'alive', ttlMs: 2_500 });
  await raw.ask({ id: 2, op: 'put', key: 'kept', value: 'forever' });
  await waitFor('the replicas to hold both', async () => new Set(await files(cluster)).size === 1);
  await cluster.primary.close();
  await waitFor('a replica to take over', async () => (await client.status()).view?.primary !== 'n0', 15_000);
  const read = await client.request({ op: 'get', key: 'session' });
  const expiresAt = read['expiresAt'] as number;
  if (Date.now() < expiresAt - 200) assert.is(read['found'], true, 'not yet expired on the new primary');
  await waitFor('session to expire on the new primary', async () => (await client.request({ op: 'get', key: 'session' }))['found'] === false, 15_000);
  const primary = cluster.replicas.find((node) => node.name === cluster.hub.views.view?.primary)!;
  await waitFor('the new primary to delete it', () => primary.storage.read('session') === undefined, 10_000);
  assert.ok(primary.storage.watermark >= expiresAt, `the watermark ${primary.storage.watermark} passed the expiry ${expiresAt}`);
  assert.is((await client.request({ op: 'get', key: 'kept' }))['value'], 'forever');
});

Api('list pages through every key with a prefix in UTF-8 byte order; values: false leaves the values out', async () => {
  const { raw } = await start();
  const keys = ['p:😀', 'p:\uFFFD', 'p:a', 'p:b', 'q:a', 'o:z'];
  for (const [index, key] of keys.entries()) await raw.ask({ id: index, op: 'put', key, value: index });
  const seen: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await raw.ask({ id: 'l', op: 'list', prefix: 'p:', limit: 2, values: false, ...(after ? { after } : {}) });
    assert.ok(page['entries'].every((entry: Record<string, unknown>) => !('value' in entry) && typeof entry['version'] === 'number'));
    seen.push(...page['entries'].map((entry: { key: string }) => entry.key));
    if (!page['more']) break;
    after = seen.at(-1);
  }
  assert.equal(seen, ['p:a', 'p:b', 'p:\uFFFD', 'p:😀']);
  assert.is((await raw.ask({ id: 'x', op: 'list', prefix: '' }))['entries'].length, keys.length);
});

Api('clear of 100,000 keys in chunks while other writes go on: every key goes, the other writes are all answered', async () => {
  const { cluster, raw } = await start({ nodeOptions: { ackTimeoutMs: 10_000 } });
  const count = 100_000;
  // Loaded in batches of pipelined puts.
  for (let start = 0; start < count; start += 2_000) {
    for (let i = start; i < start + 2_000; i += 1) raw.send({ id: i, op: 'put', key: `bulk:${String(i).padStart(6, '0')}`, value: i });
    for (let i = start; i < start + 2_000; i += 1) assert.is((await raw.next())['ok'], true);
  }
  const writer = await RawClient.open(cluster.primary.url, disposer);
  let writes = 0;
  let clearing = true;
  const other = (async () => {
    while (clearing) {
      assert.is((await writer.ask({ id: writes, op: 'put', key: `other:${writes}`, value: writes }))['ok'], true);
      writes += 1;
    }
  })();
  const started = Date.now();
  let chunks = 0;
  let deleted = 0;
  for (;;) {
    const reply = await raw.ask({ id: 'clear', op: 'clear', prefix: 'bulk:' });
    assert.is(reply['ok'], true, JSON.stringify(reply));
    chunks += 1;
    deleted += reply['deleted'];
    if (!reply['more']) break;
  }
  clearing = false;
  await within('the other writer', other);
  assert.is(deleted, count);
  assert.ok(chunks >= count / 10_000, `${chunks} chunks of at most 10,000`);
  assert.ok(writes > 0, 'writes went on meanwhile');
  assert.equal(await raw.ask({ id: 'l', op: 'list', prefix: 'bulk:' }), { id: 'l', ok: true, entries: [], more: false, version: cluster.primary.storage.state.seq });
  await waitFor('every file to be cleared', async () => {
    const rows = await Promise.all(cluster.specs.map((spec) => readSqlite(spec.dataFile!, `SELECT count(*) AS n FROM keyv WHERE key >= 'bulk:' AND key < 'bulk;'`)));
    return rows.every(([row]) => row?.['n'] === 0);
  }, 30_000);
  console.log(`      cleared ${count} keys in ${chunks} chunks in ${Date.now() - started} ms; ${writes} other writes meanwhile`);
});

Api.run();
