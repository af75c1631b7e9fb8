/**
 * Request/reply over one Connection, for the side that asks: a client of a node, a node
 * or client of the hub, the primary of its replicas. A request is registered before it
 * is sent, so a fast reply cannot be missed; replies are matched by id; closing rejects
 * every pending request.
 */
import { Observable } from 'rxjs';
import { REQUEST_TIMEOUT_MS } from '../constants.js';
import { KvError } from '../errors.js';
import type { Reply } from '../protocol/messages.js';

/** A successful reply: its fields are the op's own. */
export type OkReply = Extract<Reply, { ok: true }>;
import { replyError } from '../protocol/reply.js';
import type { Connection } from '../transport/transport.js';

export class RpcChannel {
  private nextId = 1;
  private readonly pending = new Map<number, (reply: Reply | KvError) => void>();

  constructor(
    readonly connection: Connection,
    private readonly requestTimeoutMs = REQUEST_TIMEOUT_MS,
  ) {
    connection.frames$.subscribe({
      next: (frame) => this.dispatch(frame),
      complete: () => this.failAll(new KvError('UNAVAILABLE', 'connection closed')),
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
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        subscriber.error(new KvError('UNAVAILABLE', `no reply to "${op}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        this.pending.delete(id);
        const error = reply instanceof KvError ? reply : replyError(reply);
        if (error) subscriber.error(error);
        else {
          subscriber.next(reply as OkReply);
          subscriber.complete();
        }
      });
      const frame = objectText === '{}' ? `{"id":${id}}` : `{"id":${id},${objectText.slice(1)}`;
      if (!this.connection.send(frame)) {
        this.pending.get(id)?.(new KvError('UNAVAILABLE', 'connection closed'));
      }
      return () => {
        clearTimeout(timer);
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
    this.failAll(new KvError('UNAVAILABLE', 'connection closed'));
  }

  /** A frame that is no reply to a pending request (late, after its timeout) is dropped. */
  private dispatch(frame: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(frame) as Reply;
    } catch {
      return;
    }
    const handler = typeof reply?.id === 'number' ? this.pending.get(reply.id) : undefined;
    handler?.(reply);
  }

  private failAll(error: KvError): void {
    for (const handler of [...this.pending.values()]) handler(error);
  }
}
