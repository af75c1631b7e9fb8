#!/usr/bin/env node
/**
 * A bare WebSocket echo for the bench's `--compare echo`: the transport's own limit in the
 * bench's shape. Same ws settings as a pbkv node (no compression, corked replies); each
 * frame is parsed and a reply built, as a node does, and nothing else. Prints
 * {"event":"ready","url":...} and serves until stdin closes.
 */
import { listen } from '../src/transport/ws-transport.js';

const listener = await listen({
  host: '127.0.0.1',
  port: 0,
  maxPayload: 16 * 1024 * 1024,
  connectionsMax: 1024,
  onConnection: (connection) => {
    connection.frames$.subscribe((text) => {
      const { id } = JSON.parse(text) as { id: number };
      connection.send(JSON.stringify({ id, ok: true }));
    });
  },
});
console.log(JSON.stringify({ event: 'ready', url: listener.url }));
process.stdin.on('end', () => void listener.close().then(() => process.exit(0)));
process.stdin.resume();
