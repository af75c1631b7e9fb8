/**
 * Request/reply over one Connection, for the side that asks: a client of a node, a node
 * or client of the hub, the primary of its replicas. A request is registered before it
 * is sent, so a fast reply cannot be missed; replies are parsed at the boundary and
 * matched by id; closing rejects every pending request; at most RPC_PENDING_MAX wait.
 * A stream (a watch) is a request whose reply is followed by event frames with its id:
 * they go to it, in order, until it is unsubscribed or the connection closes. A frame
 * posted without an id (a replica link's appends, whose acks are cumulative and need no
 * matching) costs no pending entry and no timer: replies without an id go to
 * `onUnnumbered`, and timing them out is the poster's.
 */
import { Observable } from 'rxjs';
import { REQUEST_TIMEOUT_MS, RPC_PENDING_MAX } from '../constants.js';
import { ConnectionClosedError, KvError } from '../errors.js';
import type { Clock } from '../env/environment.js';
import type { Connection } from '../env/transport.js';
import { parseReplyOrEvent, type EventFrame, type OkReply } from './reply.js';

export type { EventFrame, OkReply } from './reply.js';

/** What a stream emits: its request's reply (with the id it was sent with), then its events. */
export type StreamFrame = { id: number; reply: OkReply } | EventFrame;

export class RpcChannel {
  private nextId = 1;
  private readonly pending = new Map<number, (result: OkReply | KvError) => void>();
  private readonly streams = new Map<number, (frame: OkReply | KvError | EventFrame) => void>();
  /** Settles when the connection has closed. */
  readonly closed: Promise<void>;
  /** Where replies without an id go (the answers to `post`), in the order they arrive. */
  onUnnumbered: ((result: OkReply | KvError) => void) | undefined;

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
    return this.pending.size + this.streams.size;
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
      if (this.inFlight >= this.pendingMax) {
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

  /**
   * Sends `fields` with a fresh id; emits the ok reply, then every event frame with that id
   * as it comes, without buffering: the subscriber's `next` runs as each frame arrives.
   * Errors with the error reply, with UNAVAILABLE when no reply comes within `timeoutMs`,
   * or when the connection closes. Unsubscribing stops the routing and sends nothing:
   * ending the stream at the server (unwatch) is the caller's.
   */
  stream$(fields: Record<string, unknown>, timeoutMs = this.requestTimeoutMs): Observable<StreamFrame> {
    return new Observable<StreamFrame>((subscriber) => {
      if (this.inFlight >= this.pendingMax) {
        subscriber.error(new KvError('UNAVAILABLE', `${this.pendingMax} requests already await replies on this connection`));
        return undefined;
      }
      const id = this.nextId++;
      let answered = false;
      const cancelTimeout = this.clock.after(timeoutMs, () => {
        this.streams.delete(id);
        subscriber.error(new KvError('UNAVAILABLE', `no reply to "${String(fields['op'])}" within ${timeoutMs} ms`));
      });
      const end = (error: KvError) => {
        cancelTimeout();
        this.streams.delete(id);
        subscriber.error(error);
      };
      this.streams.set(id, (frame) => {
        if (frame instanceof KvError) end(frame);
        else if ('event' in frame && 'fields' in frame) {
          if (answered) subscriber.next(frame as EventFrame);
          else end(new KvError('INTERNAL', `malformed reply: a "${frame.event}" event came before the reply to "${String(fields['op'])}"`));
        } else if (!answered) {
          answered = true;
          cancelTimeout();
          subscriber.next({ id, reply: frame as OkReply });
        }
      });
      if (!this.connection.send(JSON.stringify({ id, ...fields }))) end(new ConnectionClosedError());
      return () => {
        cancelTimeout();
        this.streams.delete(id);
      };
    });
  }

  /**
   * Sends a frame as it is, without an id (`objectText`, a JSON object's text): its reply
   * has none either and goes to onUnnumbered. False when the connection is closed.
   */
  post(objectText: string): boolean {
    return this.connection.send(objectText);
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
    const parsed = parseReplyOrEvent(frame);
    if (parsed !== undefined && parsed.id === null && 'result' in parsed) this.onUnnumbered?.(parsed.result);
    if (parsed === undefined || typeof parsed.id !== 'number') return;
    const stream = this.streams.get(parsed.id);
    if ('event' in parsed) stream?.(parsed);
    else if (stream) stream(parsed.result);
    else this.pending.get(parsed.id)?.(parsed.result);
  }

  private failAll(error: KvError): void {
    for (const handler of [...this.pending.values(), ...this.streams.values()]) handler(error);
  }
}
