import { WebSocketServer, type WebSocket } from 'ws';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Subscription } from 'rxjs';
import { KvClient } from '../../src/client/client.js';
import { CompactedError, type WatchEvent } from '../../src/client/watch.js';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { Disposer, proposeAlone, waitFor, type Frame } from '../helpers.js';

const disposer = new Disposer();
const Watch = suite('client: watch');
Watch.after.each(() => disposer.dispose());

/**
 * A node that plays the watch protocol as a test scripts it: every request it reads is
 * kept (in order, with the socket it came on) and handed to `answer`.
 */
class FakeNode {
  readonly requests: Frame[] = [];
  answer: (request: Frame, socket: WebSocket) => void = () => {};
  private constructor(readonly server: WebSocketServer) {
    server.on('connection', (socket) => {
      socket.on('error', () => {});
      socket.on('message', (data) => {
        const request = JSON.parse(data.toString()) as Frame;
        this.requests.push(request);
        this.answer(request, socket);
      });
    });
  }

  static async start(): Promise<FakeNode> {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    disposer.add(server, (s) => new Promise((resolve) => s.close(resolve)));
    await new Promise((resolve) => server.once('listening', resolve));
    return new FakeNode(server);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  watches(): Frame[] {
    return this.requests.filter((request) => request['op'] === 'watch');
  }
}

function send(socket: WebSocket, frame: Frame): void {
  socket.send(JSON.stringify(frame));
}

function watching(socket: WebSocket, request: Frame, version: number): void {
  send(socket, { id: request['id'], ok: true, watching: true, version });
}

function put(socket: WebSocket, request: Frame, key: string, version: number): void {
  send(socket, { id: request['id'], event: 'put', key, value: { v: version }, version });
}

/** A hub whose `kv` is a fake node (registered as `fake`), and a client of it. */
async function clientOf(node: FakeNode): Promise<{ client: KvClient; registrar: HubClient }> {
  const secret = 'watch-test-secret';
  const hub = disposer.add(await new DirectoryHub({ port: 0, secret }).listen(), (h) => h.close());
  const registrar = disposer.add(new HubClient(hub.url, { name: 'fake', secret }), (c) => c.close());
  await registrar.register('fake', node.url);
  await proposeAlone(registrar, 'fake');
  const client = disposer.add(new KvClient({ hubUrl: hub.url, requestTimeoutMs: 2_000 }), (c) => c.close());
  return { client, registrar };
}

/** Subscribes, collecting events and the error, until the test ends. */
function collect(subscribe: (observer: { next(event: WatchEvent): void; error(error: unknown): void }) => Subscription) {
  const events: WatchEvent[] = [];
  const seen: { error?: unknown } = {};
  const subscription = subscribe({ next: (event) => events.push(event), error: (error) => (seen.error = error) });
  disposer.add(subscription, (s) => s.unsubscribe());
  return { events, seen, subscription };
}

const versions = (events: WatchEvent[]) => events.map((event) => `${event.type}@${event.version}`);

Watch('events arrive in version order, each once: one at or below the last delivered is dropped', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    watching(socket, request, 22);
    put(socket, request, 'user:18', 19);
    send(socket, { id: request['id'], event: 'del', key: 'user:3', version: 21 });
    put(socket, request, 'user:18', 19);
    send(socket, { id: request['id'], event: 'clear', prefix: 'user:', keys: ['user:1', 'user:18'], version: 23 });
    // Another id's event is not this watch's.
    put(socket, { id: 999 }, 'user:9', 24);
  };
  const { client } = await clientOf(node);
  const { events } = collect((observer) => client.watch({ prefix: 'user:' }, { fromVersion: 18 }).subscribe(observer));
  await waitFor('three events', () => events.length >= 3);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(events, [
    { type: 'put', key: 'user:18', value: { v: 19 }, version: 19 },
    { type: 'del', key: 'user:3', version: 21 },
    { type: 'clear', prefix: 'user:', keys: ['user:1', 'user:18'], version: 23 },
  ]);
  assert.equal(node.watches().map((w) => [w['prefix'], w['fromVersion'], w['key']]), [['user:', 18, undefined]]);
});

Watch('after the connection drops, it watches again from the last version delivered + 1; the repeat at the seam is dropped', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    const tries = node.watches().length;
    watching(socket, request, 6);
    if (tries === 1) {
      put(socket, request, 'a', 5);
      put(socket, request, 'b', 6);
      setTimeout(() => socket.terminate(), 20);
    } else {
      put(socket, request, 'b', 6);
      put(socket, request, 'c', 7);
    }
  };
  const { client } = await clientOf(node);
  const { events } = collect((observer) => client.watch({ prefix: '' }, { fromVersion: 5 }).subscribe(observer));
  await waitFor('the resumed watch', () => events.length >= 3);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(versions(events), ['put@5', 'put@6', 'put@7']);
  assert.equal(node.watches().map((w) => w['fromVersion']), [5, 7]);
});

Watch('a watch without fromVersion resumes after the version of its first reply when nothing came', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    watching(socket, request, 40 + node.watches().length);
    if (node.watches().length === 1) setTimeout(() => socket.terminate(), 20);
  };
  const { client } = await clientOf(node);
  collect((observer) => client.watch({ key: 'k' }).subscribe(observer));
  await waitFor('a second watch', () => node.watches().length >= 2);
  assert.equal(node.watches().map((w) => [w['key'], w['fromVersion']]), [['k', undefined], ['k', 42]]);
});

Watch('a cancelled watch is watched again from the last version delivered + 1', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    watching(socket, request, 10);
    if (node.watches().length === 1) {
      put(socket, request, 'a', 8);
      send(socket, { id: request['id'], event: 'cancelled', error: { code: 'UNAVAILABLE', message: 'too slow' }, version: 8 });
      // Nothing after a cancelled is the watch's.
      put(socket, request, 'late', 9);
    } else {
      put(socket, request, 'b', 9);
    }
  };
  const { client } = await clientOf(node);
  const { events, seen } = collect((observer) => client.watch({ prefix: '' }, { fromVersion: 3 }).subscribe(observer));
  await waitFor('the resumed watch', () => events.length >= 2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(events.map((event) => 'key' in event && event.key), ['a', 'b']);
  assert.equal(node.watches().map((w) => w['fromVersion']), [3, 9]);
  assert.is(seen.error, undefined);
  assert.not.ok(node.requests.some((r) => r['op'] === 'unwatch'), 'a cancelled watch needs no unwatch');
});

Watch('after a failover it looks kv up again and resumes on the new primary', async () => {
  const old = await FakeNode.start();
  const next = await FakeNode.start();
  old.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    watching(socket, request, 3);
    put(socket, request, 'a', 3);
  };
  next.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    watching(socket, request, 4);
    put(socket, request, 'b', 4);
  };
  const { client, registrar } = await clientOf(old);
  const { events } = collect((observer) => client.watch({ prefix: '' }, { fromVersion: 3 }).subscribe(observer));
  await waitFor('the first event', () => events.length >= 1);
  await registrar.register('fake', next.url);
  for (const socket of old.server.clients) socket.terminate();
  await waitFor('the event from the new primary', () => events.length >= 2);
  assert.equal(versions(events), ['put@3', 'put@4']);
  assert.equal(next.watches().map((w) => w['fromVersion']), [4]);
});

Watch('unsubscribing sends unwatch with the watch\'s id, on the same connection, which stays open', async () => {
  const node = await FakeNode.start();
  let watchSocket: WebSocket | undefined;
  node.answer = (request, socket) => {
    if (request['op'] === 'watch') {
      watchSocket = socket;
      watching(socket, request, 1);
      put(socket, request, 'a', 1);
    } else if (request['op'] === 'unwatch') {
      send(socket, { id: request['id'], ok: true });
    } else if (request['op'] === 'get') {
      send(socket, { id: request['id'], ok: true, found: true, value: socket === watchSocket ? 'same' : 'other', version: 1 });
    }
  };
  const { client } = await clientOf(node);
  const { events, subscription } = collect((observer) => client.watch({ prefix: '' }, { fromVersion: 1 }).subscribe(observer));
  await waitFor('an event', () => events.length >= 1);
  subscription.unsubscribe();
  const unwatch = await waitFor('the unwatch', () => node.requests.find((r) => r['op'] === 'unwatch'));
  assert.is(unwatch['watch'], node.watches()[0]!['id']);
  assert.is(await client.get('x'), 'same', 'the connection is kept for other requests');
  assert.is(node.watches().length, 1, 'not watched again');
});

Watch('COMPACTED ends the watch with a CompactedError carrying the oldest version kept; it is not retried', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] !== 'watch') return;
    send(socket, { id: request['id'], ok: false, error: { code: 'COMPACTED', message: 'changes before 50 are gone', version: 50 } });
  };
  const { client } = await clientOf(node);
  const { events, seen } = collect((observer) => client.watch({ prefix: 'user:' }, { fromVersion: 2 }).subscribe(observer));
  await waitFor('the error', () => seen.error);
  assert.instance(seen.error, CompactedError);
  assert.is((seen.error as CompactedError).code, 'COMPACTED');
  assert.is((seen.error as CompactedError).version, 50);
  assert.is(events.length, 0);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.is(node.watches().length, 1);
});

Watch("onCompacted 'relist': a snapshot, the listed entries as puts, then the changes after the list's version, none twice", async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] === 'list') {
      // b was written (at 52) after the list's version (51) was taken, before its page was read.
      send(socket, { id: request['id'], ok: true, entries: [{ key: 'user:a', value: 'A', version: 40 }, { key: 'user:b', value: 'B', version: 52 }], more: false, version: 51 });
    } else if (request['op'] === 'watch' && node.watches().length === 1) {
      send(socket, { id: request['id'], ok: false, error: { code: 'COMPACTED', message: 'gone', version: 30 } });
    } else if (request['op'] === 'watch') {
      watching(socket, request, 53);
      put(socket, request, 'user:b', 52);
      put(socket, request, 'user:c', 53);
    }
  };
  const { client } = await clientOf(node);
  const { events, seen } = collect((observer) => client.watch({ prefix: 'user:' }, { fromVersion: 2, onCompacted: 'relist' }).subscribe(observer));
  await waitFor('the change after the list', () => events.length >= 4);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.is(seen.error, undefined);
  assert.equal(events, [
    { type: 'snapshot', prefix: 'user:', version: 51 },
    { type: 'put', key: 'user:a', value: 'A', version: 40 },
    { type: 'put', key: 'user:b', value: 'B', version: 52 },
    { type: 'put', key: 'user:c', value: { v: 53 }, version: 53 },
  ]);
  assert.equal(node.watches().map((w) => w['fromVersion']), [2, 52]);
  assert.equal(node.requests.find((r) => r['op'] === 'list')?.['prefix'], 'user:');
});

Watch('a node error other than UNAVAILABLE or NOT_PRIMARY ends the watch with it', async () => {
  const node = await FakeNode.start();
  node.answer = (request, socket) => {
    if (request['op'] === 'watch') send(socket, { id: request['id'], ok: false, error: { code: 'BAD_REQUEST', message: 'prefix must be a string' } });
  };
  const { client } = await clientOf(node);
  const { seen } = collect((observer) => client.watch({ prefix: 'p' }).subscribe(observer));
  await waitFor('the error', () => seen.error);
  assert.is((seen.error as { code: string }).code, 'BAD_REQUEST');
});

Watch.run();
