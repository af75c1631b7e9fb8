/**
 * pbkv as a Keyv 6 store, against a real cluster. No published @keyv/test-suite speaks
 * Keyv 6 (2.1.2, the newest, needs Keyv 5 and vitest), so these are the checks of Keyv 6's
 * own suite (its storage adapter tests: basic, batch, iterator, ttl, namespace,
 * disconnect; and its Keyv tests: api, values, namespace, iterator), written for uvu and
 * the two ways pbkv stores values, then pbkv's own: what other pbkv clients read, and a
 * clear that keeps to its namespace.
 */
import { randomBytes } from 'node:crypto';
import { Keyv } from 'keyv';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { KvError } from '../../src/errors.js';
import { createKeyv, jsonProblem, KeyvPbkv, type KeyvPbkvValues } from '../../src/keyv.js';
import { Disposer, tempDir, waitFor } from '../helpers.js';

/** A fresh random name: tests share one cluster, so nothing one writes meets another. */
function unique(): string {
  return randomBytes(6).toString('hex');
}

/**
 * One cluster and one client per suite, started by the first test that asks (a `before`
 * hook that throws would go unreported) and closed after the suite.
 */
function sharedCluster(disposer: Disposer): () => Promise<{ client: KvClient; hubUrl: string }> {
  let started: Promise<{ client: KvClient; hubUrl: string }> | undefined;
  return () =>
    (started ??= (async () => {
      const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), sync: 'memory', replicas: 1 }), (c) => c.close());
      const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
      return { client, hubUrl: cluster.hubUrl };
    })());
}

/** The errors a Keyv (or a store) emitted, for tests that expect some. */
function errorsOf(emitter: { on(event: 'error', listener: (error: unknown) => void): unknown }): unknown[] {
  const errors: unknown[] = [];
  emitter.on('error', (error) => errors.push(error));
  return errors;
}

/** Waits until `key` reads as absent and returns when it first did. */
async function goneAt(read: () => Promise<unknown>, what: string): Promise<number> {
  await waitFor(what, async () => (await read()) === undefined, 10_000);
  return Date.now();
}

// ---- The storage adapter, as Keyv calls it (values: 'serialized', Keyv's default) ------

const storageDisposer = new Disposer();
const storageCluster = sharedCluster(storageDisposer);
const Storage = suite('keyv: the storage adapter contract (Keyv 6 test suite, storage tests)');
Storage.after(() => storageDisposer.dispose());

async function store(namespace?: string): Promise<KeyvPbkv> {
  return new KeyvPbkv({ client: (await storageCluster()).client, namespace });
}

Storage('basic: set/get round-trip, get of a missing key, delete, has', async () => {
  const s = await store();
  const [key, other] = [unique(), unique()];
  assert.is(await s.set(key, 'a sentence, with "quotes"'), true);
  assert.is(await s.get(key), 'a sentence, with "quotes"');
  assert.is(await s.get(other), undefined);
  assert.is(await s.has(key), true);
  assert.is(await s.has(other), false);
  assert.is(await s.delete(key), true);
  assert.is(await s.get(key), undefined);
  assert.is(await s.has(key), false, 'has is false after delete');
  assert.is(await s.delete(key), false, 'delete of a missing key is false');
});

Storage('basic: clear() removes every pair of its namespace, and only those', async () => {
  const namespace = unique();
  const [s, neighbour] = [await store(namespace), await store(unique())];
  const [key1, key2] = [unique(), unique()];
  await s.set(key1, 'v1');
  await s.set(key2, 'v2');
  await neighbour.set(key1, 'kept');
  await s.clear();
  assert.equal(await s.getMany([key1, key2]), [undefined, undefined]);
  assert.is(await neighbour.get(key1), 'kept');
});

Storage('clear() without a namespace refuses (it would be the whole cluster) and deletes nothing', async () => {
  // Keyv 6's suite clears a store without a namespace and expects it empty: pbkv keeps no
  // namespace apart from key prefixes, so that clear would delete every key of the cluster.
  const s = await store();
  const key = unique();
  await s.set(key, 'v');
  const refused = await s.clear().then(() => undefined, (error: unknown) => error);
  assert.instance(refused, KvError);
  assert.is((refused as KvError).code, 'BAD_REQUEST');
  assert.match((refused as KvError).message, /without a namespace would delete every key of the cluster/);
  assert.is(await s.get(key), 'v');
});

Storage('batch: setMany, getMany, hasMany, deleteMany, with empty arrays too', async () => {
  const s = await store();
  const [key1, key2, key3] = [unique(), unique(), unique()];
  assert.equal(await s.setMany([{ key: key1, value: 'one' }, { key: key2, value: 'two' }, { key: key3, value: 'three' }]), [true, true, true]);
  assert.equal(await s.getMany([key1, key2, key3]), ['one', 'two', 'three']);
  assert.equal(await s.getMany([unique(), unique()]), [undefined, undefined]);
  assert.equal(await s.hasMany([key1, key2, unique()]), [true, true, false]);
  assert.equal(await s.deleteMany([key1, key2]), [true, true]);
  assert.equal(await s.getMany([key1, key2, key3]), [undefined, undefined, 'three']);
  assert.equal(await s.deleteMany([unique(), unique()]), [false, false]);
  assert.equal([await s.setMany([]), await s.getMany([]), await s.hasMany([]), await s.deleteMany([])], [[], [], [], []]);
});

Storage('batch: a failed entry of setMany is false and an error event, the others are written', async () => {
  const s = await store();
  const errors = errorsOf(s);
  const key = unique();
  assert.equal(await s.setMany([{ key, value: 'fine' }, { key: 'x'.repeat(2000), value: 'key too long' }]), [true, false]);
  assert.is(await s.get(key), 'fine');
  assert.is(errors.length, 1);
  assert.is((errors[0] as KvError).code, 'TOO_LARGE');
});

Storage('iterator: an async iterator over every pair of its namespace, and none of another', async () => {
  const outside = await store();
  await outside.set(unique(), 'not namespaced');
  const namespace = unique();
  const s = await store(namespace);
  assert.type(s.iterator()[Symbol.asyncIterator], 'function');
  const written = new Map(Array.from({ length: 3 }, () => [unique(), unique()] as const));
  for (const [key, value] of written) await s.set(key, value);
  await (await store(`${namespace}x`)).set(unique(), 'a namespace that starts with this one');
  const collected = new Map<string, unknown>();
  for await (const [key, value] of s.iterator()) collected.set(key as string, value);
  assert.equal(collected, written);

  const empty: unknown[] = [];
  for await (const entry of (await store(unique())).iterator()) empty.push(entry);
  assert.equal(empty, [], 'an empty namespace yields nothing');
});

Storage('iterator: pages through more pairs than one list page holds', async () => {
  const s = await store(unique());
  const keys = Array.from({ length: 150 }, (_, index) => `k${String(index).padStart(3, '0')}`);
  assert.ok((await s.setMany(keys.map((key) => ({ key, value: key })))).every(Boolean));
  const seen: string[] = [];
  for await (const [key, value] of s.iterator()) {
    assert.is(value, key);
    seen.push(key as string);
  }
  assert.equal(seen, keys);
});

Storage('ttl: set(key, value, expires) is there until the deadline and gone after it, never before', async () => {
  const s = await store();
  const key = unique();
  const expires = Date.now() + 400;
  await s.set(key, 'brief', expires);
  assert.is(await s.get(key), 'brief');
  const gone = await goneAt(() => s.get(key), 'the key to expire');
  assert.ok(gone >= expires, `gone ${expires - gone} ms before its deadline`);
  assert.is(await s.has(key), false, 'has is false for an expired key');
});

Storage('ttl: a deadline already past does not persist, even over an older value', async () => {
  const s = await store();
  const key = unique();
  await s.set(key, 'older');
  assert.is(await s.set(key, 'stale', Date.now() - 300), true, 'accepted, not refused');
  assert.is(await s.get(key), undefined);
});

Storage('ttl: setMany with per-entry expires expires each entry on its own', async () => {
  const s = await store();
  const [brief, lasting] = [unique(), unique()];
  await s.setMany([{ key: brief, value: 'brief', expires: Date.now() + 300 }, { key: lasting, value: 'lasting' }]);
  assert.equal(await s.getMany([brief, lasting]), ['brief', 'lasting']);
  await goneAt(() => s.get(brief), 'the brief entry to expire');
  assert.is(await s.get(lasting), 'lasting');
});

Storage('namespace: a getter and setter, undefined unless given', async () => {
  const s = await store();
  assert.is(s.namespace, undefined);
  s.namespace = 'test-ns';
  assert.is(s.namespace, 'test-ns');
  s.namespace = undefined;
  assert.is(s.namespace, undefined);
  assert.is((await store('given')).namespace, 'given');
});

Storage('disconnect: closes a client the store made, twice is fine; a client it was given stays open', async () => {
  const { client, hubUrl } = await storageCluster();
  const own = new KeyvPbkv({ hubUrl });
  await own.set('own', 'v');
  await own.disconnect();
  await own.disconnect();
  const closed = await own.get('own').then(() => undefined, (error: KvError) => error);
  assert.is(closed?.code, 'UNAVAILABLE', 'its client is closed');
  const lent = new KeyvPbkv({ client });
  await lent.disconnect();
  assert.is(await client.get('own'), 'v', 'the lent client still works');
});

Storage('Keyv uses the store as it is (capabilities.expires), not through its bridge', async () => {
  const s = await store();
  assert.is(s.capabilities.expires, true);
  assert.is(new Keyv({ store: s }).store, s);
});

Storage.run();

// ---- Through Keyv, in both value modes (Keyv 6 test suite, Keyv tests) -----------------

const keyvDisposer = new Disposer();
const keyvCluster = sharedCluster(keyvDisposer);
const Through = suite('keyv: through Keyv, with its serialization (serialized) and without it (json)');
Through.after(() => keyvDisposer.dispose());

const MODES: Record<KeyvPbkvValues, (client: KvClient, namespace?: string) => Keyv> = {
  serialized: (client, namespace) => new Keyv({ store: new KeyvPbkv({ client }), ...(namespace ? { namespace } : {}) }),
  json: (client, namespace) => createKeyv({ client, namespace }),
};

async function keyvs(namespace?: string): Promise<[KeyvPbkvValues, Keyv][]> {
  const { client } = await keyvCluster();
  return Object.entries(MODES).map(([mode, make]) => [mode as KeyvPbkvValues, make(client, namespace ?? unique())]);
}

Through('api: set resolves true, get, get of a missing key, delete, has, each a promise', async () => {
  for (const [mode, keyv] of await keyvs()) {
    const key = unique();
    const setting = keyv.set(key, 'a value');
    assert.instance(setting, Promise, mode);
    assert.is(await setting, true, mode);
    assert.is(await keyv.get(key), 'a value', mode);
    assert.is(await keyv.get(unique()), undefined, mode);
    assert.is(await keyv.has(key), true, mode);
    assert.is(await keyv.has(unique()), false, mode);
    assert.is(await keyv.delete(key), true, mode);
    assert.is(await keyv.get(key), undefined, mode);
    assert.is(await keyv.delete(key), false, mode);
  }
});

Through('api: get([keys]) gives an array in order, undefined where missing or expired', async () => {
  for (const [mode, keyv] of await keyvs()) {
    const [key1, key2, key3] = [unique(), unique(), unique()];
    await keyv.set(key1, 'one');
    await keyv.set(key2, 'two', 300);
    await keyv.set(key3, 'three', 60_000);
    assert.equal(await keyv.get([key1, key2, key3]), ['one', 'two', 'three'], mode);
    assert.equal(await keyv.get([key1, unique(), key3]), ['one', undefined, 'three'], mode);
    assert.equal(await keyv.get([unique(), unique()]), [undefined, undefined], mode);
    await goneAt(async () => (await keyv.get([key1, key2]))[1], `${mode}: key2 to expire`);
    assert.equal(await keyv.get([key1, key2, key3]), ['one', undefined, 'three'], mode);
  }
});

Through('api: set(key, value, ttl) expires; delete([keys]) deletes many, false where missing', async () => {
  for (const [mode, keyv] of await keyvs()) {
    const key = unique();
    const expires = Date.now() + 300;
    await keyv.set(key, 'brief', 300);
    assert.is(await keyv.get(key), 'brief', mode);
    assert.ok((await goneAt(() => keyv.get(key), `${mode}: the key to expire`)) >= expires, mode);
    const [key1, key2] = [unique(), unique()];
    await keyv.set(key1, 1);
    await keyv.set(key2, 2);
    assert.equal(await keyv.delete([key1, key2, unique()]), [true, true, false], mode);
    assert.equal(await keyv.get([key1, key2]), [undefined, undefined], mode);
  }
});

Through('api and namespace: clear() empties its namespace and resolves undefined; other namespaces keep theirs', async () => {
  const { client } = await keyvCluster();
  for (const [mode, make] of Object.entries(MODES)) {
    const [mine, theirs] = [make(client, unique()), make(client, unique())];
    const [key1, key2] = [unique(), unique()];
    await mine.set(key1, 'mine');
    await mine.set(key2, 'mine');
    await theirs.set(key1, 'theirs');
    await theirs.set(key2, 'theirs');
    assert.is(await mine.clear(), undefined, mode);
    assert.equal(await mine.get([key1, key2]), [undefined, undefined], mode);
    assert.equal(await theirs.get([key1, key2]), ['theirs', 'theirs'], mode);
  }
});

Through('namespace: set/get and delete do not cross namespaces', async () => {
  const { client } = await keyvCluster();
  for (const [mode, make] of Object.entries(MODES)) {
    const [one, two] = [make(client, unique()), make(client, unique())];
    const key = unique();
    await one.set(key, 'one');
    await two.set(key, 'two');
    assert.equal([await one.get(key), await two.get(key)], ['one', 'two'], mode);
    assert.is(await one.delete(key), true, mode);
    assert.equal([await one.get(key), await two.get(key)], [undefined, 'two'], mode);
  }
});

Through('clear() of a Keyv without a namespace emits an error and deletes nothing', async () => {
  const { client } = await keyvCluster();
  for (const [mode, make] of Object.entries(MODES)) {
    const keyv = make(client);
    const errors = errorsOf(keyv);
    const key = unique();
    await keyv.set(key, 'kept');
    await keyv.clear();
    assert.is(errors.length, 1, mode);
    assert.match(String((errors[0] as Error).message), /would delete every key of the cluster/, mode);
    assert.is(await keyv.get(key), 'kept', mode);
  }
});

Through('values: false, 0, objects, strings with quotes, single-quote keys; a symbol is refused', async () => {
  for (const [mode, keyv] of await keyvs()) {
    const errors = errorsOf(keyv);
    const values: unknown[] = [false, 0, -1.5, { fizz: 'buzz', list: [1, '1', null] }, '"', "'", "''", 'a sentence', ''];
    for (const value of values) {
      const key = unique();
      assert.is(await keyv.set(key, value), true, `${mode}: ${JSON.stringify(value)}`);
      assert.equal(await keyv.get(key), value, `${mode}: ${JSON.stringify(value)}`);
    }
    assert.is(await keyv.set("'", "'"), true, mode);
    assert.is(await keyv.get("'"), "'", mode);
    assert.is(await keyv.set(unique(), Symbol('value')), false, mode);
    assert.is(errors.length, 1, `${mode}: the symbol's error`);
  }
});

Through("values: null, undefined, Buffers and BigInt need Keyv's serialization; json mode refuses them, saying so", async () => {
  const [[, serialized], [, json]] = (await keyvs()) as [[KeyvPbkvValues, Keyv], [KeyvPbkvValues, Keyv]];
  const key = unique;
  const nullKey = key();
  await serialized.set(nullKey, null);
  assert.is(await serialized.get(nullKey), null);
  const undefinedKey = key();
  await serialized.set(undefinedKey, undefined);
  assert.is(await serialized.get(undefinedKey), undefined);
  const buffers = key();
  await serialized.set(buffers, { buff: Buffer.from('buzz') });
  const read = (await serialized.get(buffers)) as { buff: Uint8Array };
  assert.is(Buffer.from(read.buff).toString(), 'buzz');
  const bigKeyv = new Keyv({
    store: new KeyvPbkv({ client: (await keyvCluster()).client }),
    namespace: unique(),
    serialization: { stringify: (data: unknown) => JSON.stringify(data, (_, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value)), parse: <T>(text: string) => JSON.parse(text, (_, value: unknown) => (typeof value === 'string' && /^\d+n$/.test(value) ? BigInt(value.slice(0, -1)) : value)) as T },
  });
  const big = key();
  await bigKeyv.set(big, 9223372036854775807n);
  assert.is(await bigKeyv.get(big), 9223372036854775807n, 'BigInt with a serializer of its own');

  const errors = errorsOf(json);
  for (const [value, said] of [[null, /cannot be null/], [undefined, /cannot be undefined/], [Buffer.from('bar'), /is a Buffer/], [{ at: new Date(0) }, /the value\.at is a Date/], [{ gap: undefined }, /the value\.gap is undefined/], [[1, Number.NaN], /the value\[1\] is NaN/], [10n, /is a bigint/]] as [unknown, RegExp][]) {
    const refusedKey = key();
    assert.is(await json.set(refusedKey, value), false, String(said));
    assert.match((errors.at(-1) as Error).message, said);
    assert.is(await json.get(refusedKey), undefined);
  }
});

Through('iterator: through Keyv, every value of its namespace, none of another, none expired', async () => {
  const { client } = await keyvCluster();
  for (const [mode, make] of Object.entries(MODES)) {
    const [keyv, other] = [make(client, unique()), make(client, unique())];
    const written = new Map(Array.from({ length: 5 }, (_, index) => [String(index), String(index + 10)]));
    await Promise.all([...written].map(([key, value]) => keyv.set(key, value)));
    await Promise.all([...written].map(([key]) => other.set(key, 'other')));
    const brief = Array.from({ length: 3 }, () => unique());
    await Promise.all(brief.map((key) => keyv.set(key, 'brief', 200)));
    await goneAt(async () => (await keyv.get(brief)).find((value) => value !== undefined), `${mode}: the brief keys to expire`);
    const seen = new Map<string, unknown>();
    for await (const [key, value] of keyv.iterator()) seen.set(key, value);
    assert.equal(seen, written, mode);
  }
});

Through.run();

// ---- What pbkv clients see of Keyv's keys ----------------------------------------------

const sharedDisposer = new Disposer();
const sharedKeys = sharedCluster(sharedDisposer);
const Shared = suite('keyv: pbkv clients read what Keyv wrote, under namespace:key');
Shared.after(() => sharedDisposer.dispose());

Shared('json: the value itself, at namespace:key, with the cluster keeping its expiry; what a client writes Keyv reads', async () => {
  const { client } = await sharedKeys();
  const namespace = unique();
  const keyv = createKeyv({ client, namespace, ttl: 60_000 });
  const before = Date.now();
  await keyv.set('user:1', { name: 'ann', tags: ['a', 'b'] });
  const entry = await client.getEntry(`${namespace}:user:1`);
  assert.equal(entry?.value, { name: 'ann', tags: ['a', 'b'] });
  assert.ok(entry?.expiresAt !== undefined && entry.expiresAt >= before + 60_000, "Keyv's default ttl is the key's expiry");
  await keyv.set('plain', 'text', 0);
  assert.is((await client.getEntry(`${namespace}:plain`))?.value, 'text', 'a string is stored as itself');
  await client.put(`${namespace}:from-pbkv`, 'hello');
  await client.incr(`${namespace}:hits`, 3);
  assert.equal(await keyv.get(['from-pbkv', 'hits']), ['hello', 3]);
  const brief = unique();
  await keyv.set(brief, 'x', 300);
  await goneAt(() => client.get(`${namespace}:${brief}`), 'the cluster to expire the key');
});

Shared("serialized: Keyv's text as a pbkv string; a number a pbkv client wrote reads as itself", async () => {
  const { client } = await sharedKeys();
  const namespace = unique();
  const keyv = new Keyv({ store: new KeyvPbkv({ client }), namespace });
  await keyv.set('user:1', { name: 'ann' });
  const stored = await client.get(`${namespace}:user:1`);
  assert.type(stored, 'string');
  assert.equal((JSON.parse(stored as string) as { value: unknown }).value, { name: 'ann' });
  await client.incr(`${namespace}:hits`, 2);
  assert.is(await keyv.get('hits'), 2);
});

Shared("a store whose values do not match Keyv's serialization says which setting to change", async () => {
  const { client } = await sharedKeys();
  const mismatched = [
    [new Keyv({ store: new KeyvPbkv({ client, values: 'json' }), namespace: unique() }), /give Keyv serialization: false/],
    [new Keyv({ store: new KeyvPbkv({ client }), namespace: unique(), serialization: false }), /give KeyvPbkv values: 'json' too/],
  ] as const;
  for (const [keyv, said] of mismatched) {
    const errors = errorsOf(keyv);
    assert.is(await keyv.set('k', 'v'), false);
    assert.match((errors[0] as Error).message, said);
  }
});

Shared('jsonProblem walks deep values without recursion and names the path', () => {
  let deep: unknown = 'leaf';
  for (let depth = 0; depth < 100_000; depth += 1) deep = [deep];
  assert.is(jsonProblem(deep), undefined);
  assert.is(jsonProblem({ a: [{ b: 1 }, { c: Infinity }] }), 'the value.a[1].c is Infinity, which JSON has no number for');
  assert.is(jsonProblem(Object.create(null) as object), undefined, 'an object without a prototype is plain');
});

Shared.run();
