/**
 * Talks to the directory hub for a node or a client. The connection is opened lazily and
 * again after it drops; a node's registrations (its name, its service, its health) are
 * replayed on every new connection, so a restarted hub learns them back, and a node
 * started while the hub is down keeps trying with backoff instead of giving up. Names
 * resolved once are remembered: while the hub is away, links are re-established from
 * what the node already knows (the peer still has to prove the cluster secret).
 */
import { defer, firstValueFrom, retry, throwError, timeout, type Observable } from 'rxjs';
import { backoff } from '../backoff.js';
import { HUB_FRAME_BYTES_MAX, HUB_NAME, REPORT_REASON_LENGTH_MAX, REQUEST_TIMEOUT_MS, RESOLVE_DEADLINE_MS } from '../constants.js';
import { KvError, toKvError } from '../errors.js';
import { proofFor } from '../protocol/auth.js';
import type { NodeLoad } from './reports.js';
import { NODE_STATES, type HeartbeatRequest, type NodeHealth, type NodeState, type View } from '../protocol/messages.js';
import { replyString, replyStringMap, type OkReply } from '../protocol/reply.js';
import { RpcChannel } from '../protocol/rpc-channel.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../transport/real-environment.js';
import { Redialer } from '../transport/redialer.js';

export interface HubClientOptions {
  /** Who is speaking (a node's name): nodes use the hub's peer slots and may register. */
  name?: string;
  secret?: string;
  requestTimeoutMs?: number;
  /** The network, clock and randomness (the real ones unless given). */
  env?: Environment;
  /** Told of each failed attempt to reach the hub or to register (for the node's log). */
  onRetry?(error: KvError): void;
}

export interface HubStatus {
  names: Record<string, string>;
  services: Record<string, string>;
  /** What nodes reported of themselves (serving, starting, degraded and why). */
  nodes: Record<string, NodeHealth>;
  /** The view, once one exists: who serves, each node's state and lag, the last changes. */
  view?: ViewStatus;
  /** Each reporting node's load over the last seconds (absent from older hubs). */
  metrics?: Record<string, NodeLoad>;
}

export interface ViewStatus extends View {
  minReplicas: number;
  /** Why the primary refuses writes (the view is below its durability floor), if it does. */
  writesRefused?: string;
  /** `heardMsAgo`, `trusted`: since the hub last heard the member, and whether it could take over (absent from older hubs). */
  members: Record<string, { state: string; epoch: number; seq: number; lag: number; heardMsAgo?: number; trusted?: boolean }>;
  changes: { atMs: number; epoch: number; primary: string; replicas: string[]; why: string }[];
}

/** The last heartbeat the hub answered: when it was sent (this node's clock) and the view it gave. */
export interface HeartbeatAnswer {
  sentMs: number;
  view: View | undefined;
}

export class HubClient {
  private readonly env: Environment;
  private readonly channel: Redialer<RpcChannel>;
  /** One per name, service and health report: replayed on every new connection. */
  private readonly registrations = new Map<string, Record<string, unknown>>();
  private readonly known = new Map<string, string>();
  /** The delivery loop of each registration key that is running. */
  private readonly delivering = new Map<string, Promise<void>>();
  /** The session being opened (hello, auth, replay): close() ends it at once. */
  private opening: RpcChannel | undefined;
  private closed = false;
  private answered: HeartbeatAnswer | undefined;

  constructor(
    readonly url: string,
    private readonly options: HubClientOptions = {},
  ) {
    this.env = options.env ?? realEnvironment;
    this.channel = new Redialer(() => this.connect(), { env: this.env });
  }

  /** Registers a node's name, retrying until the hub takes it (or the client closes). */
  register(name: string, address: string): Promise<void> {
    return this.remember(`name ${name}`, { op: 'register', name, address });
  }

  /** Points a service at a node, retrying likewise. */

  /** Tells the hub how this node is (shown in the hub's status), retrying likewise. */
  report(name: string, health: NodeHealth): Promise<void> {
    const reason = health.reason !== undefined && health.reason.length > REPORT_REASON_LENGTH_MAX
      ? `${health.reason.slice(0, REPORT_REASON_LENGTH_MAX - 1)}…`
      : health.reason;
    return this.remember(`report ${name}`, { op: 'report', name, state: health.state, ...(reason !== undefined ? { reason } : {}) });
  }

  /**
   * The address of a node: the hub's answer, or while the hub cannot be reached or has
   * forgotten the name (it restarted), the last answer it gave.
   */
  async resolve(name: string): Promise<string> {
    try {
      const address = replyString(await this.request({ op: 'resolve', name }), 'address');
      this.known.set(name, address);
      return address;
    } catch (error) {
      const known = this.known.get(name);
      if (known !== undefined && error instanceof KvError && (error.code === 'UNAVAILABLE' || error.code === 'NOT_FOUND')) return known;
      throw error;
    }
  }

  async lookup(service: string): Promise<{ node: string; address: string }> {
    const reply = await this.request({ op: 'lookup', service });
    return { node: replyString(reply, 'node'), address: replyString(reply, 'address') };
  }

  /**
   * One heartbeat: where this node stands (and, from the primary, who is synced and caught
   * up). Returns the view the hub holds and the nodes outside it. Not retried: the next
   * heartbeat is.
   */
  async heartbeat(fields: Omit<HeartbeatRequest, 'type' | 'id'>, timeoutMs: number): Promise<{ view: View | undefined; candidates: string[] }> {
    const sentMs = this.env.clock.now();
    const channel = await this.channel.get();
    const { config, synced, caughtUp, behind, unreachable, health, ...position } = fields;
    // The health this node last reported rides along, so the hub's copy heals at every beat.
    const said = health ?? this.reported(fields.name);
    const reply = await channel
      .request({
        op: 'heartbeat',
        ...position,
        ...(config ? { config } : {}),
        ...(synced ? { synced } : {}),
        ...(caughtUp ? { caughtUp } : {}),
        ...(behind ? { behind } : {}),
        ...(unreachable?.length ? { unreachable } : {}),
        ...(said ? { state: said.state, ...(said.reason !== undefined ? { reason: said.reason } : {}) } : {}),
      }, timeoutMs)
      .catch((error: unknown) => {
        // A heartbeat with no reply means a connection that died silently (a hub that
        // crashed behind a partition): dropped now, redialed, rather than at the keepalive.
        if (error instanceof KvError && error.code === 'UNAVAILABLE') channel.close();
        throw error;
      });
    const view = parseView(reply['view']);
    // Beats may overlap: a later one's answer is not replaced by an earlier one's.
    if (!this.answered || sentMs >= this.answered.sentMs) this.answered = { sentMs, view };
    return { view, candidates: parseNames(reply['candidates'], 'candidates') };
  }

  /**
   * The last heartbeat the hub answered. A primary holding its view alone counts a lease on
   * it, as on a replica's acknowledgement: the hub calls a node dead only DEAD_AFTER_MS after
   * hearing it last, so until LEASE_MS after `sentMs` nobody else has been made primary.
   */
  get lastAnswer(): HeartbeatAnswer | undefined {
    return this.answered;
  }

  /** The health `name` last reported through this client (what `report` keeps for replay). */
  private reported(name: string): NodeHealth | undefined {
    const fields = this.registrations.get(`report ${name}`);
    if (!fields) return undefined;
    const { state, reason } = fields as { state: NodeState; reason?: string };
    return { state, ...(reason !== undefined ? { reason } : {}) };
  }

  async status(): Promise<HubStatus> {
    const reply = await this.request({ op: 'status' });
    const nodes = reply['nodes'];
    const view = reply['view'] === undefined ? undefined : parseViewStatus(reply['view']);
    return {
      names: replyStringMap(reply, 'names'),
      services: replyStringMap(reply, 'services'),
      nodes: parseNodes(nodes),
      ...(view ? { view } : {}),
      ...(reply['metrics'] !== undefined ? { metrics: parseLoads(reply['metrics']) } : {}),
    };
  }

  /**
   * Resolves `name`, retrying with backoff while it is not registered yet or the hub is
   * unreachable, until `deadlineMs`: then fails with UNAVAILABLE.
   */
  resolveUntil$(name: string, deadlineMs = RESOLVE_DEADLINE_MS): Observable<string> {
    return defer(() => this.resolve(name)).pipe(
      retry({ delay: (error: unknown, attempt) => (this.retryable(error, 'NOT_FOUND') ? this.backoff(error, attempt) : throwError(() => error)) }),
      timeout({
        first: deadlineMs,
        scheduler: this.env.clock.scheduler,
        with: () => throwError(() => new KvError('UNAVAILABLE', `"${name}" did not register at the hub within ${deadlineMs} ms`)),
      }),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    this.opening?.close();
    await this.channel.close();
  }

  private readonly backoff = (error: unknown, attempt: number) => backoff(this.env)(error, attempt);

  /**
   * Keeps a registration for replay and sends it until the hub takes it. A name still held
   * by a live connection (FORBIDDEN with its `holder`) is retried too: most often the old
   * process of a node restarted in a hurry, whose connection the hub has not seen close
   * yet; otherwise each retry is reported (a second node with the same name).
   */
  private remember(key: string, fields: Record<string, unknown>): Promise<void> {
    this.registrations.set(key, fields);
    // A node's registrations must reach a restarted hub without waiting for its next request.
    this.channel.keepUp();
    // One loop per key, which ends only once the latest version was delivered: a newer
    // report joins the loop of an older one instead of starting its own.
    const running = this.delivering.get(key);
    if (running) return running;
    const deliver = async () => {
      try {
        for (;;) {
          let sent: Record<string, unknown> | undefined;
          const attempt$ = defer(() => {
            sent = this.registrations.get(key) ?? fields;
            return this.request(sent);
          }).pipe(
            retry({
              delay: (error: unknown, attempt) => {
                const held = error instanceof KvError && error.code === 'FORBIDDEN' && error.details['holder'] !== undefined;
                if (!held && !this.retryable(error, 'UNAVAILABLE')) return throwError(() => error);
                this.options.onRetry?.(error as KvError);
                return this.backoff(error, attempt);
              },
            }),
          );
          await firstValueFrom(attempt$);
          if ((this.registrations.get(key) ?? sent) === sent) return;
        }
      } finally {
        // In the same step as the loop's last look at the registration: a version set after
        // it starts a loop of its own. (Forgotten in a .finally() a microtask later, a report
        // made meanwhile joined the finished loop and was never sent: a node whose view came
        // in the same read as its previous report's reply stayed "starting" at the hub.)
        if (this.delivering.get(key) === delivered) this.delivering.delete(key);
      }
    };
    const delivered: Promise<void> = deliver();
    this.delivering.set(key, delivered);
    return delivered;
  }

  /** Whether a failed call is worth another try: the hub unreachable, or the code given. */
  private retryable(error: unknown, code: KvError['code']): boolean {
    return !this.closed && error instanceof KvError && (error.code === 'UNAVAILABLE' || error.code === code);
  }

  private async request(fields: Record<string, unknown>): Promise<OkReply> {
    const channel = await this.channel.get();
    return channel.request(fields, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
  }

  /** Opens a session: proves the secret (a node) and replays every registration. */
  private async connect(): Promise<RpcChannel> {
    const { name, secret } = this.options;
    const connection = await this.env.transport.connect(this.url, { maxPayload: HUB_FRAME_BYTES_MAX, kind: name === undefined ? 'client' : 'peer' });
    const channel = new RpcChannel(connection, this.env.clock, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
    if (this.closed) channel.close();
    this.opening = channel;
    try {
      if (name !== undefined) {
        const hello = await channel.request({ op: 'hello', from: name });
        if (typeof hello['challenge'] === 'string') {
          if (secret === undefined) throw new KvError('UNAUTHORIZED', 'the hub wants the cluster secret');
          await channel.request({ op: 'auth', proof: proofFor(secret, hello['challenge'], name, HUB_NAME) });
        }
      }
      // A registration the hub refuses is reported and left to its own call's loop: one
      // refused entry must not make every later connection fail.
      for (const registration of this.registrations.values()) {
        await channel.request(registration).catch((error: unknown) => {
          if (error instanceof KvError && error.code === 'UNAVAILABLE') throw error;
          this.options.onRetry?.(toKvError(error));
        });
      }
      return channel;
    } catch (error) {
      channel.close();
      throw error;
    } finally {
      this.opening = undefined;
    }
  }
}

/** A view in a reply: null (none yet) or {epoch, primary, replicas}, checked like every reply field. */
export function parseView(raw: unknown): View | undefined {
  if (raw === null || raw === undefined) return undefined;
  const { epoch, primary, replicas, minReplicas } = raw as { epoch?: unknown; primary?: unknown; replicas?: unknown; minReplicas?: unknown };
  if (typeof raw !== 'object' || !Number.isSafeInteger(epoch) || (epoch as number) < 1 || typeof primary !== 'string') {
    throw new KvError('INTERNAL', 'malformed reply: view must be {epoch, primary, replicas}');
  }
  if (minReplicas !== undefined && (!Number.isSafeInteger(minReplicas) || (minReplicas as number) < 0)) {
    throw new KvError('INTERNAL', 'malformed reply: view.minReplicas must be a count');
  }
  // A hub from before the floor sends none: its views acknowledged with any replicas.
  return { epoch: epoch as number, primary, replicas: parseNames(replicas, 'view.replicas'), minReplicas: (minReplicas as number | undefined) ?? 0 };
}

function parseNames(raw: unknown, field: string): string[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw) || !raw.every((name) => typeof name === 'string')) throw new KvError('INTERNAL', `malformed reply: ${field} must be a list of names`);
  return raw as string[];
}

/** The status's `view`: a view plus each member's state and the last changes, checked field by field. */
function parseViewStatus(raw: unknown): ViewStatus {
  const view = parseView(raw);
  if (!view) throw new KvError('INTERNAL', 'malformed reply: view must be an object');
  const { members, changes, writesRefused } = raw as { members?: unknown; changes?: unknown; writesRefused?: unknown };
  const count = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;
  const parsedMembers: ViewStatus['members'] = {};
  if (typeof members !== 'object' || members === null || Array.isArray(members)) throw new KvError('INTERNAL', 'malformed reply: view.members must be an object');
  if (writesRefused !== undefined && typeof writesRefused !== 'string') throw new KvError('INTERNAL', 'malformed reply: view.writesRefused must be a string');
  for (const [name, member] of Object.entries(members as Record<string, unknown>)) {
    const { state, epoch, seq, lag, heardMsAgo, trusted } = (member ?? {}) as Record<string, unknown>;
    if (typeof state !== 'string' || !count(epoch) || !count(seq) || !count(lag) || (heardMsAgo !== undefined && typeof heardMsAgo !== 'number') || (trusted !== undefined && typeof trusted !== 'boolean')) {
      throw new KvError('INTERNAL', `malformed reply: view.members.${name}`);
    }
    parsedMembers[name] = {
      state,
      epoch: epoch as number,
      seq: seq as number,
      lag: lag as number,
      ...(heardMsAgo !== undefined ? { heardMsAgo: heardMsAgo as number } : {}),
      ...(trusted !== undefined ? { trusted: trusted as boolean } : {}),
    };
  }
  if (!Array.isArray(changes)) throw new KvError('INTERNAL', 'malformed reply: view.changes must be a list');
  const parsedChanges = changes.map((change: unknown) => {
    const { atMs, why } = (change ?? {}) as Record<string, unknown>;
    const changed = parseView(change);
    if (!changed || typeof atMs !== 'number' || typeof why !== 'string') throw new KvError('INTERNAL', 'malformed reply: view.changes');
    return { epoch: changed.epoch, primary: changed.primary, replicas: changed.replicas, atMs, why };
  });
  return { ...view, minReplicas: view.minReplicas ?? 0, ...(writesRefused !== undefined ? { writesRefused } : {}), members: parsedMembers, changes: parsedChanges };
}

/** The hub status's `nodes`: each node's state and reason, checked like every reply field. */
/** Each node's load as status gives it: rates and p99s are numbers by op. */
function parseLoads(raw: unknown): Record<string, NodeLoad> {
  const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
  const numbers = (value: unknown) => isObject(value) && Object.values(value).every((n) => typeof n === 'number');
  if (!isObject(raw)) throw new KvError('INTERNAL', 'malformed reply: metrics must be an object');
  const loads: Record<string, NodeLoad> = {};
  for (const [name, load] of Object.entries(raw)) {
    if (!isObject(load)) throw new KvError('INTERNAL', `malformed reply: metrics.${name}`);
    const { heartbeatAgeMs, rates, requests, p99Ms, p99AllMs, connections, watchers } = load;
    const valid =
      typeof heartbeatAgeMs === 'number' && numbers(rates) && typeof requests === 'number' && numbers(p99Ms) &&
      (p99AllMs === null || typeof p99AllMs === 'number') && typeof connections === 'number' && typeof watchers === 'number';
    if (!valid) throw new KvError('INTERNAL', `malformed reply: metrics.${name}`);
    loads[name] = load as unknown as NodeLoad;
  }
  return loads;
}

function parseNodes(raw: unknown): Record<string, NodeHealth> {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KvError('INTERNAL', 'malformed reply: nodes must be an object');
  const nodes: Record<string, NodeHealth> = {};
  for (const [name, health] of Object.entries(raw as Record<string, unknown>)) {
    const { state, reason } = (health ?? {}) as { state?: unknown; reason?: unknown };
    if (!NODE_STATES.includes(state as NodeState) || (reason !== undefined && typeof reason !== 'string')) {
      throw new KvError('INTERNAL', `malformed reply: nodes.${name} must be {state, reason}`);
    }
    nodes[name] = { state: state as NodeState, ...(reason !== undefined ? { reason: reason as string } : {}) };
  }
  return nodes;
}
