/** What a node reports of its work, one event per step of a request or a batch. */
import type { RequestId } from '../protocol/messages.js';

export type TraceEvent =
  | { event: 'request'; id: RequestId; op: string; key?: string }
  | { event: 'applied'; first: number; last: number; writes: number; role: 'primary' | 'replica' }
  | { event: 'forwarded'; to: string; first: number; last: number }
  | { event: 'ack'; from: string; seq: number }
  | { event: 'reply'; id: RequestId; ok: boolean; code?: string }
  /** A tagged write applied before came again: answered with its first reply, not applied. */
  | { event: 'retried'; client: string; req: number }
  | { event: 'rejected'; reason: string; code: string; from?: string; address?: string }
  | { event: 'peer'; peer: string; state: 'connected' | 'authenticated' | 'snapshot' | 'caught-up' | 'disconnected'; seq?: number; keys?: number }
  | { event: 'registered'; what: 'name'; address: string }
  | { event: 'serving'; epoch: number }
  | { event: 'view'; epoch: number; primary: string; replicas: string[] }
  | { event: 'fault'; message: string };

export type NodeTrace = TraceEvent & { node: string; at: number };
