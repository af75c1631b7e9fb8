import { Subject } from 'rxjs';
import { KvError, assert } from '../errors.js';
import type { Entry, RequestTag, SnapshotEntry, WriteOp } from '../protocol/messages.js';
import { ClientSessions, type TagCheck } from './client-sessions.js';
import { entryBytes, isExpired, type ListPage, type ListQuery, type PageLimits, type ReplicationState, type Restore, type Snapshot, type Store } from './store.js';

/**
 * A node's store in a Map, for the simulator, tests and demos. It keeps the contract that
 * SqliteStore keeps (test/storage runs one suite against both), so a simulated node behaves
 * as a real one does; and it is deterministic: no timers, no randomness, no clock, and every
 * call does its work synchronously when it is made, as SqliteStore's calls do. So a batch is
 * committed once `apply` has been called, before its promise settles.
 *
 * A plain Map, not Keyv over one: Keyv's get reads a stored `null` as a missing key and
 * checks expiry against the wall clock, and in memory there is no file for Keyv to read.
 */
export class MemoryStore implements Store {
  readonly file = undefined;
  readonly syncMode = 'memory' as const;
  readonly errors$ = new Subject<Error>();
  /** Key to its entry. Entries are never changed, only replaced: a copy of the Map shares nothing that moves. */
  private data = new Map<string, Entry>();
  private expiryWatermark = 0;
  private replication = frozenState({ epoch: 0, seq: 0 });
  private sessions = new ClientSessions();
  private restoring = false;
  private closed = false;
  /** Set by crash(): the data now belongs to the store crash() returned. */
  private crashed = false;

  /**
   * The state committed with the last batch. Still readable after a crash: like
   * SqliteStore's, it is a copy in the process's memory, not a read of the disk.
   */
  get state(): ReplicationState {
    return this.replication;
  }

  get watermark(): number {
    return this.expiryWatermark;
  }

  read(key: string): Entry | undefined {
    this.refuseIfGone('read');
    return this.data.get(key);
  }

  list(query: ListQuery): ListPage {
    this.refuseIfGone('read');
    const entries: ListPage['entries'] = [];
    let bytes = 0;
    for (const [key, entry] of this.sortedFrom(query.prefix, query.after)) {
      if (isExpired(entry.expiresAt, query.nowMs)) continue;
      const size = query.values ? Buffer.byteLength(entry.valueJson) : 0;
      if (entries.length >= query.limit || (entries.length > 0 && bytes + size > query.bytesMax)) return { entries, more: true };
      bytes += size;
      entries.push({ key, valueJson: query.values ? entry.valueJson : undefined, version: entry.version, expiresAt: entry.expiresAt });
    }
    return { entries, more: false };
  }

  keysToClear(prefix: string, limit: number, bytesMax: number, nowMs: number): { keys: string[]; live: number; more: boolean } {
    this.refuseIfGone('read');
    const keys: string[] = [];
    let live = 0;
    let bytes = 0;
    for (const [key, entry] of this.sortedFrom(prefix, undefined)) {
      const size = Buffer.byteLength(key);
      if (keys.length >= limit || (keys.length > 0 && bytes + size > bytesMax)) return { keys, live, more: true };
      bytes += size;
      keys.push(key);
      if (!isExpired(entry.expiresAt, nowMs)) live += 1;
    }
    return { keys, live, more: false };
  }

  expired(nowMs: number, limit: number): { key: string; version: number }[] {
    this.refuseIfGone('read');
    const due = [...this.data].filter(([, entry]) => isExpired(entry.expiresAt, nowMs));
    due.sort(([a, x], [b, y]) => x.expiresAt! - y.expiresAt! || compareKeys(a, b));
    return due.slice(0, limit).map(([key, entry]) => ({ key, version: entry.version }));
  }

  apply(epoch: number, first: number, ops: readonly WriteOp[]): void {
    this.refuseIfGone('write');
    assert(!this.restoring, 'no batch is applied during a restore');
    assert(ops.length > 0, 'a batch is not empty');
    const sessions = ops.some((op) => op.tag !== undefined) ? this.sessions.plan(first, ops) : undefined;
    ops.forEach((op, index) => {
      switch (op.kind) {
        case 'put':
          this.data.set(op.key, Object.freeze({ valueJson: op.valueJson, version: first + index, expiresAt: op.expiresAt }));
          break;
        case 'del':
          this.data.delete(op.key);
          if (op.expiredAt !== undefined) this.expiryWatermark = Math.max(this.expiryWatermark, op.expiredAt);
          break;
        case 'clear':
          for (const key of op.keys) this.data.delete(key);
          break;
      }
    });
    if (sessions) this.sessions.commit(sessions);
    this.replication = frozenState({ epoch, seq: first + ops.length - 1 });
  }

  /** The entries with `prefix`, after `after`, in key order (a sort per call: this store serves tests and the simulator). */
  private *sortedFrom(prefix: string, after: string | undefined): Generator<[string, Entry]> {
    const keys = [...this.data.keys()].filter((key) => key.startsWith(prefix) && (after === undefined || compareKeys(key, after) > 0));
    keys.sort(compareKeys);
    for (const key of keys) yield [key, this.data.get(key)!];
  }

  checkTag(tag: RequestTag): TagCheck {
    this.refuseIfGone('read');
    return this.sessions.check(tag);
  }

  async beginEpoch(epoch: number): Promise<void> {
    this.refuseIfGone('write');
    assert(!this.restoring, 'no epoch begins during a restore');
    assert(epoch > this.replication.epoch, `epoch ${epoch} is above ${this.replication.epoch}`);
    this.replication = frozenState({ epoch, seq: this.replication.seq });
  }

  /** The rows are copied when it is taken, so no later batch or restore shows in it. */
  async snapshot(limits: PageLimits): Promise<Snapshot> {
    this.refuseIfGone('snapshot');
    let rows: SnapshotEntry[] | undefined = [...this.data]
      .sort(([a], [b]) => compareKeys(a, b))
      .map(([key, entry]): SnapshotEntry => [key, entry.valueJson, entry.version, entry.expiresAt ?? null]);
    const refuseIfCrashed = () => {
      if (this.crashed) throw new KvError('UNAVAILABLE', 'snapshot read refused: the memory store crashed');
    };
    return {
      state: this.replication,
      sessions: this.sessions.all(),
      watermark: this.expiryWatermark,
      // As with SqliteStore's reader connection, closing the store does not end a snapshot;
      // a crash does: a process that died reads nothing more.
      async *pages() {
        for (const page of pagesOf(rows ?? [], limits)) {
          refuseIfCrashed();
          yield page;
        }
      },
      close: async () => {
        rows = undefined;
      },
    };
  }

  /** Parts gather in a Map of their own, which replaces the data at `finish`. */
  async beginRestore(): Promise<Restore> {
    this.refuseIfGone('restore');
    assert(!this.restoring, 'one restore at a time');
    this.restoring = true;
    const next = new Map<string, Entry>();
    let open = true;
    // A part or a finish after the restore ended is a caller's bug, caught here: SqliteStore
    // would write it into the live table outside any transaction.
    const refuseIfUnusable = (what: string) => {
      this.refuseIfGone(`restore ${what}`);
      assert(open, `a restore that has ended takes no ${what}`);
    };
    return {
      add: async (entries) => {
        refuseIfUnusable('add');
        for (const [key, valueJson, version, expiresAt] of entries) next.set(key, Object.freeze({ valueJson, version, expiresAt: expiresAt ?? undefined }));
      },
      finish: async (state, sessions, watermark) => {
        refuseIfUnusable('finish');
        open = false;
        this.restoring = false;
        this.data = next;
        this.expiryWatermark = watermark;
        this.replication = frozenState(state);
        this.sessions.replace(sessions);
      },
      // Also after a crash: it changes nothing, and a caller's cleanup may still run it.
      abort: async () => {
        if (!open || this.crashed) return;
        open = false;
        this.restoring = false;
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.errors$.complete();
  }

  /**
   * For the simulator: this store's process died. Returns a new store holding exactly
   * what was committed, every applied batch and finished restore with its state, and
   * nothing of a restore still in progress. From now on this store refuses every read
   * and write of its data with UNAVAILABLE: the node that held it may still be running
   * code in the simulator, and must not write into a disk its process no longer has.
   * A closed store hands its data on the same way, so a node can also be restarted cleanly.
   */
  crash(): MemoryStore {
    if (this.crashed) throw new KvError('UNAVAILABLE', 'memory store crashed already: its data went to the store its first crash() returned');
    const survivor = new MemoryStore();
    survivor.data = new Map(this.data);
    survivor.expiryWatermark = this.expiryWatermark;
    survivor.replication = this.replication;
    survivor.sessions = this.sessions.copy();
    this.crashed = true;
    // Nothing reads it any more; a long simulation crashes many nodes.
    this.data = new Map();
    return survivor;
  }

  private refuseIfGone(what: string): void {
    if (this.crashed) throw new KvError('UNAVAILABLE', `${what} refused: the memory store crashed`);
    if (this.closed) throw new KvError('UNAVAILABLE', `${what} refused: the store is closed`);
  }
}

/**
 * A state of its own, frozen: the store hands it out (state, a snapshot's state) and a
 * crash copy takes it over, so no holder can change it under another.
 */
function frozenState(state: ReplicationState): ReplicationState {
  return Object.freeze({ epoch: state.epoch, seq: state.seq });
}

/**
 * SQLite's order of keys: its BINARY collation compares UTF-8 bytes, which is code point
 * order. Comparing UTF-16 code units, as `<` and sort() do, would put a key from U+10000 up
 * (a surrogate pair) before one in U+E000..U+FFFF, and snapshot pages would differ.
 */
export function compareKeys(a: string, b: string): number {
  const shorter = Math.min(a.length, b.length);
  for (let i = 0; i < shorter; i += 1) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/** Moves surrogates (which start code points above U+FFFF) above U+E000..U+FFFF. */
function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

/**
 * Sorted rows cut into pages as SqliteStore cuts them: at most `entriesMax` entries and
 * `bytesMax` bytes (entryBytes), except that a page always holds one entry.
 */
function* pagesOf(rows: readonly SnapshotEntry[], limits: PageLimits): Generator<SnapshotEntry[]> {
  let page: SnapshotEntry[] = [];
  let bytes = 0;
  for (const row of rows) {
    const size = entryBytes(row[0], row[1]);
    if (page.length > 0 && (page.length >= limits.entriesMax || bytes + size > limits.bytesMax)) {
      yield page;
      page = [];
      bytes = 0;
    }
    page.push(row);
    bytes += size;
  }
  if (page.length > 0) yield page;
}
