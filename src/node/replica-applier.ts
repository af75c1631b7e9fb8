/**
 * The replica's side of replication: batches from the primary are applied strictly in
 * seq order. A batch past a gap waits (bounded) until the gap fills; a batch already
 * applied is acked again without being reapplied; what queued up while a transaction
 * was running is applied together in the next one. Every append is answered with the
 * highest seq applied once its own last seq is in the store. A replica the primary's log
 * cannot catch up gets a snapshot instead: its parts fill one restore, and the replica's
 * state is replaced when the last part arrives.
 */
import { REPLICA_PENDING_BATCHES_MAX } from '../constants.js';
import { KvError, assert, toKvError } from '../errors.js';
import type { ClientSession, SnapshotRequest, WriteOp } from '../protocol/messages.js';
import type { ReplicationState, Restore, Store } from '../storage/store.js';
import { formatPosition, isAhead } from './position.js';
import { ReplicationLog, tail, type Batch } from './replication-log.js';
import type { TraceEvent } from './trace.js';

/** What a snapshot part brings (its frame's fields). */
export type SnapshotPart = Pick<SnapshotRequest, 'epoch' | 'seq' | 'part' | 'entries' | 'sessions' | 'watermark' | 'done'>;

/** A batch as the primary sent it: its wire text (logged as it came) and its ops decoded from it. */
interface Segment {
  batch: Batch;
  ops: readonly WriteOp[];
}

export class ReplicaApplier {
  /** The highest seq in the store. */
  private applied: number;
  /**
   * Appends waiting until their last seq is in the store, in the order they came: answered
   * on one path as transactions commit (no RxJS chain per append), or all failed together
   * when a transaction fails or the node takes over.
   */
  private readonly waiters: { seq: number; resolve(seq: number): void; reject(error: KvError): void }[] = [];
  /** The next seq that is not yet applied nor queued. */
  private expected: number;
  private readonly ready: Segment[] = [];
  /** Batches past a gap, by their first seq. */
  private readonly waiting = new Map<number, Segment>();
  private applying: Promise<void> | undefined;
  /** The restore in progress, and the sender (a connection's session) it belongs to. */
  private restoring:
    | { restore: Restore; epoch: number; seq: number; nextPart: number; owner: object | undefined; sessions: ClientSession[] }
    | undefined;
  /**
   * What this node applied lately, as the primary logs it: should it be promoted, it
   * catches the other replicas up from here instead of sending each a snapshot.
   */
  log: ReplicationLog;

  constructor(
    private readonly store: Store,
    private readonly trace: (event: TraceEvent) => void,
    private readonly pendingBatchesMax = REPLICA_PENDING_BATCHES_MAX,
    private readonly newLog: (start: ReplicationState) => ReplicationLog = (start) => new ReplicationLog(start),
  ) {
    this.applied = store.state.seq;
    this.expected = store.state.seq + 1;
    this.log = newLog(store.state);
  }

  get seq(): number {
    return this.applied;
  }

  get epoch(): number {
    return this.store.state.epoch;
  }

  /**
   * Accepts a batch, its wire text as it came and its ops decoded from it; resolves with
   * the applied seq once the batch is in the store.
   */
  async append(batch: Batch, ops: readonly WriteOp[]): Promise<number> {
    const { epoch, first: firstSeq } = batch;
    assert(batch.count === ops.length && batch.offsets.length === ops.length, `a batch of ${batch.count} writes holds ${ops.length} ops at ${batch.offsets.length} offsets`);
    if (epoch < this.store.state.epoch) {
      throw new KvError('FORBIDDEN', `epoch ${epoch} is older than this replica's ${this.store.state.epoch}`);
    }
    if (this.restoring) throw new KvError('UNAVAILABLE', 'a snapshot is being restored');
    const last = firstSeq + ops.length - 1;
    if (last >= this.expected) {
      if (firstSeq > this.expected) {
        if (this.waiting.size >= this.pendingBatchesMax) {
          throw new KvError('UNAVAILABLE', `too many batches wait for seq ${this.expected}`);
        }
        this.waiting.set(firstSeq, { batch, ops });
      } else {
        this.enqueue({ batch, ops });
      }
    }
    return this.whenApplied(last);
  }

  /** Settles once no transaction is running: a node taking over starts from a store at rest. */
  async idle(): Promise<void> {
    this.ready.length = 0;
    this.waiting.clear();
    // Appends that were waiting for those batches get an answer: they will not be applied.
    this.failWaiters(new KvError('UNAVAILABLE', 'this node is taking over as primary'));
    while (this.applying) await this.applying;
  }

  /** Drops what is queued after a failure, so the primary resends it from our seq. */
  reset(): void {
    this.ready.length = 0;
    this.waiting.clear();
    this.expected = this.applied + 1;
  }

  private enqueue(segment: Segment): void {
    const { first } = segment.batch;
    const skip = this.expected - first;
    this.ready.push(skip > 0 ? { batch: tail(segment.batch, this.expected), ops: segment.ops.slice(skip) } : segment);
    this.expected = first + segment.ops.length;
    // Batches that were waiting on this gap may now follow.
    for (;;) {
      const next = [...this.waiting.values()].find((s) => s.batch.first <= this.expected);
      if (!next) break;
      this.waiting.delete(next.batch.first);
      if (next.batch.first + next.ops.length > this.expected) this.enqueue(next);
    }
    // After a microtask: the other appends of the same socket read join this transaction.
    this.applying ??= Promise.resolve().then(() => this.applyReady());
  }

  /**
   * Takes one part of a snapshot; resolves with the replica's seq (the snapshot's once
   * the part marked done is in). Part 0 starts a restore, dropping anything queued. Data
   * entries come first, then the client sessions, gathered until done.
   */
  async snapshotPart(snapshot: SnapshotPart, owner?: object): Promise<number> {
    const { epoch, seq, part, entries, sessions, watermark, done } = snapshot;
    if (epoch < this.store.state.epoch) {
      throw new KvError('FORBIDDEN', `epoch ${epoch} is older than this replica's ${this.store.state.epoch}`);
    }
    if (part === 0) {
      // A node never replaces data of its own that the sender lacks.
      const own = this.store.state;
      if (isAhead(own, { epoch, seq })) {
        throw new KvError('FORBIDDEN', `a snapshot at ${formatPosition({ epoch, seq })} would roll this replica back from ${formatPosition(own)}`);
      }
      await this.abortRestore();
      this.reset();
      await this.applying;
      this.restoring = { restore: await this.store.beginRestore(), epoch, seq, nextPart: 0, owner, sessions: [] };
    }
    const current = this.restoring;
    if (!current || current.nextPart !== part || current.seq !== seq || current.owner !== owner) {
      throw new KvError('BAD_REQUEST', `snapshot part ${part} of seq ${seq} is out of order`);
    }
    current.nextPart += 1;
    try {
      await current.restore.add(entries);
      current.sessions.push(...sessions);
      if (!done) return this.applied;
      await current.restore.finish({ epoch, seq }, current.sessions, watermark);
    } catch (error) {
      await this.abortRestore();
      throw error;
    }
    this.restoring = undefined;
    this.expected = seq + 1;
    this.log = this.newLog({ epoch, seq });
    this.trace({ event: 'applied', first: seq, last: seq, writes: 0, role: 'replica' });
    this.advance(seq);
    return seq;
  }

  /**
   * Undoes a restore that will not be finished (its connection closed). With `owner`, only
   * that sender's restore: an old connection closing late must not undo a newer one.
   */
  async abortRestore(owner?: object): Promise<void> {
    const current = this.restoring;
    if (owner !== undefined && current?.owner !== owner) return;
    this.restoring = undefined;
    await current?.restore.abort();
  }

  private async applyReady(): Promise<void> {
    while (this.ready.length > 0) {
      const segments = this.ready.splice(0);
      const epoch = Math.max(...segments.map((s) => s.batch.epoch));
      const ops = segments.length === 1 ? segments[0]!.ops : segments.flatMap((s) => s.ops);
      const firstSeq = segments[0]!.batch.first;
      try {
        const applying = this.store.apply(epoch, firstSeq, ops);
        if (applying) await applying;
      } catch (error) {
        const kvError = toKvError(error);
        this.trace({ event: 'rejected', reason: `replica apply failed: ${kvError.message}`, code: kvError.code });
        this.reset();
        this.failWaiters(kvError);
        continue;
      }
      const last = firstSeq + ops.length - 1;
      assert(this.store.state.seq === last, `the store holds seq ${last} after applying ${firstSeq}-${last}, not ${this.store.state.seq}`);
      // The log keeps each batch's text as it came: nothing is encoded again.
      for (const segment of segments) this.log.append(segment.batch);
      this.trace({ event: 'applied', first: firstSeq, last, writes: ops.length, role: 'replica' });
      this.advance(last);
    }
    this.applying = undefined;
  }

  private whenApplied(seq: number): Promise<number> {
    if (this.applied >= seq) return Promise.resolve(this.applied);
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  /** The store holds `seq` now: the appends waiting for it or less are answered with it. */
  private advance(seq: number): void {
    this.applied = seq;
    let kept = 0;
    for (const waiter of this.waiters) {
      if (waiter.seq <= seq) waiter.resolve(seq);
      else this.waiters[kept++] = waiter;
    }
    this.waiters.length = kept;
  }

  /** Every append waiting gets `error`: what it waited for will not be applied now. */
  private failWaiters(error: KvError): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}
