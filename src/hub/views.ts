/**
 * The hub's view keeper: it decides who serves. Nodes heartbeat it with where their
 * stores stand; from that it keeps the view {epoch, primary, replicas, minReplicas} and
 * changes it when a node dies, returns or catches up. Every change raises the epoch, is a
 * compare-and-set on the epoch it replaces, and is saved before anyone hears of it, so a
 * hub restart never forgets or lowers the epoch.
 *
 * The rules (docs/DESIGN.md, "Failover"):
 * - the first view is the configured one, proposed by the configured primary; if a
 *   configured node stands ahead of it (the primary came back empty), the most advanced
 *   node is the primary instead: nobody is ever rolled back to an older or empty store;
 * - the first view also sets the durability floor, kept by every later view: the primary
 *   acknowledges a write only while its view holds at least `minReplicas` replicas (the
 *   proposal's, else 1 when the cluster has replicas, else 0), so no acknowledged write
 *   lives on one disk alone; below it writes are refused and reads go on;
 * - a dead replica leaves the view (writes then wait only for the others);
 * - a dead primary is replaced by the in-view replica with the highest (epoch, seq) among
 *   those known to hold every acknowledged write: replicas of the previous view, and
 *   replicas that joined since only once the primary reported them synced;
 * - a dead primary with no such replica (left alone, below the floor) is replaced by a
 *   member that left the last view at or above the floor, trusted as it left: nothing was
 *   acknowledged after it left, so it holds every acknowledged write, unless it came back
 *   behind where it stood (a lost disk), which takes it off that list;
 * - a node outside the view (restarted, healed, deposed) joins once the primary reports
 *   it caught up;
 * - nobody is called dead before the hub itself has been up for the dead-after time.
 */
import { DEAD_AFTER_MS, MIN_REPLICAS_DEFAULT, UNREACHABLE_REPORT_FRESH_MS, VIEW_CHANGES_KEPT } from '../constants.js';
import type { Clock } from '../env/environment.js';
import { assert } from '../errors.js';
import { belowFloor, type HeartbeatRequest, type View } from '../protocol/messages.js';
import type { ReplicationState } from '../storage/store.js';

export interface ViewChange {
  atMs: number;
  epoch: number;
  primary: string;
  replicas: string[];
  why: string;
}

/**
 * What the hub keeps across its restarts: the view and its changes, and what it knows of
 * the members, so a restarted hub still tells a node that came back empty (its position
 * went back) and a replica that has not been reported synced since it joined.
 */
export interface SavedViews {
  view: View;
  changes: ViewChange[];
  positions: Record<string, ReplicationState>;
  joined: string[];
  /** Who left the last view at or above the floor holding every acknowledged write (absent in files from before the floor). */
  lastLeft?: string[];
}

/** Where the hub keeps its view: it must survive a hub restart. */
export interface ViewStore {
  load(): SavedViews | undefined;
  save(saved: SavedViews): void;
}

/** A view store in memory: for tests, and the simulator (whose hub "disk" outlives a crash). */
export class MemoryViewStore implements ViewStore {
  private saved: string | undefined;
  load(): SavedViews | undefined {
    return this.saved === undefined ? undefined : (JSON.parse(this.saved) as SavedViews);
  }
  save(saved: SavedViews): void {
    this.saved = JSON.stringify(saved);
  }
}

interface Member {
  name: string;
  lastSeenMs: number;
  epoch: number;
  seq: number;
  viewEpoch: number;
  /** It came back behind where it was (an empty disk): it may lack acknowledged writes. */
  regressed: boolean;
}

export type MemberState = 'in view' | 'catching up' | 'dead';

export interface MemberStatus {
  state: MemberState;
  epoch: number;
  seq: number;
  /** Seqs behind the primary. */
  lag: number;
  /** Since the member's last heartbeat (the hub's clock): how long a dead one has been silent. */
  heardMsAgo: number;
  /** Whether the hub counts on it to hold every acknowledged write (it could take over). */
  trusted: boolean;
}

export class ViewKeeper {
  private current: View | undefined;
  private changes: ViewChange[] = [];
  private readonly members = new Map<string, Member>();
  /** Replicas that joined the current view and may not hold every acknowledged write yet. */
  private joined = new Set<string>();
  /**
   * Members that left the last view at or above the durability floor, trusted as they left,
   * while the view stays below it: nothing has been acknowledged since they left, so each
   * holds every acknowledged write (empty whenever the view is at or above the floor).
   */
  private lastLeft: string[] = [];
  /** What the primary of the current view last reported: synced replicas, caught-up candidates. */
  private synced = new Set<string>();
  private caughtUp = new Set<string>();
  private proposal: { primary: string; replicas: string[]; minReplicas: number; atMs: number } | undefined;
  /** Replicas the primary of the current view cannot reach, as it last reported. */
  private unreachable = new Set<string>();
  private readonly startedMs: number;
  /** The furthest each member has stood: a member that comes back behind it regressed. */
  private readonly positions = new Map<string, ReplicationState>();
  /** Something worth saving changed since the last save. */
  private dirty = false;

  constructor(
    private readonly clock: Clock,
    private readonly store: ViewStore,
    private readonly deadAfterMs = DEAD_AFTER_MS,
    private readonly onChange: (change: ViewChange) => void = () => undefined,
  ) {
    this.startedMs = clock.now();
    const saved = store.load();
    if (saved) {
      for (const [name, position] of Object.entries(saved.positions)) this.positions.set(name, position);
      // A view saved before the floor existed gets the default a new cluster would: 1
      // when more than one node was ever seen (the cluster has replicas).
      this.current = { ...saved.view, minReplicas: saved.view.minReplicas ?? (this.positions.size > 1 ? MIN_REPLICAS_DEFAULT : 0) };
      this.changes = saved.changes;
      this.joined = new Set(saved.joined);
      this.lastLeft = saved.lastLeft ?? [];
    }
  }

  get view(): View | undefined {
    return this.current;
  }

  get history(): readonly ViewChange[] {
    return this.changes;
  }

  /** Records a heartbeat; returns the view the node should hold. */
  heartbeat(beat: HeartbeatRequest): View | undefined {
    const now = this.clock.now();
    const before = this.members.get(beat.name);
    const furthest = this.positions.get(beat.name);
    const regressed = furthest !== undefined && (beat.epoch < furthest.epoch || (beat.epoch === furthest.epoch && beat.seq < furthest.seq));
    if (regressed) {
      // It starts over from where it stands now; until the primary reports it synced it may
      // not take over, nor be promoted as one that left holding everything.
      this.joined.add(beat.name);
      this.lastLeft = this.lastLeft.filter((name) => name !== beat.name);
      this.dirty = true;
    }
    if (!furthest || regressed || beat.epoch > furthest.epoch || (beat.epoch === furthest.epoch && beat.seq > furthest.seq)) {
      this.positions.set(beat.name, { epoch: beat.epoch, seq: beat.seq });
      this.dirty = true;
    }
    this.members.set(beat.name, {
      name: beat.name,
      lastSeenMs: now,
      epoch: beat.epoch,
      seq: beat.seq,
      viewEpoch: beat.viewEpoch,
      regressed: regressed || (before?.regressed ?? false),
    });
    if (beat.config && beat.config.primary === beat.name && !this.proposal) {
      const replicas = beat.config.replicas.filter((name) => name !== beat.name);
      const minReplicas = beat.config.minReplicas ?? (replicas.length > 0 ? MIN_REPLICAS_DEFAULT : 0);
      this.proposal = { primary: beat.name, replicas, minReplicas, atMs: now };
    }
    const view = this.current;
    if (view && beat.name === view.primary && beat.behind !== undefined && view.replicas.includes(beat.behind)) {
      // The primary found a replica of its view holding more than it does: it lost writes.
      const member = this.members.get(beat.name)!;
      member.regressed = true;
      this.joined.add(beat.name);
      this.dirty = true;
    }
    if (view && beat.name === view.primary && beat.viewEpoch === view.epoch) {
      this.synced = new Set(beat.synced ?? []);
      this.caughtUp = new Set(beat.caughtUp ?? []);
      this.unreachable = new Set(beat.unreachable ?? []);
      for (const name of this.synced) {
        if (this.joined.delete(name)) this.dirty = true;
        const member = this.members.get(name);
        if (member) member.regressed = false;
      }
    }
    // A primary that came back behind where it stood is replaced before it hears the view
    // again: taking it on, it would write in that view's epoch and look ahead of the
    // replicas that hold what it lost. Until someone can replace it, it gets no view.
    if (this.current?.primary === beat.name && this.cameBack(beat.name)) {
      this.decide();
      if (this.current.primary === beat.name) return undefined;
    }
    return this.current;
  }

  /** Nodes heard from lately that the view leaves out: the primary catches them up. */
  candidates(): string[] {
    const view = this.current;
    return [...this.members.values()]
      .filter((member) => this.alive(member.name) && (!view || (member.name !== view.primary && !view.replicas.includes(member.name))))
      .map((member) => member.name)
      .sort();
  }

  status(): Record<string, MemberStatus> {
    const view = this.current;
    const primary = view ? this.members.get(view.primary) : undefined;
    const now = this.clock.now();
    const out: Record<string, MemberStatus> = {};
    for (const member of [...this.members.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const inView = view !== undefined && (member.name === view.primary || view.replicas.includes(member.name));
      out[member.name] = {
        state: !this.alive(member.name) ? 'dead' : inView ? 'in view' : 'catching up',
        epoch: member.epoch,
        seq: member.seq,
        lag: primary ? Math.max(0, primary.seq - member.seq) : 0,
        heardMsAgo: now - member.lastSeenMs,
        trusted: this.trusted(member.name),
      };
    }
    return out;
  }

  /** Why the current view takes no writes (it is below the durability floor), if so. */
  writesRefused(): string | undefined {
    return this.current ? belowFloor(this.current) : undefined;
  }

  /**
   * Whether the hub would count on `name` to hold every acknowledged write: a live member
   * of the view that is its primary (and did not come back behind) or a replica reported
   * synced, or, while the view is below the floor, one that left holding everything.
   */
  trusted(name: string): boolean {
    const view = this.current;
    if (!view || !this.alive(name)) return false;
    if (name === view.primary) return !this.cameBack(name);
    if (view.replicas.includes(name)) return !this.joined.has(name);
    return this.lastLeft.includes(name) && !this.cameBack(name);
  }

  /** Decides whether the view must change; called on a timer. */
  tick(): void {
    this.decide();
    // What the members told since the last tick, saved at most once a tick.
    if (this.dirty && this.current) this.save(this.current, this.changes, this.joined, this.lastLeft);
  }

  private decide(): void {
    const view = this.current;
    if (!view) return this.maybeFirstView();
    if (!this.settled()) return;
    if (!this.alive(view.primary)) return this.replacePrimary(view, `${view.primary} missed heartbeats for ${this.deadAfterMs} ms`);
    // A primary that came back behind where it stood (an empty or older disk) must not go
    // on: it would serve what it lost. Its replicas hold it all.
    if (this.cameBack(view.primary)) return this.replacePrimary(view, `${view.primary} came back behind where it stood (a lost or older disk)`);
    const dead = view.replicas.filter((name) => !this.alive(name));
    if (dead.length > 0) {
      this.change(view, { primary: view.primary, replicas: view.replicas.filter((name) => !dead.includes(name)) }, `${dead.join(', ')} missed heartbeats for ${this.deadAfterMs} ms`);
      return;
    }
    // The primary decides which replicas it can work with (as in PacificA): one it cannot
    // reach would hold up every write.
    // Only on a fresh report: a primary that died right after saying so is not to be
    // believed (it is about to be replaced; its replicas are what the next view needs).
    const primary = this.members.get(view.primary);
    const fresh = primary !== undefined && this.clock.now() - primary.lastSeenMs <= UNREACHABLE_REPORT_FRESH_MS;
    const cut = fresh ? view.replicas.filter((name) => this.unreachable.has(name)) : [];
    if (cut.length > 0) {
      this.change(view, { primary: view.primary, replicas: view.replicas.filter((name) => !cut.includes(name)) }, `${view.primary} had no answer from ${cut.join(', ')} for ${this.deadAfterMs} ms`);
      return;
    }
    const ready = this.candidates().filter((name) => this.caughtUp.has(name));
    if (ready.length > 0) {
      this.change(view, { primary: view.primary, replicas: [...view.replicas, ...ready] }, `${ready.join(', ')} caught up`, ready);
    }
  }

  private maybeFirstView(): void {
    const proposal = this.proposal;
    if (!proposal) return;
    const configured = [proposal.primary, ...proposal.replicas];
    const heard = configured.filter((name) => this.alive(name));
    // Every configured node is heard, or the proposal is old enough to go on without some.
    if (heard.length < configured.length && this.clock.now() - proposal.atMs < this.deadAfterMs) return;
    const ranked = heard.map((name) => this.members.get(name)!).sort(byPosition);
    const best = ranked[0];
    if (!best) return;
    const configuredPrimary = this.members.get(proposal.primary);
    const primary = configuredPrimary && this.alive(proposal.primary) && byPosition(configuredPrimary, best) <= 0 ? proposal.primary : best.name;
    const epoch = Math.max(...[...this.members.values()].map((member) => member.epoch)) + 1;
    const why = primary === proposal.primary ? 'the configured roles' : `${primary} holds the most advanced store (${best.epoch}, ${best.seq}); the configured primary ${proposal.primary} is behind it or down`;
    const replicas = heard.filter((name) => name !== primary);
    // Nothing says yet that they hold what the primary holds (files from before, a lost
    // view file): none may take over until the primary reports it synced.
    this.commit({ epoch, primary, replicas, minReplicas: proposal.minReplicas }, why, new Set(replicas), []);
  }

  private replacePrimary(view: View, why: string): void {
    const next = this.successor(view);
    if (!next) return;
    this.change(
      view,
      { primary: next.member.name, replicas: view.replicas.filter((name) => name !== next.member.name && this.alive(name)) },
      `${why}; ${next.member.name} holds (${next.member.epoch}, ${next.member.seq}), ${next.why}`,
    );
  }

  /**
   * Who may replace the primary of `view`: the most advanced live replica of it that holds
   * every acknowledged write; with none, the most advanced live member that left the last
   * view at or above the floor (nothing was acknowledged after it left).
   */
  private successor(view: View): { member: Member; why: string } | undefined {
    const live = (names: readonly string[]) => names.filter((name) => this.alive(name)).map((name) => this.members.get(name)!).sort(byPosition);
    const inView = live(view.replicas.filter((name) => !this.joined.has(name)))[0];
    if (inView) return { member: inView, why: 'the most of the view' };
    const left = live(this.lastLeft.filter((name) => !this.cameBack(name)))[0];
    if (left) return { member: left, why: `the most of those that left view ${view.epoch} or before holding every acknowledged write (none was acknowledged after: ${belowFloor(view) ?? 'below the floor'})` };
    return undefined;
  }

  /**
   * The compare-and-set: a change based on an older view than the current one is refused.
   * The whole next state (view, changes, who is not yet trusted, who left holding
   * everything) is built first, then committed at once.
   */
  private change(previous: View, next: Pick<View, 'primary' | 'replicas'>, why: string, joining: string[] = []): boolean {
    if (this.current?.epoch !== previous.epoch) return false;
    const view: View = { epoch: previous.epoch + 1, ...next, minReplicas: previous.minReplicas ?? 0 };
    // Members that were not in the previous view must be reported synced before they can take
    // over; except when it was below the floor: nothing was acknowledged in it, and the primary
    // reports a candidate caught up there only once it holds all the primary held when that
    // view began (PrimaryRole.caughtUp), so it holds every acknowledged write already.
    const trustedAtOnce = belowFloor(previous) !== undefined;
    const kept = [...this.joined].filter((name) => (next.replicas.includes(name) || !this.alive(name)) && !(trustedAtOnce && joining.includes(name)));
    const joined = new Set([...kept, ...(trustedAtOnce ? [] : joining)]);
    // One that came back behind is caught up again now, as a synced report would say.
    if (trustedAtOnce) for (const name of joining) this.members.get(name)!.regressed = false;
    this.commit(view, why, joined, this.leftHoldingEverything(previous, view));
    return true;
  }

  /**
   * Who holds every acknowledged write from outside `next`: nobody is needed while `next`
   * is at or above the floor (its replicas acknowledge every write); below it, those of the
   * previous list and the members leaving now that held everything as they left (the
   * primary unless it came back behind, a replica unless it was not yet trusted).
   */
  private leftHoldingEverything(previous: View, next: View): string[] {
    if (belowFloor(next) === undefined) return [];
    const members = new Set([next.primary, ...next.replicas]);
    const leaving = [previous.primary, ...previous.replicas].filter((name) => !members.has(name) && !this.cameBack(name));
    return [...new Set([...this.lastLeft, ...leaving])].filter((name) => !members.has(name)).sort();
  }

  /**
   * Makes `view` current with that state: saved first, once, whole (a restarted hub never
   * hands out an older view, nor trusts whom this one did not), then told.
   */
  private commit(view: View, why: string, joined: ReadonlySet<string>, lastLeft: readonly string[]): void {
    const previous = this.current;
    assert(view.epoch > (previous?.epoch ?? 0), 'a view change raises the epoch');
    assert(!view.replicas.includes(view.primary), 'the primary is not one of its replicas');
    assert(lastLeft.every((name) => name !== view.primary && !view.replicas.includes(name)), 'who left holding everything is outside the view');
    const change: ViewChange = { atMs: this.clock.wallNow(), epoch: view.epoch, primary: view.primary, replicas: [...view.replicas], why };
    const changes = [...this.changes, change].slice(-VIEW_CHANGES_KEPT);
    this.save(view, changes, joined, lastLeft);
    this.current = view;
    this.changes = changes;
    this.joined = new Set(joined);
    this.lastLeft = [...lastLeft];
    if (previous?.primary !== view.primary) this.synced = new Set();
    this.caughtUp = new Set();
    this.unreachable = new Set();
    this.onChange(change);
  }

  private save(view: View, changes: readonly ViewChange[], joined: ReadonlySet<string>, lastLeft: readonly string[]): void {
    this.store.save({ view, changes: [...changes], positions: Object.fromEntries(this.positions), joined: [...joined], lastLeft: [...lastLeft] });
    this.dirty = false;
  }

  /**
   * Whether `name` came back behind where it stood and has not been reported synced since:
   * known from this hub's life, or from the saved list of unsynced nodes (a hub restarted
   * after seeing it come back no longer sees it go back).
   */
  private cameBack(name: string): boolean {
    return this.members.get(name)?.regressed === true || this.joined.has(name);
  }

  private alive(name: string): boolean {
    const member = this.members.get(name);
    return member !== undefined && this.clock.now() - member.lastSeenMs <= this.deadAfterMs;
  }

  private settled(): boolean {
    return this.clock.now() - this.startedMs > this.deadAfterMs;
  }
}

/** Most advanced first: by epoch, then seq, then name (a stable tie-break). */
function byPosition(a: Member, b: Member): number {
  if (a.epoch !== b.epoch) return b.epoch - a.epoch;
  if (a.seq !== b.seq) return b.seq - a.seq;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
