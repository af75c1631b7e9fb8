import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import { openStore } from '../../src/storage/open-store.js';
import { keyvSerialization } from '../../src/storage/store.js';
import type { Store, SyncMode } from '../../src/storage/store.js';
import type { WriteOp } from '../../src/protocol/messages.js';
import { Disposer, tempDir } from '../helpers.js';
import { execSqlite, readSqlite } from '../sqlite-files.js';

const disposer = new Disposer();
const put = (key: string, value: unknown): WriteOp => ({ kind: 'put', key, valueJson: JSON.stringify(value) });
const del = (key: string): WriteOp => ({ kind: 'del', key });

async function open(syncMode: SyncMode, file?: string): Promise<Store> {
  const store = await openStore(syncMode, file ?? (syncMode === 'memory' ? undefined : path.join(await tempDir(disposer), 's.sqlite')));
  return disposer.add(store, (s) => s.close());
}

const Store = suite('storage: Keyv + SQLite store');
Store.after.each(() => disposer.dispose());

for (const mode of ['normal', 'full', 'memory'] as const) {
  Store(`${mode}: values keep their JSON type; del reports whether the key existed`, async () => {
    const store = await open(mode);
    const values = ['1', 1, true, false, 0, '', [1, null], { a: { b: 'c' } }, ':x', 'keyv:y'];
    await store.apply(1, 1, values.map((value, index) => put(`k${index}`, value)));
    for (const [index, value] of values.entries()) assert.equal(await store.get(`k${index}`), value);
    assert.equal(await store.apply(1, 11, [del('k0'), del('nope'), put('n', 1), del('n'), del('n')]), [true, false, false, true, false]);
    assert.is(await store.get('k0'), undefined);
    assert.equal(store.state, { epoch: 1, seq: 15 });
    assert.is(await store.count(), values.length - 1);
  });
}

Store('keys are stored as given: "keyv:x" and "x" are two keys', async () => {
  const store = await open('normal');
  await store.apply(1, 1, [put('x', 1), put('keyv:x', 2)]);
  assert.is(await store.get('x'), 1);
  assert.is(await store.get('keyv:x'), 2);
});

Store('keys holding U+0000 are whole keys on every path: put, get, del, snapshot and restore', async () => {
  const store = await open('normal');
  const keys = ['a\u0000b', 'a\u0000c', 'a', '\u0000', 'x\u0000'];
  await store.apply(1, 1, keys.map((key, index) => put(key, index)));
  for (const [index, key] of keys.entries()) assert.is(await store.get(key), index, JSON.stringify(key));
  assert.is(await store.count(), keys.length);
  assert.equal(await store.apply(1, 6, [del('a\u0000c')]), [true]);
  assert.is(await store.get('a\u0000c'), undefined);
  assert.is(await store.get('a\u0000b'), 0);
  const snapshot = await store.snapshot({ entriesMax: 100, bytesMax: 1 << 20 });
  const entries: [string, string][] = [];
  for await (const page of snapshot.pages()) entries.push(...page);
  await snapshot.close();
  const copy = await open('normal');
  const restore = await copy.beginRestore();
  await restore.add(entries);
  await restore.finish(store.state);
  for (const key of ['a\u0000b', 'a', '\u0000', 'x\u0000']) assert.equal(await copy.get(key), await store.get(key), JSON.stringify(key));
  assert.is(await copy.count(), 4);
});

Store('a node\'s file is a Keyv store: Keyv with @keyv/sqlite opens it and reads every value back', async () => {
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

Store('data and seq survive a restart; WAL is on; the file is readable by plain SQLite', async () => {
  const file = path.join(await tempDir(disposer), 'durable.sqlite');
  const first = await openStore('normal', file);
  await first.apply(3, 1, [put('a', 'one'), put('b', [2])]);
  await first.apply(3, 3, [del('a'), put('c', { three: 3 })]);
  await first.close();
  const again = await open('normal', file);
  assert.equal(again.state, { epoch: 3, seq: 4 });
  assert.is(await again.get('a'), undefined);
  assert.equal(await again.get('b'), [2]);
  assert.equal(await again.get('c'), { three: 3 });
  const [mode] = await readSqlite(file, 'PRAGMA journal_mode');
  assert.is(mode?.['journal_mode'], 'wal');
  const rows = await readSqlite(file, 'SELECT key, value FROM keyv ORDER BY key');
  assert.equal(rows, [{ key: 'b', value: '{"value":[2]}' }, { key: 'c', value: '{"value":{"three":3}}' }]);
});

Store('a failed batch changes neither data nor seq', async () => {
  const file = path.join(await tempDir(disposer), 'poisoned.sqlite');
  const store = await open('normal', file);
  await store.apply(1, 1, [put('a', 1)]);
  // A trigger installed by another connection makes SQLite abort any insert of "poison".
  await execSqlite(file, `CREATE TRIGGER poison BEFORE INSERT ON keyv WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END`);
  await store.apply(1, 2, [put('b', 2), del('a'), put('poison', 3)]).then(
    () => assert.unreachable('the batch should fail'),
    (error: { code: string; message: string }) => {
      assert.is(error.code, 'INTERNAL');
      assert.match(error.message, /poisoned/);
    },
  );
  assert.equal(store.state, { epoch: 1, seq: 1 });
  assert.is(await store.get('b'), undefined);
  assert.is(await store.get('a'), 1);
  await store.apply(1, 2, [put('b', 2)]);
  assert.is(await store.get('b'), 2);
  assert.equal(store.state, { epoch: 1, seq: 2 });
});

Store('two stores on one file in one process are refused', async () => {
  const file = path.join(await tempDir(disposer), 'shared.sqlite');
  await open('normal', file);
  await openStore('normal', file).then(
    () => assert.unreachable('the second open should fail'),
    (error: { code: string; message: string }) => assert.match(error.message, /own data file/),
  );
});

for (const mode of ['normal', 'memory'] as const) {
  Store(`${mode}: a snapshot is the state it was taken at, though writes go on`, async () => {
    const store = await open(mode);
    await store.apply(1, 1, Array.from({ length: 25 }, (_, i) => put(`k${String(i).padStart(2, '0')}`, i % 2 ? `s${i}` : i)));
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    await store.apply(1, 26, [put('k00', 'changed'), del('k01'), put('zz', 'new')]);
    const seen: [string, string][] = [];
    for await (const page of snapshot.pages()) {
      assert.ok(page.length <= 10);
      seen.push(...page);
    }
    await snapshot.close();
    assert.equal(snapshot.state, { epoch: 1, seq: 25 });
    assert.is(seen.length, 25);
    assert.equal(seen[0], ['k00', '0']);
    assert.equal(seen[1], ['k01', '"s1"'], 'values come as JSON, strings quoted');
    assert.not.ok(seen.some(([key]) => key === 'zz'));
  });

  Store(`${mode}: a restore replaces everything at once; an aborted one changes nothing`, async () => {
    const store = await open(mode);
    await store.apply(1, 1, [put('old', 1), put('kept', 'before')]);
    const aborted = await store.beginRestore();
    await aborted.add([['x', '1']]);
    await aborted.abort();
    assert.equal(store.state, { epoch: 1, seq: 2 });
    assert.is(await store.get('old'), 1);
    assert.is(await store.get('x'), undefined);

    const restore = await store.beginRestore();
    await restore.add([['kept', '"after"'], ['n', '{"a":[1,"1"]}']]);
    await restore.add([['s', '":colon"']]);
    await restore.finish({ epoch: 2, seq: 40 });
    assert.equal(store.state, { epoch: 2, seq: 40 });
    assert.is(await store.get('old'), undefined, 'keys not in the snapshot are gone');
    assert.is(await store.get('kept'), 'after');
    assert.equal(await store.get('n'), { a: [1, '1'] });
    assert.is(await store.get('s'), ':colon');
    await store.apply(2, 41, [put('next', true)]);
    assert.equal(store.state, { epoch: 2, seq: 41 });
  });
}

Store('a restored SQLite store keeps its state across a restart', async () => {
  const file = path.join(await tempDir(disposer), 'restored.sqlite');
  const first = await openStore('normal', file);
  const restore = await first.beginRestore();
  await restore.add([['a', '1']]);
  await restore.finish({ epoch: 3, seq: 99 });
  await first.close();
  const again = await open('normal', file);
  assert.equal(again.state, { epoch: 3, seq: 99 });
  assert.is(await again.get('a'), 1);
});

Store.run();
