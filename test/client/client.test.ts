import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { KvNode } from '../../src/node/node.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import { GatedStore, storedValue } from '../stores.js';
import { Disposer, proposeAlone, tempDir, waitFor } from '../helpers.js';
import { WebSocketServer } from 'ws';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';

const disposer = new Disposer();
const Client = suite('client: library');
Client.after.each(() => disposer.dispose());

Client('get, put, del as promises; types kept; errors as KvError codes', async () => {
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), sync: 'memory', replicas: 1 }), (c) => c.close());
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await client.put('n', 1);
  await client.put('s', '1');
  assert.is(await client.get('n'), 1);
  assert.is(await client.get('s'), '1');
  assert.is(await client.get('missing'), undefined);
  assert.is(await client.del('n'), true);
  assert.is(await client.del('n'), false);
  await client.put('', 1).then(
    () => assert.unreachable('empty key'),
    (error: { code: string }) => assert.is(error.code, 'BAD_REQUEST'),
  );
  await client.put('x'.repeat(2000), 1).then(
    () => assert.unreachable('key over the limit'),
    (error: { code: string }) => assert.is(error.code, 'TOO_LARGE'),
  );
});

Client('a request times out with UNAVAILABLE instead of hanging', async () => {
  const dataDir = await tempDir(disposer);
  // Replica n1 holds every batch: the primary cannot get an ack.
  const held = new GatedStore(new MemoryStore());
  held.closeGate();
  const cluster = disposer.add(
    await startInProcessCluster({ dataDir, sync: 'memory', replicas: 1, nodeOptions: { ackTimeoutMs: 60_000 }, perNode: { n1: { store: held } } }),
    async (c) => {
      held.openGate();
      await c.close();
    },
  );
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl, requestTimeoutMs: 200 }), (c) => c.close());
  await client.put('k', 1).then(
    () => assert.unreachable('nobody acks'),
    (error: { code: string; message: string }) => {
      assert.is(error.code, 'UNAVAILABLE');
      assert.match(error.message, /200 ms/);
    },
  );
});

Client('a write whose first try may have been applied ends UNAVAILABLE, whatever later tries are told', async () => {
  // A "primary" that takes the put and dies before replying (the write may be applied), then
  // answers every later try NOT_PRIMARY, as a node that lost its primaryship would.
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  disposer.add(server, (s) => new Promise((resolve) => s.close(resolve)));
  await new Promise((resolve) => server.once('listening', resolve));
  let tries = 0;
  server.on('connection', (socket) => {
    socket.on('message', (data) => {
      const request = JSON.parse(data.toString()) as { id: number };
      tries += 1;
      if (tries === 1) socket.terminate();
      else socket.send(JSON.stringify({ id: request.id, ok: false, error: { code: 'NOT_PRIMARY', message: 'not the primary any more' } }));
    });
  });
  const secret = 'client-test-secret';
  const hub = disposer.add(await new DirectoryHub({ port: 0, secret }).listen(), (h) => h.close());
  const registrar = disposer.add(new HubClient(hub.url, { name: 'fake', secret }), (c) => c.close());
  await registrar.register('fake', `ws://127.0.0.1:${(server.address() as { port: number }).port}`);
  await proposeAlone(registrar, 'fake');
  const client = disposer.add(new KvClient({ hubUrl: hub.url, retryDeadlineMs: 300 }), (c) => c.close());
  const error = await client.put('k', 1).then(() => undefined, (failed: { code: string; message: string }) => failed);
  assert.ok(tries >= 2, `the write was tried ${tries} times`);
  assert.is(error?.code, 'UNAVAILABLE', 'not NOT_PRIMARY: the first try may have been applied');
  assert.match(error!.message, /may have been applied.*NOT_PRIMARY/);
});

Client('after the primary restarts elsewhere, the client looks it up again', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = disposer.add(await startInProcessCluster({ dataDir, replicas: 0 }), (c) => c.close());
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await client.put('k', 'v1');
  const { options } = cluster.primary;
  await cluster.primary.close();
  const restarted = disposer.add(new KvNode({ ...options, port: 0 }), (n) => n.close());
  await restarted.init();
  await restarted.startServices();
  assert.is.not(restarted.url, cluster.primary.url);
  // The first request after the drop may fail (the connection closed under it); the next reconnects.
  const value = await waitFor('a reconnect', () => client.get('k').catch(() => undefined));
  assert.is(value, 'v1');
  await client.put('k', 'v2');
  assert.is(storedValue(restarted.storage, 'k'), 'v2');
});

Client.run();
