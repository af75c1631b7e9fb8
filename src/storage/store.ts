/**
 * A node's store: its data (each key with its version and expiry) and its replication
 * state, committed together. Reads go synchronously (Keyv's own reads add a promise and a
 * parse per get); a batch of writes is applied as one unit (one SQLite transaction). The
 * file stays one Keyv can read. A store decides nothing: expiry is judged by its caller,
 * at a time it passes in, and writes arrive as results (WriteOp).
 */
import type { Observable } from 'rxjs';
import type { ClientSession, Entry, Json, RequestTag, SnapshotEntry, WriteOp } from '../protocol/messages.js';
import type { TagCheck } from './client-sessions.js';

export const SYNC_MODES = ['full', 'normal', 'memory'] as const;
export type SyncMode = (typeof SYNC_MODES)[number];

/** Where a store stands in the primary's history: the last applied seq of an epoch. */
export interface ReplicationState {
  epoch: number;
  seq: number;
}

export interface Store {
  /** The SQLite file, or undefined in memory mode. */
  readonly file: string | undefined;
  readonly syncMode: SyncMode;
  /** The state committed with the last batch. */
  readonly state: ReplicationState;
  /** Faults reported by Keyv or SQLite outside any call (a call's own fault rejects it). */
  readonly errors$: Observable<Error>;
  /**
   * The latest wall time (Unix ms) at which an expiry delete was judged, replicated with
   * those deletes: a primary never judges expiry below it, whatever its own clock says.
   */
  readonly watermark: number;
  /**
   * `key` as stored, expired or not, read synchronously: its value as the JSON text it is
   * stored as (a reply splices it in as it is), its version and its expiry.
   */
  read(key: string): Entry | undefined;
  /**
   * A page of the keys with `prefix` after `after`, in UTF-8 byte order, skipping those
   * expired at `nowMs`: at most `limit` entries and `bytesMax` bytes of values (always one
   * entry), with or without their values; `more` when keys with the prefix follow.
   */
  list(query: ListQuery): ListPage;
  /**
   * The keys with `prefix` a clear takes now: at most `limit`, and at most `bytesMax`
   * bytes of keys (always one); how many of them are live at `nowMs`; whether more follow.
   */
  keysToClear(prefix: string, limit: number, bytesMax: number, nowMs: number): { keys: string[]; live: number; more: boolean };
  /** Keys whose expiry is at or before `nowMs`, the earliest first, at most `limit`, with the version that expired. */
  expired(nowMs: number, limit: number): { key: string; version: number }[];
  /**
   * Applies `ops` as seqs first, first+1, ... of `epoch`, all or nothing, together with
   * the new state, the watermark and the client sessions their tags change. Each key an
   * op writes takes the op's seq as its version. SQLite and memory stores commit before
   * they return, and throw if they could not (no promise, no microtask on the put path); a
   * store whose commit takes time (the simulator's disks) returns a promise instead.
   */
  apply(epoch: number, first: number, ops: readonly WriteOp[]): void | Promise<void>;
  /** What became of a tagged write in this store's history (client-sessions.ts). */
  checkTag(tag: RequestTag): TagCheck;
  /**
   * Records that this store's history goes on in `epoch` (higher than its own) from its
   * current seq: what a node promoted to primary commits before it writes or serves, so
   * that it stands ahead of any node holding writes of the old epoch that were never
   * acknowledged (those are then replaced by a snapshot, never kept).
   */
  beginEpoch(epoch: number): Promise<void>;
  /**
   * A consistent view for a replica that the log cannot catch up: the state it was taken
   * at, and every key with its value JSON in pages. Writes go on meanwhile.
   */
  snapshot(limits: PageLimits): Promise<Snapshot>;
  /**
   * Replaces everything with a snapshot that arrives in parts: nothing is visible until
   * `finish`, and `abort` leaves the store as it was.
   */
  beginRestore(): Promise<Restore>;
  close(): Promise<void>;
}

/**
 * How much one page of a snapshot may hold: entries, and bytes as entryBytes counts them.
 * A page always holds at least one entry.
 */
export interface PageLimits {
  entriesMax: number;
  bytesMax: number;
}

export interface Snapshot {
  readonly state: ReplicationState;
  /** The client sessions at that state, least recently written first. */
  readonly sessions: readonly ClientSession[];
  /** The watermark at that state. */
  readonly watermark: number;
  /** Pages of [key, value JSON, version, expiresAt], in key order. */
  pages(): AsyncIterable<SnapshotEntry[]>;
  /** Ends the read (also when the pages were not all read). */
  close(): Promise<void>;
}

export interface Restore {
  add(entries: readonly SnapshotEntry[]): Promise<void>;
  /** Commits the parts with the state, watermark and client sessions of the snapshot. */
  finish(state: ReplicationState, sessions: readonly ClientSession[], watermark: number): Promise<void>;
  abort(): Promise<void>;
}

/** The stored form of a value, the one Keyv's get reads back: `{"value": ...}`. */
export function storedText(valueJson: string): string {
  return `{"value":${valueJson}}`;
}

/** What storedText adds to a value's JSON, in bytes. */
export const STORED_TEXT_EXTRA_BYTES = Buffer.byteLength(storedText(''));

/** An entry's size in a snapshot page: the UTF-8 bytes of its key and of its value's JSON. */
export function entryBytes(key: string, valueJson: string): number {
  return Buffer.byteLength(key) + Buffer.byteLength(valueJson);
}

export interface ListQuery {
  prefix: string;
  /** Exclusive; undefined: from the first key with the prefix. */
  after: string | undefined;
  limit: number;
  /** Bytes of values in one page (UTF-8 of their JSON); a page holds one entry whatever its size. */
  bytesMax: number;
  values: boolean;
  /** Keys expired at this wall time (Unix ms) are left out. */
  nowMs: number;
}

export interface ListPage {
  /** `valueJson` is undefined when the query asked for no values. */
  entries: { key: string; valueJson: string | undefined; version: number; expiresAt: number | undefined }[];
  more: boolean;
}

/** Whether an entry's expiry is at or before `nowMs`: it is then absent to every read. */
export function isExpired(expiresAt: number | undefined, nowMs: number): boolean {
  return expiresAt !== undefined && expiresAt <= nowMs;
}

/** The version a key written before versions existed is at: the same on every node. */
export const UNVERSIONED_KEY_VERSION = 1;

/**
 * The value's JSON inside its stored form. pbkv writes `{"value":<JSON>}` exactly, so this
 * is a slice; anything else (a row Keyv itself wrote, with more fields) is parsed.
 */
export function valueJsonOf(stored: string): string {
  const prefix = '{"value":';
  if (stored.startsWith(prefix) && stored.endsWith('}') && !stored.includes(',"expires"', stored.length - 40)) {
    return stored.slice(prefix.length, -1);
  }
  return JSON.stringify((JSON.parse(stored) as { value: Json }).value);
}
