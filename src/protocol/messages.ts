/**
 * The wire messages of pbkv, as discriminated unions on `type`. Frames are parsed into
 * these once, at the boundary (parse.ts); everything behind it works on typed values.
 * The wire field is `op`; PROTOCOL.md is the contract for the client-facing ones.
 */
import type { ErrorCode } from '../errors.js';

/** A request id: whatever JSON string or number the client chose; null if unreadable. */
export type RequestId = string | number | null;

/** Any JSON value. A stored value is any of these but a top-level null. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * A write's request tag (PROTOCOL.md, "Retries applied at most once"): the id its client
 * picked once, and a number that grows with each new write of that client.
 */
export interface RequestTag {
  client: string;
  req: number;
}

/**
 * When a key expires: `ttlMs` from when the primary applies the write, or `expiresAt`
 * (Unix ms) as given. Judged by the primary's wall clock (PROTOCOL.md, expiry).
 */
export type Expiry = { kind: 'ttl'; ms: number } | { kind: 'at'; ms: number };

/**
 * A write as a client asked for it: decided on the primary, in seq order, against the
 * state every earlier write left (conditions, counters, expiry, the keys a clear takes).
 * Only what it resolves to, a WriteOp, is replicated.
 */
export type WriteIntent =
  | { kind: 'put'; key: string; valueJson: string; ifVersion: number | undefined; expiry: Expiry | undefined; tag: RequestTag | undefined }
  | { kind: 'del'; key: string; ifVersion: number | undefined; tag: RequestTag | undefined }
  | { kind: 'incr'; key: string; by: number; ifVersion: number | undefined; expiry: Expiry | undefined; tag: RequestTag | undefined }
  | { kind: 'clear'; prefix: string; limit: number; tag: RequestTag | undefined }
  /** The primary's own: delete `key` if it is still at the `version` that expired. */
  | { kind: 'expire'; key: string; version: number; tag: undefined };

/**
 * A write as it travels through the primary's store, the log and the replicas: a result,
 * which every node applies the same way without deciding anything. Its seq is its version.
 *   put    the value, its expiry (Unix ms) if any; `incr` when a counter made it
 *   del    `found`: the key was present (not expired) before; `expiredAt`: an expiry
 *          delete, judged at that wall time (the watermark expiry is never judged below)
 *   clear  the keys it deleted (those with `prefix` that the primary chose), how many of
 *          them were present, and whether keys with the prefix remained
 */
export type WriteOp =
  | { kind: 'put'; key: string; valueJson: string; expiresAt: number | undefined; incr: boolean; tag: RequestTag | undefined }
  | { kind: 'del'; key: string; found: boolean; expiredAt: number | undefined; tag: RequestTag | undefined }
  | { kind: 'clear'; prefix: string; keys: string[]; deleted: number; more: boolean; tag: RequestTag | undefined };

/** A key as a store holds it: its value's JSON, the seq that last wrote it, its expiry. */
export interface Entry {
  valueJson: string;
  version: number;
  expiresAt: number | undefined;
}

// ---- Requests a node serves -------------------------------------------------------

export interface GetRequest { type: 'get'; id: RequestId; key: string }
export interface PutRequest {
  type: 'put';
  id: RequestId;
  key: string;
  value: Json;
  valueJson: string;
  ifVersion: number | undefined;
  expiry: Expiry | undefined;
  tag: RequestTag | undefined;
}
export interface DelRequest { type: 'del'; id: RequestId; key: string; ifVersion: number | undefined; tag: RequestTag | undefined }
export interface IncrRequest { type: 'incr'; id: RequestId; key: string; by: number; ifVersion: number | undefined; expiry: Expiry | undefined; tag: RequestTag | undefined }
/** A page of the keys with `prefix`, after `after`, in UTF-8 byte order. */
export interface ListRequest { type: 'list'; id: RequestId; prefix: string; after: string | undefined; limit: number; values: boolean }
/** Deletes up to `limit` keys with `prefix` as one write. */
export interface ClearRequest { type: 'clear'; id: RequestId; prefix: string; limit: number; tag: RequestTag | undefined }
/** What a watch covers: one key, or every key with a prefix (`""`: all). */
export type WatchTarget = { kind: 'key'; key: string } | { kind: 'prefix'; prefix: string };
/**
 * Changes to `target` once acknowledged, from `fromVersion` on when given (PROTOCOL.md,
 * "Watching changes"). `replaces`: a text command's watch takes the place of the
 * connection's earlier one.
 */
export interface WatchRequest { type: 'watch'; id: RequestId; target: WatchTarget; fromVersion: number | undefined; replaces: boolean }
/** Ends the connection's watch whose request had the id `watch`. */
export interface UnwatchRequest { type: 'unwatch'; id: RequestId; watch: RequestId }
/** `asText`: a person typed `help` at a wscat prompt, so the answer is plain text, not JSON. */
export interface HelpRequest { type: 'help'; id: RequestId; asText: boolean }
/** Opens a node-to-node (or node-to-hub) session: who is speaking, as primary of which view. */
export interface HelloRequest { type: 'hello'; id: RequestId; from: string; epoch: number }
/** The primary renews the lease a replica grants it when it has nothing to send. */
export interface LeaseRequest { type: 'lease'; id: RequestId; epoch: number }
/** Answers the challenge of a hello: HMAC-SHA256 over the challenge (auth.ts). */
export interface AuthRequest { type: 'auth'; id: RequestId; proof: string }
/** A batch of writes from the primary: seqs first, first+1, ... in order. */
export interface AppendRequest {
  type: 'append';
  id: RequestId;
  epoch: number;
  first: number;
  ops: WriteOp[];
  /** The ops' text as it came (the replica logs it as it is) and where each op starts in it. */
  wire: string;
  offsets: Uint32Array;
}

/**
 * One part of a full copy of the primary's store at `seq`, for a replica the log cannot
 * catch up: parts 0, 1, ... in order; the replica's state is replaced when `done`.
 */
export interface SnapshotRequest {
  type: 'snapshot';
  id: RequestId;
  epoch: number;
  seq: number;
  part: number;
  /** [key, value JSON, version, expiresAt or null]. */
  entries: SnapshotEntry[];
  /** The expiry watermark at `seq` (store.ts): a restored replica never judges expiry below it. */
  watermark: number;
  done: boolean;
  /** After the entries, the client sessions the store held at `seq`, in parts of their own. */
  sessions: ClientSession[];
}

/** One key of a snapshot: [key, value JSON, version, expiresAt or null]. */
export type SnapshotEntry = [string, string, number, number | null];

/**
 * What a store remembers of a client that tags its writes: its highest request number
 * applied, the seq of its last write, and what became of its last requests, newest first,
 * one result each (client-sessions.ts).
 */
export interface ClientSession {
  client: string;
  req: number;
  seq: number;
  results: string[];
}

/**
 * One request's result as a session keeps it: `.` not applied; else a mark, the seq it
 * was applied at, and what its reply carries beyond the version:
 *   p17  a put          t18 / f18  a del that found / did not find its key
 *   i20:5  an incr and its value          c22:312:0  a clear, how many it deleted, whether more remain
 */
const SESSION_RESULT = /^(?:\.|[ptf]\d{1,16}|i\d{1,16}:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|c\d{1,16}:\d{1,9}:[01])$/;

/** Whether a session's results read as results (newest first, at most `window`): checked wherever one is read. */
export function isSessionResults(results: unknown, window: number): results is string[] {
  return Array.isArray(results) && results.length > 0 && results.length <= window && results.every((result) => typeof result === 'string' && SESSION_RESULT.test(result));
}

export type ClientRequest = GetRequest | PutRequest | DelRequest | IncrRequest | ListRequest | ClearRequest | WatchRequest | UnwatchRequest | HelpRequest;
export type PeerRequest = HelloRequest | AuthRequest | AppendRequest | SnapshotRequest | LeaseRequest;
export type NodeRequest = ClientRequest | PeerRequest;

// ---- Requests the directory hub serves ------------------------------------------

export interface LookupRequest { type: 'lookup'; id: RequestId; service: string }
export interface ResolveRequest { type: 'resolve'; id: RequestId; name: string }
export interface StatusRequest { type: 'status'; id: RequestId }
export interface RegisterRequest { type: 'register'; id: RequestId; name: string; address: string }

/** A node tells the hub how it is: shown in `status` under `nodes`. */
export interface ReportRequest {
  type: 'report';
  id: RequestId;
  name: string;
  state: NodeState;
  reason: string | undefined;
}
/**
 * starting: not serving yet (no view, taking over or stepping down, no lease yet);
 * serving; degraded: serving, but a replica refuses or misses what it is sent, or a lease
 * lapsed. The reason says why.
 */
export type NodeState = 'starting' | 'serving' | 'degraded';
export const NODE_STATES: readonly NodeState[] = ['starting', 'serving', 'degraded'];

/** How a node is, as it reports it to the hub, and why when not serving. */
export interface NodeHealth {
  state: NodeState;
  reason?: string | undefined;
}

/** The client ops a node counts, and `frame`: a frame that held no request. */
export const METERED_OPS = ['get', 'put', 'del', 'incr', 'list', 'clear', 'watch', 'unwatch', 'help', 'frame'] as const;
export type MeteredOp = (typeof METERED_OPS)[number];

/** One op's counts since the node started: answered, failed by code, and latency by bucket. */
export interface OpCounts {
  count: number;
  /** Answered with an error, by its code. */
  errors: Partial<Record<ErrorCode, number>>;
  /** Requests by latency bucket (LATENCY_BUCKETS_MS, then one past the last): not cumulative. */
  latency: number[];
  /** Latency of all of them together, in ms. */
  sumMs: number;
}

/**
 * What a node has done since it started, carried by its heartbeats. Counters only rise
 * while the process lives; `startedAtMs` changes when it restarts (the counters begin again).
 */
export interface MetricsReport {
  startedAtMs: number;
  ops: Partial<Record<MeteredOp, OpCounts>>;
  /** Write batches the primary committed, the writes in them, and batches by size (BATCH_SIZE_BUCKETS, then one past). */
  batches: number;
  batchedWrites: number;
  batchSizes: number[];
  /** Client connections now open, and accepted since start. */
  connections: number;
  connectionsTotal: number;
  /** Watches now open on this node. */
  watchers: number;
  /** Bytes read from and written to client connections (TCP payload, WebSocket framing included). */
  bytesIn: number;
  bytesOut: number;
}

/** Who serves and who must acknowledge: the hub keeps it, every change raises the epoch. */
export interface View {
  epoch: number;
  primary: string;
  replicas: string[];
  /**
   * The durability floor, a cluster setting the hub keeps with the view: the primary
   * acknowledges a write only while its view holds at least this many replicas (every
   * replica of the view holds each write it acknowledges). Every view the hub makes carries
   * it; absent (a view from a hub that had no floor) it is 0.
   */
  minReplicas?: number;
}

/**
 * Why a view takes no new writes, or undefined when it does: it holds fewer replicas than
 * its durability floor. The primary refuses with it and the hub's status shows it.
 */
export function belowFloor(view: Pick<View, 'epoch' | 'replicas' | 'minReplicas'>): string | undefined {
  const floor = view.minReplicas ?? 0;
  const count = view.replicas.length;
  if (count >= floor) return undefined;
  return `view ${view.epoch} has ${count} ${count === 1 ? 'replica' : 'replicas'} and a write needs at least ${floor} to be acknowledged (min replicas); writes resume when ${floor - count === 1 ? 'a replica rejoins' : `${floor - count} replicas rejoin`}`;
}

/** The first view as the configured primary proposes it (its flags). */
export interface ViewConfig {
  primary: string;
  replicas: string[];
  /** The durability floor; unset, the hub takes 1 when `replicas` names any, else 0. */
  minReplicas?: number | undefined;
}

/**
 * A node's heartbeat: where its store stands, and from the primary which replicas hold
 * everything of its view (synced) and which candidates have caught up. A node started with
 * role flags proposes them as the first view.
 */
export interface HeartbeatRequest {
  type: 'heartbeat';
  id: RequestId;
  name: string;
  /** Where the node's store stands. */
  epoch: number;
  seq: number;
  /** The epoch of the view the node holds (0: none yet). */
  viewEpoch: number;
  config: ViewConfig | undefined;
  synced: string[] | undefined;
  caughtUp: string[] | undefined;
  /** From a primary: a replica of its view holds more than it does (it lost writes). */
  behind: string | undefined;
  /** From a primary: replicas of its view that answered nothing for DEAD_AFTER_MS. */
  unreachable: string[] | undefined;
  /**
   * How the node is as it last reported it: carried by every beat, so what the hub shows
   * of a live node is never older than a beat (a report lost on the way heals at the next).
   */
  health?: NodeHealth | undefined;
  /** What the node did since it started (nodes run with metrics off send none). */
  metrics?: MetricsReport | undefined;
}

export type HubRequest =
  | HeartbeatRequest
  | ReportRequest
  | LookupRequest
  | ResolveRequest
  | StatusRequest
  | RegisterRequest
  | HelloRequest
  | AuthRequest
  | HelpRequest;

// ---- Replies ----------------------------------------------------------------------

export interface WireError { code: ErrorCode; message: string; [detail: string]: unknown }
/** What a server sends back: a reply, or plain text for a person (the help of a text command). */
export type Answer = Reply | string;

export type Reply =
  | ({ id: RequestId; ok: true } & Record<string, unknown>)
  | { id: RequestId; ok: false; error: WireError };
