/**
 * A pbkv cluster inside the simulator: the real DirectoryHub, KvNode and KvClient, each in
 * a simulated process with its own address, clock and transport, on in-memory disks that
 * survive a process crash (or are lost with the disk). The disks record what they apply,
 * so the scenario can check the invariants against the primary's history.
 */
import { DirectoryHub } from '../hub/hub.js';
import { MemoryViewStore } from '../hub/views.js';
import { KvClient } from '../client/client.js';
import { KvNode } from '../node/node.js';
import type { Environment } from '../env/environment.js';
import { assert } from '../errors.js';
import type { RequestTag, View, WriteOp } from '../protocol/messages.js';
import type { TagCheck } from '../storage/client-sessions.js';
import { MemoryStore } from '../storage/memory-store.js';
import type { ListQuery, PageLimits, Restore, ReplicationState, Snapshot, Store } from '../storage/store.js';
import { SimNetwork } from './network.js';
import type { SimProcess, SimWorld } from './world.js';

export const SIM_HUB_PORT = 7400;
export const SIM_NODE_PORT = 7401;

/** Told of every batch a disk applies or restore it finishes, before it is applied. */
export interface DiskWatcher {
  /**
   * `asPrimary`: the node was primary when it called apply (its write pipeline did).
   * `marks`: each op's writeMarks, made once for the check and the disk's history.
   */
  applying(node: string, disk: RecordingStore, epoch: number, first: number, ops: readonly WriteOp[], asPrimary: boolean, marks: readonly (readonly string[])[]): void;
  restored(node: string, disk: RecordingStore, state: ReplicationState): void;
}

/** A request tag as one string, for the checks. */
export function tagName(tag: RequestTag): string {
  return `${tag.client}#${tag.req}`;
}

/**
 * What of a write shows it was applied twice: its tag, and a put's value (the scenario
 * never puts one value twice, so this holds even for a write whose tag got lost).
 */
export function writeMarks(op: WriteOp): string[] {
  const marks = op.tag ? [`tag ${tagName(op.tag)}`] : [];
  // Plain puts write values the scenario never repeats; a counter's values repeat by nature.
  if (op.kind === 'put' && !op.incr) marks.push(`value ${op.valueJson}`);
  return marks;
}

/**
 * The writes of the history up to each position a snapshot was taken at, as the disk
 * that took it held them: a disk that restores the snapshot holds that history.
 */
export type TagLineages = Map<string, ReadonlySet<string>>;

const positionName = (state: ReplicationState) => `${state.epoch}:${state.seq}`;

/** A node's disk: a MemoryStore that reports what it applies, and may be told to fail. */
export class RecordingStore implements Store {
  /** While set, every batch fails as a full disk would (nothing is written). */
  failing = false;

  constructor(
    readonly node: string,
    private readonly inner: MemoryStore,
    private readonly watcher: DiskWatcher,
    /** The time a commit takes; a process that dies meanwhile never commits. */
    private readonly latency: () => Promise<void>,
    /** Whether the node is primary now. */
    private readonly isPrimary: () => boolean,
    private readonly lineages: TagLineages,
    /**
     * The writes in this disk's history (writeMarks): the snapshot it restored last, then
     * each batch it applied. Kept beside the store, not read from it: the check of
     * at-most-once (I7) must not trust the client sessions it checks.
     */
    private history: Set<string> = new Set(),
  ) {}

  /** Whether this disk's history holds the write `mark` names already. */
  holds(mark: string): boolean {
    return this.history.has(mark);
  }

  get file() { return this.inner.file; }
  get syncMode() { return this.inner.syncMode; }
  get state() { return this.inner.state; }
  get errors$() { return this.inner.errors$; }
  get watermark() { return this.inner.watermark; }
  read(key: string) { return this.inner.read(key); }
  list(query: ListQuery) { return this.inner.list(query); }
  keysToClear(prefix: string, limit: number, bytesMax: number, nowMs: number) { return this.inner.keysToClear(prefix, limit, bytesMax, nowMs); }
  expired(nowMs: number, limit: number) { return this.inner.expired(nowMs, limit); }
  snapshot(limits: PageLimits): Promise<Snapshot> {
    // The memory store copies its rows when called, so the history copied with it matches.
    const history = new Set(this.history);
    return this.inner.snapshot(limits).then((snapshot) => {
      this.lineages.set(positionName(snapshot.state), history);
      return snapshot;
    });
  }
  beginEpoch(epoch: number): Promise<void> { return this.inner.beginEpoch(epoch); }
  checkTag(tag: RequestTag): TagCheck { return this.inner.checkTag(tag); }
  close() { return this.inner.close(); }

  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<void> {
    const asPrimary = this.isPrimary();
    await this.latency();
    if (this.failing) throw new Error('store write failed: disk full (simulated)');
    const marks = ops.map(writeMarks);
    this.watcher.applying(this.node, this, epoch, first, ops, asPrimary, marks);
    // The memory store applies when called; the history follows in the same turn, so a
    // snapshot taken next sees both or neither.
    const applied = this.inner.apply(epoch, first, ops);
    for (const opMarks of marks) for (const mark of opMarks) this.history.add(mark);
    return applied;
  }

  async beginRestore(): Promise<Restore> {
    const restore = await this.inner.beginRestore();
    return {
      add: (entries) => restore.add(entries),
      abort: () => restore.abort(),
      finish: async (state, sessions, watermark) => {
        const history = this.lineages.get(positionName(state));
        assert(history, `no snapshot was taken at ${positionName(state)}`);
        await restore.finish(state, sessions, watermark);
        this.history = new Set(history);
        this.watcher.restored(this.node, this, state);
      },
    };
  }

  /** Every key with its value JSON, version and expiry, sorted, then the watermark and client sessions: what convergence compares. */
  async contents(): Promise<string> {
    const snapshot = await this.inner.snapshot({ entriesMax: 1_000_000, bytesMax: Number.MAX_SAFE_INTEGER });
    const rows: string[] = [];
    for await (const page of snapshot.pages()) for (const [key, value, version, expiresAt] of page) rows.push(`${JSON.stringify(key)}=${value}@${version}${expiresAt === null ? '' : `~${expiresAt}`}`);
    await snapshot.close();
    return `${rows.join(',')} watermark ${snapshot.watermark} sessions ${JSON.stringify(snapshot.sessions)}`;
  }

  /** The process died: a new store object holds exactly what was committed. */
  crashed(): RecordingStore {
    return new RecordingStore(this.node, this.inner.crash(), this.watcher, this.latency, this.isPrimary, this.lineages, new Set(this.history));
  }
}

export interface SimNodeHandle {
  name: string;
  process: SimProcess;
  disk: RecordingStore;
  node: KvNode | undefined;
  /** Resolves when the node serves (or fails while starting). */
  started: Promise<void> | undefined;
}

export interface SimClusterOptions {
  replicas: number;
  secret: string;
  ackTimeoutMs?: number;
  watcher: DiskWatcher;
  /** Told of what nodes log as faults, and of node start failures. */
  log(line: string): void;
  /** Also log the nodes' peer, view and refusal traces (changes the trace hash). */
  verbose?: boolean;
}

export class SimCluster {
  readonly network: SimNetwork;
  readonly hubProcess: SimProcess;
  hub: DirectoryHub | undefined;
  readonly nodes: SimNodeHandle[];
  readonly hubUrl: string;

  constructor(
    readonly world: SimWorld,
    private readonly options: SimClusterOptions,
  ) {
    this.network = new SimNetwork(world);
    this.hubProcess = world.process('hub', '127.0.1.1');
    this.hubUrl = `ws://${this.hubProcess.address}:${SIM_HUB_PORT}`;
    this.nodes = Array.from({ length: options.replicas + 1 }, (_, index) => {
      const name = `n${index}`;
      const process = world.process(name, `127.0.1.${10 + index}`);
      return { name, process, disk: this.newDisk(name, process), node: undefined, started: undefined };
    });
  }

  /** The node configured as primary: the first view's (its flags say so). */
  get configuredPrimary(): SimNodeHandle {
    return this.nodes[0]!;
  }

  /** The primary of the newest view a live node holds (the hub's may be newer still). */
  get primary(): SimNodeHandle {
    let best: SimNodeHandle | undefined;
    let bestEpoch = 0;
    for (const handle of this.nodes) {
      const view = handle.node?.view;
      if (view && view.epoch > bestEpoch) {
        bestEpoch = view.epoch;
        best = this.nodes.find((candidate) => candidate.name === view.primary);
      }
    }
    return best ?? this.configuredPrimary;
  }

  /** The nodes other than the current primary. */
  get replicas(): SimNodeHandle[] {
    const primary = this.primary;
    return this.nodes.filter((handle) => handle !== primary);
  }

  node(name: string): SimNodeHandle {
    const handle = this.nodes.find((candidate) => candidate.name === name);
    assert(handle, `no node ${name}`);
    return handle;
  }

  env(process: SimProcess): Environment {
    return { transport: this.network.transportFor(process), clock: process.clock, random: this.world.random };
  }

  /** Starts the hub and every node, the seed's way: all registered, then services. */
  startAll(): Promise<void> {
    void this.startHub();
    for (const handle of this.nodes) this.startNode(handle);
    return Promise.all(this.nodes.map((handle) => handle.started)).then(() => undefined);
  }

  private readonly lineages: TagLineages = new Map();

  /** The hub's disk: its view survives a hub crash. */
  readonly hubViews = new MemoryViewStore();
  /** Every view the hub made, by epoch. */
  readonly views = new Map<number, View>();

  startHub(): Promise<void> {
    this.hub = new DirectoryHub({ host: this.hubProcess.address, port: SIM_HUB_PORT, secret: this.options.secret, env: this.env(this.hubProcess), viewStore: this.hubViews });
    this.hub.events$.subscribe((event) => {
      if (event.event === 'view') this.views.set(event.epoch, { epoch: event.epoch, primary: event.primary, replicas: event.replicas });
      if (event.event === 'view') this.options.log(`hub VIEW ${event.epoch}: primary ${event.primary}, replicas [${event.replicas.join(', ')}]: ${event.why}`);
    });
    return this.hub.listen().then(() => undefined);
  }

  crashHub(): void {
    this.hubProcess.crash();
    this.network.crashed(this.hubProcess);
    this.hub = undefined;
  }

  restartHub(): void {
    this.hubProcess.restart();
    void this.startHub();
  }

  crash(handle: SimNodeHandle, diskLost: boolean): void {
    handle.process.crash();
    this.network.crashed(handle.process);
    handle.node = undefined;
    handle.started = undefined;
    handle.disk = diskLost ? this.newDisk(handle.name, handle.process) : handle.disk.crashed();
  }

  restart(handle: SimNodeHandle): void {
    handle.process.restart();
    this.startNode(handle);
  }

  client(process: SimProcess, requestTimeoutMs: number): KvClient {
    return new KvClient({ hubUrl: this.hubUrl, requestTimeoutMs, env: this.env(process) });
  }

  /**
   * An empty disk. A commit takes a fraction of a millisecond, now and then tens (an
   * fsync stalling), on the clock of the process's current life.
   */
  private newDisk(name: string, process: SimProcess): RecordingStore {
    const random = this.world.random;
    const latency = () =>
      new Promise<void>((resolve) => {
        const delayMs = random.chance(0.03) ? 2 + random.fraction() * 30 : 0.02 + random.fraction() * 0.5;
        process.clock.after(delayMs, resolve);
      });
    const isPrimary = () => this.nodes.find((handle) => handle.name === name)?.node?.role === 'primary';
    return new RecordingStore(name, new MemoryStore(), this.options.watcher, latency, isPrimary, this.lineages);
  }

  private startNode(handle: SimNodeHandle): void {
    const isPrimary = handle === this.configuredPrimary;
    const node = new KvNode({
      name: handle.name,
      role: isPrimary ? 'primary' : 'replica',
      hubUrl: this.hubUrl,
      host: handle.process.address,
      port: SIM_NODE_PORT,
      sync: 'memory',
      store: handle.disk,
      secret: this.options.secret,
      env: this.env(handle.process),
      ...(this.options.ackTimeoutMs !== undefined ? { ackTimeoutMs: this.options.ackTimeoutMs } : {}),
      ...(isPrimary ? { replicas: this.nodes.slice(1).map((replica) => replica.name) } : { primary: this.configuredPrimary.name }),
    });
    node.faults$.subscribe((fault) => this.options.log(`${handle.name} fault: ${'message' in fault ? fault.message : fault.event}`));
    if (this.options.verbose) {
      node.trace$.subscribe(({ node: _name, at: _at, ...event }) => {
        if (event.event === 'peer' || event.event === 'rejected' || event.event === 'view' || event.event === 'serving') this.options.log(`${handle.name} ${JSON.stringify(event)}`);
      });
    }
    handle.node = node;
    const generation = handle.process.generation;
    handle.started = node.init().then(
      () => node.startServices(),
      (error: unknown) => {
        // A node that crashed while it started is no news; any other failure is.
        if (handle.process.generation === generation) this.options.log(`${handle.name} failed to start: ${(error as Error).message}`);
      },
    );
  }
}
