/**
 * What pbkv's protocol code needs of a network, so that it never imports a socket
 * library: a connection is an Observable of text frames plus `send`.
 */
import type { Observable } from 'rxjs';

/** Clients and peers (nodes talking to nodes or to the hub) have separate slots. */
export type ConnectionKind = 'client' | 'peer';

export interface Connection {
  readonly kind: ConnectionKind;
  /** Every text frame received, in order; completes when the connection closes. */
  readonly frames$: Observable<string>;
  /** Emits whenever the bytes queued for the socket have been written out. */
  readonly drain$: Observable<void>;
  /** The peer's IP address (IPv4-mapped IPv6 addresses are unwrapped). */
  readonly remoteAddress: string;
  /** Queues a frame; false when the connection is closed (nothing is thrown). */
  send(text: string): boolean;
  /** Bytes queued but not yet written to the socket. */
  readonly bufferedBytes: number;
  /** Bytes read from and written to the socket so far (framing included), also once closed. */
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Stops reading frames (backpressure) until resume(). */
  pause(): void;
  resume(): void;
  /**
   * A peer connection proved the cluster secret: it keeps its slot (an unproved one is
   * dropped after PEER_AUTH_TIMEOUT_MS or when a newer peer needs the slot).
   */
  trust(): void;
  /** Closes the connection; calling it again does nothing. */
  close(code?: number, reason?: string): void;
  /** Drops the connection at once, discarding what is unsent. */
  abort(): void;
  readonly isOpen: boolean;
}

/** A server accepting connections; `close()` ends them all and can be called twice. */
export interface Listener {
  /** ws://host:port, with the port actually bound (port 0 picks one). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Connections now open, by kind, and TCP connections still in their handshake. */
  counts(): { client: number; peer: number; handshaking: number };
  close(): Promise<void>;
}

export interface ListenOptions {
  host: string;
  port: number;
  /** Largest frame accepted; a larger one closes the connection with 1009. */
  maxPayload: number;
  /** Client connections accepted at once; one more is closed with 1013. */
  connectionsMax: number;
  peerConnectionsMax?: number;
  peerAuthTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  handshakesMax?: number;
  keepaliveIntervalMs?: number;
  onConnection(connection: Connection): void;
  /**
   * A plain HTTP request on the same port (not an upgrade): read-only pages and metrics.
   * Without it every such request is answered 426 ("pbkv speaks WebSocket").
   */
  onHttp?(request: HttpRequest, response: HttpResponse): void;
  /** Told of socket-level errors (a listener's, or a connection's before it closes). */
  onError?(error: Error): void;
}

/** A plain HTTP request: its method and its path (the query string cut off). */
export interface HttpRequest {
  readonly method: string;
  readonly path: string;
}

/** The answer to an HTTP request: whole at once, or a stream that stays open (Server-Sent Events). */
export interface HttpResponse {
  reply(status: number, contentType: string, body: string): void;
  /**
   * Answers 200 and keeps the connection open for `write`s; it is no longer held to the
   * handshake deadline. Counted and bounded by the caller.
   */
  stream(contentType: string): HttpStream;
}

export interface HttpStream {
  /** Queues text; false once the reader is gone. */
  write(text: string): boolean;
  /** Bytes queued but not yet written out. */
  readonly bufferedBytes: number;
  readonly isOpen: boolean;
  /** Called once when the stream ends, by either side. */
  onClose(listener: () => void): void;
  end(): void;
}

export interface ConnectOptions {
  maxPayload: number;
  /** `peer` connects to PEER_PATH, where peers have slots of their own. */
  kind?: ConnectionKind;
  /** The local address to bind, so the peer sees who is connecting (node to node). */
  localAddress?: string | undefined;
  timeoutMs?: number;
  keepaliveIntervalMs?: number;
  onError?(error: Error): void;
}

/** A network: WebSockets in real runs, the simulator's seeded one in tests. */
export interface Transport {
  listen(options: ListenOptions): Promise<Listener>;
  /** Opens a connection; rejects with UNAVAILABLE when the peer cannot be reached. */
  connect(url: string, options: ConnectOptions): Promise<Connection>;
}

/** WebSocket close codes used by pbkv (4000-4999 are the application's). */
export enum CloseCode {
  Normal = 1000,
  GoingAway = 1001,
  TooBig = 1009,
  TryAgainLater = 1013,
  Forbidden = 4003,
  /** A peer did not prove the cluster secret in time, or a newer one needed its slot. */
  PeerUnproved = 4001,
}
