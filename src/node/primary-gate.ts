/**
 * The primary's check of where its replicas stand, before it serves anything and again
 * at every reconnect: data only ever flows from a node that is provably ahead.
 *
 * A position is (epoch, seq) of the last write a store holds, compared epoch first. Within
 * one epoch there is one primary and one history, and the primary applies each write
 * before any replica does, so a replica at or behind the primary holds a prefix of the
 * primary's history. A replica *ahead* of the primary means the primary lost writes (it
 * came back on an empty file or an older copy): sending it a snapshot would roll every
 * replica back, and serving reads would show stale data. The primary then halts instead,
 * saying why, until an operator acts (README, "When the primary halts").
 *
 * The primary waits until every replica has reported before it serves: writes need all of
 * them anyway, and a read before that could return what the primary lost. It then writes
 * in a new epoch above every epoch it has seen, so writes it applied but never got
 * acknowledged before a crash can never be mistaken for the same seqs of a later run.
 */
import { KvError } from '../errors.js';
import type { ReplicationState } from '../storage/store.js';

export type GateState =
  | { state: 'starting'; reason: string }
  | { state: 'serving'; epoch: number }
  | { state: 'halted'; reason: string };

export function isAhead(a: ReplicationState, b: ReplicationState): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.seq > b.seq);
}

export function formatPosition(state: ReplicationState): string {
  return `(epoch ${state.epoch}, seq ${state.seq})`;
}

export class PrimaryGate {
  private readonly reported = new Map<string, ReplicationState>();
  private current: GateState;
  private readonly waiters: { resolve(epoch: number): void; reject(error: KvError): void }[] = [];

  constructor(
    private readonly self: string,
    /** Where the primary stands now: its store's state, then its log's last seq. */
    private readonly position: () => ReplicationState,
    private readonly replicas: readonly string[],
    private readonly onChange: (state: GateState) => void,
  ) {
    this.current = { state: 'starting', reason: `${self} is starting` };
  }

  /** Begins waiting for the replicas' reports (a primary without replicas serves at once). */
  start(): void {
    this.update();
  }

  get state(): GateState {
    return this.current;
  }

  /**
   * A replica reported its position. Resolves with the epoch the primary writes in once
   * it serves; rejects (and halts the primary) if the replica is ahead.
   */
  admit(replica: string, position: ReplicationState): Promise<number> {
    if (this.current.state === 'halted') return Promise.reject(new KvError('UNAVAILABLE', this.current.reason));
    const own = this.position();
    if (isAhead(position, own)) {
      this.halt(
        `replica ${replica} is ahead of ${this.self}: it holds ${formatPosition(position)}, ${this.self} only ${formatPosition(own)}; ` +
          `${this.self} lost acknowledged writes (empty or older data file) and will not roll ${replica} back`,
      );
      return Promise.reject(new KvError('UNAVAILABLE', (this.current as { reason: string }).reason));
    }
    this.reported.set(replica, position);
    if (this.current.state === 'serving') return Promise.resolve(this.current.epoch);
    const decided = new Promise<number>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.update();
    return decided;
  }

  /** Stops serving for good (this process): every waiter gets the reason. */
  halt(reason: string): void {
    if (this.current.state === 'halted') return;
    this.settle({ state: 'halted', reason });
  }

  private update(): void {
    if (this.current.state !== 'starting') return;
    const missing = this.replicas.filter((name) => !this.reported.has(name));
    if (missing.length > 0) {
      const reason = `${this.self} is starting: waiting for ${missing.join(', ')} to report where they stand`;
      if (reason !== this.current.reason) {
        this.current = { state: 'starting', reason };
        this.onChange(this.current);
      }
      return;
    }
    const epochs = [this.position().epoch, ...[...this.reported.values()].map((state) => state.epoch)];
    this.settle({ state: 'serving', epoch: Math.max(...epochs) + 1 });
  }

  private settle(state: Extract<GateState, { state: 'serving' | 'halted' }>): void {
    this.current = state;
    for (const waiter of this.waiters.splice(0)) {
      if (state.state === 'serving') waiter.resolve(state.epoch);
      else waiter.reject(new KvError('UNAVAILABLE', state.reason));
    }
    this.onChange(state);
  }
}
