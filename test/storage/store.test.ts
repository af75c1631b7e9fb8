import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import { KvError } from '../../src/errors.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import { openStore } from '../../src/storage/open-store.js';
import { KEY_BYTES_MAX, REQUEST_TAG_WINDOW, SESSION_FOLD_CLIENTS_MAX, SESSION_LOG_WRITES_MAX, SNAPSHOT_PART_BYTES_MAX, SNAPSHOT_PART_ENTRIES_MAX, VALUE_BYTES_MAX } from '../../src/constants.js';
import { SYNC_MODES, storedText } from '../../src/storage/store.js';
import type { Store } from '../../src/storage/store.js';
import { Disposer, tempDir } from '../helpers.js';
import { execSqlite, fileSessions, largestSqliteRead, readSqlite } from '../sqlite-files.js';
import { del, pairs, put, rejection, rows, snapshotEntries, storeContract, tagged } from './store-contract.js';
import { storedCount, storedValue } from '../stores.js';

// Every behaviour of the Store interface, against each store: SQLite normal, SQLite full, memory.
for (const mode of SYNC_MODES) {
  storeContract(mode, async (disposer) =>
    openStore(mode, mode === 'memory' ? undefined : path.join(await tempDir(disposer), 's.sqlite')),
  ).run();
}

const disposer = new Disposer();

async function openSqlite(syncMode: 'normal' | 'full', file: string): Promise<Store> {
  return disposer.add(await openStore(syncMode, file), (store) => store.close());
}

/** Keyv's serializer for pbkv's file: values are JSON already, so plain JSON keeps every type. */
const keyvSerialization = {
  serialization: { stringify: (data: unknown) => JSON.stringify(data), parse: (text: string) => JSON.parse(text) as unknown },
};

/** What only the SQLite store has: a file that Keyv and SQLite read, that outlives the process. */
const Sqlite = suite('storage: the SQLite file');
Sqlite.after.each(() => disposer.dispose());

Sqlite('a node\'s file is a Keyv store: Keyv with @keyv/sqlite opens it and reads every value back', async () => {
  const file = path.join(await tempDir(disposer), 'keyv.sqlite');
  const store = await openStore('normal', file);
  const values: [string, unknown][] = [['s', '1'], ['n', 1], ['o', { a: [1, 'x'] }], ['t', true], ['ключ', 'знач']];
  await store.apply(1, 1, values.map(([key, value]) => put(key, value)));
  await store.close();
  const adapter = new KeyvSqlite({ uri: `sqlite://${file}`, driver: 'node:sqlite' });
  const keyv = new Keyv({ store: adapter, ...keyvSerialization });
  try {
    for (const [key, value] of values) assert.equal(await keyv.get(key), value, key);
  } finally {
    await keyv.disconnect();
  }
});

Sqlite('Keyv reads a key pbkv wrote with an expiry as absent once it expired, and the rest as written', async () => {
  const file = path.join(await tempDir(disposer), 'expiring.sqlite');
  const store = await openStore('normal', file);
  const now = Date.now();
  await store.apply(1, 1, [put('past', 'gone', now - 1_000), put('future', 'here', now + 60_000), put('user:1', 'colon kept')]);
  await store.close();
  const keyv = new Keyv({ store: new KeyvSqlite({ uri: `sqlite://${file}`, driver: 'node:sqlite' }), ...keyvSerialization });
  try {
    assert.is(await keyv.get('past'), undefined);
    assert.is(await keyv.get('future'), 'here');
    assert.is(await keyv.get('user:1'), 'colon kept', 'a key with a colon is not split into a namespace');
  } finally {
    await keyv.disconnect();
  }
});

Sqlite('a file written before versions existed opens with its keys in Keyv\'s layout, every one at version 1', async () => {
  const file = path.join(await tempDir(disposer), 'legacy.sqlite');
  // The layout of pbkv before versions: keyv(key, value) and the meta table.
  await execSqlite(file, `CREATE TABLE keyv(key VARCHAR(1024) PRIMARY KEY, value TEXT);
    CREATE TABLE pbkv_meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO keyv VALUES ('a', '{"value":1}'), ('user:7', '{"value":{"n":7}}');
    INSERT INTO pbkv_meta VALUES ('epoch', 2), ('seq', 40);`);
  const store = await openSqlite('normal', file);
  assert.equal(store.state, { epoch: 2, seq: 40 });
  assert.equal(store.read('a'), { valueJson: '1', version: 1, expiresAt: undefined });
  assert.equal(store.read('user:7'), { valueJson: '{"n":7}', version: 1, expiresAt: undefined });
  await store.apply(2, 41, [put('a', 2)]);
  assert.is(store.read('a')?.version, 41);
  const columns = (await readSqlite(file, 'PRAGMA table_info(keyv)')).map((column) => column['name']);
  assert.equal(columns, ['key', 'value', 'namespace', 'expires', 'version']);
});

Sqlite('data and seq survive a restart; WAL is on; the file is readable by plain SQLite', async () => {
  const file = path.join(await tempDir(disposer), 'durable.sqlite');
  const first = await openStore('normal', file);
  await first.apply(3, 1, [put('a', 'one'), put('b', [2])]);
  await first.apply(3, 3, [del('a'), put('c', { three: 3 })]);
  await first.close();
  const again = await openSqlite('normal', file);
  assert.equal(again.state, { epoch: 3, seq: 4 });
  assert.is(storedValue(again, 'a'), undefined);
  assert.equal(storedValue(again, 'b'), [2]);
  assert.equal(storedValue(again, 'c'), { three: 3 });
  const [mode] = await readSqlite(file, 'PRAGMA journal_mode');
  assert.is(mode?.['journal_mode'], 'wal');
  const stored = await readSqlite(file, 'SELECT key, value, namespace, expires, version FROM keyv ORDER BY key');
  assert.equal(stored, [
    { key: 'b', value: '{"value":[2]}', namespace: '', expires: null, version: 2 },
    { key: 'c', value: '{"value":{"three":3}}', namespace: '', expires: null, version: 4 },
  ]);
});

Sqlite('a store in full sync mode keeps its data and state across a restart too', async () => {
  const file = path.join(await tempDir(disposer), 'full.sqlite');
  const first = await openStore('full', file);
  assert.is(first.syncMode, 'full');
  await first.apply(1, 1, [put('a', 1)]);
  await first.close();
  const again = await openSqlite('full', file);
  assert.equal(again.state, { epoch: 1, seq: 1 });
  assert.is(storedValue(again, 'a'), 1);
  assert.is(again.file, path.resolve(file));
});

Sqlite('a failed batch changes neither data nor seq', async () => {
  const file = path.join(await tempDir(disposer), 'poisoned.sqlite');
  const store = await openSqlite('normal', file);
  await store.apply(1, 1, [put('a', 1)]);
  // A trigger installed by another connection makes SQLite abort any insert of "poison".
  await execSqlite(file, `CREATE TRIGGER poison BEFORE INSERT ON keyv WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END`);
  const error = await rejection('a poisoned batch', () => store.apply(1, 2, [put('b', 2), del('a'), put('poison', 3)]));
  assert.is(error.code, 'INTERNAL');
  assert.match(error.message, /poisoned/);
  assert.equal(store.state, { epoch: 1, seq: 1 });
  assert.is(storedValue(store, 'b'), undefined);
  assert.is(storedValue(store, 'a'), 1);
  await store.apply(1, 2, [put('b', 2)]);
  assert.is(storedValue(store, 'b'), 2);
  assert.equal(store.state, { epoch: 1, seq: 2 });
});

Sqlite('two stores on one file in one process are refused', async () => {
  const file = path.join(await tempDir(disposer), 'shared.sqlite');
  await openSqlite('normal', file);
  await openStore('normal', file).then(
    () => assert.unreachable('the second open should fail'),
    (error: { code: string; message: string }) => assert.match(error.message, /own data file/),
  );
});

Sqlite('a restored SQLite store keeps its state across a restart', async () => {
  const file = path.join(await tempDir(disposer), 'restored.sqlite');
  const first = await openStore('normal', file);
  const restore = await first.beginRestore();
  await restore.add(rows([['a', '1']]));
  await restore.finish({ epoch: 3, seq: 99 }, [], 0);
  await first.close();
  const again = await openSqlite('normal', file);
  assert.equal(again.state, { epoch: 3, seq: 99 });
  assert.is(storedValue(again, 'a'), 1);
});

Sqlite('client sessions are in the file: a reopened store still knows every tag it applied, in the same order', async () => {
  const file = path.join(await tempDir(disposer), 'sessions.sqlite');
  const first = await openStore('full', file);
  await first.apply(1, 1, [tagged(put('a', 1), 'c1', 1), tagged(put('b', 1), 'c2', 1)]);
  await first.apply(1, 3, [tagged(del('a'), 'c1', 2)]);
  const before = await first.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
  await before.close();
  await first.close();
  // Not folded yet: the rows are behind, the log of tags holds both batches.
  assert.equal(await readSqlite(file, 'SELECT client FROM pbkv_clients'), []);
  assert.equal(await readSqlite(file, 'SELECT seq, tags FROM pbkv_tags ORDER BY seq'), [
    { seq: 1, tags: '[["c1",1,"p1"],["c2",1,"p2"]]' },
    { seq: 3, tags: '[["c1",2,"t3"]]' },
  ]);
  assert.equal(await fileSessions(file), [
    { client: 'c2', req: 1, seq: 2, results: ['p2'] },
    { client: 'c1', req: 2, seq: 3, results: ['t3', 'p1'] },
  ]);
  const again = await openSqlite('normal', file);
  assert.equal(again.checkTag({ client: 'c1', req: 2 }), { kind: 'applied', reply: '"found":true,"version":3', seq: 3 });
  const after = await again.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
  await after.close();
  assert.equal(after.sessions, before.sessions);
});

Sqlite('the log of tags is folded into the session rows once it holds SESSION_LOG_WRITES_MAX writes; a reopened store knows every session', async () => {
  const file = path.join(await tempDir(disposer), 'fold-writes.sqlite');
  const store = await openStore('normal', file);
  // 3 clients, 64 tagged puts a batch: the log fills after 64 batches, and the 65th folds it.
  const batches = SESSION_LOG_WRITES_MAX / 64 + 3;
  const reqs = [0, 0, 0];
  let seq = 1;
  for (let batch = 0; batch < batches; batch += 1) {
    await store.apply(1, seq, Array.from({ length: 64 }, (_, i) => tagged(put(`k${i}`, seq + i), `c${i % 3}`, ++reqs[i % 3]!)));
    seq += 64;
  }
  const logged = await readSqlite(file, 'SELECT seq FROM pbkv_tags ORDER BY seq');
  assert.equal(logged.map((row) => row['seq']), [1 + (batches - 2) * 64, 1 + (batches - 1) * 64], 'the batches after the fold');
  const rows = await readSqlite(file, 'SELECT client, req FROM pbkv_clients ORDER BY client');
  assert.equal(rows.map((row) => row['client']), ['c0', 'c1', 'c2'], 'the fold wrote every session');
  const before = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
  await before.close();
  assert.is(before.sessions.length, 3);
  assert.is(before.sessions[0]!.results.length, REQUEST_TAG_WINDOW);
  await store.close();
  assert.equal(await fileSessions(file), before.sessions);
  const again = await openSqlite('normal', file);
  const after = await again.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
  await after.close();
  assert.equal(after.sessions, before.sessions);
  assert.equal(again.checkTag({ client: 'c2', req: 5 }), { kind: 'stale', oldest: before.sessions.find((s) => s.client === 'c2')!.req - REQUEST_TAG_WINDOW + 1 });
});

Sqlite('the log is folded once its writes changed SESSION_FOLD_CLIENTS_MAX sessions, forgotten ones included', async () => {
  const file = path.join(await tempDir(disposer), 'fold-clients.sqlite');
  const store = await openStore('normal', file);
  // One new client a batch: the log holds SESSION_FOLD_CLIENTS_MAX of them, the next batch folds.
  for (let seq = 1; seq <= SESSION_FOLD_CLIENTS_MAX + 2; seq += 1) await store.apply(1, seq, [tagged(put('k', seq), `c${seq}`, 1)]);
  assert.equal((await readSqlite(file, 'SELECT seq FROM pbkv_tags')).map((row) => row['seq']), [SESSION_FOLD_CLIENTS_MAX + 2]);
  assert.is((await readSqlite(file, 'SELECT client FROM pbkv_clients')).length, SESSION_FOLD_CLIENTS_MAX + 1);
  const before = (await fileSessions(file)).map((session) => session.client);
  await store.close();
  const again = await openSqlite('normal', file);
  const snapshot = await again.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
  await snapshot.close();
  assert.equal(snapshot.sessions.map((session) => session.client), before);
  assert.is(before.length, SESSION_FOLD_CLIENTS_MAX + 2);
});

Sqlite('a snapshot of 1 MiB values reads no more than one part and one value from SQLite at a time', async () => {
  const store = await openSqlite('normal', path.join(await tempDir(disposer), 'large.sqlite'));
  // Values at the limit, in three batches (a batch is also bounded in bytes).
  const large = (i: number) => 'abcdefghijkl'[i - 1]!.repeat(VALUE_BYTES_MAX - 2);
  for (let first = 1; first <= 12; first += 4) {
    await store.apply(1, first, [0, 1, 2, 3].map((i) => put(`k${String(first + i).padStart(2, '0')}`, large(first + i))));
  }
  const limits = { entriesMax: SNAPSHOT_PART_ENTRIES_MAX, bytesMax: SNAPSHOT_PART_BYTES_MAX };
  const snapshot = await store.snapshot(limits);
  const pages: [string, string][][] = [];
  const largestRead = await largestSqliteRead(async () => {
    for await (const page of snapshot.pages()) pages.push(pairs(page));
  });
  await snapshot.close();
  assert.equal(pages.map((page) => page.length), [3, 3, 3, 3], 'a part holds as many values as fit its bytes');
  assert.ok(pages.flat().every(([key, json]) => json === JSON.stringify(large(Number(key.slice(1))))), 'every value whole');
  const oneValueMax = KEY_BYTES_MAX + storedText('x'.repeat(VALUE_BYTES_MAX)).length;
  assert.ok(largestRead <= limits.bytesMax + oneValueMax, `one read returned ${largestRead} characters, over ${limits.bytesMax} + ${oneValueMax}`);
});

Sqlite.run();

/** What only the MemoryStore has: the simulator's crash, which keeps what was committed. */
const Memory = suite('storage: a memory store crashing');
Memory.after.each(() => disposer.dispose());

const memoryStore = (store = new MemoryStore()) => disposer.add(store, (s) => s.close());

async function assertCrashedRefusal(what: string, call: () => unknown): Promise<void> {
  const error = await rejection(what, call);
  assert.instance(error, KvError, what);
  assert.is(error.code, 'UNAVAILABLE', what);
  assert.match(error.message, /crashed/, what);
}

Memory('committed batches, deletes, a finished restore and their state survive a crash', async () => {
  const old = memoryStore();
  await old.apply(1, 1, [put('gone', 0), put('a', 1)]);
  const restore = await old.beginRestore();
  await restore.add(rows([['a', '"restored"'], ['b', '[2]'], ['c', '{"c":3}']]));
  await restore.finish({ epoch: 2, seq: 10 }, [], 0);
  await old.apply(2, 11, [del('c'), put('d', null)]);
  // Committed when called, as SqliteStore's synchronous commit is: its promise has not settled.
  const unsettled = old.apply(2, 13, [put('e', 'last')]);
  const survivor = memoryStore(old.crash());
  assert.is(await unsettled, undefined);
  assert.equal(survivor.state, { epoch: 2, seq: 13 });
  assert.equal(await snapshotEntries(survivor), [['a', '"restored"'], ['b', '[2]'], ['d', 'null'], ['e', '"last"']]);
  assert.is(await storedCount(survivor), 4);
  assert.is(storedValue(survivor, 'gone'), undefined);
  assert.is(survivor.read('d')?.valueJson, 'null');
  await survivor.apply(2, 14, [put('f', 6)]);
  assert.equal(survivor.state, { epoch: 2, seq: 14 });
});

Memory('a restore begun but not finished before a crash is not in the new store, and can no longer add or finish', async () => {
  const old = memoryStore();
  await old.apply(1, 1, [put('a', 1)]);
  const restore = await old.beginRestore();
  await restore.add(rows([['x', '1']]));
  const survivor = memoryStore(old.crash());
  await assertCrashedRefusal('restore.add after the crash', () => restore.add(rows([['y', '2']])));
  await assertCrashedRefusal('restore.finish after the crash', () => restore.finish({ epoch: 5, seq: 50 }, [], 0));
  await restore.abort();
  assert.equal(survivor.state, { epoch: 1, seq: 1 });
  assert.equal(await snapshotEntries(survivor), [['a', '1']]);
  // The new store has no restore in progress: one can begin.
  const fresh = await survivor.beginRestore();
  await fresh.add(rows([['z', '3']]));
  await fresh.finish({ epoch: 2, seq: 7 }, [], 0);
  assert.equal(await snapshotEntries(survivor), [['z', '3']]);
});

Memory('after a crash the old store refuses every read and write of its data with UNAVAILABLE, and can still be closed', async () => {
  const old = memoryStore();
  await old.apply(1, 1, [put('a', 1), put('b', 2)]);
  const snapshot = await old.snapshot({ entriesMax: 1, bytesMax: 1 << 20 });
  const pages = snapshot.pages()[Symbol.asyncIterator]();
  assert.equal((await pages.next()).value, [['a', '1', 1, null]]);
  const survivor = memoryStore(old.crash());
  await assertCrashedRefusal('apply', () => old.apply(1, 3, [put('c', 3)]));
  await assertCrashedRefusal('beginRestore', () => old.beginRestore());
  await assertCrashedRefusal('snapshot', () => old.snapshot({ entriesMax: 10, bytesMax: 1 << 20 }));
  await assertCrashedRefusal('a snapshot page after the crash', () => pages.next());
  await assertCrashedRefusal('readJson', async () => old.read('a'));
  await assertCrashedRefusal('a second crash', async () => old.crash());
  assert.equal(old.state, { epoch: 1, seq: 2 }, 'the state it held in memory is still readable');
  await snapshot.close();
  await old.close();
  await old.close();
  assert.is(storedValue(survivor, 'c'), undefined, 'the refused batch reached no disk');
  assert.equal(await snapshotEntries(survivor), [['a', '1'], ['b', '2']]);
});

Memory('the store a crash returns shares nothing with the old one: changing either changes nothing in the other', async () => {
  const old = memoryStore();
  await old.apply(1, 1, [put('a', { nested: [1] })]);
  const stateAtCrash = old.state;
  const survivor = memoryStore(old.crash());
  await survivor.apply(1, 2, [put('a', 'changed'), put('b', 2)]);
  const restore = await survivor.beginRestore();
  await restore.add(rows([['c', '3']]));
  await restore.finish({ epoch: 2, seq: 20 }, [], 0);
  assert.equal(old.state, { epoch: 1, seq: 1 }, 'the old state is as it was at the crash');
  assert.throws(() => {
    (stateAtCrash as { seq: number }).seq = 99;
  }, TypeError);
  // A second crash, of the new store, carries the new store's data, not the old store's.
  const second = memoryStore(survivor.crash());
  assert.equal(second.state, { epoch: 2, seq: 20 });
  assert.equal(await snapshotEntries(second), [['c', '3']]);
  await second.apply(2, 21, [put('d', 4)]);
  await assertCrashedRefusal('the crashed new store', () => storedCount(survivor));
  assert.equal(await snapshotEntries(second), [['c', '3'], ['d', '4']]);
});

Memory('a closed store hands its data on through crash(), as a node restarted cleanly finds its disk', async () => {
  const old = memoryStore();
  await old.apply(3, 1, [put('a', 1)]);
  await old.close();
  const survivor = memoryStore(old.crash());
  assert.equal(survivor.state, { epoch: 3, seq: 1 });
  assert.is(storedValue(survivor, 'a'), 1);
});

Memory('a restore that has ended takes no more entries and no second finish', async () => {
  const store = memoryStore();
  const restore = await store.beginRestore();
  await restore.add(rows([['a', '1']]));
  await restore.finish({ epoch: 1, seq: 1 }, [], 0);
  assert.match((await rejection('an add after finish', restore.add(rows([['b', '2']])))).message, /has ended/);
  assert.match((await rejection('a second finish', restore.finish({ epoch: 9, seq: 9 }, [], 0))).message, /has ended/);
  const aborted = await store.beginRestore();
  await aborted.abort();
  assert.match((await rejection('a finish after abort', aborted.finish({ epoch: 9, seq: 9 }, [], 0))).message, /has ended/);
  assert.equal(store.state, { epoch: 1, seq: 1 });
  assert.equal(await snapshotEntries(store), [['a', '1']]);
});

Memory.run();
