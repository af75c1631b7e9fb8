/** The WebSocket implementation of the Transport interfaces, over the `ws` package. */
import { Subject } from 'rxjs';
import { WebSocket, WebSocketServer } from 'ws';
import type { RawData } from 'ws';
import type { AddressInfo } from 'node:net';
import { CONNECT_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS } from '../constants.js';
import { KvError } from '../errors.js';
import { CloseCode, type Connection, type Listener } from './transport.js';

export interface ListenOptions {
  host: string;
  port: number;
  /** Largest frame accepted; a larger one closes the connection with 1009. */
  maxPayload: number;
  /** Connections accepted at once; one more is closed with 1013. */
  connectionsMax: number;
  keepaliveIntervalMs?: number;
  onConnection(connection: Connection): void;
  /** Told of socket-level errors that do not belong to one connection. */
  onError?(error: Error): void;
}

export async function listen(options: ListenOptions): Promise<Listener> {
  const server = new WebSocketServer({
    host: options.host,
    port: options.port,
    maxPayload: options.maxPayload,
    perMessageDeflate: false,
    clientTracking: true,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  server.on('error', (error) => options.onError?.(error));

  const alive = new WeakSet<WebSocket>();
  server.on('connection', (socket, request) => {
    if (server.clients.size > options.connectionsMax) {
      socket.on('error', () => {});
      socket.close(CloseCode.TryAgainLater, 'too many connections');
      return;
    }
    alive.add(socket);
    socket.on('pong', () => alive.add(socket));
    options.onConnection(wrap(socket));
  });

  const keepalive = setInterval(() => {
    for (const socket of server.clients) {
      if (!alive.has(socket)) {
        socket.terminate();
        continue;
      }
      alive.delete(socket);
      socket.ping();
    }
  }, options.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS);
  keepalive.unref();

  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  let closing: Promise<void> | undefined;
  return {
    url: `ws://${host}:${port}`,
    host: address,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        clearInterval(keepalive);
        for (const socket of server.clients) socket.terminate();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}

export interface ConnectOptions {
  maxPayload: number;
  /** The local address to bind, so the peer sees who is connecting (node to node). */
  localAddress?: string;
  timeoutMs?: number;
}

/** Opens a connection; rejects with UNAVAILABLE when the peer cannot be reached. */
export function connect(url: string, options: ConnectOptions): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, {
      maxPayload: options.maxPayload,
      perMessageDeflate: false,
      handshakeTimeout: options.timeoutMs ?? CONNECT_TIMEOUT_MS,
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    const fail = (error: Error) => {
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.terminate();
      reject(new KvError('UNAVAILABLE', `cannot connect to ${url}: ${error.message}`));
    };
    socket.once('error', fail);
    socket.once('unexpected-response', (_request, response) =>
      fail(new Error(`HTTP ${response.statusCode}`)),
    );
    socket.once('open', () => {
      socket.off('error', fail);
      resolve(wrap(socket));
    });
  });
}

function unwrapAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function wrap(socket: WebSocket): Connection {
  const frames = new Subject<string>();
  // ws keeps its net.Socket in `_socket`, on the server and the client side alike: the
  // peer's address comes from it, and corking it below.
  const raw = (socket as unknown as { _socket?: { remoteAddress?: string; cork(): void; uncork(): void } })._socket;
  const remoteAddress = unwrapAddress(raw?.remoteAddress ?? '');
  // Frames sent in one turn of the event loop (the replies of one batch) leave in one
  // writev: a syscall per frame was the primary's largest cost. Without a socket (never
  // seen) frames simply go out one by one.
  let corked = false;
  const cork = () => {
    if (corked || !raw) return;
    corked = true;
    raw.cork();
    process.nextTick(() => {
      corked = false;
      raw.uncork();
    });
  };
  // A socket error is always followed by 'close'; listening keeps it from throwing.
  socket.on('error', () => {});
  // Binary frames are read as UTF-8 text too: some clients send nothing else.
  socket.on('message', (data: RawData) => frames.next(rawToString(data)));
  socket.on('close', () => frames.complete());

  return {
    frames$: frames.asObservable(),
    remoteAddress,
    get bufferedBytes() {
      return socket.bufferedAmount;
    },
    get isOpen() {
      return socket.readyState === WebSocket.OPEN;
    },
    send(text) {
      if (socket.readyState !== WebSocket.OPEN) return false;
      cork();
      socket.send(text);
      return true;
    },
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    close(code = CloseCode.Normal, reason = '') {
      if (socket.readyState === WebSocket.CLOSED || socket.readyState === WebSocket.CLOSING) return;
      if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
      else socket.close(code, reason);
    },
  };
}

function rawToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
