/**
 * A node's store: its data and its replication state, committed together. Reads go
 * synchronously (Keyv's own reads add a promise and a parse per get); a batch of writes is
 * applied as one unit (one SQLite transaction). The file stays one Keyv can read.
 */
import type { Observable } from 'rxjs';
import type { ClientSession, Json, RequestTag, WriteOp } from '../protocol/messages.js';
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
   * The value of `key` as the JSON text it is stored as, read synchronously: a reply
   * splices it in as it is, with no parse and no serialization.
   */
  readJson(key: string): string | undefined;
  /**
   * Applies `ops` as seqs first, first+1, ... of `epoch`, all or nothing, together with
   * the new state and the client sessions their tags change. Resolves with, for each op,
   * whether its key existed just before it.
   */
  apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]>;
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
  /** Pages of [key, value JSON], in key order. */
  pages(): AsyncIterable<[string, string][]>;
  /** Ends the read (also when the pages were not all read). */
  close(): Promise<void>;
}

export interface Restore {
  add(entries: readonly [string, string][]): Promise<void>;
  /** Commits the parts with the state and client sessions of the snapshot. */
  finish(state: ReplicationState, sessions: readonly ClientSession[]): Promise<void>;
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

/** Which keys exist after each op, given which existed before the batch. */
export function existedBefore(ops: readonly WriteOp[], exists: Set<string>): boolean[] {
  return ops.map((op) => {
    const existed = exists.has(op.key);
    if (op.kind === 'put') exists.add(op.key);
    else exists.delete(op.key);
    return existed;
  });
}

/** The last op of each key: within one atomic batch, only the last one is ever seen. */
export function lastOpPerKey(ops: readonly WriteOp[]): { puts: [string, string][]; dels: string[] } {
  const last = new Map<string, WriteOp>();
  for (const op of ops) {
    last.delete(op.key);
    last.set(op.key, op);
  }
  const puts: [string, string][] = [];
  const dels: string[] = [];
  for (const op of last.values()) {
    if (op.kind === 'put') puts.push([op.key, storedText(op.valueJson)]);
    else dels.push(op.key);
  }
  return { puts, dels };
}
