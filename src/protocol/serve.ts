/**
 * Serves one connection of a server (the hub or a node): every frame is parsed once and
 * answered by id; a bad frame gets its error and the connection keeps serving. Replies
 * may leave out of order (pipelining).
 *
 * Memory stays bounded for a client that does not read: reading stops while the
 * connection has too many requests in flight or too many reply bytes unsent (checked as
 * replies are queued, not only when a frame arrives); replies past the send limit wait
 * unserialized in an outbox until the socket drains (a get's reply shares its value with
 * every other reply of that key); and a SendBudget shared by a server's connections drops
 * the one with the most unsent bytes when all of them together are over the server's limit.
 */
import {
  CONNECTION_REQUESTS_IN_FLIGHT_MAX,
  CONNECTION_SEND_BUFFER_BYTES_MAX,
  SERVER_SEND_BUFFER_BYTES_MAX,
} from '../constants.js';
import { KvError, toKvError } from '../errors.js';
import type { Connection } from '../transport/transport.js';
import type { Answer, RequestId } from './messages.js';
import type { Parsed } from './parse.js';
import { errorReply } from './reply.js';

/** Unsent reply bytes of all of one server's connections, bounded together. */
export class SendBudget {
  private readonly connections = new Set<Connection>();

  constructor(readonly bytesMax = SERVER_SEND_BUFFER_BYTES_MAX) {}

  add(connection: Connection): void {
    this.connections.add(connection);
  }

  delete(connection: Connection): void {
    this.connections.delete(connection);
  }

  /** Drops the connections with the most unsent bytes while the total is over the limit. */
  enforce(): void {
    let total = 0;
    for (const connection of this.connections) total += connection.bufferedBytes;
    while (total > this.bytesMax && this.connections.size > 0) {
      let largest: Connection | undefined;
      for (const connection of this.connections) {
        if (!largest || connection.bufferedBytes > largest.bufferedBytes) largest = connection;
      }
      total -= largest!.bufferedBytes;
      this.connections.delete(largest!);
      largest!.abort();
    }
  }
}

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
  budget.add(connection);
  let inFlight = 0;
  let paused = false;
  const outbox: Answer[] = [];

  const overSendLimit = () => connection.bufferedBytes > sendBufferMax;
  const flowControl = () => {
    const blocked = inFlight >= inFlightMax || outbox.length > 0 || overSendLimit();
    if (blocked && !paused) {
      paused = true;
      connection.pause();
    } else if (!blocked && paused && inFlight <= inFlightMax / 2) {
      paused = false;
      connection.resume();
    }
  };
  const flush = () => {
    while (outbox.length > 0 && !overSendLimit() && connection.isOpen) {
      const answer = outbox.shift()!;
      connection.send(typeof answer === 'string' ? answer : JSON.stringify(answer));
    }
    if (overSendLimit()) budget.enforce();
    flowControl();
  };
  const deliver = (answer: Answer) => {
    if (!connection.isOpen) return;
    outbox.push(answer);
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
      const { id } = parsed.request;
      inFlight += 1;
      flowControl();
      let answer: Answer | Promise<Answer>;
      try {
        answer = options.handle(parsed.request);
      } catch (error) {
        fail(id, toKvError(error));
        settle();
        return;
      }
      if (answer instanceof Promise) {
        answer.then(deliver, (error: unknown) => fail(id, toKvError(error))).finally(settle);
      } else {
        deliver(answer);
        settle();
      }
    },
    complete: () => {
      outbox.length = 0;
      budget.delete(connection);
    },
  });
}
