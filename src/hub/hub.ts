/**
 * The directory hub: the cluster's "DNS". Nodes register their names (name -> ws address)
 * and report their health; the hub keeps the view and answers `lookup kv` with the view's
 * primary; clients and nodes look them up. Registering needs a session that proved the
 * cluster secret (secure by default: a hub without a secret must be asked for with
 * `insecure`), a node registers only itself, and a name held by a live connection is never
 * taken over by another address. Lookups are open. Names and health are in memory (nodes
 * register again when they reconnect); the view is kept in the view store (data/hub.sqlite),
 * so a restarted hub goes on from it.
 */
import { Subject } from 'rxjs';
import { CONNECTIONS_MAX, DEAD_AFTER_MS, HUB_FRAME_BYTES_MAX, HUB_NAME, HUB_NAMES_MAX, KV_SERVICE, METRICS_SAMPLE_INTERVAL_MS, VIEW_TICK_INTERVAL_MS } from '../constants.js';
import { KvError, assert, assertNever } from '../errors.js';
import { newChallenge, verifyProof } from '../protocol/auth.js';
import type { Answer, HubRequest, NodeHealth, NodeState } from '../protocol/messages.js';
import { parseHubFrame } from '../protocol/parse.js';
import { okReply } from '../protocol/reply.js';
import { SendBudget, serveConnection } from '../protocol/serve.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../transport/real-environment.js';
import type { Connection, Listener } from '../env/transport.js';
import { HubHttp } from './http.js';
import { NodeReports } from './reports.js';
import { MemoryViewStore, ViewKeeper, type ViewChange, type ViewStore } from './views.js';

export interface HubOptions {
  host?: string;
  port?: number;
  /** Registering needs a session authenticated with it. */
  secret?: string;
  /** Run without a secret: any local process can then register names and take over `kv`. */
  insecure?: boolean;
  connectionsMax?: number;
  namesMax?: number;
  /** The network, clock and randomness (the real ones unless given). */
  env?: Environment;
  /** Where the view is kept across restarts (in memory unless given: tests only). */
  viewStore?: ViewStore;
  deadAfterMs?: number;
}

/** What a node last reported of itself. */
export type HubEvent =
  | { event: 'registered'; name: string; address: string }
  | { event: 'report'; name: string; state: NodeState; reason?: string | undefined }
  | { event: 'rejected'; op: string; code: string; message: string }
  | ({ event: 'view' } & ViewChange);

const HUB_HELP = [
  'lookup SERVICE   the node and address serving SERVICE (try: lookup kv)',
  'resolve NAME     the address of node NAME',
  'status           every name, service and node health',
].join('\n');

/** What one connection has proved: who it is, and whether it knows the secret. */
interface Session {
  connection: Connection;
  from?: string;
  challenge?: string;
  authenticated: boolean;
}

interface NameEntry {
  address: string;
  /** The session that registered it, while its connection is open. */
  owner: Session | undefined;
  health?: NodeHealth;
}

export class DirectoryHub {
  readonly events$ = new Subject<HubEvent>();
  private readonly names = new Map<string, NameEntry>();
  private readonly budget = new SendBudget();
  private listener: Listener | undefined;
  private closing: Promise<void> | undefined;
  private readonly env: Environment;
  readonly views: ViewKeeper;
  /** What nodes report of their work, and a second-by-second history of it. */
  readonly reports: NodeReports;
  private readonly http: HubHttp;
  private stopTicking: (() => void) | undefined;
  private stopSampling: (() => void) | undefined;

  constructor(private readonly options: HubOptions = {}) {
    this.env = options.env ?? realEnvironment;
    this.views = new ViewKeeper(this.env.clock, options.viewStore ?? new MemoryViewStore(), options.deadAfterMs ?? DEAD_AFTER_MS, (change) => {
      this.events$.next({ event: 'view', ...change });
      // The page shows a failover as soon as the hub decides it, not at the next second.
      this.http.tick({});
    });
    this.reports = new NodeReports(this.env.clock);
    this.http = new HubHttp({
      status: () => this.status(),
      view: () => this.views.view,
      members: () => this.views.status(),
      reports: this.reports,
      wallNow: () => this.env.clock.wallNow(),
    });
    assert(options.secret !== undefined || options.insecure === true, 'a hub needs the cluster secret, or insecure: true');
    assert(options.secret === undefined || options.secret.length > 0, 'the cluster secret is not empty');
  }

  get url(): string {
    if (!this.listener) throw new Error('the hub is not listening');
    return this.listener.url;
  }

  async listen(): Promise<this> {
    this.listener = await this.env.transport.listen({
      host: this.options.host ?? '127.0.0.1',
      port: this.options.port ?? 0,
      maxPayload: HUB_FRAME_BYTES_MAX,
      connectionsMax: this.options.connectionsMax ?? CONNECTIONS_MAX,
      onConnection: (connection) => this.serve(connection),
      onHttp: (request, response) => this.http.handle(request, response),
    });
    this.tick();
    this.sample();
    return this;
  }

  /** Once a second: a sample of each node's load, pushed to the page's readers. */
  private sample(): void {
    this.http.tick(this.reports.sample());
    this.stopSampling = this.env.clock.after(METRICS_SAMPLE_INTERVAL_MS, () => this.sample());
  }

  /** The view keeper looks at heartbeats twice per interval. */
  private tick(): void {
    this.views.tick();
    this.stopTicking = this.env.clock.after(VIEW_TICK_INTERVAL_MS, () => this.tick());
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopTicking?.();
      this.stopSampling?.();
      this.http.close();
      await this.listener?.close();
      this.events$.complete();
    })();
    return this.closing;
  }

  private serve(connection: Connection): void {
    const session: Session = { connection, authenticated: this.options.secret === undefined };
    connection.frames$.subscribe({ complete: () => this.release(session) });
    serveConnection<HubRequest>(connection, {
      parse: parseHubFrame,
      handle: (request) => this.handle(request, session),
      budget: this.budget,
      onRejected: (_id, error) => this.events$.next({ event: 'rejected', op: 'frame', code: error.code, message: error.message }),
    });
  }

  /** The names a closed connection held stay resolvable, but may now be taken over. */
  private release(session: Session): void {
    for (const entry of this.names.values()) if (entry.owner === session) entry.owner = undefined;
  }

  private handle(request: HubRequest, session: Session): Answer {
    switch (request.type) {
      case 'lookup': {
        // Once views exist, `kv` is always the view's primary.
        const view = this.views.view;
        const name = request.service === KV_SERVICE ? view?.primary : undefined;
        const address = name === undefined ? undefined : this.names.get(name)?.address;
        if (name === undefined || address === undefined) {
          throw new KvError('NOT_FOUND', `no node serves "${request.service}"`);
        }
        return okReply(request.id, { node: name, address });
      }
      case 'resolve': {
        const address = this.names.get(request.name)?.address;
        if (address === undefined) throw new KvError('NOT_FOUND', `no node is named "${request.name}"`);
        return okReply(request.id, { name: request.name, address });
      }
      case 'status':
        return okReply(request.id, this.status());
      case 'hello': {
        session.from = request.from;
        session.authenticated = this.options.secret === undefined;
        if (session.authenticated) {
          session.connection.trust();
          return okReply(request.id);
        }
        session.challenge = newChallenge(this.env.random);
        return okReply(request.id, { challenge: session.challenge });
      }
      case 'auth': {
        const { secret } = this.options;
        if (secret === undefined) return okReply(request.id);
        if (!session.from || !session.challenge) throw new KvError('BAD_REQUEST', 'auth comes after hello');
        const valid = verifyProof(secret, session.challenge, session.from, HUB_NAME, request.proof);
        session.challenge = undefined;
        if (!valid) throw new KvError('UNAUTHORIZED', 'wrong cluster secret');
        session.authenticated = true;
        session.connection.trust();
        return okReply(request.id);
      }
      case 'register':
        this.register(session, request.name, request.address);
        return okReply(request.id);
      case 'report': {
        this.requireRegistrant(session, request.name);
        const entry = this.names.get(request.name);
        if (!entry) throw new KvError('NOT_FOUND', `register the name "${request.name}" before reporting on it`);
        this.setHealth(request.name, entry, { state: request.state, reason: request.reason });
        return okReply(request.id);
      }
      case 'heartbeat': {
        this.requireRegistrant(session, request.name);
        const entry = this.names.get(request.name);
        if (!entry) throw new KvError('NOT_FOUND', `register the name "${request.name}" before its heartbeats`);
        if (request.health) this.setHealth(request.name, entry, request.health);
        if (request.metrics) this.reports.take(request.name, request.metrics);
        const view = this.views.heartbeat(request);
        return okReply(request.id, { view: view ?? null, candidates: this.views.candidates() });
      }
      case 'help':
        return request.asText ? `${HUB_HELP}\n` : okReply(request.id, { help: HUB_HELP });
      default:
        return assertNever(request);
    }
  }

  private get namesMax(): number {
    return this.options.namesMax ?? HUB_NAMES_MAX;
  }

  /** What a node says of itself, by report or with a heartbeat; an event only when it changed. */
  private setHealth(name: string, entry: NameEntry, health: NodeHealth): void {
    const changed = entry.health?.state !== health.state || entry.health?.reason !== health.reason;
    entry.health = { state: health.state, ...(health.reason !== undefined ? { reason: health.reason } : {}) };
    if (changed) this.events$.next({ event: 'report', name, state: health.state, reason: health.reason });
  }

  /**
   * Names, services, what each node last said of itself (`nodes`: as said, however old),
   * and the view: its members as the hub sees them (a dead one's last word is in `nodes`
   * only), why writes are refused when the view is below its durability floor, and each
   * node's load (`metrics`: rates and p99 over the last seconds, from its reports).
   */
  status(): Record<string, unknown> {
    const names: Record<string, string> = {};
    const nodes: Record<string, NodeHealth> = {};
    for (const [name, entry] of this.names) {
      names[name] = entry.address;
      if (entry.health) nodes[name] = entry.health;
    }
    const view = this.views.view;
    const writesRefused = this.views.writesRefused();
    return {
      names,
      services: view ? { [KV_SERVICE]: view.primary } : {},
      nodes,
      ...(view
        ? { view: { ...view, minReplicas: view.minReplicas ?? 0, ...(writesRefused ? { writesRefused } : {}), members: this.views.status(), changes: this.views.history } }
        : {}),
      metrics: this.reports.load(),
    };
  }

  private register(session: Session, name: string, address: string): void {
    this.requireRegistrant(session, name);
    const entry = this.names.get(name);
    if (entry?.owner && entry.owner !== session && entry.owner.connection.isOpen && entry.address !== address) {
      throw new KvError('FORBIDDEN', `"${name}" is registered at ${entry.address} by a live connection; stop that node first`, {
        holder: entry.address,
      });
    }
    if (!entry && this.names.size >= this.namesMax) this.forgetOneName();
    this.names.set(name, { address, owner: session, ...(entry?.health && entry.address === address ? { health: entry.health } : {}) });
    this.events$.next({ event: 'registered', name, address });
  }

  /** Makes room for a name: the oldest one that no live connection holds and the view does not name. */
  private forgetOneName(): void {
    const view = this.views.view;
    for (const [name, entry] of this.names) {
      if (!entry.owner && name !== view?.primary && !view?.replicas.includes(name)) {
        this.names.delete(name);
        return;
      }
    }
    throw new KvError('UNAVAILABLE', `the hub holds ${this.namesMax} names, all in use`);
  }

  /** With a secret, a node registers only itself, and only once it proved the secret. */
  private requireRegistrant(session: Session, name: string): void {
    if (this.options.secret === undefined) return;
    if (!session.authenticated) throw new KvError('UNAUTHORIZED', 'registering needs the cluster secret (hello, then auth)');
    if (session.from !== name) throw new KvError('FORBIDDEN', `this session speaks for "${session.from}", not "${name}"`);
  }
}
