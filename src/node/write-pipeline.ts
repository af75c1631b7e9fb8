/**
 * The primary's put path. Writes queue up while the previous batch is being written
 * (natural batching); a batch gets consecutive seqs, is applied to the local store as one
 * transaction, and only if that succeeded goes to the replication log, from which every
 * replica link forwards it. A batch waits for acks on one settle path: when every replica
 * of the view has acked a seq at or past its last one (judged on each ack and on each
 * view change), its writes are answered, in seq order; one ack timer, armed while a batch
 * waits, fails the batches whose ack timeout passed with UNAVAILABLE. Nothing is built per
 * batch but the batch's own record. At most BATCHES_IN_FLIGHT_MAX batches wait for acks;
 * order is kept because seqs are, and replicas apply in seq order. Reads go through
 * `read`: what was read is answered once every replica holds the last write to the key.
 *
 * A tagged write that this node's store has applied before (its client retried it after
 * a lost reply or a failover) is not applied again: it gets the first reply, once every
 * replica holds the first write; one still in the pipeline shares the first one's outcome.
 *
 * The durability floor: while the view holds fewer replicas than its `minReplicas`, a new
 * write is refused before it is applied (UNAVAILABLE, applied: false), writes already
 * applied end UNAVAILABLE (they may be on some nodes), and a read is answered only if the
 * last write to its key is on the replicas that left (so the hub may promote one of them).
 */
import { BehaviorSubject, Subject, Subscription, combineLatest, filter, first, firstValueFrom, map, of, switchMap, throwError, timeout, type Observable } from 'rxjs';
import { BATCHES_IN_FLIGHT_MAX, BATCH_BYTES_MAX, BATCH_WRITES_MAX, REQUEST_TAG_WINDOW, WRITE_QUEUE_BYTES_MAX, WRITE_QUEUE_MAX } from '../constants.js';
import { KvError, NOTHING_APPLIED, assert, toKvError } from '../errors.js';
import type { Cancel, Clock } from '../env/environment.js';
import { belowFloor, type RequestTag, type WriteIntent, type WriteOp } from '../protocol/messages.js';
import { replyOf } from '../storage/client-sessions.js';
import type { Store } from '../storage/store.js';
import { failWhen } from './operators.js';
import { encodeBatch, intentBytes, type ReplicationLog } from './replication-log.js';
import { BatchResolver, type Resolution } from './resolve.js';
import type { TraceEvent } from './trace.js';

/**
 * What the pipeline needs of a replica: its name and its acks. (It hears of new batches
 * from the replication log, whose every append each link follows.)
 */
export interface AckSource {
  readonly name: string;
  /** The highest seq the replica has acknowledged. */
  readonly acked$: BehaviorSubject<number>;
  /** Why the replica is refusing what it is sent, if it said so. */
  readonly problem?: string | undefined;
}

export interface WritePipelineOptions {
  clock: Clock;
  /** The epoch writes are made in; setView changes it. */
  epoch: number;
  /** The durability floor of the view (0 unless given); setView changes it. */
  minReplicas?: number;
  ackTimeoutMs: number;
  batchWritesMax?: number;
  batchBytesMax?: number;
  writeQueueMax?: number;
  writeQueueBytesMax?: number;
  /** Batches applied locally but not yet acked by every replica; more writes wait and batch up. */
  batchesInFlightMax?: number;
  /**
   * Why this node may not answer from what it read, if so: a retry's answer from what its
   * store remembers, or a refusal (CONFLICT) from the version it read. Such answers write
   * nothing, so no replica vouches for them; they take the read's leases instead (a
   * deposed primary, still serving the clients connected to it, holds none).
   */
  readError?: () => KvError | undefined;
  /**
   * Told of each batch once every replica of the view holds it, in seq order, before its
   * writes are answered (watches: only acknowledged changes are announced).
   */
  onAcknowledged?: (first: number, ops: readonly WriteOp[]) => void;
}

interface QueuedWrite {
  intent: WriteIntent;
  bytes: number;
  /**
   * The submitter's promise and how it settles (through succeed and fail, which also forget
   * it): the reply's fields after id and ok, as text (`"version":17`, client-sessions.ts).
   */
  written: Promise<string>;
  resolve(reply: string): void;
  reject(error: KvError): void;
  /** The tag as a key of taggedWrites. */
  tagId: string | undefined;
}

/** A batch applied here and logged, waiting until every replica of the view holds its last seq. */
interface WaitingBatch {
  first: number;
  last: number;
  ops: readonly WriteOp[];
  /** The writes that became `ops`, in the same order: answered once the batch is acknowledged. */
  writes: readonly QueuedWrite[];
  /** When it fails with UNAVAILABLE, on the clock's time. */
  deadlineMs: number;
}

export class WritePipeline {
  private queue: QueuedWrite[] = [];
  private queueBytes = 0;
  private draining = false;
  /** Batches waiting for acks, oldest first: at most batchesInFlightMax. */
  private readonly waiting: WaitingBatch[] = [];
  /** Armed while a batch waits, for the oldest one's deadline (it re-arms itself for the next). */
  private ackTimer: Cancel | undefined;
  /** The acks of the view's replicas, each of which may settle waiting batches. */
  private acks = new Subscription();
  private nextSeq: number;
  /**
   * The seq of the last write to each key committed here but maybe not yet on every
   * replica. A Map keeps insertion order and a key is re-inserted when written again, so
   * seqs rise from front to back and acked entries are dropped from the front.
   */
  private readonly unacked = new Map<string, number>();
  /**
   * Per key, the last write to it not yet settled (read your own pipelined writes): writes
   * to one key settle in the order they were queued.
   */
  private readonly queuedWrites = new Map<string, Promise<string>>();
  /** Clears not yet settled: a read of a key with one's prefix waits for it, as for a write of that key. */
  private readonly queuedClears = new Set<QueuedWrite>();
  /** The last write submitted and not yet settled: a list waits for it (and so for every one before). */
  private lastQueued: QueuedWrite | undefined;
  /** Tagged writes submitted and not yet settled, by client and req: a retry meanwhile shares the outcome. */
  private readonly taggedWrites = new Map<string, Promise<string>>();
  private readonly closing$ = new Subject<void>();
  private closed = false;
  private closeReason = 'the node is closing';
  /** The replicas of the view: every write waits for all of them; a change re-judges waiting writes. */
  private readonly replicas$: BehaviorSubject<readonly AckSource[]>;
  private epoch: number;
  /** No write is acknowledged while the view holds fewer replicas than this. */
  private minReplicas: number;
  /**
   * While below the floor: the highest seq every replica of the last view at or above it
   * had acknowledged as it went below (what those that left hold). Writes past it are on
   * no replica the hub could promote, so reads of them wait. A primary whose first view is
   * below the floor knows of no such seq: 0.
   */
  private durableSeqBelowFloor = 0;
  /** No read is answered before every replica holds this seq (what a new primary held when it took over). */
  private readsFromSeq: number;
  /** The batch being committed, and a view change waiting for it: no batch starts meanwhile. */
  private applying: Promise<unknown> | undefined;
  private switching: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly log: ReplicationLog,
    replicas: readonly AckSource[],
    private readonly options: WritePipelineOptions,
    private readonly trace: (event: TraceEvent) => void,
  ) {
    this.nextSeq = log.lastSeq + 1;
    this.replicas$ = new BehaviorSubject(replicas);
    this.epoch = options.epoch;
    this.minReplicas = options.minReplicas ?? 0;
    this.readsFromSeq = log.lastSeq;
    this.followAcks();
  }

  /**
   * A new view with this node still primary: later batches go in its epoch, and writes
   * waiting for a replica that left it complete once the others have them (or fail, if
   * the view is now below its floor).
   */
  async setView(view: { epoch: number; minReplicas: number }, replicas: () => readonly AckSource[], switched: () => void = () => undefined): Promise<void> {
    const { epoch } = view;
    const previous = this.switching;
    const switching = (async () => {
      // The batch being committed goes in the old epoch; then the store's history goes on
      // in the new one, committed before any batch of it.
      await previous?.catch(() => undefined);
      await this.idle();
      if (this.store.state.epoch < epoch) {
        await this.store.beginEpoch(epoch);
        this.log.beginEpoch(epoch);
      }
      const wasBelow = this.floorRefusal() !== undefined;
      const ackedBefore = this.ackedByAll();
      this.epoch = epoch;
      this.minReplicas = view.minReplicas;
      const next = replicas();
      const below = next.length < view.minReplicas;
      if (below && !wasBelow) this.durableSeqBelowFloor = ackedBefore;
      // Below the floor nobody joined whom a read must wait for; reads of what is not
      // durable wait for a rejoin instead (ackedByAll stops at durableSeqBelowFloor).
      if (!below) this.readsFromSeq = this.log.lastSeq;
      switched();
      this.replicas$.next(next);
      // Waiting batches are judged again: a replica that left is no longer waited for.
      this.followAcks();
      this.forgetAcked();
    })();
    this.switching = switching;
    try {
      await switching;
    } finally {
      if (this.switching === switching) {
        this.switching = undefined;
        this.kick();
      }
    }
  }

  private get replicas(): readonly AckSource[] {
    return this.replicas$.value;
  }

  /**
   * Queues a write; resolves with its reply's fields once it is on every replica (or, for
   * a write that wrote nothing, once what it read is), or fails with why.
   */
  submit(intent: WriteIntent): Promise<string> {
    if (this.closed) return Promise.reject(new KvError('UNAVAILABLE', this.closeReason, NOTHING_APPLIED));
    const retried = intent.tag && this.retried(intent.tag);
    if (retried) return retried;
    const refused = this.floorRefusal();
    if (refused) return Promise.reject(new KvError('UNAVAILABLE', refused, NOTHING_APPLIED));
    const bytes = intentBytes(intent);
    if (
      this.queue.length >= (this.options.writeQueueMax ?? WRITE_QUEUE_MAX) ||
      (this.queue.length > 0 && this.queueBytes + bytes > (this.options.writeQueueBytesMax ?? WRITE_QUEUE_BYTES_MAX))
    ) {
      return Promise.reject(new KvError('UNAVAILABLE', 'the write queue is full; retry later', NOTHING_APPLIED));
    }
    this.queueBytes += bytes;
    let resolve!: QueuedWrite['resolve'];
    let reject!: QueuedWrite['reject'];
    const written = new Promise<string>((settleOk, settleError) => {
      resolve = settleOk;
      reject = settleError;
    });
    const write: QueuedWrite = { intent, bytes, written, resolve, reject, tagId: intent.tag && tagId(intent.tag) };
    this.queue.push(write);
    if (intent.kind === 'clear') this.queuedClears.add(write);
    else this.queuedWrites.set(intent.key, written);
    this.lastQueued = write;
    if (write.tagId !== undefined) this.taggedWrites.set(write.tagId, written);
    this.kick();
    return written;
  }

  private succeed(write: QueuedWrite, reply: string): void {
    this.forget(write);
    write.resolve(reply);
  }

  private fail(write: QueuedWrite, error: KvError): void {
    this.forget(write);
    write.reject(error);
  }

  /**
   * A write settles: no read of its key waits for it any more, and no retry of its tag
   * shares its outcome (a retry from now on finds it in the store, or not at all).
   */
  private forget(write: QueuedWrite): void {
    const { intent } = write;
    if (intent.kind === 'clear') this.queuedClears.delete(write);
    else if (this.queuedWrites.get(intent.key) === write.written) this.queuedWrites.delete(intent.key);
    if (this.lastQueued === write) this.lastQueued = undefined;
    if (write.tagId !== undefined) this.taggedWrites.delete(write.tagId);
  }

  /** The outcome of a write this node has seen with that tag; undefined for a new one. */
  private retried(tag: RequestTag): Promise<string> | undefined {
    const inFlight = this.taggedWrites.get(tagId(tag));
    if (inFlight) return inFlight;
    const seen = this.store.checkTag(tag);
    switch (seen.kind) {
      case 'new':
        return undefined;
      case 'applied':
        this.trace({ event: 'retried', client: tag.client, req: tag.req });
        // Below the floor, only what the replicas that left hold counts as on every replica.
        return Promise.resolve(this.onEveryReplica(seen.seq, seen.reply, `req ${tag.req} of client ${tag.client}`, {})).then((reply) => {
          const refused = this.options.readError?.();
          if (refused) throw refused;
          return reply;
        });
      case 'stale':
        // Well-formed, but past what the session remembers: the outcome is unknown, as
        // UNAVAILABLE says, and retrying cannot change that (`expired`).
        return Promise.reject(
          new KvError(
            'UNAVAILABLE',
            `req ${tag.req} of client ${tag.client} is older than the last ${REQUEST_TAG_WINDOW} requests its session remembers (from ${seen.oldest}); whether it was applied is not known`,
            { expired: true },
          ),
        );
    }
  }

  /**
   * Reads `key` as every replica holds it. `read` runs at once (once a write to the key
   * queued before it, the same client's pipelined put, has settled), and what it returned
   * is handed back when every replica holds the last write to the key that this node had
   * committed by then: a read never returns what a failover could lose (not even the value
   * of a put that was answered UNAVAILABLE). Reading first and waiting after matters: a
   * write committed while the answer waits is not returned, since it may not be on every
   * replica yet. UNAVAILABLE after the ack timeout.
   */
  read<T>(key: string, read: () => T): T | Promise<T> {
    const queued = this.queuedFor(key);
    if (queued) {
      const after = () => this.read(key, read);
      return queued.then(after, after);
    }
    return this.onEveryReplica(this.unacked.get(key) ?? 0, read(), `the last write to ${key}`, NOTHING_APPLIED);
  }

  /**
   * Reads anything (a page of keys) as every replica holds it: `read` runs once every write
   * queued before it has settled, and is given the seq the store is at; what it returned is
   * handed back once every replica holds that seq.
   */
  readAll<T>(read: (seq: number) => T): T | Promise<T> {
    const queued = this.lastQueued?.written;
    if (queued) {
      const after = () => this.readAll(read);
      return queued.then(after, after);
    }
    const seq = this.store.state.seq;
    return this.onEveryReplica(seq, read(seq), 'the last write', NOTHING_APPLIED);
  }

  /**
   * Undefined once every replica holds what this node held when it took over (before, a
   * watch's history could name a write a failover would lose), else a promise of it.
   */
  settled(): Promise<void> | undefined {
    const settled = this.onEveryReplica(this.readsFromSeq, undefined, 'what this primary held when it took over', NOTHING_APPLIED);
    return settled instanceof Promise ? settled : undefined;
  }

  /** The wall time expiry is judged at now: never below the replicated watermark (store.ts). */
  judgeNowMs(): number {
    return Math.max(this.options.clock.wallNow(), this.store.watermark);
  }

  /** A write to `key` (or a clear of a prefix of it) queued and not yet settled. */
  private queuedFor(key: string): Promise<string> | undefined {
    const queued = this.queuedWrites.get(key);
    if (queued || this.queuedClears.size === 0) return queued;
    for (const clear of this.queuedClears) if (key.startsWith((clear.intent as Extract<WriteIntent, { kind: 'clear' }>).prefix)) return clear.written;
    return undefined;
  }

  /**
   * `value` once every replica holds `seq` and what this node held when it took over.
   * Below the floor no replica may take a newer write until one rejoins: what is not on a
   * replica that left may be on none the hub could promote, so it is refused, not awaited.
   */
  private onEveryReplica<T>(seq: number, value: T, what: string, details: Record<string, unknown>): T | Promise<T> {
    const target = Math.max(seq, this.readsFromSeq);
    if (this.ackedByAll() >= target) return value;
    const belowFloor = this.floorRefusal();
    if (belowFloor) return Promise.reject(new KvError('UNAVAILABLE', `${what} may be on no replica, and ${belowFloor}`, details));
    return firstValueFrom(this.allAcked$(target)).then(() => value);
  }

  /** The highest seq every replica has acknowledged; below the floor, no more than those that left hold. */
  private ackedByAll(): number {
    const acked = this.replicas.length === 0 ? Number.MAX_SAFE_INTEGER : Math.min(...this.replicas.map((replica) => replica.acked$.value));
    return this.replicas.length < this.minReplicas ? Math.min(acked, this.durableSeqBelowFloor) : acked;
  }

  /** Why no write is acknowledged now, if so: the view holds fewer replicas than its floor. */
  private floorRefusal(): string | undefined {
    return belowFloor({ epoch: this.epoch, replicas: this.replicas.map((replica) => replica.name), minReplicas: this.minReplicas });
  }

  /** Below the floor, writes queued and not yet applied are refused: nothing of them was applied. */
  private refuseQueued(why: string): void {
    const error = new KvError('UNAVAILABLE', why, NOTHING_APPLIED);
    for (const write of this.queue.splice(0)) this.fail(write, error);
    this.queueBytes = 0;
  }

  /** Forgets the keys whose last write every replica has acknowledged. */
  private forgetAcked(): void {
    const acked = this.ackedByAll();
    assert(this.replicas.length === 0 || acked <= this.log.lastSeq, `replicas acknowledged ${acked}, past the log's last seq ${this.log.lastSeq}`);
    for (const [key, seq] of this.unacked) {
      if (seq > acked) break;
      this.unacked.delete(key);
    }
  }

  /** Writes waiting for a batch. */
  get queued(): number {
    return this.queue.length;
  }

  /** Settles once the batch being committed (if any) is: a deposed primary's store comes to rest. */
  async idle(): Promise<void> {
    await this.applying?.catch(() => undefined);
  }

  /** Fails every write not yet acknowledged, with `reason`. */
  close(reason = 'the node is closing'): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    const error = new KvError('UNAVAILABLE', reason);
    for (const write of this.queue.splice(0)) this.fail(write, error);
    this.queueBytes = 0;
    this.acks.unsubscribe();
    this.ackTimer?.();
    this.ackTimer = undefined;
    const unacknowledged = new KvError('UNAVAILABLE', `${reason}: the write may be on some nodes`);
    for (const batch of this.waiting.splice(0)) for (const write of batch.writes) this.fail(write, unacknowledged);
    this.closing$.next();
    this.closing$.complete();
  }

  private kick(): void {
    if (this.draining || this.switching || this.waiting.length >= this.batchesInFlightMax) return;
    this.draining = true;
    // A microtask lets the other frames of the same socket read join this batch.
    queueMicrotask(() => void this.drain());
  }

  private get batchesInFlightMax(): number {
    return this.options.batchesInFlightMax ?? BATCHES_IN_FLIGHT_MAX;
  }

  /**
   * Takes batches off the queue while batches in flight allow: each is decided, applied in
   * one transaction, logged (every link forwards it from there), and waits for its acks.
   * Synchronous but for a store whose apply returns a promise (the simulator's disks).
   */
  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed && !this.switching && this.waiting.length < this.batchesInFlightMax) {
      const belowFloor = this.floorRefusal();
      if (belowFloor) {
        this.refuseQueued(belowFloor);
        break;
      }
      const writes = this.takeBatch();
      const first = this.nextSeq;
      // Seqs only rise, one per write, with no gap: a replica waits for each one in turn.
      assert(first === this.log.lastSeq + 1 && first === this.store.state.seq + 1, `batch at seq ${first} follows the log at ${this.log.lastSeq} and the store at ${this.store.state.seq}`);
      const resolver = new BatchResolver(this.store, first, this.judgeNowMs(), (key) => this.unacked.get(key) ?? 0);
      const resolutions = writes.map((write) => resolver.resolve(write.intent));
      const ops: WriteOp[] = [];
      for (const resolution of resolutions) if (resolution.kind === 'op') ops.push(resolution.op);
      if (ops.length === 0) {
        this.settleUnapplied(writes, resolutions);
        continue;
      }
      this.nextSeq += ops.length;
      try {
        const applying = this.store.apply(this.epoch, first, ops);
        if (applying) {
          this.applying = applying;
          await applying;
        }
      } catch (error) {
        // Nothing was written, so nothing is forwarded and the seqs are given out again; what
        // the writes refused had read is gone too, so they fail alike.
        this.nextSeq = first;
        const kvError = toKvError(error);
        this.trace({ event: 'rejected', reason: `local apply failed: ${kvError.message}`, code: kvError.code });
        for (const write of writes) this.fail(write, kvError);
        continue;
      }
      const last = first + ops.length - 1;
      assert(this.store.state.seq === last && this.store.state.epoch === this.epoch, `the store holds the batch ${first}-${last} in epoch ${this.epoch}, not ${this.store.state.epoch}:${this.store.state.seq}`);
      for (let index = 0; index < ops.length; index += 1) {
        const op = ops[index]!;
        if (op.kind === 'clear') for (const key of op.keys) this.written(key, first + index);
        else this.written(op.key, first + index);
      }
      this.trace({ event: 'applied', first, last, writes: ops.length, role: 'primary' });
      // Every link (replica or candidate) follows the log's appends and sends the batch.
      this.log.append(encodeBatch(this.epoch, first, ops));
      this.settleUnapplied(writes, resolutions);
      const applied = writes.filter((_, index) => resolutions[index]!.kind === 'op');
      if (this.closed) {
        // Closed while an asynchronous store committed: nobody will acknowledge it here.
        const error = new KvError('UNAVAILABLE', `${this.closeReason}: the write may be on some nodes`);
        for (const write of applied) this.fail(write, error);
        continue;
      }
      this.waiting.push({ first, last, ops, writes: applied, deadlineMs: this.options.clock.now() + this.options.ackTimeoutMs });
      assert(this.waiting.length <= this.batchesInFlightMax, `${this.waiting.length} batches in flight, at most ${this.batchesInFlightMax}`);
      // A view without replicas acknowledges at once.
      this.settleWaiting();
      this.armAckTimer();
    }
    this.draining = false;
  }

  /** `key` was last written at `seq`, here and maybe not yet on every replica (the Map's order is the seqs'). */
  private written(key: string, seq: number): void {
    this.unacked.delete(key);
    this.unacked.set(key, seq);
  }

  /**
   * Follows the acks of the view's replicas (again, after a view change): each ack, and
   * the change itself, may settle waiting batches.
   */
  private followAcks(): void {
    this.acks.unsubscribe();
    this.acks = new Subscription();
    for (const replica of this.replicas) this.acks.add(replica.acked$.subscribe(() => this.settleWaiting()));
    this.settleWaiting();
  }

  /**
   * The one settle path of waiting batches: those every replica of the view holds are
   * answered, oldest first; a view below its floor fails them all (they may be on some
   * nodes). Called on every ack, view change, new batch and ack timer.
   */
  private settleWaiting(): void {
    if (this.waiting.length === 0) return;
    if (this.replicas.length < this.minReplicas) {
      const error = new KvError('UNAVAILABLE', `${this.floorRefusal()}: the write may be on some nodes`);
      for (const batch of this.waiting.splice(0)) this.failBatch(batch, error);
      return;
    }
    let acked = Number.MAX_SAFE_INTEGER;
    for (const replica of this.replicas) acked = Math.min(acked, replica.acked$.value);
    while (this.waiting.length > 0 && this.waiting[0]!.last <= acked) this.acknowledged(this.waiting.shift()!);
  }

  /** Every replica of the view holds `batch`: its writes are answered. */
  private acknowledged(batch: WaitingBatch): void {
    this.forgetAcked();
    this.options.onAcknowledged?.(batch.first, batch.ops);
    batch.writes.forEach((write, index) => this.succeed(write, replyOf(batch.ops[index]!, batch.first + index)));
    this.kick();
  }

  private failBatch(batch: WaitingBatch, error: KvError): void {
    for (const write of batch.writes) this.fail(write, error);
    this.kick();
  }

  /**
   * One timer while batches wait, for the oldest one's deadline: when it fires, the batches
   * whose ack timeout passed fail, naming the replicas that did not acknowledge, and it is
   * armed again for the next. A batch acknowledged before its deadline leaves the timer as
   * it is, so timers come and go about once per ack timeout, not once per batch.
   */
  private armAckTimer(): void {
    if (this.ackTimer !== undefined || this.waiting.length === 0) return;
    const { clock } = this.options;
    this.ackTimer = clock.after(Math.max(0, this.waiting[0]!.deadlineMs - clock.now()), () => {
      this.ackTimer = undefined;
      this.settleWaiting();
      const now = clock.now();
      while (this.waiting.length > 0 && this.waiting[0]!.deadlineMs <= now) {
        const batch = this.waiting.shift()!;
        this.failBatch(batch, this.ackTimeoutError(batch.last));
      }
      this.armAckTimer();
    });
  }

  /** UNAVAILABLE for a write at `seq` not acknowledged in time, naming who did not acknowledge it and why. */
  private ackTimeoutError(seq: number): KvError {
    const { ackTimeoutMs } = this.options;
    const missing = this.replicas.filter((replica) => replica.acked$.value < seq);
    const why = missing.map((replica) => `replica ${replica.name} did not acknowledge within ${ackTimeoutMs} ms${replica.problem === undefined ? '' : ` (${replica.problem})`}`);
    return new KvError('UNAVAILABLE', `${why.join('; ')}; the write may be on some nodes`);
  }

  /**
   * The writes of a batch that wrote nothing: a refused one is a read (CONFLICT says what
   * the key is at), answered once what it read is on every replica; an expiry delete of a
   * key written again settles at once.
   */
  private settleUnapplied(writes: readonly QueuedWrite[], resolutions: readonly Resolution[]): void {
    resolutions.forEach((resolution, index) => {
      const write = writes[index]!;
      if (resolution.kind === 'none') this.succeed(write, '');
      if (resolution.kind !== 'refused') return;
      const { error, seenSeq } = resolution;
      // A refusal is a read: answered once every replica holds what it read, and only while
      // this node may still answer reads (found by the simulator, seed 1211: a primary the
      // hub had replaced answered CONFLICT from its old store after the key's delete was
      // acknowledged by the new one).
      Promise.resolve(this.onEveryReplica(seenSeq, error, `what ${error.code} read`, NOTHING_APPLIED)).then(
        (refusal) => this.fail(write, this.options.readError?.() ?? refusal),
        (unavailable: unknown) => this.fail(write, toKvError(unavailable)),
      );
    });
  }

  /** The next batch: the writes at the queue's head, up to its limits; a clear always starts one. */
  private takeBatch(): QueuedWrite[] {
    const writesMax = this.options.batchWritesMax ?? BATCH_WRITES_MAX;
    const bytesMax = this.options.batchBytesMax ?? BATCH_BYTES_MAX;
    let count = 0;
    let bytes = 0;
    while (count < this.queue.length && count < writesMax) {
      const { bytes: next, intent } = this.queue[count]!;
      if (count > 0 && (bytes + next > bytesMax || intent.kind === 'clear')) break;
      bytes += next;
      count += 1;
    }
    this.queueBytes -= bytes;
    assert(this.queueBytes >= 0, `queued bytes never below 0 (${this.queueBytes})`);
    return this.queue.splice(0, count);
  }

  /**
   * For a read, a retry's answer or a refusal (not a batch: those settle on one path,
   * settleWaiting): emits once when every replica of the view has acknowledged `seq`
   * (re-judged when the view changes: a replica that left is no longer waited for);
   * UNAVAILABLE after the ack timeout, naming who did not acknowledge.
   */
  private allAcked$(seq: number): Observable<unknown> {
    if (this.closed) return throwError(() => new KvError('UNAVAILABLE', `${this.closeReason}: the write may be on some nodes`));
    const { ackTimeoutMs } = this.options;
    const acked$ = this.replicas$.pipe(
      switchMap((replicas) => {
        // A view below the floor acknowledges nothing (setView sets the floor before the replicas).
        const belowFloor = this.floorRefusal();
        if (belowFloor) return throwError(() => new KvError('UNAVAILABLE', `${belowFloor}: the write may be on some nodes`));
        return replicas.length === 0 ? of(true) : combineLatest(replicas.map((replica) => replica.acked$)).pipe(filter((acks) => acks.every((acked) => acked >= seq)));
      }),
      first(),
      timeout({ first: ackTimeoutMs, scheduler: this.options.clock.scheduler, with: () => throwError(() => this.ackTimeoutError(seq)) }),
    );
    return acked$.pipe(failWhen(this.closing$.pipe(map(() => new KvError('UNAVAILABLE', `${this.closeReason}: the write may be on some nodes`)))));
  }
}

/** A tag as one Map key: req's digits end at the first NUL, so no two tags share one. */
function tagId(tag: RequestTag): string {
  return `${tag.req}\u0000${tag.client}`;
}


