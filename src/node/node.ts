/**
 * A pbkv node: the server (listener, connections, lifecycle) hosting a KvService. The
 * same code runs as primary or replica; the options decide. Lifecycle:
 *   init()          open the store, listen, register the node's name at the hub;
 *   startServices() the primary registers `kv` and starts its replica links (no peer name
 *                   is resolved before this);
 *   close()         releases everything; calling it twice is harmless.
 */
import { BehaviorSubject, Subject, filter, firstValueFrom, timeout } from 'rxjs';
import {
  ACK_TIMEOUT_MS,
  CONNECTIONS_MAX,
  FRAME_BYTES_MAX,
  KEY_BYTES_MAX,
  PEER_FRAME_BYTES_MAX,
  REPLICATION_LOG_BYTES_MAX,
  REPLICATION_LOG_ENTRIES_MAX,
  RESOLVE_DEADLINE_MS,
  VALUE_BYTES_MAX,
} from '../constants.js';
import { KvError, assert } from '../errors.js';
import type { NodeRequest } from '../protocol/messages.js';
import { parseNodeFrame, type Limits, type Parsed } from '../protocol/parse.js';
import { SendBudget, serveConnection } from '../protocol/serve.js';
import { HubClient } from '../hub/hub-client.js';
import type { NodeHealth } from '../hub/hub.js';
import { openStore } from '../storage/open-store.js';
import type { Store, SyncMode } from '../storage/store.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../env/real.js';
import type { Connection, Listener } from '../transport/transport.js';
import { KvService, type Role, type RoleState, type Session } from './kv-service.js';
import { PrimaryGate } from './primary-gate.js';
import { ReplicaApplier } from './replica-applier.js';
import { ReplicaLink } from './replica-link.js';
import { ReplicationLog } from './replication-log.js';
import type { NodeTrace, TraceEvent } from './trace.js';
import { WritePipeline } from './write-pipeline.js';

export const KV_SERVICE = 'kv';

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
}

type Phase = 'new' | 'initialized' | 'serving' | 'closed';

export class KvNode {
  readonly trace$ = new Subject<NodeTrace>();
  /** How the node is, as it reports it to the hub: starting, serving, degraded, halted. */
  readonly health$ = new BehaviorSubject<NodeHealth>({ state: 'starting' });
  /** Faults only (store errors, listener errors): cheap to watch when not tracing. */
  readonly faults$ = new Subject<NodeTrace>();
  private phase: Phase = 'new';
  private store: Store | undefined;
  private listener: Listener | undefined;
  private readonly hub: HubClient;
  private roleState: RoleState | undefined;
  private service: KvService | undefined;
  private links: ReplicaLink[] = [];
  private closing: Promise<void> | undefined;
  private readonly limits: Limits;
  private readonly budget: SendBudget;
  /** Replicas refusing what they are sent, and why (shown as `degraded` at the hub). */
  private readonly problems = new Map<string, string>();
  private readonly env: Environment;

  constructor(readonly options: KvNodeOptions) {
    this.env = options.env ?? realEnvironment;
    if (options.role === 'primary') assert(options.replicas !== undefined, 'a primary is given its replicas\' names');
    else assert(options.primary !== undefined, 'a replica is given the primary\'s name');
    assert(options.secret !== undefined || options.insecure === true, `${options.name} needs the cluster secret, or insecure: true`);
    assert(options.secret === undefined || options.secret.length > 0, 'the cluster secret is not empty');
    this.budget = new SendBudget(options.serverSendBufferBytesMax);
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

  get role(): Role {
    return this.options.role;
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
    this.roleState =
      options.role === 'primary'
        ? { role: 'primary', gate: undefined, pipeline: undefined }
        : { role: 'replica', primary: options.primary!, applier: new ReplicaApplier(this.store, (e) => this.emit(e)) };
    this.service = new KvService(this.name, this.env, this.store, this.hub, this.roleState, options.secret, (e) => this.emit(e));
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

  async startServices(): Promise<void> {
    assert(this.phase === 'initialized', `startServices() of ${this.name} in phase ${this.phase}`);
    this.phase = 'serving';
    const { options } = this;
    const roleState = this.roleState!;
    if (roleState.role !== 'primary') {
      this.report({ state: 'serving' });
      return;
    }
    const store = this.storage;
    const log = new ReplicationLog(
      store.state.seq,
      options.replicationLogEntriesMax ?? REPLICATION_LOG_ENTRIES_MAX,
      options.replicationLogBytesMax ?? REPLICATION_LOG_BYTES_MAX,
    );
    const ackTimeoutMs = options.ackTimeoutMs ?? ACK_TIMEOUT_MS;
    // Before the gate opens the primary stands where its store does; after, at its log's end
    // in the epoch it writes in.
    const position = () => (gate.state.state === 'serving' ? { epoch: gate.state.epoch, seq: log.lastSeq } : store.state);
    const gate = new PrimaryGate(this.name, position, options.replicas ?? [], (state) => {
      if (state.state === 'serving') this.serveWrites(roleState, log, state.epoch, ackTimeoutMs);
      else if (state.state === 'halted') this.halt(roleState, state.reason);
      else this.report(state);
    });
    roleState.gate = gate;
    const linkOptions = {
      env: this.env,
      self: this.name,
      localAddress: bindableAddress(options.host),
      secret: options.secret,
      gate,
      ackTimeoutMs,
      resolveDeadlineMs: options.resolveDeadlineMs ?? RESOLVE_DEADLINE_MS,
      onProblem: (replica: string, problem: string | undefined) => this.replicaProblem(replica, problem),
    };
    this.links = (options.replicas ?? []).map((name) => new ReplicaLink(name, this.hub, log, store, linkOptions, (e) => this.emit(e)));
    gate.start();
    for (const link of this.links) link.start();
    await this.hub.registerService(KV_SERVICE, this.name);
    this.emit({ event: 'registered', what: 'service', address: this.url });
  }

  /** Where this node stands: starting, serving, degraded or halted, and why (as the hub shows it). */
  get health(): NodeHealth {
    const roleState = this.roleState;
    if (!roleState || this.phase !== 'serving') return { state: 'starting' };
    if (roleState.role === 'replica') return { state: 'serving' };
    const gate = roleState.gate?.state;
    if (!gate) return { state: 'starting' };
    if (gate.state !== 'serving') return gate;
    if (this.problems.size > 0) return { state: 'degraded', reason: [...this.problems.values()].join('; ') };
    return { state: 'serving' };
  }

  /** The gate opened: no replica is ahead, so writes (and reads) start, in a new epoch. */
  private serveWrites(roleState: Extract<RoleState, { role: 'primary' }>, log: ReplicationLog, epoch: number, ackTimeoutMs: number): void {
    const { options } = this;
    roleState.pipeline = new WritePipeline(
      this.storage,
      log,
      this.links,
      { clock: this.env.clock, epoch, ackTimeoutMs, ...(options.batchWritesMax !== undefined ? { batchWritesMax: options.batchWritesMax } : {}) },
      (e) => this.emit(e),
    );
    this.emit({ event: 'serving', epoch });
    this.report(this.health);
  }

  /** Stops serving for good: said in the log, at the hub and in every reply. */
  private halt(roleState: Extract<RoleState, { role: 'primary' }>, reason: string): void {
    this.emit({ event: 'fault', message: `HALTED: ${reason}` });
    roleState.pipeline?.close(reason);
    for (const link of this.links) void link.close();
    this.report({ state: 'halted', reason });
  }

  private replicaProblem(replica: string, problem: string | undefined): void {
    if (problem === undefined) this.problems.delete(replica);
    else this.problems.set(replica, problem);
    this.report(this.health);
  }

  /** Resolves once the node has left `starting` (serving, degraded or halted); fails after `deadlineMs`. */
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
    this.health$.next(health);
    this.hub.report(this.name, health).catch((error: unknown) => {
      if (this.phase !== 'closed') this.emit({ event: 'fault', message: `cannot report to the hub: ${(error as Error).message}` });
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.phase = 'closed';
      if (this.roleState?.role === 'primary') this.roleState.pipeline?.close();
      await Promise.all(this.links.map((link) => link.close()));
      await this.listener?.close();
      await this.hub.close();
      await this.store?.close();
      this.trace$.complete();
      this.faults$.complete();
      this.health$.complete();
    })();
    return this.closing;
  }

  private serve(connection: Connection): void {
    const service = this.service;
    assert(service, 'the service exists before the listener accepts');
    const session: Session = { connection, remoteAddress: connection.remoteAddress, isPrimary: false };
    connection.frames$.subscribe({ complete: () => service.closed(session) });
    const frameBytesMax = this.options.frameBytesMax ?? FRAME_BYTES_MAX;
    const tracing = () => this.trace$.observed;
    serveConnection<NodeRequest>(connection, {
      parse: (text) => this.parse(text, session, frameBytesMax),
      handle: (request) => {
        if (!tracing() || request.type === 'append') return service.handle(request, session);
        this.emit({ event: 'request', id: request.id, op: request.type, ...('key' in request ? { key: request.key } : {}) });
        const reply = Promise.resolve(service.handle(request, session));
        reply.then(
          (answer) => this.emit({ event: 'reply', id: request.id, ok: typeof answer === 'string' || answer.ok }),
          (error: unknown) => this.emit({ event: 'reply', id: request.id, ok: false, code: (error as KvError).code }),
        );
        return reply;
      },
      budget: this.budget,
      ...definedOnly({ sendBufferBytesMax: this.options.sendBufferBytesMax }),
      onRejected: (_id, error) => {
        // A frame from the primary that cannot even be parsed is a fault worth the log.
        if (session.isPrimary) this.emit({ event: 'fault', message: `refused a frame from the primary: ${error.code}: ${error.message}` });
        else if (tracing()) this.emit({ event: 'rejected', reason: error.message, code: error.code, address: session.remoteAddress });
      },
    });
  }

  /** Client frames have their own limit; only the primary's session sends batch-sized ones. */
  private parse(text: string, session: Session, frameBytesMax: number): Parsed<NodeRequest> {
    if (!session.isPrimary && text.length > frameBytesMax / 3 && Buffer.byteLength(text) > frameBytesMax) {
      return { ok: false, id: null, error: new KvError('TOO_LARGE', `frame is over ${frameBytesMax} bytes`) };
    }
    return parseNodeFrame(text, this.limits);
  }

  private emit(event: TraceEvent): void {
    if (event.event === 'fault') this.faults$.next({ node: this.name, at: this.env.clock.now(), ...event });
    if (this.trace$.observed) this.trace$.next({ node: this.name, at: this.env.clock.now(), ...event });
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
