import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import type { Reply } from '../../src/protocol/messages.js';
import { parseNodeFrame } from '../../src/protocol/parse.js';
import { serveConnection } from '../../src/protocol/serve.js';
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

Serve.run();
