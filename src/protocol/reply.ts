/**
 * Replies: built by servers, and parsed at the boundary by everyone who reads them (the
 * client, the hub client, the primary's replica links), so a malformed reply is an error
 * on its request, never a crash.
 */
import { ERROR_CODES, KvError, type ErrorCode } from '../errors.js';
import type { Reply, RequestId } from './messages.js';

export function okReply(id: RequestId, fields: Record<string, unknown> = {}): Reply {
  return { id, ok: true, ...fields };
}

export function errorReply(id: RequestId, error: KvError): Reply {
  return { id, ok: false, error: { code: error.code, message: error.message, ...error.details } };
}

/** A successful reply: its fields are the op's own. */
export type OkReply = Extract<Reply, { ok: true }>;

/**
 * A reply frame as its id and either its ok fields or its error. A frame without a usable
 * id is undefined (it answers nothing); one with an id but not of the reply's shape is an
 * error for that request.
 */
export function parseReply(text: string): { id: RequestId; result: OkReply | KvError } | undefined {
  const fields = decodeObject(text);
  return fields === undefined ? undefined : replyOf(fields);
}

/**
 * A frame sent for an earlier request after its reply: a watch's event (PROTOCOL.md,
 * "Watching changes"), which carries `event` where a reply carries `ok`. Its own fields are
 * read by whoever asked for the stream.
 */
export interface EventFrame {
  id: RequestId;
  event: string;
  fields: Record<string, unknown>;
}

/**
 * parseReply, or an EventFrame for a frame with a string `event` and no `ok`; and a reply
 * whose id is null too, the answer to a frame sent without one (RpcChannel.post).
 */
export function parseReplyOrEvent(text: string): { id: RequestId; result: OkReply | KvError } | EventFrame | undefined {
  const fields = decodeObject(text);
  if (fields === undefined) return undefined;
  const { id, event } = fields;
  if (fields['ok'] === undefined && typeof event === 'string' && (typeof id === 'string' || typeof id === 'number')) return { id, event, fields };
  return replyOf(fields, true);
}

function decodeObject(text: string): Record<string, unknown> | undefined {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded)) return undefined;
  return decoded as Record<string, unknown>;
}

function replyOf(fields: Record<string, unknown>, nullId = false): { id: RequestId; result: OkReply | KvError } | undefined {
  const id = fields['id'];
  if (typeof id !== 'string' && typeof id !== 'number' && !(nullId && id === null)) return undefined;
  const malformed = (why: string) => ({ id, result: new KvError('INTERNAL', `malformed reply: ${why}`) });
  if (fields['ok'] === true) return { id, result: fields as OkReply };
  if (fields['ok'] !== false) return malformed('ok must be true or false');
  const error = fields['error'];
  if (typeof error !== 'object' || error === null || Array.isArray(error)) return malformed('an error reply needs an error object');
  const { code, message, ...details } = error as Record<string, unknown>;
  if (!ERROR_CODES.includes(code as ErrorCode)) return malformed(`unknown error code ${JSON.stringify(code)}`);
  if (typeof message !== 'string') return malformed('error.message must be a string');
  return { id, result: new KvError(code as ErrorCode, message, details) };
}

/** A reply's field that must be a string (an address, a name). */
export function replyString(reply: OkReply, field: string): string {
  const value = reply[field];
  if (typeof value !== 'string') throw new KvError('INTERNAL', `malformed reply: ${field} must be a string`);
  return value;
}

/** A reply's field that must be a non-negative safe integer (a seq, an epoch). */
export function replyCount(reply: OkReply, field: string): number {
  const value = reply[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new KvError('INTERNAL', `malformed reply: ${field} must be a non-negative integer`);
  }
  return value;
}

/** A reply's field that must be an object of strings (the hub's names and services). */
export function replyStringMap(reply: OkReply, field: string): Record<string, string> {
  const value = reply[field];
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw new KvError('INTERNAL', `malformed reply: ${field} must be an object of strings`);
  }
  return value as Record<string, string>;
}
