/**
 * Serves one connection of a server (the hub or a node): every frame is parsed once and
 * answered by id; a bad frame gets its error and the connection keeps serving. Replies
 * may leave out of order (pipelining).
 *
 * Memory stays bounded for a client that does not read: reading stops while the
 * connection has too many requests in flight or too many reply bytes unsent (checked as
 * replies are queued, not only when a frame arrives); replies past the send limit wait in
 * an outbox, and requests read meanwhile wait unhandled, until the socket drains; and a
 * SendBudget shared by a server's connections drops the one with the most unsent bytes
 * when all of them together are over the server's limit.
 */
import {
  CONNECTION_REQUESTS_IN_FLIGHT_MAX,
  CONNECTION_SEND_BUFFER_BYTES_MAX,
  SERVER_SEND_BUFFER_BYTES_MAX,
} from '../constants.js';
import { Subject, type Observable } from 'rxjs';
import { KvError, toKvError, type ErrorCode } from '../errors.js';
import type { Connection } from '../env/transport.js';
import type { Answer, RequestId } from './messages.js';
import type { Parsed } from './parse.js';
import { errorReply } from './reply.js';

/**
 * Unsent reply bytes of all of one server's connections, bounded together: on the socket
 * and in each connection's outbox (what its waiting replies hold).
 */
export class SendBudget {
  private readonly unsent = new Map<Connection, () => number>();

  constructor(readonly bytesMax = SERVER_SEND_BUFFER_BYTES_MAX) {}

  add(connection: Connection, unsentBytes: () => number): void {
    this.unsent.set(connection, unsentBytes);
  }

  delete(connection: Connection): void {
    this.unsent.delete(connection);
  }

  /** Drops the connections with the most unsent bytes while the total is over the limit. */
  enforce(): void {
    const sizes = new Map([...this.unsent].map(([connection, unsentBytes]) => [connection, unsentBytes()]));
    let total = 0;
    for (const size of sizes.values()) total += size;
    while (total > this.bytesMax && sizes.size > 0) {
      const [largest, size] = [...sizes].reduce((a, b) => (b[1] > a[1] ? b : a));
      total -= size;
      sizes.delete(largest);
      this.unsent.delete(largest);
      largest.abort();
    }
  }
}

/** Bytes an answer holds while it waits: a text answer (a get's reply) its length, a reply object roughly its fields. */
function answerBytes(answer: Answer): number {
  if (typeof answer === 'string') return answer.length;
  return ANSWER_OVERHEAD_BYTES + (answer.ok ? 0 : answer.error.message.length);
}

const ANSWER_OVERHEAD_BYTES = 96;

/**
 * What a handler may do with its connection beyond answering: send frames of its own (a
 * watch's events), in order with the replies, and learn when the socket drained or closed.
 */
export interface Channel {
  /** Queues a frame after everything queued before it; false once the connection closed. */
  push(text: string): boolean;
  /** Whether a frame pushed now would go to the socket, not wait in the outbox (the send limit). */
  readonly writable: boolean;
  readonly isOpen: boolean;
  /** Emits when the socket drained and the connection is writable again. */
  readonly writable$: Observable<void>;
  /** Emits once when the connection closed. */
  readonly closed$: Observable<void>;
}

/**
 * A reply that frames of the request's own follow (a watch's history and events):
 * `afterward` runs once the reply is queued, so what it pushes comes after it.
 */
export class Followed {
  constructor(
    readonly answer: Answer,
    readonly afterward: () => void,
  ) {}
}

export type Handled = Answer | Followed;

/** Told of every request a connection answers, and of frames that held none (a node's metrics). */
export interface RequestMeter<T> {
  /** A request is about to be handled: what this returns comes back to `answered`. */
  begin(): number;
  answered(request: T, began: number, error: ErrorCode | undefined): void;
  refused(error: ErrorCode): void;
}

export interface ServeOptions<T> {
  parse(text: string): Parsed<T>;
  /** Answers one request; a thrown KvError becomes its error reply. */
  handle(request: T, channel: Channel): Handled | Promise<Handled>;
  /** Told of every request that was answered with an error. */
  onRejected?(id: RequestId, error: KvError): void;
  /** Shared by the server's connections; one of its own when not given. */
  budget?: SendBudget;
  meter?: RequestMeter<T> | undefined;
  requestsInFlightMax?: number;
  sendBufferBytesMax?: number;
}

export function serveConnection<T extends { id: RequestId }>(connection: Connection, options: ServeOptions<T>): void {
  const served = new ServedConnection(connection, options);
  connection.drain$.subscribe(() => {
    served.flush();
    served.drained();
  });
  connection.frames$.subscribe({ next: (text) => served.receive(text), complete: () => served.end() });
}

/** One connection's flow: its requests in flight, its outbox, the requests that wait behind it. */
class ServedConnection<T extends { id: RequestId }> implements Channel {
  private readonly inFlightMax: number;
  private readonly sendBufferMax: number;
  private readonly budget: SendBudget;
  private inFlight = 0;
  private paused = false;
  private flushing = false;
  /** Answers waiting for the socket to drain, and what they hold. */
  private readonly outbox: Answer[] = [];
  private heldBytes = 0;
  /** Requests read while answers wait: handled once the socket drains, so they add nothing meanwhile. */
  private readonly waiting: T[] = [];
  private readonly writableSubject = new Subject<void>();
  private readonly closedSubject = new Subject<void>();
  readonly writable$: Observable<void> = this.writableSubject;
  readonly closed$: Observable<void> = this.closedSubject;

  constructor(
    private readonly connection: Connection,
    private readonly options: ServeOptions<T>,
  ) {
    this.inFlightMax = options.requestsInFlightMax ?? CONNECTION_REQUESTS_IN_FLIGHT_MAX;
    this.sendBufferMax = options.sendBufferBytesMax ?? CONNECTION_SEND_BUFFER_BYTES_MAX;
    this.budget = options.budget ?? new SendBudget();
    this.budget.add(connection, () => connection.bufferedBytes + this.heldBytes);
  }

  /** A frame read: its request is handled now, or queued behind answers that wait. */
  receive(text: string): void {
    const request = this.parse(text);
    if (request === undefined) return;
    this.inFlight += 1;
    if (this.blocked() || this.waiting.length > 0) {
      this.waiting.push(request);
      this.flowControl();
      return;
    }
    this.flowControl();
    this.handle(request);
  }

  /** Sends what fits, then handles what waited; a loop, not recursion, however much waits. */
  flush(): void {
    if (this.flushing) return;
    this.flushing = true;
    while (this.connection.isOpen) {
      if (this.outbox.length > 0 && !this.overSendLimit()) {
        const answer = this.outbox.shift()!;
        this.heldBytes -= answerBytes(answer);
        this.connection.send(typeof answer === 'string' ? answer : JSON.stringify(answer));
      } else if (!this.blocked() && this.waiting.length > 0) {
        this.handle(this.waiting.shift()!);
      } else {
        break;
      }
    }
    this.flushing = false;
    if (this.blocked()) this.budget.enforce();
    this.flowControl();
  }

  /** The connection closed: what waited is dropped, and the budget no longer counts it. */
  end(): void {
    this.outbox.length = 0;
    this.waiting.length = 0;
    this.heldBytes = 0;
    this.budget.delete(this.connection);
    this.closedSubject.next();
    this.closedSubject.complete();
    this.writableSubject.complete();
  }

  /** The socket drained: frames of handlers' own may go on. */
  drained(): void {
    if (this.connection.isOpen && this.writable) this.writableSubject.next();
  }

  push(text: string): boolean {
    if (!this.connection.isOpen) return false;
    this.deliver(text);
    return true;
  }

  get writable(): boolean {
    return !this.blocked();
  }

  get isOpen(): boolean {
    return this.connection.isOpen;
  }

  /** The request a frame holds; a frame that holds none is answered with its error. */
  private parse(text: string): T | undefined {
    let parsed: Parsed<T>;
    try {
      parsed = this.options.parse(text);
    } catch (error) {
      this.fail(null, new KvError('INTERNAL', `parser fault: ${(error as Error).message}`));
      return undefined;
    }
    if (!parsed.ok) {
      this.options.meter?.refused(parsed.error.code);
      this.fail(parsed.id, parsed.error);
      return undefined;
    }
    return parsed.request;
  }

  /** Runs the handler; an answer given at once is delivered at once. */
  private handle(request: T): void {
    const began = this.options.meter?.begin() ?? 0;
    let answer: Handled | Promise<Handled>;
    try {
      answer = this.options.handle(request, this);
    } catch (error) {
      this.settle(request, began, { error });
      return;
    }
    if (answer instanceof Promise) {
      answer.then(
        (value) => this.settle(request, began, { answer: value }),
        (error: unknown) => this.settle(request, began, { error }),
      );
    } else {
      this.settle(request, began, { answer });
    }
  }

  /** A request's answer, or its error, goes out, and the request is no longer in flight. */
  private settle(request: T, began: number, outcome: { answer: Handled } | { error: unknown }): void {
    let failed: ErrorCode | undefined;
    if (!('answer' in outcome)) {
      const error = toKvError(outcome.error);
      failed = error.code;
      this.fail(request.id, error);
    } else if (outcome.answer instanceof Followed) {
      this.deliver(outcome.answer.answer);
      outcome.answer.afterward();
    } else {
      const { answer } = outcome;
      if (typeof answer !== 'string' && !answer.ok) failed = answer.error.code;
      this.deliver(answer);
    }
    this.options.meter?.answered(request, began, failed);
    this.inFlight -= 1;
    this.flowControl();
  }

  private fail(id: RequestId, error: KvError): void {
    this.options.onRejected?.(id, error);
    this.deliver(errorReply(id, error));
  }

  private deliver(answer: Answer): void {
    if (!this.connection.isOpen) return;
    this.outbox.push(answer);
    this.heldBytes += answerBytes(answer);
    this.flush();
  }

  /** Pauses reading at the in-flight limit or while answers wait; resumes at half the limit. */
  private flowControl(): void {
    const stop = this.inFlight >= this.inFlightMax || this.blocked();
    if (stop && !this.paused) {
      this.paused = true;
      this.connection.pause();
    } else if (!stop && this.paused && this.inFlight <= this.inFlightMax / 2) {
      this.paused = false;
      this.connection.resume();
    }
  }

  private blocked(): boolean {
    return this.outbox.length > 0 || this.overSendLimit();
  }

  private overSendLimit(): boolean {
    return this.connection.bufferedBytes > this.sendBufferMax;
  }
}
