import { KvError } from '../errors.js';
import type { Reply, RequestId } from './messages.js';

export function okReply(id: RequestId, fields: Record<string, unknown> = {}): Reply {
  return { id, ok: true, ...fields };
}

export function errorReply(id: RequestId, error: KvError): Reply {
  return { id, ok: false, error: { code: error.code, message: error.message, ...error.details } };
}

/** The reverse of errorReply, for the client side. */
export function replyError(reply: Reply): KvError | undefined {
  if (reply.ok) return undefined;
  const { code, message, ...details } = reply.error;
  return new KvError(code, message, details);
}
