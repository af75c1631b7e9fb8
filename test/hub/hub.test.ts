import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { proofFor } from '../../src/protocol/auth.js';
import { firstValueFrom } from 'rxjs';
import { HUB_FRAME_BYTES_MAX } from '../../src/constants.js';
import { Disposer, RawClient, proposeAlone, waitFor, within } from '../helpers.js';

const disposer = new Disposer();
const startHub = async (secret?: string) =>
  disposer.add(await new DirectoryHub(secret ? { secret } : { insecure: true }).listen(), (hub) => hub.close());
const client = (url: string, options: ConstructorParameters<typeof HubClient>[1] = {}) =>
  disposer.add(new HubClient(url, options), (c) => c.close());

const Hub = suite('hub: names and services');
Hub.after.each(() => disposer.dispose());

Hub('without a secret: register, resolve, lookup, status', async () => {
  const hub = await startHub();
  const node = client(hub.url, { name: 'n0' });
  await node.register('n0', 'ws://127.0.0.11:7401');
  await proposeAlone(node, 'n0');
  const reader = client(hub.url);
  assert.is(await reader.resolve('n0'), 'ws://127.0.0.11:7401');
  assert.equal(await reader.lookup('kv'), { node: 'n0', address: 'ws://127.0.0.11:7401' });
  const status = await reader.status();
  assert.equal([status.names, status.services], [{ n0: 'ws://127.0.0.11:7401' }, { kv: 'n0' }]);
});

Hub('unknown names and services are NOT_FOUND, and the connection keeps serving', async () => {
  const hub = await startHub();
  const raw = await RawClient.open(hub.url, disposer);
  const unknownName = await raw.ask({ id: 1, op: 'resolve', name: 'ghost' });
  assert.equal(unknownName['error'].code, 'NOT_FOUND');
  assert.equal((await raw.ask({ id: 2, op: 'lookup', service: 'kv' }))['error'].code, 'NOT_FOUND');
  assert.equal((await raw.ask('lookup kv'))['error'].code, 'NOT_FOUND');
  assert.equal((await raw.ask('{"id": 3, "op": "register", "name": "x"}'))['error'].code, 'BAD_REQUEST');
  assert.equal(await raw.ask({ id: 4, op: 'status' }), { id: 4, ok: true, names: {}, services: {}, nodes: {}, metrics: {} });
});

Hub('with a secret: lookups are open, registering needs the proof', async () => {
  const hub = await startHub('s3cret');
  const raw = await RawClient.open(hub.url, disposer);
  const refused = await raw.ask({ id: 1, op: 'register', name: 'n0', address: 'ws://127.0.0.1:1' });
  assert.is(refused['error'].code, 'UNAUTHORIZED');
  const hello = await raw.ask({ id: 2, op: 'hello', from: 'n0' });
  assert.type(hello['challenge'], 'string');
  const wrong = await raw.ask({ id: 3, op: 'auth', proof: proofFor('guess', hello['challenge'], 'n0', 'hub') });
  assert.is(wrong['error'].code, 'UNAUTHORIZED');
  assert.is((await raw.ask({ id: 4, op: 'register', name: 'n0', address: 'ws://127.0.0.1:1' }))['error'].code, 'UNAUTHORIZED');
  assert.equal((await client(hub.url).status()).names, {});

  const node = client(hub.url, { name: 'n0', secret: 's3cret' });
  await node.register('n0', 'ws://127.0.0.11:7401');
  await proposeAlone(node, 'n0');
  assert.equal(await client(hub.url).lookup('kv'), { node: 'n0', address: 'ws://127.0.0.11:7401' });
});

Hub('with a secret, a node registers only its own name', async () => {
  const hub = await startHub('s3cret');
  const n1 = client(hub.url, { name: 'n1', secret: 's3cret' });
  await n1.register('n0', 'ws://127.0.0.66:1').then(
    () => assert.unreachable('n1 must not register n0'),
    (error: { code: string }) => assert.is(error.code, 'FORBIDDEN'),
  );
  await client(hub.url, { name: 'n0', secret: 'wrong' }).register('n0', 'ws://127.0.0.66:1').then(
    () => assert.unreachable('a wrong secret must not register'),
    (error: { code: string }) => assert.is(error.code, 'UNAUTHORIZED'),
  );
});

Hub('resolveUntil$ waits for a late registration; it gives up at its deadline', async () => {
  const hub = await startHub();
  const waiter = client(hub.url);
  const resolved = firstValueFrom(waiter.resolveUntil$('late', 10_000));
  await client(hub.url, { name: 'late' }).register('late', 'ws://127.0.0.1:9');
  assert.is(await resolved, 'ws://127.0.0.1:9');
  await firstValueFrom(waiter.resolveUntil$('never', 200)).then(
    () => assert.unreachable('nobody registers "never"'),
    (error: { code: string; message: string }) => {
      assert.is(error.code, 'UNAVAILABLE');
      assert.match(error.message, /never/);
    },
  );
});

Hub('a node registers again with a hub that restarted', async () => {
  const first = await new DirectoryHub({ insecure: true }).listen();
  const port = Number(new URL(first.url).port);
  const node = client(first.url, { name: 'n0' });
  await node.register('n0', 'ws://127.0.0.11:7401');
  await first.close();
  const second = disposer.add(await new DirectoryHub({ port, insecure: true }).listen(), (hub) => hub.close());
  const reader = client(second.url);
  assert.is(await firstValueFrom(reader.resolveUntil$('n0', 10_000)), 'ws://127.0.0.11:7401');
});

Hub('names are bounded: a new one replaces the oldest that no live connection holds, else UNAVAILABLE', async () => {
  const hub = disposer.add(await new DirectoryHub({ insecure: true, namesMax: 2 }).listen(), (h) => h.close());
  const a = client(hub.url, { name: 'a' });
  const b = client(hub.url, { name: 'b' });
  await a.register('a', 'ws://127.0.0.1:1');
  await b.register('b', 'ws://127.0.0.1:2');
  const raw = await RawClient.open(hub.url, disposer);
  assert.is((await raw.ask({ id: 1, op: 'register', name: 'c', address: 'ws://127.0.0.1:3' }))['error'].code, 'UNAVAILABLE');
  await a.close();
  await waitFor('a\'s name to be released', async () => (await raw.ask({ id: 2, op: 'register', name: 'c', address: 'ws://127.0.0.1:3' }))['ok'] === true);
  assert.equal(Object.keys((await client(hub.url).status()).names).sort(), ['b', 'c']);
});

Hub('the hub reads frames up to HUB_FRAME_BYTES_MAX, the limit its clients read too', async () => {
  const hub = await startHub();
  const raw = await RawClient.open(hub.url, disposer);
  raw.send('x'.repeat(HUB_FRAME_BYTES_MAX + 1));
  assert.is(await raw.closed(), 1009);
  const big = await RawClient.open(hub.url, disposer);
  const reply = await big.ask(`{"id":1,"op":"status","pad":"${'x'.repeat(HUB_FRAME_BYTES_MAX - 100)}"}`);
  assert.is(reply['ok'], true);
});

Hub('a report made as the previous one is delivered reaches the hub (its reply and a heartbeat\'s in one read)', async () => {
  const hub = await startHub();
  const node = client(hub.url, { name: 'n0' });
  await node.register('n0', 'ws://127.0.0.11:7401');
  // What a node does at its first beat: report, then heartbeat, sent back to back; the
  // view in the heartbeat's reply makes it report again at once.
  const starting = node.report('n0', { state: 'starting', reason: 'n0 waits for a view from the hub' });
  const beat = { name: 'n0', epoch: 0, seq: 0, viewEpoch: 0, config: undefined, synced: undefined, caughtUp: undefined, behind: undefined, unreachable: undefined };
  const serving = node.heartbeat(beat, 5_000).then(() => node.report('n0', { state: 'serving' }));
  await within('both reports', Promise.all([starting, serving]));
  const reader = client(hub.url);
  assert.equal((await reader.status()).nodes['n0'], { state: 'serving' });
});

Hub('a heartbeat carries the health last reported: the hub\'s copy heals at the next beat', async () => {
  const hub = await startHub();
  const node = client(hub.url, { name: 'n0' });
  await node.register('n0', 'ws://127.0.0.11:7401');
  await node.report('n0', { state: 'degraded', reason: 'n1 refuses appends' });
  const raw = await RawClient.open(hub.url, disposer);
  // Another session overwrites it (as a lost or reordered report would leave it stale).
  await raw.ask({ id: 1, op: 'hello', from: 'n0' });
  assert.is((await raw.ask({ id: 2, op: 'report', name: 'n0', state: 'starting' }))['ok'], true);
  assert.equal((await client(hub.url).status()).nodes['n0'], { state: 'starting' });
  const beat = { name: 'n0', epoch: 0, seq: 0, viewEpoch: 0, config: undefined, synced: undefined, caughtUp: undefined, behind: undefined, unreachable: undefined };
  await node.heartbeat(beat, 5_000);
  assert.equal((await client(hub.url).status()).nodes['n0'], { state: 'degraded', reason: 'n1 refuses appends' });
});

Hub.run();
