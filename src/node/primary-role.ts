/**
 * What a node does while a view names it primary: a replication log, one link per other
 * node (the view's replicas, which every write waits for, and the candidates, which it
 * catches up until the hub lets them in), and the write pipeline. It lives as long as the
 * node stays primary through view changes; each view it adopts sets the epoch writes go
 * in and the replicas they wait for.
 *
 * Before it serves anything, a node that took over waits until the lease it granted the
 * deposed primary has run out (the deposed one has stopped serving by then), and answers
 * no read before every replica of its view holds everything it held when it took over:
 * its history is the truth, the others are caught up to it or replaced by a snapshot.
 *
 * It acknowledges writes only while its view holds at least the view's `minReplicas`
 * replicas (the durability floor, enforced by the pipeline). Holding its view alone below
 * the floor, it has no replica's lease for its reads: the hub's answers to its heartbeats
 * stand in for one (aloneError), as the hub may then promote a node that left the view.
 */
import { DEAD_AFTER_MS, EXPIRY_BATCH_MAX, EXPIRY_INTERVAL_MS, LEASE_MS } from '../constants.js';
import { KvError, NOTHING_APPLIED, assert } from '../errors.js';
import type { Environment } from '../env/environment.js';
import type { HubClient } from '../hub/hub-client.js';
import { belowFloor, type NodeHealth, type View } from '../protocol/messages.js';
import type { Store } from '../storage/store.js';
import { ReplicaLink } from './replica-link.js';
import type { ReplicationLog } from './replication-log.js';
import type { TraceEvent } from './trace.js';
import { WatchHub } from './watch.js';
import { WritePipeline } from './write-pipeline.js';

export interface PrimaryRoleOptions {
  name: string;
  env: Environment;
  store: Store;
  hub: HubClient;
  secret: string | undefined;
  localAddress: string | undefined;
  ackTimeoutMs: number;
  resolveDeadlineMs: number;
  batchWritesMax?: number | undefined;
  /** Told of each batch once every replica holds it, with the writes in it (the node's metrics). */
  onBatch?: ((writes: number) => void) | undefined;
  /** Told when a replica starts or stops refusing what it is sent (health changes). */
  onProblem(): void;
  trace(event: TraceEvent): void;
}

export class PrimaryRole {
  readonly pipeline: WritePipeline;
  /** Watches of this node's clients: they end when it stops being primary. */
  readonly watches: WatchHub;
  private readonly links = new Map<string, ReplicaLink>();
  private view: View;
  /** The view writes are acknowledged under (taking a new one on waits for the batch being committed). */
  private active: View;
  /** The seq this node held when the current view began: a replica holding it is synced. */
  private viewStartSeq: number;
  private closed = false;
  /** The expirer's next round (expire()). */
  private stopExpiring: (() => void) | undefined;
  /** A replica of the view found holding more than this node: said to the hub, which replaces it. */
  behind: string | undefined;
  /** The first view is taken on: links run. */
  private ready = false;
  /** Replicas refusing what they are sent, and why (health shows `degraded`). */
  private readonly problems = new Map<string, string>();

  constructor(
    private readonly options: PrimaryRoleOptions,
    private readonly log: ReplicationLog,
    view: View,
    /** No request is served before this time (the lease this node granted has run out). */
    private readonly servesFromMs: number,
  ) {
    this.view = view;
    this.active = view;
    this.viewStartSeq = log.lastSeq;
    this.pipeline = new WritePipeline(
      options.store,
      log,
      [],
      {
        clock: options.env.clock,
        epoch: view.epoch,
        minReplicas: view.minReplicas ?? 0,
        ackTimeoutMs: options.ackTimeoutMs,
        readError: () => this.readError(),
        onAcknowledged: (first, ops) => {
          this.watches.acknowledged(first, ops);
          options.onBatch?.(ops.length);
        },
        ...(options.batchWritesMax !== undefined ? { batchWritesMax: options.batchWritesMax } : {}),
      },
      options.trace,
    );
    // What this node held when it took over is acknowledged before anything is served.
    this.watches = new WatchHub(log, log.lastSeq);
  }

  /**
   * Takes on a view naming this node primary (the first, or a later one): its history
   * goes on in the view's epoch, committed before anything is sent, so any node holding
   * writes of an older epoch that were never acknowledged stands behind it.
   */
  async adopt(view: View, candidates: readonly string[]): Promise<void> {
    assert(!this.closed, `${this.options.name} takes on no view once deposed`);
    assert(view.primary === this.options.name && view.epoch >= this.view.epoch, `view ${view.epoch} (primary ${view.primary}) follows view ${this.view.epoch} of ${this.options.name}`);
    this.view = view;
    // Links start once the store is in the view's epoch: before, a replica holding writes
    // of the old epoch never acknowledged would look ahead of this node.
    await this.pipeline.setView(
      { epoch: view.epoch, minReplicas: view.minReplicas ?? 0 },
      () => {
        this.connect([...view.replicas, ...candidates]);
        return view.replicas.map((name) => this.links.get(name)!);
      },
      () => {
        this.active = view;
        this.viewStartSeq = this.log.lastSeq;
        this.behind = undefined;
        if (!this.ready) this.scheduleExpiry();
        this.ready = true;
      },
    );
  }

  /** The view writes are acknowledged under now. */
  get activeView(): View {
    return this.active;
  }

  /** Nodes outside the view that the hub has heard from: caught up until they may join. */
  setCandidates(candidates: readonly string[]): void {
    if (!this.closed && this.ready) this.connect([...this.active.replicas, ...candidates]);
  }

  /** Why no write is taken now, if so. */
  writeError(): KvError | undefined {
    const waitMs = this.servesFromMs - this.options.env.clock.now();
    if (waitMs > 0) return new KvError('UNAVAILABLE', `${this.options.name} is taking over; the lease it granted the previous primary runs out in ${Math.ceil(waitMs)} ms`, NOTHING_APPLIED);
    return undefined;
  }

  /** Why no read is answered now, if so: a read needs every replica's lease. */
  readError(): KvError | undefined {
    const notYet = this.writeError();
    if (notYet) return notYet;
    const lapsed = this.active.replicas.filter((name) => !this.links.get(name)?.leaseHolds);
    if (lapsed.length > 0) return new KvError('UNAVAILABLE', `no lease from ${lapsed.join(', ')}: ${this.options.name} may no longer be the primary`, NOTHING_APPLIED);
    return this.aloneError();
  }

  /**
   * A primary whose view holds no replica while its floor wants some holds nobody's lease,
   * and the hub may promote a member that left that view (src/hub/views.ts) once it has
   * missed this node for DEAD_AFTER_MS. So the hub's answers are its lease: it answers reads
   * only within LEASE_MS of sending a heartbeat the hub answered naming it primary, and
   * stops before the hub can call it dead (DEAD_AFTER_MS > LEASE_MS, as for replicas).
   * A view with a floor of 0 never makes anyone else primary behind its back: no lease.
   */
  private aloneError(): KvError | undefined {
    const view = this.active;
    if (view.replicas.length > 0 || (view.minReplicas ?? 0) === 0) return undefined;
    const answer = this.options.hub.lastAnswer;
    const sinceMs = answer === undefined ? undefined : this.options.env.clock.now() - answer.sentMs;
    if (answer?.view?.primary === this.options.name && sinceMs !== undefined && sinceMs < LEASE_MS) return undefined;
    const heard = sinceMs === undefined ? 'no answer from the hub yet' : answer?.view?.primary === this.options.name ? `no answer from the hub for ${Math.round(sinceMs)} ms` : 'a hub answer that does not name it primary';
    return new KvError('UNAVAILABLE', `${this.options.name} holds view ${view.epoch} alone and has ${heard}: another node may be primary now`, NOTHING_APPLIED);
  }

  /** Replicas of the view writes wait for that hold everything this node held when that view began. */
  synced(): string[] {
    return this.active.replicas.filter((name) => this.links.get(name)?.holds(this.viewStartSeq));
  }

  /** Candidates that hold everything up to `seq` (what this node held a heartbeat ago). */
  caughtUp(seq: number): string[] {
    // Below the floor a candidate must also hold what this node held when its view began:
    // then it holds every acknowledged write (none was acknowledged since), and the hub may
    // count on it as soon as it joins (src/hub/views.ts).
    const target = belowFloor(this.active) === undefined ? seq : Math.max(seq, this.viewStartSeq);
    return [...this.links.values()].filter((link) => !this.active.replicas.includes(link.name) && link.holds(target)).map((link) => link.name);
  }

  /**
   * Replicas of the view that answered nothing for DEAD_AFTER_MS though the hub may still
   * hear them (a link cut between the two): the hub leaves them out, as it does dead ones.
   */
  unreachable(): string[] {
    const now = this.options.env.clock.now();
    return this.active.replicas.filter((name) => {
      const link = this.links.get(name);
      return link !== undefined && now - link.lastAckMs > DEAD_AFTER_MS;
    });
  }

  /**
   * Where serving stands: starting until writes are taken and every replica has granted a
   * lease once; degraded when a lease lapsed since, or a replica refuses what it is sent.
   */
  health(): NodeHealth {
    const notYet = this.writeError();
    if (notYet) return { state: 'starting', reason: notYet.message };
    const noReads = this.readError();
    if (noReads) {
      const leasedOnce = this.active.replicas.every((name) => this.links.get(name)?.leasedOnce);
      return { state: leasedOnce ? 'degraded' : 'starting', reason: noReads.message };
    }
    // Reads go on below the durability floor; writes are refused until a replica rejoins.
    const refusing = belowFloor(this.active);
    if (refusing) return { state: 'degraded', reason: refusing };
    if (this.problems.size > 0) return { state: 'degraded', reason: [...this.problems.values()].join('; ') };
    return { state: 'serving' };
  }

  /** Stops: writes not yet acknowledged fail with `reason`, links close. */
  /**
   * Expired keys are deleted by the primary as ordinary replicated deletes, each only if
   * its key is still at the version that expired (resolve.ts): at most EXPIRY_BATCH_MAX
   * per round, a round every EXPIRY_INTERVAL_MS once the previous one settled, so a flood
   * of expiring keys is worked off in bounded batches between other writes. A new
   * primary goes on from its own store after a failover.
   */
  private scheduleExpiry(): void {
    this.stopExpiring = this.options.env.clock.after(EXPIRY_INTERVAL_MS, () => void this.expire());
  }

  private async expire(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.writeError() === undefined && belowFloor(this.active) === undefined) {
        const due = this.options.store.expired(this.pipeline.judgeNowMs(), EXPIRY_BATCH_MAX);
        // Each settles alone: a delete that finds its key written again settles with nothing.
        await Promise.allSettled(due.map(({ key, version }) => this.pipeline.submit({ kind: 'expire', key, version, tag: undefined })));
      }
    } catch (error) {
      this.options.trace({ event: 'fault', message: `expiry: ${(error as Error).message}` });
    }
    if (!this.closed) this.scheduleExpiry();
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopExpiring?.();
    // Clients resume their watches at the next primary, from the last version they saw.
    this.watches.close(reason);
    this.pipeline.close(reason);
    await this.pipeline.idle();
    await Promise.all([...this.links.values()].map((link) => link.close()));
    this.links.clear();
  }

  /** One link per node named; links to nodes no longer named are closed. */
  private connect(names: readonly string[]): void {
    const wanted = new Set(names.filter((name) => name !== this.options.name));
    for (const [name, link] of this.links) {
      if (!wanted.has(name)) {
        this.links.delete(name);
        void link.close();
        // What it refused is no longer a problem of this node's.
        if (this.problems.delete(name)) this.options.onProblem();
      }
    }
    for (const name of wanted) {
      if (this.links.has(name)) continue;
      const { options } = this;
      const link = new ReplicaLink(
        name,
        options.hub,
        this.log,
        options.store,
        {
          env: options.env,
          self: options.name,
          localAddress: options.localAddress,
          secret: options.secret,
          viewEpoch: () => this.view.epoch,
          position: () => options.store.state,
          ackTimeoutMs: options.ackTimeoutMs,
          resolveDeadlineMs: options.resolveDeadlineMs,
          onProblem: (replica, problem) => {
            if (problem === undefined) this.problems.delete(replica);
            else this.problems.set(replica, problem);
            options.onProblem();
          },
          onPosition: (replica, ahead) => {
            if (ahead && this.active.replicas.includes(replica)) this.behind = replica;
            else if (!ahead && this.behind === replica) this.behind = undefined;
          },
        },
        options.trace,
      );
      this.links.set(name, link);
      link.start();
    }
  }
}
