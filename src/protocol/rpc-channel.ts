/**
 * Request/reply over one Connection, for the side that asks: a client of a node, a node
 * or client of the hub, the primary of its replicas. A request is registered before it
 * is sent, so a fast reply cannot be missed; replies are parsed at the boundary and
 * matched by id; closing rejects every pending request; at most RPC_PENDING_MAX wait.
 */
import { Observable } from 'rxjs';
import { REQUEST_TIMEOUT_MS, RPC_PENDING_MAX } from '../constants.js';
import { ConnectionClosedError, KvError } from '../errors.js';
import type { Clock } from '../env/environment.js';
import type { Connection } from '../env/transport.js';
import { parseReply, type OkReply } from './reply.js';

export type { OkReply } from './reply.js';

export class RpcChannel {
  private nextId = 1;
  private readonly pending = new Map<number, (result: OkReply | KvError) => void>();
  /** Settles when the connection has closed. */
  readonly closed: Promise<void>;

  constructor(
    readonly connection: Connection,
    private readonly clock: Clock,
    private readonly requestTimeoutMs = REQUEST_TIMEOUT_MS,
    private readonly pendingMax = RPC_PENDING_MAX,
  ) {
    let gone: () => void;
    this.closed = new Promise((resolve) => (gone = resolve));
    connection.frames$.subscribe({
      next: (frame) => this.dispatch(frame),
      complete: () => {
        this.failAll(new ConnectionClosedError());
        gone();
      },
    });
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends `fields` with a fresh id; emits the ok reply once, or errors with a KvError. */
  request$(fields: Record<string, unknown>, timeoutMs = this.requestTimeoutMs): Observable<OkReply> {
    return this.requestText$(JSON.stringify(fields), String(fields['op']), timeoutMs);
  }

  /**
   * The same for a frame already serialized (a JSON object's text): large frames are
   * built as text so their values are not parsed and serialized again.
   */
  requestText$(objectText: string, op: string, timeoutMs = this.requestTimeoutMs): Observable<OkReply> {
    return new Observable<OkReply>((subscriber) => {
      if (this.pending.size >= this.pendingMax) {
        subscriber.error(new KvError('UNAVAILABLE', `${this.pendingMax} requests already await replies on this connection`));
        return undefined;
      }
      const id = this.nextId++;
      const cancelTimeout = this.clock.after(timeoutMs, () => {
        this.pending.delete(id);
        subscriber.error(new KvError('UNAVAILABLE', `no reply to "${op}" within ${timeoutMs} ms`));
      });
      this.pending.set(id, (result) => {
        cancelTimeout();
        this.pending.delete(id);
        if (result instanceof KvError) subscriber.error(result);
        else {
          subscriber.next(result);
          subscriber.complete();
        }
      });
      const frame = objectText === '{}' ? `{"id":${id}}` : `{"id":${id},${objectText.slice(1)}`;
      if (!this.connection.send(frame)) {
        this.pending.get(id)?.(new ConnectionClosedError());
      }
      return () => {
        cancelTimeout();
        this.pending.delete(id);
      };
    });
  }

  /** The promise form of request$. */
  request(fields: Record<string, unknown>, timeoutMs?: number): Promise<OkReply> {
    return new Promise((resolve, reject) => {
      this.request$(fields, timeoutMs).subscribe({ next: resolve, error: reject });
    });
  }

  close(): void {
    this.connection.close();
    this.failAll(new ConnectionClosedError());
  }

  /** A frame that answers no pending request (late, after its timeout, or unreadable) is dropped. */
  private dispatch(frame: string): void {
    const reply = parseReply(frame);
    if (reply === undefined || typeof reply.id !== 'number') return;
    this.pending.get(reply.id)?.(reply.result);
  }

  private failAll(error: KvError): void {
    for (const handler of [...this.pending.values()]) handler(error);
  }
}
