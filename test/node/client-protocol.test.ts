import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PEER_FRAME_BYTES_MAX } from '../../src/constants.js';
import { DirectoryHub } from '../../src/hub/hub.js';
import { KvNode, type KvNodeOptions } from '../../src/node/node.js';
import { BAD_FRAMES } from '../protocol/bad-frames.js';
import { Disposer, RawClient, tempDir } from '../helpers.js';

const disposer = new Disposer();
const SECRET = 'client-protocol-test-secret';

/** A hub and a lone primary on a real SQLite file, with small limits to reach them quickly. */
async function startPrimary(options: Partial<KvNodeOptions> = {}): Promise<KvNode> {
  const dir = await tempDir(disposer);
  const hub = disposer.add(await new DirectoryHub({ secret: SECRET }).listen(), (h) => h.close());
  const node = disposer.add(
    new KvNode({
      name: 'n0', role: 'primary', replicas: [], hubUrl: hub.url, secret: SECRET, dataFile: path.join(dir, 'n0.sqlite'),
      keyBytesMax: 16, valueBytesMax: 32, frameBytesMax: 1024, ...options,
    }),
    (n) => n.close(),
  );
  await node.init();
  await node.startServices();
  // The node serves once the hub has made it the primary of the first view.
  await node.settled(10_000);
  return node;
}

const Protocol = suite('node: client protocol');
Protocol.after.each(() => disposer.dispose());

Protocol('the session of PROTOCOL.md, reply for reply', async () => {
  const client = await RawClient.open((await startPrimary()).url, disposer);
  assert.equal(await client.ask({ id: 1, op: 'put', key: 'color', value: 'blue' }), { id: 1, ok: true, version: 1 });
  assert.equal(await client.ask({ id: 2, op: 'get', key: 'color' }), { id: 2, ok: true, found: true, value: 'blue', version: 1 });
  assert.equal(await client.ask({ id: 3, op: 'del', key: 'color' }), { id: 3, ok: true, found: true, version: 2 });
  assert.equal(await client.ask({ id: 4, op: 'get', key: 'color' }), { id: 4, ok: true, found: false });
  // A del of an absent key is a write too: it takes a seq, and the key's version stays 0.
  assert.equal(await client.ask({ id: 5, op: 'del', key: 'color' }), { id: 5, ok: true, found: false, version: 3 });
});

Protocol('what was put is what get returns, type included', async () => {
  const client = await RawClient.open((await startPrimary({ valueBytesMax: 1024 })).url, disposer);
  const values: unknown[] = ['1', 1, 1.5, -0.25, 0, '', true, false, [], {}, [1, '1', null, { a: [true] }], { 'ключ': 'знач', emoji: '🦀' }, ':colon', ':base64:AAA', 'x'.repeat(500)];
  for (const [index, value] of values.entries()) {
    assert.equal(await client.ask({ id: index, op: 'put', key: `k${index}`, value }), { id: index, ok: true, version: index + 1 });
  }
  for (const [index, value] of values.entries()) {
    assert.equal(await client.ask({ id: index, op: 'get', key: `k${index}` }), { id: index, ok: true, found: true, value, version: index + 1 });
  }
});

Protocol('every bad frame gets its error code, and the connection keeps serving', async () => {
  const client = await RawClient.open((await startPrimary()).url, disposer);
  await client.ask({ id: 'seed', op: 'put', key: 'alive', value: 42 });
  for (const [frame, code, id] of BAD_FRAMES) {
    const reply = await client.ask(frame);
    assert.is(reply['ok'], false, frame);
    assert.is(reply['id'], id, frame);
    assert.is(reply['error'].code, code, frame);
    assert.type(reply['error'].message, 'string');
    assert.equal(await client.ask({ id: 'probe', op: 'get', key: 'alive' }), { id: 'probe', ok: true, found: true, value: 42, version: 1 }, `after ${frame}`);
  }
});

Protocol('2,000 pipelined requests on one connection are each answered once, by id', async () => {
  const client = await RawClient.open((await startPrimary()).url, disposer);
  const count = 2000;
  for (let i = 0; i < count; i += 1) {
    client.send(i % 2 === 0 ? { id: i, op: 'put', key: `k${i % 100}`, value: i } : { id: i, op: 'get', key: `k${(i - 1) % 100}` });
  }
  const seen = new Map<number, Record<string, any>>();
  for (let i = 0; i < count; i += 1) {
    const reply = await client.next();
    assert.not.ok(seen.has(reply['id']), `id ${reply['id']} answered twice`);
    seen.set(reply['id'], reply);
  }
  for (let i = 0; i < count; i += 1) {
    const reply = seen.get(i)!;
    assert.is(reply['ok'], true, `id ${i}`);
    // A get sent right after its put, on the same connection, sees that put (or a later one of its key).
    if (i % 2 === 1) assert.ok(reply['found'] === true && reply['value'] >= i - 1, `get ${i} saw ${JSON.stringify(reply)}`);
  }
});

Protocol('text commands for a wscat prompt', async () => {
  const client = await RawClient.open((await startPrimary()).url, disposer);
  assert.equal(await client.ask('put color light blue'), { id: null, ok: true, version: 1 });
  assert.equal(await client.ask('get color'), { id: null, ok: true, found: true, value: 'light blue', version: 1 });
  assert.equal(await client.ask('del color'), { id: null, ok: true, found: true, version: 2 });
  // A person reads the help as lines of text, not as a JSON string full of \n.
  const help = await client.ask('help');
  assert.type(help['text'], 'string');
  assert.ok(help['text'].split('\n').some((line: string) => /^\s*put KEY VALUE\s+store VALUE/.test(line)));
  assert.is((await client.ask('fly away')).error.code, 'BAD_REQUEST');
});

Protocol('a frame over the frame limit gets TOO_LARGE; the connection stays', async () => {
  const client = await RawClient.open((await startPrimary()).url, disposer);
  const reply = await client.ask({ id: 1, op: 'put', key: 'a', value: 'x'.repeat(2000) });
  assert.equal(reply['error'].code, 'TOO_LARGE');
  assert.is(reply['id'], null);
  assert.equal(await client.ask({ id: 2, op: 'put', key: 'a', value: 'ok' }), { id: 2, ok: true, version: 1 });
});

Protocol('a frame over the read limit (ws maxPayload) closes the connection with 1009', async () => {
  const node = await startPrimary();
  const client = await RawClient.open(node.url, disposer);
  client.send('x'.repeat(PEER_FRAME_BYTES_MAX + 1));
  assert.is(await client.closed(), 1009);
  const next = await RawClient.open(node.url, disposer);
  assert.equal(await next.ask({ id: 1, op: 'get', key: 'a' }), { id: 1, ok: true, found: false });
});

Protocol('connections past the limit are closed with 1013; the others keep serving', async () => {
  const node = await startPrimary({ connectionsMax: 3 });
  const clients = await Promise.all([1, 2, 3].map(() => RawClient.open(node.url, disposer)));
  const extra = await RawClient.open(node.url, disposer);
  assert.is(await extra.closed(), 1013);
  for (const [index, client] of clients.entries()) {
    assert.equal(await client.ask({ id: index, op: 'get', key: 'a' }), { id: index, ok: true, found: false });
  }
});

Protocol('close() releases the port and can be called twice', async () => {
  const node = await startPrimary();
  const client = await RawClient.open(node.url, disposer);
  await node.close();
  await node.close();
  assert.ok((await client.closed()) > 0);
});

Protocol.run();
