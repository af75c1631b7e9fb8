/**
 * Serves one connection of a server (the hub or a node): every frame is parsed once and
 * answered by id; a bad frame gets its error and the connection keeps serving. Replies
 * may leave out of order (pipelining). Reading pauses while the connection has too many
 * requests in flight or too many bytes unsent, so one client cannot grow a node's memory.
 */
import { CONNECTION_REQUESTS_IN_FLIGHT_MAX, CONNECTION_SEND_BUFFER_BYTES_MAX } from '../constants.js';
import { KvError, toKvError } from '../errors.js';
import type { Connection } from '../transport/transport.js';
import type { Reply, RequestId } from './messages.js';
import type { Parsed } from './parse.js';
import { errorReply } from './reply.js';

export interface ServeOptions<T> {
  parse(text: string): Parsed<T>;
  /** Answers one request; a thrown KvError becomes its error reply. */
  handle(request: T): Reply | Promise<Reply>;
  /** Told of every request that was answered with an error. */
  onRejected?(id: RequestId, error: KvError): void;
  requestsInFlightMax?: number;
  sendBufferBytesMax?: number;
}

export function serveConnection<T extends { id: RequestId }>(connection: Connection, options: ServeOptions<T>): void {
  const inFlightMax = options.requestsInFlightMax ?? CONNECTION_REQUESTS_IN_FLIGHT_MAX;
  const sendBufferMax = options.sendBufferBytesMax ?? CONNECTION_SEND_BUFFER_BYTES_MAX;
  let inFlight = 0;
  let paused = false;

  const send = (reply: Reply) => {
    connection.send(JSON.stringify(reply));
  };
  const fail = (id: RequestId, error: KvError) => {
    options.onRejected?.(id, error);
    send(errorReply(id, error));
  };
  const settle = () => {
    inFlight -= 1;
    if (paused && inFlight <= inFlightMax / 2 && connection.bufferedBytes <= sendBufferMax / 2) {
      paused = false;
      connection.resume();
    }
  };

  connection.frames$.subscribe((text) => {
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
    if (!paused && (inFlight >= inFlightMax || connection.bufferedBytes > sendBufferMax)) {
      paused = true;
      connection.pause();
    }
    let answer: Reply | Promise<Reply>;
    try {
      answer = options.handle(parsed.request);
    } catch (error) {
      fail(id, toKvError(error));
      settle();
      return;
    }
    if (answer instanceof Promise) {
      answer.then(send, (error: unknown) => fail(id, toKvError(error))).finally(settle);
    } else {
      send(answer);
      settle();
    }
  });
}
