import { WebSocketServer } from 'ws';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { ConflictError, type ListPage } from '../../src/client/data-api.js';
import { startInProcessCluster, type InProcessCluster } from '../../src/cluster/in-process.js';
import { KvError } from '../../src/errors.js';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { Disposer, proposeAlone, tempDir, waitFor } from '../helpers.js';
import { storedValue } from '../stores.js';

const disposer = new Disposer();
const DataApi = suite('client: versions, conditions, counters, expiry, listing');
DataApi.after.each(() => disposer.dispose());

async function running(): Promise<{ cluster: InProcessCluster; client: KvClient }> {
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), sync: 'memory', replicas: 1 }), (c) => c.close());
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  return { cluster, client };
}

/** The error a promise fails with; fails the test if it resolves. */
async function failure(promise: Promise<unknown>, what: string): Promise<KvError> {
  return promise.then(
    (value) => assert.unreachable(`${what} resolved with ${JSON.stringify(value)}`),
    (error: unknown) => {
      assert.instance(error, KvError, what);
      return error as KvError;
    },
  ) as Promise<KvError>;
}

DataApi('put resolves with its version; getEntry gives value, version and expiry; get still gives the value alone', async () => {
  const { client } = await running();
  const first = await client.put('color', 'blue');
  const second = await client.put('color', 'red');
  assert.ok(Number.isSafeInteger(first) && first > 0, `a version: ${first}`);
  assert.ok(second > first, `versions grow: ${first}, then ${second}`);
  assert.equal(await client.getEntry('color'), { value: 'red', version: second });
  assert.is(await client.get('color'), 'red');
  assert.is(await client.getEntry('absent'), undefined);
  const deleted = await client.delEntry('color');
  assert.equal(deleted, { found: true, version: second + 1 }, "a del's own version");
  assert.is((await client.delEntry('color')).found, false);
});

DataApi('a failed condition is a ConflictError with the key\'s found and version, and writes nothing', async () => {
  const { cluster, client } = await running();
  const version = await client.put('lock', 'ann', { ifVersion: 0 });
  const taken = await failure(client.put('lock', 'bob', { ifVersion: 0 }), 'a second put if absent');
  assert.instance(taken, ConflictError);
  assert.is(taken.code, 'CONFLICT');
  assert.is((taken as ConflictError).found, true);
  assert.is((taken as ConflictError).version, version);
  assert.is(storedValue(cluster.replicas[0]!.storage, 'lock'), 'ann', 'nothing written');

  const stale = await failure(client.del('lock', { ifVersion: version + 100 }), 'a del at the wrong version');
  assert.instance(stale, ConflictError);
  assert.is((stale as ConflictError).version, version);
  const absent = await failure(client.incr('nothing', 1, { ifVersion: 3 }), 'an incr of an absent key at version 3');
  assert.equal([(absent as ConflictError).found, (absent as ConflictError).version], [false, 0]);

  assert.is(await client.del('lock', { ifVersion: version }), true, 'the right version deletes');
  assert.is(await client.get('lock'), undefined);
});

DataApi('incr counts from 0, by 1 or by any finite number; a key that is not a number is BAD_REQUEST', async () => {
  const { client } = await running();
  const one = await client.incr('hits');
  assert.is(one.value, 1);
  const six = await client.incr('hits', 5);
  assert.equal(six, { value: 6, version: one.version + 1 });
  assert.is((await client.incr('hits', -0.5)).value, 5.5);
  assert.is(await client.get('hits'), 5.5, 'a counter is a number any client reads');
  await client.put('name', 'ann');
  const notNumber = await failure(client.incr('name'), 'an incr of a string');
  assert.is(notNumber.code, 'BAD_REQUEST');
  assert.not.instance(notNumber, ConflictError);
  assert.is(await client.get('name'), 'ann');
});

DataApi('ttlMs and expiresAt: the entry says when, and the key is gone after it', async () => {
  const { client } = await running();
  const before = Date.now();
  await client.put('session', 's1', { ttlMs: 300 });
  const entry = await client.getEntry('session');
  assert.ok(entry?.expiresAt !== undefined && entry.expiresAt >= before + 300 && entry.expiresAt <= Date.now() + 300, `expires 300 ms after the put: ${entry?.expiresAt}`);
  const at = Date.now() + 60_000;
  await client.put('later', 'v', { expiresAt: at });
  assert.is((await client.getEntry('later'))?.expiresAt, at);
  await client.put('later', 'v2');
  assert.is((await client.getEntry('later'))?.expiresAt, undefined, 'a put without expiry clears it');
  const counted = await client.incr('visits', 1, { ttlMs: 60_000 });
  await client.incr('visits');
  assert.ok((await client.getEntry('visits'))?.expiresAt !== undefined, 'an incr without expiry keeps it');
  assert.ok(counted.version > 0);
  const both = await failure(client.put('k', 'v', { ttlMs: 10, expiresAt: at }), 'ttlMs and expiresAt');
  assert.is(both.code, 'BAD_REQUEST');
  await waitFor('the session to expire', async () => (await client.get('session')) === undefined, 10_000);
});

DataApi('list pages through more keys than a page holds, in byte order, only the prefix, following after', async () => {
  const { client } = await running();
  const keys = Array.from({ length: 23 }, (_, index) => `user:${String(index).padStart(2, '0')}`);
  await Promise.all(keys.map((key, index) => client.put(key, { n: index })));
  await Promise.all(['user', 'users:1', 'a', 'zz'].map((key) => client.put(key, 'other')));
  const pages: ListPage[] = [];
  for await (const page of client.list('user:', { limit: 10 })) pages.push(page);
  assert.equal(pages.map((page) => page.entries.length), [10, 10, 3]);
  assert.equal(pages.map((page) => page.more), [true, true, false]);
  assert.equal(pages.flatMap((page) => page.entries.map((entry) => entry.key)), keys);
  assert.equal(pages[2]!.entries.at(-1)!.value, { n: 22 });
  assert.ok(pages.every((page) => page.version > 0 && page.entries.every((entry) => entry.version > 0 && entry.version <= page.version)));

  const after: string[] = [];
  for await (const page of client.list('user:', { after: 'user:19', values: false })) after.push(...page.entries.map((entry) => (assert.is(entry.value, undefined), entry.key)));
  assert.equal(after, ['user:20', 'user:21', 'user:22'], 'after, exclusive; values: false lists keys and versions only');
  const none: ListPage[] = [];
  for await (const page of client.list('nobody:')) none.push(page);
  assert.equal(none.map((page) => [page.entries, page.more]), [[[], false]], 'one empty page');
});

DataApi('clear sends clear until nothing is left and counts every key it deleted; other prefixes stay', async () => {
  const { cluster, client } = await running();
  const keys = Array.from({ length: 25 }, (_, index) => `session:${index}`);
  await Promise.all([...keys.map((key) => client.put(key, 1)), client.put('sessions', 'kept'), client.put('user:1', 'kept')]);
  assert.is(await client.clear('session:', { limit: 10 }), 25, 'three writes of at most 10 keys');
  assert.is(await client.clear('session:'), 0);
  let left = 0;
  for await (const page of client.list('')) left += page.entries.length;
  assert.is(left, 2);
  assert.is(storedValue(cluster.replicas[0]!.storage, 'sessions'), 'kept');
  assert.is(storedValue(cluster.replicas[0]!.storage, 'session:7'), undefined, 'replicated');
});

/**
 * A fake primary registered at a real hub: `answer` gets each request frame and the try's
 * number, and returns the reply (or undefined to drop the connection without one).
 */
async function fakePrimary(answer: (request: Record<string, unknown>, tries: number) => Record<string, unknown> | undefined): Promise<{ hubUrl: string; requests: Record<string, unknown>[] }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  disposer.add(server, (s) => new Promise((resolve) => s.close(resolve)));
  await new Promise((resolve) => server.once('listening', resolve));
  const requests: Record<string, unknown>[] = [];
  server.on('connection', (socket) => {
    socket.on('message', (data) => {
      const request = JSON.parse(data.toString()) as Record<string, unknown>;
      requests.push(request);
      const reply = answer(request, requests.length);
      if (reply === undefined) socket.terminate();
      else socket.send(JSON.stringify({ id: request['id'], ...reply }));
    });
  });
  const secret = 'data-api-test-secret';
  const hub = disposer.add(await new DirectoryHub({ port: 0, secret }).listen(), (h) => h.close());
  const registrar = disposer.add(new HubClient(hub.url, { name: 'fake', secret }), (c) => c.close());
  await registrar.register('fake', `ws://127.0.0.1:${(server.address() as { port: number }).port}`);
  await proposeAlone(registrar, 'fake');
  return { hubUrl: hub.url, requests };
}

DataApi('incr and clear carry a request tag, and a retry after a lost reply carries the same one', async () => {
  const { hubUrl, requests } = await fakePrimary((request, tries) => {
    if (tries % 2 === 1) return undefined;
    return request['op'] === 'incr' ? { ok: true, value: 7, version: 40 } : { ok: true, deleted: 3, more: false, version: 41 };
  });
  const client = disposer.add(new KvClient({ hubUrl }), (c) => c.close());
  assert.equal(await client.incr('hits', 2), { value: 7, version: 40 });
  assert.is(await client.clear('session:'), 3);
  const tags = requests.map((request) => [request['op'], request['client'], request['req']]);
  assert.equal(tags, [
    ['incr', client.id, 1],
    ['incr', client.id, 1],
    ['clear', client.id, 2],
    ['clear', client.id, 2],
  ]);
  assert.is(requests[0]!['by'], 2);
});

DataApi('a CONFLICT or BAD_REQUEST on the retry of a write that may have been applied is definite, not UNAVAILABLE', async () => {
  const { hubUrl } = await fakePrimary((request, tries) => {
    if (tries % 2 === 1) return undefined;
    const error = request['op'] === 'put' ? { code: 'CONFLICT', message: 'k is at version 9, not 0', found: true, version: 9 } : { code: 'BAD_REQUEST', message: 'hits is not a number' };
    return { ok: false, error };
  });
  const client = disposer.add(new KvClient({ hubUrl }), (c) => c.close());
  const conflict = await failure(client.put('k', 'v', { ifVersion: 0 }), 'a put whose retry conflicts');
  assert.instance(conflict, ConflictError);
  assert.equal([(conflict as ConflictError).found, (conflict as ConflictError).version], [true, 9]);
  const bad = await failure(client.incr('hits'), 'an incr whose retry is refused');
  assert.is(bad.code, 'BAD_REQUEST');
  assert.is(bad.message, 'hits is not a number');
});

DataApi.run();
