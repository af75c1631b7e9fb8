/**
 * A pbkv node: the server (listener, connections, lifecycle) with its two services, one
 * for clients (ClientService) and one for peers (ReplicaFence), and its role (role.ts),
 * which follows the views the hub names. The same code runs as primary or replica.
 * Lifecycle:
 *   init()          open the store, listen, register the node's name at the hub;
 *   startServices() heartbeat the hub; the views it answers with make the node primary or
 *                   replica (no peer name is resolved before this);
 *   close()         releases everything; calling it twice is harmless.
 */
import { BehaviorSubject, Subject, concatMap, filter, firstValueFrom, timeout, type Subscription } from 'rxjs';
import {
  ACK_TIMEOUT_MS,
  CONNECTIONS_MAX,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_REPLY_DEADLINE_MS,
  FRAME_BYTES_MAX,
  KEY_BYTES_MAX,
  PEER_FRAME_BYTES_MAX,
  REPLICATION_LOG_BYTES_MAX,
  REPLICATION_LOG_ENTRIES_MAX,
  RESOLVE_DEADLINE_MS,
  UTF8_BYTES_PER_UNIT_MAX,
  VALUE_BYTES_MAX,
} from '../constants.js';
import { KvError, assert, assertNever, toKvError } from '../errors.js';
import type { Answer, NodeHealth, NodeRequest, View } from '../protocol/messages.js';
import { parseNodeFrame, type Limits, type Parsed } from '../protocol/parse.js';
import { Followed, SendBudget, serveConnection, type Channel, type Handled } from '../protocol/serve.js';
import { HubClient } from '../hub/hub-client.js';
import { openStore } from '../storage/open-store.js';
import type { Store, SyncMode } from '../storage/store.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../transport/real-environment.js';
import type { Connection, HttpRequest, HttpResponse, Listener } from '../env/transport.js';
import { nodeMetricsText, PROMETHEUS_CONTENT_TYPE } from '../metrics/exposition.js';
import { ClientService } from './client-service.js';
import { NodeMetrics } from './metrics.js';
import { PrimaryRole } from './primary-role.js';
import { ReplicaApplier } from './replica-applier.js';
import { ReplicaFence, type Session } from './replica-fence.js';
import { ReplicationLog } from './replication-log.js';
import { nextRole, servingView, type RoleEvent, type RoleState } from './role.js';
import type { NodeTrace, TraceEvent } from './trace.js';

export { KV_SERVICE } from '../constants.js';

/** What a node's flags make it in the first view (the hub's views decide after). */
export type Role = 'primary' | 'replica';

export interface KvNodeOptions {
  name: string;
  role: Role;
  hubUrl: string;
  /** The address to listen on; the primary also binds its outgoing connections to it. */
  host?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** The node's own SQLite file; not needed with sync `memory`. */
  dataFile?: string;
  sync?: SyncMode;
  /** A store to use instead of opening one (tests inject faulty stores this way). */
  store?: Store;
  /** Primary: its replicas' names. */
  replicas?: readonly string[];
  /** Replica: the primary's name. */
  primary?: string;
  /** Primary: the durability floor it proposes with the first view (unset: 1 with replicas, else 0). */
  minReplicas?: number;
  /** Cluster secret: peers and hub registrations must prove it. */
  secret?: string;
  /** Run without a secret: any local process can then forge replication frames. */
  insecure?: boolean;
  ackTimeoutMs?: number;
  resolveDeadlineMs?: number;
  keyBytesMax?: number;
  valueBytesMax?: number;
  frameBytesMax?: number;
  connectionsMax?: number;
  peerConnectionsMax?: number;
  peerAuthTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  handshakesMax?: number;
  /** Unsent reply bytes: per connection before it stops being read; all connections together. */
  sendBufferBytesMax?: number;
  serverSendBufferBytesMax?: number;
  batchWritesMax?: number;
  /** The catch-up window kept for returning replicas (REPLICATION_LOG_*_MAX). */
  replicationLogEntriesMax?: number;
  replicationLogBytesMax?: number;
  /** The network, clock and randomness (the real ones unless given: the simulator's in tests). */
  env?: Environment;
  /**
   * Count requests, latency, bytes and batches, report them with every heartbeat and
   * answer GET /metrics (default true; off, a node counts and reports nothing).
   */
  metrics?: boolean;
}

type Phase = 'new' | 'initialized' | 'serving' | 'closed';

export class KvNode {
  readonly trace$ = new Subject<NodeTrace>();
  /** How the node is, as it reports it to the hub: starting, serving, degraded. */
  readonly health$ = new BehaviorSubject<NodeHealth>({ state: 'starting' });
  /** Faults only (store errors, listener errors): cheap to watch when not tracing. */
  readonly faults$ = new Subject<NodeTrace>();
  /** Views newer than any before, as the hub names them: taken on one at a time, in order. */
  private readonly heard$ = new Subject<View>();
  /** What this node is now (role.ts); undefined before init() opened the store. */
  private state: RoleState | undefined;
  private phase: Phase = 'new';
  private store: Store | undefined;
  private listener: Listener | undefined;
  private readonly hub: HubClient;
  /** What this node counts of its work (undefined with metrics off). */
  private readonly metrics: NodeMetrics | undefined;
  private clients: ClientService | undefined;
  private fence: ReplicaFence | undefined;
  /** Nodes outside the view the hub last named: the primary catches them up. */
  private candidates: string[] = [];
  /** Where the store stood at the previous heartbeat (a candidate holding it is caught up). */
  private lastBeatSeq = 0;
  private stopBeating: (() => void) | undefined;
  private adopting: Subscription | undefined;
  /** The view being taken on: close() lets it finish before it releases the store. */
  private adoption: Promise<void> | undefined;
  private stopWaitingForLease: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private readonly limits: Limits;
  private readonly budget: SendBudget;
  private readonly env: Environment;

  constructor(readonly options: KvNodeOptions) {
    this.env = options.env ?? realEnvironment;
    if (options.role === 'primary') assert(options.replicas !== undefined, 'a primary is given its replicas\' names');
    else assert(options.primary !== undefined, 'a replica is given the primary\'s name');
    assert(options.secret !== undefined || options.insecure === true, `${options.name} needs the cluster secret, or insecure: true`);
    assert(options.secret === undefined || options.secret.length > 0, 'the cluster secret is not empty');
    this.budget = new SendBudget(options.serverSendBufferBytesMax);
    if (options.metrics !== false) {
      this.metrics = new NodeMetrics(this.env.clock, () => (this.state?.kind === 'leading' ? this.state.primary.watches.size : 0));
    }
    this.limits = {
      keyBytesMax: options.keyBytesMax ?? KEY_BYTES_MAX,
      valueBytesMax: options.valueBytesMax ?? VALUE_BYTES_MAX,
    };
    this.hub = new HubClient(options.hubUrl, {
      name: options.name,
      ...(options.secret !== undefined ? { secret: options.secret } : {}),
      env: this.env,
      onRetry: (error) => this.emit({ event: 'fault', message: `hub ${options.hubUrl}: ${error.message} (retrying)` }),
    });
  }

  get name(): string {
    return this.options.name;
  }

  /** The newest view this node heard of (taking it on may still be under way). */
  get view(): View | undefined {
    return this.state?.kind === 'unassigned' ? undefined : this.state?.view;
  }

  /** What the view this node holds makes it (its flags only name the first view). */
  get role(): Role | 'candidate' | undefined {
    const view = this.view;
    if (!view) return undefined;
    return view.primary === this.name ? 'primary' : view.replicas.includes(this.name) ? 'replica' : 'candidate';
  }

  /** ws://host:port this node serves on. */
  get url(): string {
    assert(this.listener, `${this.name} is not listening`);
    return this.listener.url;
  }

  /** The node's store (for status and tests). */
  get storage(): Store {
    assert(this.store, `${this.name} has no store yet`);
    return this.store;
  }

  async init(): Promise<void> {
    assert(this.phase === 'new', `init() of ${this.name} in phase ${this.phase}`);
    this.phase = 'initialized';
    const { options } = this;
    const store = options.store ?? (await openStore(options.sync ?? 'normal', options.dataFile));
    // close() may have run while the store opened: it found nothing to close, so this does.
    if (this.closing) {
      if (!options.store) await store.close();
      throw new KvError('UNAVAILABLE', `${this.name} was closed while it started`);
    }
    this.store = store;
    this.store.errors$.subscribe((error) => this.emit({ event: 'fault', message: `store: ${error.message}` }));
    this.state = { kind: 'unassigned', applier: this.newApplier() };
    const role = () => this.current;
    this.clients = new ClientService({ name: this.name, clock: this.env.clock, store, hub: this.hub, role });
    this.fence = new ReplicaFence({ name: this.name, env: this.env, hub: this.hub, secret: options.secret, role, trace: (e) => this.emit(e) });
    const listener = await this.env.transport.listen({
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      maxPayload: PEER_FRAME_BYTES_MAX,
      connectionsMax: options.connectionsMax ?? CONNECTIONS_MAX,
      ...definedOnly({
        peerConnectionsMax: options.peerConnectionsMax,
        peerAuthTimeoutMs: options.peerAuthTimeoutMs,
        handshakeTimeoutMs: options.handshakeTimeoutMs,
        handshakesMax: options.handshakesMax,
      }),
      onConnection: (connection) => this.serve(connection),
      onHttp: (request, response) => this.answerHttp(request, response),
      onError: (error) => this.emit({ event: 'fault', message: `listener: ${error.message}` }),
    });
    if (this.closing) {
      await listener.close();
      await this.closing;
      throw new KvError('UNAVAILABLE', `${this.name} was closed while it started`);
    }
    this.listener = listener;
    // Retried until the hub takes it: a node started while the hub is down waits, listening.
    await this.hub.register(this.name, this.listener.url);
    this.emit({ event: 'registered', what: 'name', address: this.listener.url });
  }

  /**
   * Starts heartbeating the hub; the node's role follows the views it gets back (no peer
   * name is resolved before this). The configured primary proposes its flags as the first
   * view.
   */
  async startServices(): Promise<void> {
    assert(this.phase === 'initialized', `startServices() of ${this.name} in phase ${this.phase}`);
    this.phase = 'serving';
    // One view at a time, in epoch order: taking one on may wait for the store.
    this.adopting = this.heard$
      .pipe(
        // A view that could not be taken on (a store that failed) is said, and the next one tried.
        concatMap((view) => {
          this.adoption = this.adopt(view).catch((error: unknown) => this.emit({ event: 'fault', message: `taking on view ${view.epoch}: ${(error as Error).message}` }));
          return this.adoption;
        }),
      )
      .subscribe();
    this.beat();
  }

  /** Watches this node serves now (as primary; none otherwise). */
  get watchers(): number {
    return this.state?.kind === 'leading' ? this.state.primary.watches.size : 0;
  }

  /** Where this node stands: starting, serving or degraded, and why (as the hub shows it). */
  get health(): NodeHealth {
    const state = this.state;
    if (this.phase !== 'serving' || !state || state.kind === 'unassigned') return { state: 'starting', reason: `${this.name} waits for a view from the hub` };
    switch (state.kind) {
      case 'following':
        return { state: 'serving' };
      case 'taking-over':
        return { state: 'starting', reason: `${this.name} takes over as the primary of view ${state.view.epoch}` };
      case 'stepping-down':
        return { state: 'starting', reason: `${this.name} steps down: view ${state.view.epoch} names ${state.view.primary}` };
      case 'leading':
        return state.primary.health();
      default:
        return assertNever(state);
    }
  }

  /** The role state as it stands (one object, replaced at each transition). */
  private get current(): RoleState {
    assert(this.state, `${this.name} has a role once its store is open`);
    return this.state;
  }

  private dispatch(event: RoleEvent): RoleState {
    this.state = nextRole(this.current, event, this.name);
    return this.state;
  }

  private newApplier(): ReplicaApplier {
    const { options } = this;
    const entriesMax = options.replicationLogEntriesMax ?? REPLICATION_LOG_ENTRIES_MAX;
    const bytesMax = options.replicationLogBytesMax ?? REPLICATION_LOG_BYTES_MAX;
    return new ReplicaApplier(this.storage, (e) => this.emit(e), undefined, (start) => new ReplicationLog(start, entriesMax, bytesMax));
  }

  /** Tells the hub where this node stands, and learns the view; again every interval. */
  private beat(): void {
    if (this.phase === 'closed') return;
    const { options } = this;
    const store = this.storage;
    const state = this.current;
    const primary = state.kind === 'leading' ? state.primary : undefined;
    const seq = store.state.seq;
    const fields = {
      name: this.name,
      epoch: store.state.epoch,
      seq,
      // The view this node serves under, not merely the newest it heard of.
      viewEpoch: servingView(state)?.epoch ?? 0,
      config: state.kind === 'unassigned' && options.role === 'primary' ? { primary: this.name, replicas: [...(options.replicas ?? [])], minReplicas: options.minReplicas } : undefined,
      synced: primary?.synced(),
      caughtUp: primary?.caughtUp(this.lastBeatSeq),
      behind: primary?.behind,
      unreachable: primary?.unreachable(),
      metrics: this.metrics?.report(),
    };
    this.lastBeatSeq = seq;
    // Health changes with leases too, which no event announces: looked at every beat.
    this.report(this.health);
    this.hub.heartbeat(fields, HEARTBEAT_REPLY_DEADLINE_MS).then(
      (reply) => {
        if (this.phase === 'closed') return;
        this.candidates = reply.candidates;
        if (reply.view && reply.view.epoch > (this.view?.epoch ?? 0)) this.hear(reply.view);
        else if (this.state?.kind === 'leading') this.state.primary.setCandidates(this.candidates);
      },
      (error: unknown) => {
        if (this.phase !== 'closed') this.emit({ event: 'rejected', reason: `heartbeat: ${(error as Error).message}`, code: toKvError(error).code });
      },
    );
    this.stopBeating = this.env.clock.after(HEARTBEAT_INTERVAL_MS, () => this.beat());
  }

  /** A newer view: fencing follows it at once; it is taken on after the views before it. */
  private hear(view: View): void {
    this.dispatch({ type: 'heard', view });
    this.heard$.next(view);
  }

  /**
   * Takes on a view: primary of it (taking over, or going on in its epoch), or a replica
   * or candidate taking its primary's frames (a deposed primary first stops: writes it
   * has not had acknowledged fail, and nothing of an older view is accepted any more).
   */
  private async adopt(view: View): Promise<void> {
    if (this.phase === 'closed') return;
    this.emit({ event: 'view', epoch: view.epoch, primary: view.primary, replicas: view.replicas });
    this.fence!.viewChanged(view);
    const state = this.dispatch({ type: 'adopt', view });
    if (state.kind === 'taking-over') await this.takeOver(state.applier, view);
    else if (state.kind === 'stepping-down') await this.stepDown(state.deposed, view);
    if (this.state?.kind === 'leading') {
      await this.state.primary.adopt(view, this.candidates);
      this.emit({ event: 'serving', epoch: view.epoch });
    }
    this.dispatch({ type: 'adopted', view });
    this.report(this.health);
  }

  /** What the node was applying as a replica comes to rest; then it writes, as primary. */
  private async takeOver(applier: ReplicaApplier, view: View): Promise<void> {
    const { options } = this;
    const store = this.storage;
    try {
      await applier.abortRestore();
      await applier.idle();
    } catch (error) {
      this.dispatch({ type: 'gave-up' });
      throw error;
    }
    // The log this node kept as a replica catches the others up, if it matches the store.
    const log = applier.log.lastSeq === store.state.seq ? applier.log : new ReplicationLog(store.state, options.replicationLogEntriesMax, options.replicationLogBytesMax);
    const leaseGrantedUntilMs = this.fence!.leaseGrantedUntilMs;
    const primary = new PrimaryRole(
      {
        name: this.name,
        env: this.env,
        store,
        hub: this.hub,
        secret: options.secret,
        localAddress: bindableAddress(options.host),
        ackTimeoutMs: options.ackTimeoutMs ?? ACK_TIMEOUT_MS,
        resolveDeadlineMs: options.resolveDeadlineMs ?? RESOLVE_DEADLINE_MS,
        batchWritesMax: options.batchWritesMax,
        onBatch: this.metrics ? (writes) => this.metrics!.batch(writes) : undefined,
        onProblem: () => this.report(this.health),
        trace: (e) => this.emit(e),
      },
      log,
      view,
      Math.max(this.env.clock.now(), leaseGrantedUntilMs),
    );
    this.dispatch({ type: 'took-over', primary });
    const waitMs = leaseGrantedUntilMs - this.env.clock.now();
    // Serving starts once the lease this node granted has run out.
    if (waitMs > 0) this.stopWaitingForLease = this.env.clock.after(waitMs + 1, () => this.report(this.health));
  }

  /** No replication is taken until the store is at rest and an applier starts from it. */
  private async stepDown(deposed: PrimaryRole, view: View): Promise<void> {
    try {
      await deposed.close(`${this.name} is no longer the primary: view ${view.epoch} names ${view.primary}`);
    } finally {
      this.dispatch({ type: 'stepped-down', applier: this.newApplier() });
    }
  }

  /** The view this node serves under: the newest it has finished taking on. */
  get servingView(): View | undefined {
    return this.state && servingView(this.state);
  }

  /** Resolves once the node serves (or is degraded); fails after `deadlineMs`. */
  settled(deadlineMs: number): Promise<NodeHealth> {
    return firstValueFrom(
      this.health$.pipe(
        filter((health) => health.state !== 'starting'),
        timeout({ first: deadlineMs, scheduler: this.env.clock.scheduler, with: () => { throw new KvError('UNAVAILABLE', `${this.name} still starting after ${deadlineMs} ms: ${this.health.reason ?? ''}`); } }),
      ),
    );
  }

  private report(health: NodeHealth): void {
    if (this.phase === 'closed') return;
    const last = this.health$.value;
    if (last.state === health.state && last.reason === health.reason) return;
    this.health$.next(health);
    this.hub.report(this.name, health).catch((error: unknown) => {
      if (this.phase !== 'closed') this.emit({ event: 'fault', message: `cannot report to the hub: ${(error as Error).message}` });
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.phase = 'closed';
      this.stopBeating?.();
      this.stopWaitingForLease?.();
      this.adopting?.unsubscribe();
      await this.adoption;
      if (this.state?.kind === 'leading') await this.state.primary.close(`${this.name} is closing`);
      await this.listener?.close();
      await this.hub.close();
      await this.store?.close();
      this.trace$.complete();
      this.faults$.complete();
      this.health$.complete();
      this.heard$.complete();
    })();
    return this.closing;
  }

  /**
   * Plain HTTP on the node's port: GET /metrics (this process's metrics and this node's
   * counters, for Prometheus); anything else is told the port speaks WebSocket.
   */
  private answerHttp(request: HttpRequest, response: HttpResponse): void {
    if (request.path !== '/metrics') return response.reply(426, 'text/plain', 'pbkv speaks WebSocket: try wscat -c ws://HOST:PORT (GET /metrics for Prometheus)\n');
    if (!this.metrics) return response.reply(404, 'text/plain', `${this.name} runs with metrics off\n`);
    const metrics = this.metrics;
    nodeMetricsText(this.name, () => metrics.report()).then(
      (text) => response.reply(200, PROMETHEUS_CONTENT_TYPE, text),
      (error: unknown) => response.reply(500, 'text/plain', `metrics failed: ${(error as Error).message}\n`),
    );
  }

  private serve(connection: Connection): void {
    const fence = this.fence;
    assert(fence, 'the services exist before the listener accepts');
    const session: Session = { connection, remoteAddress: connection.remoteAddress, isPrimary: false };
    if (connection.kind === 'client') this.metrics?.connected(connection);
    connection.frames$.subscribe({ complete: () => fence.closed(session) });
    const frameBytesMax = this.options.frameBytesMax ?? FRAME_BYTES_MAX;
    const tracing = () => this.trace$.observed;
    serveConnection<NodeRequest>(connection, {
      parse: (text) => this.parse(text, session, frameBytesMax),
      handle: (request, channel) => {
        if (!tracing() || request.type === 'append') return this.handle(request, session, channel);
        this.emit({ event: 'request', id: request.id, op: request.type, ...('key' in request ? { key: request.key } : {}) });
        const replied = (handled: Handled) => {
          const answer: Answer = handled instanceof Followed ? handled.answer : handled;
          this.emit({ event: 'reply', id: request.id, ok: typeof answer === 'string' || answer.ok });
        };
        // An answer given at once stays synchronous: tracing must not change what runs when
        // (the simulator replays a seed the same with and without its verbose trace).
        const answer = this.handle(request, session, channel);
        if (!(answer instanceof Promise)) {
          replied(answer);
          return answer;
        }
        answer.then(replied, (error: unknown) => this.emit({ event: 'reply', id: request.id, ok: false, code: (error as KvError).code }));
        return answer;
      },
      budget: this.budget,
      meter: connection.kind === 'client' ? this.metrics : undefined,
      ...definedOnly({ sendBufferBytesMax: this.options.sendBufferBytesMax }),
      onRejected: (_id, error) => {
        // A frame from the primary that cannot even be parsed is a fault worth the log.
        if (session.isPrimary) this.emit({ event: 'fault', message: `refused a frame from the primary: ${error.code}: ${error.message}` });
        else if (tracing()) this.emit({ event: 'rejected', reason: error.message, code: error.code, address: session.remoteAddress });
      },
    });
  }

  private handle(request: NodeRequest, session: Session, channel: Channel): Handled | Promise<Handled> {
    switch (request.type) {
      case 'get':
      case 'put':
      case 'del':
      case 'incr':
      case 'list':
      case 'clear':
      case 'watch':
      case 'unwatch':
      case 'help':
        return this.clients!.handle(request, channel);
      case 'hello':
      case 'auth':
      case 'append':
      case 'snapshot':
      case 'lease':
        return this.fence!.handle(request, session);
      default:
        return assertNever(request);
    }
  }

  /** Client frames have their own limit; only the primary's session sends batch-sized ones. */
  private parse(text: string, session: Session, frameBytesMax: number): Parsed<NodeRequest> {
    if (!session.isPrimary && text.length * UTF8_BYTES_PER_UNIT_MAX > frameBytesMax && Buffer.byteLength(text) > frameBytesMax) {
      return { ok: false, id: null, error: new KvError('TOO_LARGE', `frame is over ${frameBytesMax} bytes`) };
    }
    return parseNodeFrame(text, this.limits);
  }

  private emit(event: TraceEvent): void {
    if (event.event === 'fault') this.faults$.next({ node: this.name, at: this.env.clock.wallNow(), ...event });
    if (this.trace$.observed) this.trace$.next({ node: this.name, at: this.env.clock.wallNow(), ...event });
  }
}

/** The fields of `fields` that are set: options passed on keep their defaults otherwise. */
function definedOnly<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/** A specific local address to bind outgoing connections to, or none for a wildcard. */
function bindableAddress(host: string | undefined): string | undefined {
  if (!host || host === '0.0.0.0' || host === '::' || host === 'localhost') return undefined;
  return host;
}
