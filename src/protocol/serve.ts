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
import { KvError, toKvError } from '../errors.js';
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

export interface ServeOptions<T> {
  parse(text: string): Parsed<T>;
  /** Answers one request; a thrown KvError becomes its error reply. */
  handle(request: T): Answer | Promise<Answer>;
  /** Told of every request that was answered with an error. */
  onRejected?(id: RequestId, error: KvError): void;
  /** Shared by the server's connections; one of its own when not given. */
  budget?: SendBudget;
  requestsInFlightMax?: number;
  sendBufferBytesMax?: number;
}

export function serveConnection<T extends { id: RequestId }>(connection: Connection, options: ServeOptions<T>): void {
  const inFlightMax = options.requestsInFlightMax ?? CONNECTION_REQUESTS_IN_FLIGHT_MAX;
  const sendBufferMax = options.sendBufferBytesMax ?? CONNECTION_SEND_BUFFER_BYTES_MAX;
  const budget = options.budget ?? new SendBudget();
  let inFlight = 0;
  let paused = false;
  let flushing = false;
  /** Answers waiting for the socket to drain, and what they hold. */
  const outbox: Answer[] = [];
  let heldBytes = 0;
  /** Requests read while answers wait: handled once the socket drains, so they add nothing meanwhile. */
  const waiting: T[] = [];
  budget.add(connection, () => connection.bufferedBytes + heldBytes);

  const overSendLimit = () => connection.bufferedBytes > sendBufferMax;
  const blocked = () => outbox.length > 0 || overSendLimit();
  const flowControl = () => {
    const stop = inFlight >= inFlightMax || blocked();
    if (stop && !paused) {
      paused = true;
      connection.pause();
    } else if (!stop && paused && inFlight <= inFlightMax / 2) {
      paused = false;
      connection.resume();
    }
  };
  /** Sends what fits, then handles what waited; a loop, not recursion, however much waits. */
  const flush = () => {
    if (flushing) return;
    flushing = true;
    while (connection.isOpen) {
      if (outbox.length > 0 && !overSendLimit()) {
        const answer = outbox.shift()!;
        heldBytes -= answerBytes(answer);
        connection.send(typeof answer === 'string' ? answer : JSON.stringify(answer));
      } else if (!blocked() && waiting.length > 0) {
        handle(waiting.shift()!);
      } else {
        break;
      }
    }
    flushing = false;
    if (blocked()) budget.enforce();
    flowControl();
  };
  const deliver = (answer: Answer) => {
    if (!connection.isOpen) return;
    outbox.push(answer);
    heldBytes += answerBytes(answer);
    flush();
  };
  const fail = (id: RequestId, error: KvError) => {
    options.onRejected?.(id, error);
    deliver(errorReply(id, error));
  };
  const settle = () => {
    inFlight -= 1;
    flowControl();
  };
  const handle = (request: T) => {
    let answer: Answer | Promise<Answer>;
    try {
      answer = options.handle(request);
    } catch (error) {
      fail(request.id, toKvError(error));
      settle();
      return;
    }
    if (answer instanceof Promise) {
      answer.then(
        (value) => {
          deliver(value);
          settle();
        },
        (error: unknown) => {
          fail(request.id, toKvError(error));
          settle();
        },
      );
    } else {
      deliver(answer);
      settle();
    }
  };

  connection.drain$.subscribe(() => flush());
  connection.frames$.subscribe({
    next: (text) => {
      let parsed: Parsed<T>;
      try {
        parsed = options.parse(text);
      } catch (error) {
        fail(null, new KvError('INTERNAL', `parser fault: ${(error as Error).message}`));
        return;
      }
      if (!parsed.ok) {
        fail(parsed.id, parsed.error);
        return;
      }
      inFlight += 1;
      if (blocked() || waiting.length > 0) {
        waiting.push(parsed.request);
        flowControl();
        return;
      }
      flowControl();
      handle(parsed.request);
    },
    complete: () => {
      outbox.length = 0;
      waiting.length = 0;
      heldBytes = 0;
      budget.delete(connection);
    },
  });
}
