/**
 * What pbkv's protocol code needs of a network, so that it never imports a socket
 * library: a connection is an Observable of text frames plus `send`.
 */
import type { Observable } from 'rxjs';

export interface Connection {
  /** Every text frame received, in order; completes when the connection closes. */
  readonly frames$: Observable<string>;
  /** The peer's IP address (IPv4-mapped IPv6 addresses are unwrapped). */
  readonly remoteAddress: string;
  /** Queues a frame; false when the connection is closed (nothing is thrown). */
  send(text: string): boolean;
  /** Bytes queued but not yet written to the socket. */
  readonly bufferedBytes: number;
  /** Stops reading frames (backpressure) until resume(). */
  pause(): void;
  resume(): void;
  /** Closes the connection; calling it again does nothing. */
  close(code?: number, reason?: string): void;
  readonly isOpen: boolean;
}

/** A server accepting connections; `close()` ends them all and can be called twice. */
export interface Listener {
  /** ws://host:port, with the port actually bound (port 0 picks one). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** WebSocket close codes used by pbkv (4000-4999 are the application's). */
export enum CloseCode {
  Normal = 1000,
  GoingAway = 1001,
  TooBig = 1009,
  TryAgainLater = 1013,
  Forbidden = 4003,
}
