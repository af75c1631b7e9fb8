/**
 * The WebSocket implementation of the Transport interfaces, over the `ws` package.
 *
 * The listener owns its HTTP server, so it sees every TCP connection before its upgrade:
 * a connection must finish its handshake within HANDSHAKE_TIMEOUT_MS, and at most
 * HANDSHAKES_MAX may be in it at once (the oldest makes room), so half-open connections
 * cannot exhaust file descriptors. Clients and peers (the URL path PEER_PATH) have
 * separate slots, so clients can never starve replication.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Subject } from 'rxjs';
import { WebSocket, WebSocketServer } from 'ws';
import type { RawData } from 'ws';
import {
  CLOSE_GRACE_MS,
  CONNECT_TIMEOUT_MS,
  HANDSHAKES_MAX,
  HANDSHAKE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  PEER_AUTH_TIMEOUT_MS,
  PEER_CONNECTIONS_MAX,
  PEER_PATH,
} from '../constants.js';
import { KvError } from '../errors.js';
import { CloseCode, type ConnectOptions, type Connection, type ConnectionKind, type HttpResponse, type ListenOptions, type Listener, type Transport } from '../env/transport.js';

export async function listen(options: ListenOptions): Promise<Listener> {
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const reportError = (error: Error) => options.onError?.(error);
  const handshakes = new Handshakes(handshakeTimeoutMs, options.handshakesMax ?? HANDSHAKES_MAX);
  const http = createServer((request, response) => {
    const onHttp = options.onHttp;
    if (!onHttp) return upgradeRequired(response);
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    onHttp({ method: request.method ?? 'GET', path }, httpResponseOf(response, () => handshakes.end(request.socket)));
  });
  http.headersTimeout = handshakeTimeoutMs;
  http.requestTimeout = handshakeTimeoutMs;
  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload, perMessageDeflate: false, clientTracking: false });
  wss.on('error', reportError);
  const slots = new Slots(options.connectionsMax, options.peerConnectionsMax ?? PEER_CONNECTIONS_MAX);

  http.on('connection', (socket: Socket) => handshakes.begin(socket));
  http.on('clientError', (_error, socket) => socket.destroy());
  http.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    handshakes.end(socket as Socket);
    wss.handleUpgrade(request, socket, head, (ws) => accept(ws, request, slots, options, reportError));
  });
  await bind(http, options.port, options.host);
  http.on('error', reportError);
  return listenerOf(http, handshakes, slots);
}

function upgradeRequired(response: ServerResponse): void {
  response.writeHead(426, { 'content-type': 'text/plain' }).end('pbkv speaks WebSocket: try wscat -c ws://HOST:PORT\n');
}

/** An HTTP answer over node's response; a stream lets go of the handshake deadline (`release`). */
function httpResponseOf(response: ServerResponse, release: () => void): HttpResponse {
  return {
    reply(status, contentType, body) {
      response.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) }).end(body);
    },
    stream(contentType) {
      release();
      response.socket?.setTimeout(0);
      response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store', connection: 'keep-alive' });
      response.flushHeaders();
      return {
        write: (text) => !response.writableEnded && !response.destroyed && (response.write(text), true),
        get bufferedBytes() {
          return response.writableLength;
        },
        get isOpen() {
          return !response.writableEnded && !response.destroyed;
        },
        onClose: (listener) => void response.once('close', listener),
        end: () => void response.end(),
      };
    },
  };
}

/** A WebSocket past its upgrade: it takes a slot of its kind, or is closed with 1013. */
function accept(ws: WebSocket, request: IncomingMessage, slots: Slots, options: ListenOptions, reportError: (error: Error) => void): void {
  const kind: ConnectionKind = new URL(request.url ?? '/', 'ws://x').pathname === PEER_PATH ? 'peer' : 'client';
  if (!slots.admit(kind, unwrapAddress(request.socket.remoteAddress ?? ''))) {
    ws.on('error', reportError);
    ws.close(CloseCode.TryAgainLater, kind === 'client' ? 'too many connections' : 'too many peer connections');
    setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    return;
  }
  const connection = new WsConnection(ws, request.socket, kind, options.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS, reportError);
  const release = slots.hold(connection, options.peerAuthTimeoutMs ?? PEER_AUTH_TIMEOUT_MS);
  ws.once('close', release);
  options.onConnection(connection);
}

function bind(http: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => {
      http.off('error', reject);
      resolve();
    });
  });
}

/** The Listener of a bound server: its address, its counts, and a close() that can be called twice. */
function listenerOf(http: Server, handshakes: Handshakes, slots: Slots): Listener {
  const { port, address } = http.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  let closing: Promise<void> | undefined;
  return {
    url: `ws://${host}:${port}`,
    host: address,
    port,
    counts: () => ({ ...slots.counts(), handshaking: handshakes.size }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        handshakes.destroyAll();
        slots.abortAll();
        http.close(() => resolve());
        http.closeAllConnections();
      });
      return closing;
    },
  };
}

/**
 * TCP connections not yet upgraded, oldest first (a Map keeps insertion order): each must
 * finish its handshake in time, and the oldest makes room when too many are in it.
 */
class Handshakes {
  private readonly timers = new Map<Socket, NodeJS.Timeout>();

  constructor(
    private readonly timeoutMs: number,
    private readonly max: number,
  ) {}

  get size(): number {
    return this.timers.size;
  }

  begin(socket: Socket): void {
    if (this.timers.size >= this.max) {
      const [oldest] = this.timers.keys();
      this.end(oldest!);
      oldest!.destroy();
    }
    const timer = setTimeout(() => {
      this.timers.delete(socket);
      socket.destroy();
    }, this.timeoutMs);
    timer.unref();
    this.timers.set(socket, timer);
    socket.once('close', () => this.end(socket));
  }

  end(socket: Socket): void {
    clearTimeout(this.timers.get(socket));
    this.timers.delete(socket);
  }

  destroyAll(): void {
    for (const socket of [...this.timers.keys()]) {
      this.end(socket);
      socket.destroy();
    }
  }
}

interface Accepted {
  connection: WsConnection;
  peerTimer?: NodeJS.Timeout;
}

/** Open connections by kind: clients and peers have slots of their own. */
class Slots {
  private readonly open = { client: new Set<Accepted>(), peer: new Set<Accepted>() };

  constructor(
    private readonly clientsMax: number,
    private readonly peersMax: number,
  ) {}

  counts(): { client: number; peer: number } {
    return { client: this.open.client.size, peer: this.open.peer.size };
  }

  /** Whether a connection of `kind` from address `from` gets a slot; a full peer side may make room. */
  admit(kind: ConnectionKind, from: string): boolean {
    if (kind === 'client') return this.open.client.size < this.clientsMax;
    if (this.open.peer.size < this.peersMax) return true;
    const victim = unprovedVictim([...this.open.peer], from);
    if (!victim) return false;
    victim.connection.close(CloseCode.PeerUnproved, 'a newer peer needed the slot');
    this.open.peer.delete(victim);
    return true;
  }

  /** Takes a slot for `connection`; a peer must prove the secret in time. Returns what frees the slot. */
  hold(connection: WsConnection, peerAuthTimeoutMs: number): () => void {
    const entry: Accepted = { connection };
    this.open[connection.kind].add(entry);
    if (connection.kind === 'peer') {
      entry.peerTimer = setTimeout(() => {
        if (!connection.trusted) connection.close(CloseCode.PeerUnproved, 'the cluster secret was not proved in time');
      }, peerAuthTimeoutMs);
      entry.peerTimer.unref();
    }
    return () => {
      clearTimeout(entry.peerTimer);
      this.open[connection.kind].delete(entry);
    };
  }

  abortAll(): void {
    for (const entry of [...this.open.client, ...this.open.peer]) entry.connection.abort();
  }
}

/**
 * The unproved peer that makes room for a newcomer from `from`: the oldest from the address
 * holding the most unproved slots (a flood evicts its own), or from the newcomer's own
 * address. A lone pending peer of another address, a real node mid-handshake, is never
 * pushed out.
 */
function unprovedVictim(peers: readonly Accepted[], from: string): Accepted | undefined {
  const unproved = peers.filter((entry) => !entry.connection.trusted);
  const perAddress = new Map<string, number>();
  for (const entry of unproved) perAddress.set(entry.connection.remoteAddress, (perAddress.get(entry.connection.remoteAddress) ?? 0) + 1);
  const [crowded, held] = [...perAddress].reduce((a, b) => (b[1] > a[1] ? b : a), ['', 0]);
  const victimAddress = held > 1 ? crowded : perAddress.has(from) ? from : undefined;
  return victimAddress === undefined ? undefined : unproved.find((entry) => entry.connection.remoteAddress === victimAddress);
}

/** Opens a connection; rejects with UNAVAILABLE when the peer cannot be reached. */
export function connect(url: string, options: ConnectOptions): Promise<Connection> {
  const kind = options.kind ?? 'client';
  const target = kind === 'peer' ? new URL(PEER_PATH, url).toString() : url;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(target, {
      maxPayload: options.maxPayload,
      perMessageDeflate: false,
      // Between nodes, frames go unmasked (a mask of zeros, which ws then skips on both
      // ends): masking guards proxies against scripts in browsers, and copying and XORing
      // every append frame on the primary and again on each replica was a cost of its own.
      ...(kind === 'peer' ? { generateMask: zeroMask } : {}),
      handshakeTimeout: options.timeoutMs ?? CONNECT_TIMEOUT_MS,
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    let raw: Socket | undefined;
    const fail = (error: Error) => {
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.terminate();
      reject(new KvError('UNAVAILABLE', `cannot connect to ${url}: ${error.message}`));
    };
    socket.once('error', fail);
    socket.once('upgrade', (response: IncomingMessage) => (raw = response.socket));
    socket.once('unexpected-response', (_request, response) => fail(new Error(`HTTP ${response.statusCode}`)));
    socket.once('open', () => {
      socket.off('error', fail);
      if (!raw) return fail(new Error('no socket after the upgrade'));
      resolve(new WsConnection(socket, raw, kind, options.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS, options.onError ?? (() => undefined)));
    });
  });
}

/** The mask of a frame between nodes: zeros, so ws neither copies nor XORs it. */
function zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}

export const wsTransport: Transport = { listen, connect };

class WsConnection implements Connection {
  readonly remoteAddress: string;
  trusted = false;
  private readonly frames = new Subject<string>();
  private readonly drains = new Subject<void>();
  readonly frames$ = this.frames.asObservable();
  readonly drain$ = this.drains.asObservable();
  private corked = false;
  private alive = true;
  private readonly keepalive: NodeJS.Timeout;

  constructor(
    private readonly socket: WebSocket,
    private readonly raw: Socket,
    readonly kind: ConnectionKind,
    keepaliveIntervalMs: number,
    reportError: (error: Error) => void,
  ) {
    this.remoteAddress = unwrapAddress(raw.remoteAddress ?? '');
    // A socket error is always followed by 'close'; it is reported, then the close ends the stream.
    socket.on('error', (error) => reportError(new Error(`${this.remoteAddress}: ${error.message}`)));
    // Binary frames are read as UTF-8 text too: some clients send nothing else.
    socket.on('message', (data: RawData) => this.frames.next(rawToString(data)));
    socket.on('pong', () => (this.alive = true));
    raw.on('drain', () => this.drains.next());
    // Both ends ping; a peer that missed a whole interval is gone (a half-open TCP connection).
    this.keepalive = setInterval(() => {
      if (!this.alive) return this.abort();
      this.alive = false;
      socket.ping();
    }, keepaliveIntervalMs);
    this.keepalive.unref();
    socket.on('close', () => {
      clearInterval(this.keepalive);
      this.frames.complete();
      this.drains.complete();
    });
  }

  get bytesRead(): number {
    return this.raw.bytesRead;
  }

  get bytesWritten(): number {
    return this.raw.bytesWritten;
  }

  get bufferedBytes(): number {
    return this.socket.bufferedAmount;
  }

  get isOpen(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  send(text: string): boolean {
    if (this.socket.readyState !== WebSocket.OPEN) return false;
    this.cork();
    this.socket.send(text);
    return true;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  trust(): void {
    this.trusted = true;
  }

  close(code: number = CloseCode.Normal, reason = ''): void {
    const state = this.socket.readyState;
    if (state === WebSocket.CLOSED || state === WebSocket.CLOSING) return;
    if (state === WebSocket.CONNECTING) return this.socket.terminate();
    this.socket.close(code, reason);
    // A peer that never answers the close would hold the socket for ws's 30 s.
    setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS).unref();
  }

  abort(): void {
    this.socket.terminate();
  }

  /**
   * Frames sent in one turn of the event loop (the replies of one batch) leave in one
   * writev: a syscall per frame was the primary's largest cost.
   */
  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.raw.cork();
    process.nextTick(() => {
      this.corked = false;
      this.raw.uncork();
      // The socket's own 'drain' comes only after a write passed its high-water mark; a
      // reader waiting for less (a small send limit) hears it here instead.
      if (this.raw.writableLength === 0) this.drains.next();
    });
  }
}

function unwrapAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function rawToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
