/**
 * What every Store does, as one uvu suite that runs against each store: the simulator runs
 * nodes on the MemoryStore, so it must keep every promise SqliteStore keeps.
 */
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { KvError } from '../../src/errors.js';
import type { Store } from '../../src/storage/store.js';
import type { SnapshotEntry, WriteOp } from '../../src/protocol/messages.js';
import { Disposer } from '../helpers.js';
import { storedCount, storedValue } from '../stores.js';

export const put = (key: string, value: unknown, expiresAt?: number): WriteOp => ({ kind: 'put', key, valueJson: JSON.stringify(value), expiresAt, incr: false, tag: undefined });
/** A del as the primary resolved it (`found` is the primary's to say: a store only deletes). */
export const del = (key: string, found = true): WriteOp => ({ kind: 'del', key, found, expiredAt: undefined, tag: undefined });
/** A write with a request tag. */
export const tagged = (op: WriteOp, client: string, req: number): WriteOp => ({ ...op, tag: { client, req } });
/** The value JSON a store holds for `key`, expired or not. */
export const json = (store: Store, key: string): string | undefined => store.read(key)?.valueJson;

/** [key, value JSON] of each snapshot entry: what most checks compare. */
export const pairs = (entries: readonly SnapshotEntry[]): [string, string][] => entries.map(([key, valueJson]) => [key, valueJson]);
/** Entries for a restore, each at version 1 and without expiry. */
export const rows = (entries: readonly [string, string][]): SnapshotEntry[] => entries.map(([key, valueJson]) => [key, valueJson, 1, null]);

/** Every entry of a snapshot, its pages joined, and the snapshot closed. */
export async function snapshotRows(store: Store, limits = { entriesMax: 100, bytesMax: 1 << 20 }): Promise<SnapshotEntry[]> {
  const snapshot = await store.snapshot(limits);
  try {
    const entries: SnapshotEntry[] = [];
    for await (const page of snapshot.pages()) entries.push(...page);
    return entries;
  } finally {
    await snapshot.close();
  }
}

/** [key, value JSON] of every entry of a snapshot. */
export async function snapshotEntries(store: Store, limits = { entriesMax: 100, bytesMax: 1 << 20 }): Promise<[string, string][]> {
  return pairs(await snapshotRows(store, limits));
}

/** Resolves with what `promise` rejected with; fails the test if it resolved. */
export async function rejection(what: string, attempt: Promise<unknown> | (() => unknown)): Promise<Error & { code?: string }> {
  // A store's apply throws at once (it commits before it returns): run it inside a promise.
  const promise = typeof attempt === 'function' ? new Promise((resolve) => resolve(attempt())) : attempt;
  return promise.then(
    () => {
      throw new assert.Assertion({ message: `${what} should be refused`, operator: 'rejects', expects: 'a rejection', actual: 'a value', generated: false });
    },
    (error: Error & { code?: string }) => error,
  );
}

/**
 * The contract suite for one store. `open` gives a new, empty store (and registers with
 * the disposer anything it made besides, such as a temp directory); the suite closes it.
 */
export function storeContract(name: string, open: (disposer: Disposer) => Promise<Store>): Test {
  const disposer = new Disposer();
  const fresh = async () => disposer.add(await open(disposer), (store) => store.close());
  const test = suite(`store contract: ${name}`);
  test.after.each(() => disposer.dispose());

  test('a new store is empty, at epoch 0 seq 0, and its snapshot has no pages', async () => {
    const store = await fresh();
    assert.equal(store.state, { epoch: 0, seq: 0 });
    assert.is(await storedCount(store), 0);
    assert.is(storedValue(store, 'a'), undefined);
    assert.is(json(store, 'a'), undefined);
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    assert.equal(snapshot.state, { epoch: 0, seq: 0 });
    let pages = 0;
    for await (const _page of snapshot.pages()) pages += 1;
    await snapshot.close();
    assert.is(pages, 0);
  });

  test('values keep their JSON type; each key is at the seq that last wrote it', async () => {
    const store = await fresh();
    const values = ['1', 1, true, false, 0, '', [1, null], { a: { b: 'c' } }, ':x', 'keyv:y'];
    await store.apply(1, 1, values.map((value, index) => put(`k${index}`, value)));
    for (const [index, value] of values.entries()) assert.equal(storedValue(store, `k${index}`), value);
    for (const [index] of values.entries()) assert.is(store.read(`k${index}`)?.version, index + 1);
    await store.apply(1, 11, [del('k0'), del('nope', false), put('n', 1), del('n'), del('n', false)]);
    assert.is(storedValue(store, 'k0'), undefined);
    assert.equal(store.state, { epoch: 1, seq: 15 });
    assert.is(await storedCount(store), values.length - 1);
  });

  test('a value stored as JSON null reads back as null, not as a missing key; numbers and unicode keep their form', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('null', null), put('tiny', -1.5e-7), put('big', 2 ** 53 - 1), put('text', 'ключ 😀')]);
    assert.is(storedValue(store, 'null'), null);
    assert.is(json(store, 'null'), 'null');
    assert.is(storedValue(store, 'tiny'), -1.5e-7);
    assert.is(storedValue(store, 'big'), 2 ** 53 - 1);
    assert.is(storedValue(store, 'text'), 'ключ 😀');
    assert.is(await storedCount(store), 4);
  });

  test('readJson gives back the JSON text exactly as it was put, and undefined for a missing key', async () => {
    const store = await fresh();
    const texts = ['"a\\"b\\n\\u0000"', '{"z":1,"a":[true,null]}', '"ключ"', '12.5', 'null'];
    await store.apply(1, 1, texts.map((valueJson, index): WriteOp => ({ kind: 'put', key: `t${index}`, valueJson, expiresAt: undefined, incr: false, tag: undefined })));
    for (const [index, text] of texts.entries()) assert.is(json(store, `t${index}`), text, `t${index}`);
    assert.is(json(store, 't9'), undefined);
    await store.apply(1, 6, [del('t1')]);
    assert.is(json(store, 't1'), undefined);
  });

  test('the state after a batch is its epoch and the seq of its last op', async () => {
    const store = await fresh();
    await store.apply(2, 10, [put('a', 1), put('b', 2), del('a')]);
    assert.equal(store.state, { epoch: 2, seq: 12 });
    await store.apply(3, 13, [put('c', 3)]);
    assert.equal(store.state, { epoch: 3, seq: 13 });
  });

  test('within one batch the last op on a key wins, and takes its seq as the version', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('c', 'old')]);
    await store.apply(1, 2, [put('a', 1), put('a', 2), put('b', 1), del('b'), del('c'), put('c', 3)]);
    assert.is(store.read('a')?.version, 3);
    assert.is(store.read('c')?.version, 7);
    assert.is(storedValue(store, 'a'), 2);
    assert.is(storedValue(store, 'b'), undefined);
    assert.is(storedValue(store, 'c'), 3);
    assert.is(await storedCount(store), 2);
    assert.equal(store.state, { epoch: 1, seq: 7 });
  });

  test('a new epoch begins at the current seq, durably with the data; a lower or equal one is refused', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2)]);
    await store.beginEpoch(3);
    assert.equal(store.state, { epoch: 3, seq: 2 });
    assert.is(storedValue(store, 'b'), 2);
    const error = await rejection('an epoch that is not higher', store.beginEpoch(3));
    assert.match(error.message, /above/);
    await store.apply(3, 3, [put('c', 3)]);
    assert.equal(store.state, { epoch: 3, seq: 3 });
  });

  test('an empty batch is refused as a programmer error and changes nothing', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1)]);
    const error = await rejection('an empty batch', () => store.apply(1, 2, []));
    assert.match(error.message, /a batch is not empty/);
    assert.equal(store.state, { epoch: 1, seq: 1 });
    assert.is(await storedCount(store), 1);
  });

  test('keys are stored as given: "keyv:x" and "x" are two keys', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('x', 1), put('keyv:x', 2)]);
    assert.is(storedValue(store, 'x'), 1);
    assert.is(storedValue(store, 'keyv:x'), 2);
    assert.is(await storedCount(store), 2);
  });

  test('keys holding U+0000 are whole keys on every path: put, get, del, snapshot and restore', async () => {
    const store = await fresh();
    const keys = ['a\u0000b', 'a\u0000c', 'a', '\u0000', 'x\u0000'];
    await store.apply(1, 1, keys.map((key, index) => put(key, index)));
    for (const [index, key] of keys.entries()) assert.is(storedValue(store, key), index, JSON.stringify(key));
    assert.is(await storedCount(store), keys.length);
    await store.apply(1, 6, [del('a\u0000c')]);
    assert.is(storedValue(store, 'a\u0000c'), undefined);
    assert.is(storedValue(store, 'a\u0000b'), 0);
    const entries = await snapshotRows(store);
    assert.equal(entries.map(([key]) => key), ['\u0000', 'a', 'a\u0000b', 'x\u0000']);
    const copy = await fresh();
    const restore = await copy.beginRestore();
    await restore.add(entries);
    await restore.finish(store.state, [], 0);
    for (const key of ['a\u0000b', 'a', '\u0000', 'x\u0000']) assert.equal(storedValue(copy, key), storedValue(store, key), JSON.stringify(key));
    assert.is(await storedCount(copy), 4);
  });

  test('a snapshot lists keys in code point order, as SQLite compares UTF-8: U+1F600 after U+FF71', async () => {
    const store = await fresh();
    const keys = ['😀', 'b', 'ｱ', 'a\u0000', 'ключ', 'A', 'é', 'a', '\u{10FFFF}', '\uFFFF'];
    await store.apply(1, 1, keys.map((key) => put(key, key)));
    for (const key of keys) assert.is(storedValue(store, key), key, JSON.stringify(key));
    const entries = await snapshotEntries(store, { entriesMax: 3, bytesMax: 1 << 20 });
    assert.equal(entries.map(([key]) => key), ['A', 'a', 'a\u0000', 'b', 'é', 'ключ', 'ｱ', '\uFFFF', '😀', '\u{10FFFF}']);
    assert.equal(entries[8], ['😀', '"😀"'], 'values come as their JSON');
  });

  test('snapshot pages hold at most entriesMax entries and bytesMax of key and JSON, but always one entry', async () => {
    const store = await fresh();
    // Sizes (key and JSON bytes): a 2, b 5, c 13, d 2, e 2, f 2.
    await store.apply(1, 1, [put('a', 1), put('b', 'xx'), put('c', 'y'.repeat(10)), put('d', 2), put('e', 3), put('f', 4)]);
    const snapshot = await store.snapshot({ entriesMax: 2, bytesMax: 8 });
    const pages: [string, string][][] = [];
    for await (const page of snapshot.pages()) pages.push(pairs(page));
    await snapshot.close();
    assert.equal(pages, [
      [['a', '1'], ['b', '"xx"']],
      [['c', '"yyyyyyyyyy"']],
      [['d', '2'], ['e', '3']],
      [['f', '4']],
    ]);
    const single = await snapshotEntries(store, { entriesMax: 1, bytesMax: 1 });
    assert.is(single.length, 6, 'pages of one entry each still reach every key');
  });

  test('snapshot pages count UTF-8 bytes, as frames do, not UTF-16 code units', async () => {
    const store = await fresh();
    // Each entry: key 1 byte, JSON "éé😀" 1 + 2 + 2 + 4 + 1 bytes: 11 bytes, though 7 code units.
    await store.apply(1, 1, [put('a', 'éé😀'), put('b', 'éé😀')]);
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 16 });
    const pages: [string, string][][] = [];
    for await (const page of snapshot.pages()) pages.push(pairs(page));
    await snapshot.close();
    assert.equal(pages, [[['a', '"éé😀"']], [['b', '"éé😀"']]]);
  });

  test('a snapshot is the state it was taken at, though writes go on', async () => {
    const store = await fresh();
    await store.apply(1, 1, Array.from({ length: 25 }, (_, i) => put(`k${String(i).padStart(2, '0')}`, i % 2 ? `s${i}` : i)));
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    await store.apply(1, 26, [put('k00', 'changed'), del('k01'), put('zz', 'new')]);
    const seen: [string, string][] = [];
    for await (const page of snapshot.pages()) {
      assert.ok(page.length <= 10);
      seen.push(...pairs(page));
      // Writes between pages do not show either.
      await store.apply(1, store.state.seq + 1, [put('k24', 'later'), del('k23')]);
    }
    await snapshot.close();
    assert.equal(snapshot.state, { epoch: 1, seq: 25 });
    assert.is(seen.length, 25);
    assert.equal(seen[0], ['k00', '0']);
    assert.equal(seen[1], ['k01', '"s1"'], 'values come as JSON, strings quoted');
    assert.equal(seen[23], ['k23', '"s23"']);
    assert.equal(seen[24], ['k24', '24']);
    assert.not.ok(seen.some(([key]) => key === 'zz'));
  });

  test('a snapshot taken before a restore finishes reads the data it was taken at', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2)]);
    const snapshot = await store.snapshot({ entriesMax: 1, bytesMax: 1 << 20 });
    const restore = await store.beginRestore();
    await restore.add(rows([['c', '3']]));
    await restore.finish({ epoch: 2, seq: 9 }, [], 0);
    const seen: [string, string][] = [];
    for await (const page of snapshot.pages()) seen.push(...pairs(page));
    await snapshot.close();
    assert.equal(seen, [['a', '1'], ['b', '2']]);
    assert.equal(snapshot.state, { epoch: 1, seq: 2 });
    assert.equal(await snapshotEntries(store), [['c', '3']]);
  });

  test('a snapshot closed before its last page can be closed again, and the store goes on', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2), put('c', 3)]);
    const snapshot = await store.snapshot({ entriesMax: 1, bytesMax: 1 << 20 });
    for await (const page of snapshot.pages()) {
      assert.equal(pairs(page), [['a', '1']]);
      break;
    }
    await snapshot.close();
    await snapshot.close();
    await store.apply(1, 4, [del('b'), put('d', 4)]);
    assert.equal(await snapshotEntries(store), [['a', '1'], ['c', '3'], ['d', '4']]);
  });

  test('a snapshot outlives the store\'s close: its pages can still be read', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2)]);
    const snapshot = await store.snapshot({ entriesMax: 1, bytesMax: 1 << 20 });
    await store.close();
    const seen: [string, string][] = [];
    for await (const page of snapshot.pages()) seen.push(...pairs(page));
    await snapshot.close();
    assert.equal(seen, [['a', '1'], ['b', '2']]);
  });

  test('a restore replaces everything at once; an aborted one changes nothing', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('old', 1), put('kept', 'before')]);
    const aborted = await store.beginRestore();
    await aborted.add(rows([['x', '1']]));
    await aborted.abort();
    assert.equal(store.state, { epoch: 1, seq: 2 });
    assert.is(storedValue(store, 'old'), 1);
    assert.is(storedValue(store, 'x'), undefined);

    const restore = await store.beginRestore();
    await restore.add(rows([['kept', '"after"'], ['n', '{"a":[1,"1"]}']]));
    await restore.add(rows([['s', '":colon"']]));
    await restore.finish({ epoch: 2, seq: 40 }, [], 0);
    assert.equal(store.state, { epoch: 2, seq: 40 });
    assert.is(storedValue(store, 'old'), undefined, 'keys not in the snapshot are gone');
    assert.is(storedValue(store, 'kept'), 'after');
    assert.equal(storedValue(store, 'n'), { a: [1, '1'] });
    assert.is(storedValue(store, 's'), ':colon');
    assert.is(json(store, 'n'), '{"a":[1,"1"]}');
    assert.is(await storedCount(store), 3);
    await restore.abort();
    assert.is(storedValue(store, 'kept'), 'after', 'an abort after finish undoes nothing');
    await store.apply(2, 41, [put('next', true)]);
    assert.equal(store.state, { epoch: 2, seq: 41 });
  });

  test('tagged writes leave client sessions, committed with the batch; a failed batch leaves none', async () => {
    const store = await fresh();
    assert.equal(store.checkTag({ client: 'c1', req: 1 }), { kind: 'new' });
    await store.apply(1, 1, [tagged(put('a', 1), 'c1', 1), put('untagged', 2), tagged(del('a'), 'c1', 2), tagged(del('b'), 'c2', 9)]);
    await store.apply(1, 5, [tagged(del('b', false), 'c2', 10)]);
    assert.equal(store.checkTag({ client: 'c1', req: 1 }), { kind: 'applied', reply: '"version":1', seq: 1 });
    assert.equal(store.checkTag({ client: 'c1', req: 2 }), { kind: 'applied', reply: '"found":true,"version":3', seq: 3 });
    assert.equal(store.checkTag({ client: 'c2', req: 9 }), { kind: 'applied', reply: '"found":true,"version":4', seq: 4 });
    assert.equal(store.checkTag({ client: 'c2', req: 10 }), { kind: 'applied', reply: '"found":false,"version":5', seq: 5 });
    assert.equal(store.checkTag({ client: 'c2', req: 8 }), { kind: 'new' });
    // A restore in progress makes apply a programmer error: nothing of the batch, its tags included, is kept.
    const restore = await store.beginRestore();
    await rejection('a batch during a restore', () => store.apply(1, 6, [tagged(put('z', 1), 'c3', 1)]));
    await restore.abort();
    assert.equal(store.checkTag({ client: 'c3', req: 1 }), { kind: 'new' });
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    assert.equal(snapshot.sessions, [
      { client: 'c1', req: 2, seq: 3, results: ['t3', 'p1'] },
      { client: 'c2', req: 10, seq: 5, results: ['f5', 't4'] },
    ]);
    await snapshot.close();
  });

  test('a snapshot carries the client sessions of its state; a restore replaces them all', async () => {
    const store = await fresh();
    await store.apply(1, 1, [tagged(put('a', 1), 'c1', 1)]);
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    await store.apply(1, 2, [tagged(put('a', 2), 'c1', 2), tagged(put('b', 2), 'c2', 1)]);
    assert.equal(snapshot.sessions, [{ client: 'c1', req: 1, seq: 1, results: ['p1'] }], 'later writes do not show in it');
    await snapshot.close();

    const copy = await fresh();
    await copy.apply(1, 1, [tagged(put('mine', 1), 'local', 5)]);
    const restore = await copy.beginRestore();
    await restore.add(await snapshotRows(store));
    await restore.finish(store.state, (await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 })).sessions, 0);
    assert.equal(copy.checkTag({ client: 'local', req: 5 }), { kind: 'new' }, 'the sessions before the restore are gone');
    assert.equal(copy.checkTag({ client: 'c1', req: 2 }), { kind: 'applied', reply: '"version":2', seq: 2 });
    assert.equal(copy.checkTag({ client: 'c2', req: 1 }), { kind: 'applied', reply: '"version":3', seq: 3 });
    // The copy goes on deriving sessions from the same batches as the original.
    const next = [tagged(del('a'), 'c2', 2)];
    await store.apply(1, 4, next);
    await copy.apply(1, 4, next);
    const sessionsOf = async (s: Store) => {
      const taken = await s.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
      await taken.close();
      return taken.sessions;
    };
    assert.equal(await sessionsOf(copy), await sessionsOf(store));
  });

  test('a restore is invisible until it finishes: reads, count, state and snapshots show the data before it', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2)]);
    const restore = await store.beginRestore();
    await restore.add(rows([['c', '3'], ['a', '"new"']]));
    assert.is(storedValue(store, 'a'), 1);
    assert.is(json(store, 'b'), '2');
    assert.is(storedValue(store, 'c'), undefined);
    assert.is(await storedCount(store), 2);
    assert.equal(store.state, { epoch: 1, seq: 2 });
    const during = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    const seen: [string, string][] = [];
    for await (const page of during.pages()) seen.push(...pairs(page));
    await during.close();
    assert.equal(seen, [['a', '1'], ['b', '2']]);
    assert.equal(during.state, { epoch: 1, seq: 2 });
    await restore.finish({ epoch: 1, seq: 30 }, [], 0);
    assert.is(storedValue(store, 'a'), 'new');
    assert.is(storedValue(store, 'b'), undefined);
    assert.is(await storedCount(store), 2);
  });

  test('a restore with no entries empties the store and sets its state', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1), put('b', 2)]);
    const restore = await store.beginRestore();
    await restore.finish({ epoch: 4, seq: 0 }, [], 0);
    assert.is(await storedCount(store), 0);
    assert.is(storedValue(store, 'a'), undefined);
    assert.equal(store.state, { epoch: 4, seq: 0 });
    assert.equal(await snapshotEntries(store), []);
  });

  test('during a restore, batches and a second restore are refused as programmer errors; after it they are taken again', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1)]);
    const first = await store.beginRestore();
    await first.add(rows([['b', '2']]));
    assert.match((await rejection('a batch during a restore', () => store.apply(1, 2, [put('z', 1)]))).message, /no batch is applied during a restore/);
    assert.match((await rejection('a second restore', store.beginRestore())).message, /one restore at a time/);
    assert.is(storedValue(store, 'z'), undefined);
    assert.equal(store.state, { epoch: 1, seq: 1 });
    await first.abort();
    await store.apply(1, 2, [put('z', 1)]);
    const second = await store.beginRestore();
    await second.add(rows([['c', '3']]));
    await second.finish({ epoch: 2, seq: 5 }, [], 0);
    assert.equal(await snapshotEntries(store), [['c', '3']], 'the refused batch and restore left nothing behind');
    await store.apply(2, 6, [put('d', 4)]);
    assert.equal(store.state, { epoch: 2, seq: 6 });
  });

  test('close completes errors$ and can be called twice; a closed store refuses batches and reads with a KvError', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1)]);
    let completed = false;
    store.errors$.subscribe({ complete: () => (completed = true) });
    await store.close();
    await store.close();
    assert.ok(completed, 'errors$ completed');
    const write = await rejection('a batch after close', () => store.apply(1, 2, [put('b', 2)]));
    assert.instance(write, KvError);
    const read = await rejection('a read after close', (async () => store.read('a'))());
    assert.instance(read, KvError);
  });

  test('an entry keeps its version and expiry; a clear deletes its keys; an expiry delete raises the watermark', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1, 5_000), put('b', 2), put('c', 3)]);
    assert.equal(store.read('a'), { valueJson: '1', version: 1, expiresAt: 5_000 });
    assert.equal(store.read('b'), { valueJson: '2', version: 2, expiresAt: undefined });
    await store.apply(1, 4, [put('a', 'again')]);
    assert.equal(store.read('a'), { valueJson: '"again"', version: 4, expiresAt: undefined }, 'a put without expiry clears it');
    assert.is(store.watermark, 0);
    await store.apply(1, 5, [{ kind: 'del', key: 'b', found: true, expiredAt: 7_000, tag: undefined }, { kind: 'clear', prefix: 'c', keys: ['c'], deleted: 1, more: false, tag: undefined }]);
    assert.is(store.read('b'), undefined);
    assert.is(store.read('c'), undefined);
    assert.is(store.watermark, 7_000);
    await store.apply(1, 7, [{ kind: 'del', key: 'x', found: false, expiredAt: 6_000, tag: undefined }]);
    assert.is(store.watermark, 7_000, 'the watermark never goes back');
  });

  test('list: keys with the prefix in UTF-8 byte order, after `after`, within limit and bytes, skipping the expired', async () => {
    const store = await fresh();
    const keys = ['u:😀', 'u:b', 'u:ｱ', 'u:a', 'u:\uFFFD', 'v:a', 'u', 't:z'];
    await store.apply(1, 1, keys.map((key) => put(key, key)));
    await store.apply(1, 9, [put('u:gone', 1, 100), put('u:later', 1, 10_000)]);
    const all = store.list({ prefix: 'u:', after: undefined, limit: 100, bytesMax: 1 << 20, values: true, nowMs: 100 });
    assert.equal(all.entries.map((entry) => entry.key), ['u:a', 'u:b', 'u:later', 'u:ｱ', 'u:\uFFFD', 'u:😀'], 'U+1F600 after U+FFFD; the expired key is left out');
    assert.is(all.more, false);
    assert.equal(all.entries[2], { key: 'u:later', valueJson: '1', version: 10, expiresAt: 10_000 });
    const page = store.list({ prefix: 'u:', after: 'u:b', limit: 2, bytesMax: 1 << 20, values: false, nowMs: 100 });
    assert.equal(page, { entries: [{ key: 'u:later', valueJson: undefined, version: 10, expiresAt: 10_000 }, { key: 'u:ｱ', valueJson: undefined, version: 3, expiresAt: undefined }], more: true });
    // Values of 5 bytes ("u:a", quoted): a page of 9 bytes holds one, and always at least one.
    const small = store.list({ prefix: 'u:', after: undefined, limit: 100, bytesMax: 9, values: true, nowMs: 100 });
    assert.equal([small.entries.map((entry) => entry.key), small.more], [['u:a'], true]);
    assert.equal(store.list({ prefix: '', after: 'u:😀', limit: 100, bytesMax: 1 << 20, values: false, nowMs: 0 }).entries.map((entry) => entry.key), ['v:a']);
    assert.equal(store.list({ prefix: 'w', after: undefined, limit: 100, bytesMax: 1 << 20, values: false, nowMs: 0 }), { entries: [], more: false });
  });

  test('keysToClear takes keys with the prefix up to its limits and counts the live ones; expired lists what is due', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('s:1', 1, 50), put('s:2', 2), put('s:3', 3, 200), put('t', 4, 10)]);
    assert.equal(store.keysToClear('s:', 10, 1 << 20, 100), { keys: ['s:1', 's:2', 's:3'], live: 2, more: false });
    assert.equal(store.keysToClear('s:', 2, 1 << 20, 100), { keys: ['s:1', 's:2'], live: 1, more: true });
    assert.equal(store.keysToClear('s:', 10, 4, 100), { keys: ['s:1'], live: 0, more: true }, 'bytes of keys bound a chunk too; one key always');
    assert.equal(store.expired(100, 10), [{ key: 't', version: 4 }, { key: 's:1', version: 1 }], 'earliest expiry first');
    assert.equal(store.expired(100, 1), [{ key: 't', version: 4 }]);
    assert.equal(store.expired(5, 10), []);
  });

  test('a snapshot carries versions, expiry and the watermark; a restore keeps them', async () => {
    const store = await fresh();
    await store.apply(1, 1, [put('a', 1, 9_000), put('b', 2), { kind: 'del', key: 'z', found: false, expiredAt: 4_000, tag: undefined }]);
    const snapshot = await store.snapshot({ entriesMax: 10, bytesMax: 1 << 20 });
    assert.is(snapshot.watermark, 4_000);
    await snapshot.close();
    const entries = await snapshotRows(store);
    assert.equal(entries, [['a', '1', 1, 9_000], ['b', '2', 2, null]]);
    const copy = await fresh();
    const restore = await copy.beginRestore();
    await restore.add(entries);
    await restore.finish(store.state, [], snapshot.watermark);
    assert.equal(copy.read('a'), store.read('a'));
    assert.equal(copy.read('b'), store.read('b'));
    assert.is(copy.watermark, 4_000);
  });

  return test;
}
