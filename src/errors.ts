/** The stable error codes of PROTOCOL.md. */
export const ERROR_CODES = [
  'BAD_REQUEST',
  'TOO_LARGE',
  'NOT_PRIMARY',
  'UNAVAILABLE',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'NOT_FOUND',
  'INTERNAL',
  'CONFLICT',
  'COMPACTED',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** An expected failure: it travels to the client as `{ code, message }`. */
export class KvError extends Error {
  override readonly name = 'KvError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra fields of the wire error, such as `primary` for NOT_PRIMARY. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/**
 * Details of an UNAVAILABLE answered before anything was applied: the client may send the
 * request again (PROTOCOL.md, UNAVAILABLE).
 */
export const NOTHING_APPLIED = { applied: false } as const;

/**
 * The connection a request traveled on closed before its reply came: expected whenever a
 * peer goes away, and told apart by its type, not its message.
 */
export class ConnectionClosedError extends KvError {
  constructor() {
    super('UNAVAILABLE', 'connection closed');
  }
}

/** Turns anything thrown into a KvError; faults that are not KvErrors become INTERNAL. */
export function toKvError(error: unknown): KvError {
  if (error instanceof KvError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new KvError('INTERNAL', message);
}

/** A programmer error: these stay on in production. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export function assertNever(value: never): never {
  throw new Error(`assertion failed: unexpected ${JSON.stringify(value)}`);
}
