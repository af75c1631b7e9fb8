import { createHash } from 'node:crypto';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PEER_PATH } from '../../src/constants.js';
import type { Connection, ListenOptions, Listener } from '../../src/env/transport.js';
import { connect, listen } from '../../src/transport/ws-transport.js';
import { Disposer, RawClient, waitFor, within } from '../helpers.js';

const disposer = new Disposer();
const Transport = suite('transport: ws listener and connections');
Transport.after.each(() => disposer.dispose());

/** A listener that echoes every frame, keeping what it accepted. */
async function echoServer(options: Partial<ListenOptions> = {}): Promise<{ listener: Listener; accepted: Connection[]; errors: Error[] }> {
  const accepted: Connection[] = [];
  const errors: Error[] = [];
  const listener = await listen({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 1024,
    connectionsMax: 16,
    onConnection: (connection) => {
      accepted.push(connection);
      connection.frames$.subscribe((text) => connection.send(text));
    },
    onError: (error) => errors.push(error),
    ...options,
  });
  disposer.add(listener, (l) => l.close());
  return { listener, accepted, errors };
}

function halfOpen(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: '127.0.0.1', port }, () => {
      socket.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
      resolve(socket);
    });
    socket.on('error', reject);
    disposer.add(socket, (s) => s.destroy());
  });
}

Transport('half-open handshakes are capped and timed out; a new client is still served', async () => {
  const { listener } = await echoServer({ handshakesMax: 8, handshakeTimeoutMs: 400 });
  const sockets = await Promise.all(Array.from({ length: 40 }, () => halfOpen(listener.port)));
  const closed = sockets.map((socket) => new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve()))));
  assert.ok(listener.counts().handshaking <= 8, `${listener.counts().handshaking} in their handshake`);
  const client = await RawClient.open(listener.url, disposer);
  client.send({ id: 1, hello: 'still served' });
  assert.equal(await client.next(), { id: 1, hello: 'still served' });
  await within('every half-open socket to be closed by the server', Promise.all(closed), 5_000);
  assert.is(listener.counts().handshaking, 0);
});

Transport('peers have their own slots; an unproved peer makes room for a new one, a proved one does not', async () => {
  const { listener, accepted } = await echoServer({ connectionsMax: 1, peerConnectionsMax: 2, peerAuthTimeoutMs: 60_000 });
  const client = await RawClient.open(listener.url, disposer);
  assert.is((await RawClient.open(listener.url, disposer).then((c) => c.closed())), 1013, 'the one client slot is taken');
  const first = await RawClient.open(listener.url + PEER_PATH, disposer);
  const second = await RawClient.open(listener.url + PEER_PATH, disposer);
  const third = await RawClient.open(listener.url + PEER_PATH, disposer);
  assert.is(await first.closed(), 4001, 'the oldest unproved peer made room');
  // Both remaining peers prove themselves: a fourth finds no room.
  await waitFor('three peers accepted', () => accepted.filter((c) => c.kind === 'peer').length === 3);
  for (const connection of accepted.filter((c) => c.kind === 'peer' && c.isOpen)) connection.trust();
  const fourth = await RawClient.open(listener.url + PEER_PATH, disposer);
  assert.is(await fourth.closed(), 1013);
  for (const peer of [second, third]) {
    peer.send({ still: 'here' });
    assert.equal(await peer.next(), { still: 'here' });
  }
  client.send({ client: true });
  assert.equal(await client.next(), { client: true });
  assert.equal(listener.counts(), { client: 1, peer: 2, handshaking: 0 });
});

Transport('a flood of unproved peers from one address evicts its own, never a lone pending peer of another address', async () => {
  const { listener } = await echoServer({ peerConnectionsMax: 4, peerAuthTimeoutMs: 60_000 });
  const real = await RawClient.open(listener.url + PEER_PATH, disposer, '127.0.0.2');
  const flood: RawClient[] = [];
  for (let i = 0; i < 10; i += 1) flood.push(await RawClient.open(listener.url + PEER_PATH, disposer, '127.0.0.3'));
  await waitFor('the flood to evict its own', () => flood.filter((c) => c.closeCode === 4001).length >= 7);
  assert.is(real.closeCode, undefined, 'the lone pending peer keeps its slot');
  real.send({ still: 'here' });
  assert.equal(await real.next(), { still: 'here' });
});

Transport('a peer that does not prove the secret in time is dropped', async () => {
  const { listener } = await echoServer({ peerAuthTimeoutMs: 200 });
  const peer = await RawClient.open(listener.url + PEER_PATH, disposer);
  assert.is(await peer.closed(2_000), 4001);
});

Transport('an outgoing connection whose peer stops answering pings is dropped by the keep-alive', async () => {
  // A server that completes the WebSocket handshake by hand and then ignores everything.
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('data', (data) => {
      const key = /Sec-WebSocket-Key: (\S+)/i.exec(data.toString())![1]!;
      const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    });
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  disposer.add(silent, (s) => {
    for (const socket of sockets) socket.destroy();
    s.close();
  });
  const port = (silent.address() as { port: number }).port;
  const connection = await connect(`ws://127.0.0.1:${port}`, { maxPayload: 1024, keepaliveIntervalMs: 100 });
  disposer.add(connection, (c) => c.abort());
  await within('the keep-alive to drop the connection', new Promise<void>((resolve) => connection.frames$.subscribe({ complete: resolve })), 2_000);
  assert.is(connection.isOpen, false);
});

Transport('a frame over the read limit closes with 1009 and the error is reported, not swallowed', async () => {
  const { listener, errors } = await echoServer({ maxPayload: 64 });
  const client = await RawClient.open(listener.url, disposer);
  client.send('x'.repeat(65));
  assert.is(await client.closed(), 1009);
  await waitFor('the error to be reported', () => errors.length > 0);
  assert.match(errors[0]!.message, /127\.0\.0\.1: Max payload size exceeded/);
});

Transport('close() ends every connection and handshake and can be called twice', async () => {
  const { listener } = await echoServer();
  const client = await RawClient.open(listener.url, disposer);
  const pending = await halfOpen(listener.port);
  const pendingClosed = new Promise<void>((resolve) => pending.once('close', () => resolve()));
  await listener.close();
  await listener.close();
  assert.ok((await client.closed()) > 0);
  await within('the half-open socket to close', pendingClosed, 2_000);
});

Transport.run();
