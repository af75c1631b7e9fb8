import { Subject } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import type { Reply } from '../../src/protocol/messages.js';
import { parseNodeFrame } from '../../src/protocol/parse.js';
import { SendBudget, serveConnection } from '../../src/protocol/serve.js';
import type { Connection } from '../../src/env/transport.js';
import { listen } from '../../src/transport/ws-transport.js';
import { Disposer, waitFor } from '../helpers.js';

const disposer = new Disposer();
const Serve = suite('protocol: serving a connection');
Serve.after.each(() => disposer.dispose());

Serve('reading pauses at the in-flight limit: 500 pipelined requests never all wait at once', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const pending: (() => void)[] = [];
  const listener = disposer.add(
    await listen({
      host: '127.0.0.1', port: 0, maxPayload: 1 << 24, connectionsMax: 4,
      onConnection: (connection) =>
        serveConnection(connection, {
          parse: (text) => parseNodeFrame(text, { keyBytesMax: 1024, valueBytesMax: 1 << 20 }),
          requestsInFlightMax: 4,
          handle: (request) => {
            inFlight += 1;
            maxInFlight = Math.max(maxInFlight, inFlight);
            return new Promise<Reply>((resolve) => pending.push(() => {
              inFlight -= 1;
              resolve({ id: request.id, ok: true });
            }));
          },
        }),
    }),
    (l) => l.close(),
  );
  const socket = disposer.add(new WebSocket(listener.url), (s) => s.terminate());
  await new Promise((resolve) => socket.once('open', resolve));
  let replies = 0;
  socket.on('message', () => (replies += 1));
  const total = 500;
  for (let i = 0; i < total; i += 1) socket.send(JSON.stringify({ id: i, op: 'put', key: 'k', value: 'x'.repeat(2000) }));
  // Answer whatever is waiting, as it comes, until every request is answered.
  await waitFor('every reply', () => {
    for (const release of pending.splice(0)) release();
    return replies === total;
  }, 20_000);
  // Without the pause all 500 wait at once; with it, the limit plus what ws had already
  // read from the socket (about 30 frames of 2 KB here).
  assert.ok(maxInFlight < 100, `at most ${maxInFlight} in flight`);
  assert.ok(maxInFlight >= 4);
});

/** A connection whose peer never reads: what is sent stays buffered until the test drains it. */
class UnreadConnection implements Connection {
  readonly kind = 'client' as const;
  readonly remoteAddress = '127.0.0.1';
  readonly frames = new Subject<string>();
  readonly drains = new Subject<void>();
  readonly frames$ = this.frames.asObservable();
  readonly drain$ = this.drains.asObservable();
  bufferedBytes = 0;
  readonly bytesRead = 0;
  readonly bytesWritten = 0;
  sent: string[] = [];
  paused = false;
  isOpen = true;
  send(text: string): boolean {
    if (!this.isOpen) return false;
    this.sent.push(text);
    this.bufferedBytes += Buffer.byteLength(text);
    return true;
  }
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  trust(): void {}
  close(): void { this.abort(); }
  abort(): void {
    this.isOpen = false;
    this.frames.complete();
    this.drains.complete();
  }
  /** The peer read everything. */
  drain(): void {
    this.bufferedBytes = 0;
    this.drains.next();
  }
}

const MiB = 1024 * 1024;
const bigValue = 'v'.repeat(MiB);

/** Serves gets of one 1 MiB value, as a node would. */
function serveBigGets(connection: Connection, budget = new SendBudget(4 * 1024 * MiB)): void {
  serveConnection(connection, {
    parse: (text) => parseNodeFrame(text, { keyBytesMax: 1024, valueBytesMax: 2 * MiB }),
    // As a node answers a get: the reply as text, the stored value spliced in.
    handle: async (request) => `{"id":${JSON.stringify(request.id)},"ok":true,"found":true,"value":"${bigValue}"}`,
    sendBufferBytesMax: 4 * MiB,
    budget,
  });
}

Serve('a client that does not read: replies past the send limit wait, reading and handling stop, and all go out as it drains', async () => {
  const connection = new UnreadConnection();
  serveBigGets(connection);
  for (let i = 0; i < 1500; i += 1) connection.frames.next(JSON.stringify({ id: i, op: 'get', key: 'big' }));
  await waitFor('the replies to be produced', () => connection.paused && connection.sent.length >= 4);
  await new Promise((resolve) => setImmediate(resolve));
  // Without the outbox, 1,500 MiB would be queued on the socket; with it, the limit and one reply.
  assert.ok(connection.bufferedBytes <= 5 * MiB + 1024, `${connection.bufferedBytes} bytes buffered`);
  assert.ok(connection.sent.length <= 5, `${connection.sent.length} replies serialized`);
  assert.ok(connection.paused, 'reading stopped');
  const seen = new Set<number>();
  for (let round = 0; round < 1000 && seen.size < 1500; round += 1) {
    for (const text of connection.sent.splice(0)) seen.add((JSON.parse(text) as { id: number }).id);
    connection.drain();
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.is(seen.size, 1500, 'every request answered once');
  assert.is(connection.paused, false, 'reading resumed once drained');
});

Serve('the server-wide budget drops the connection holding the most unsent bytes', async () => {
  const budget = new SendBudget(10 * MiB);
  const connections = [new UnreadConnection(), new UnreadConnection(), new UnreadConnection()];
  for (const connection of connections) serveBigGets(connection, budget);
  // The first two hold 3 MiB each; the third pushes the total past 10 MiB with 5 MiB.
  connections.forEach((connection, index) => {
    for (let i = 0; i < (index === 2 ? 5 : 3); i += 1) connection.frames.next(JSON.stringify({ id: i, op: 'get', key: 'big' }));
  });
  await waitFor('the replies to be produced', () => connections.every((c) => c.sent.length > 0 || !c.isOpen));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(connections.map((c) => c.isOpen), [true, true, false]);
});

Serve.run();
