/**
 * What a node does with each request: client ops on the primary, replication ops on a
 * replica. A replica takes replication frames only from a session that said hello as the
 * primary of the view it holds, from that primary's resolved address, proved the secret
 * when one is set, and only once the lease it granted any other primary has run out.
 * When the node takes on a newer view, sessions of an older one are closed: every frame
 * of an older epoch is refused.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { LEASE_MS, PRIMARY_ADDRESS_TTL_MS } from '../constants.js';
import { KvError, NOTHING_APPLIED, assertNever, toKvError } from '../errors.js';
import { newChallenge, verifyProof } from '../protocol/auth.js';
import type { Answer, AppendRequest, AuthRequest, HelloRequest, LeaseRequest, NodeRequest, Reply, SnapshotRequest, View } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import { HELP_TEXT } from '../protocol/text-commands.js';
import type { Environment } from '../env/environment.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Store } from '../storage/store.js';
import type { Connection } from '../env/transport.js';
import type { PrimaryRole } from './primary-role.js';
import type { ReplicaApplier } from './replica-applier.js';
import type { TraceEvent } from './trace.js';
import type { WritePipeline } from './write-pipeline.js';

export type Role = 'primary' | 'replica';

/** What one connection has proved. */
export interface Session {
  readonly connection: Connection;
  readonly remoteAddress: string;
  /** The peer that said hello on this connection, once its address checked out. */
  peer?: string;
  challenge?: string;
  /** True once the peer is known to be the primary: replication frames are accepted. */
  isPrimary: boolean;
  /** The view the peer spoke as primary of. */
  viewEpoch?: number;
}

/**
 * What the node is now, from the view it holds: primary (serving through its role), or a
 * replica (in the view, or a candidate outside it) taking the view's primary's frames.
 * Before a view exists a node takes nothing.
 */
export type RoleState =
  | { role: 'primary'; primary: PrimaryRole }
  | { role: 'replica'; view: View | undefined; applier: ReplicaApplier | undefined };

export class KvService {
  private primaryAddress: { at: number; name: string; address: Promise<string | undefined> } | undefined;
  /** The primary this node last granted a lease to, and until when (this node's clock). */
  private lease: { holder: string; untilMs: number } | undefined;
  /** Sessions of primaries this node accepted: closed when a newer view replaces theirs. */
  private readonly primarySessions = new Set<Session>();

  constructor(
    private readonly name: string,
    private readonly env: Environment,
    private readonly store: Store,
    private readonly hub: HubClient,
    private readonly role: () => RoleState,
    private readonly secret: string | undefined,
    private readonly trace: (event: TraceEvent) => void,
  ) {}

  /** When the lease this node granted runs out (0: none): a node taking over waits for it. */
  get leaseGrantedUntilMs(): number {
    return this.lease?.untilMs ?? 0;
  }

  /** The node took on a view: sessions of any other primary, or of an older view, end now. */
  viewChanged(view: View | undefined): void {
    for (const session of [...this.primarySessions]) {
      if (!view || session.peer !== view.primary || (session.viewEpoch ?? 0) < view.epoch || view.primary === this.name) {
        this.primarySessions.delete(session);
        session.isPrimary = false;
        session.connection.close();
      }
    }
  }

  handle(request: NodeRequest, session: Session): Answer | Promise<Answer> {
    switch (request.type) {
      case 'get':
        return this.get(request.id, request.key);
      case 'put':
        return this.write(request.id, { kind: 'put', key: request.key, valueJson: request.valueJson, tag: request.tag });
      case 'del':
        return this.write(request.id, { kind: 'del', key: request.key, tag: request.tag });
      case 'help':
        return request.asText ? `${HELP_TEXT}\n` : okReply(request.id, { help: HELP_TEXT });
      case 'hello':
        return this.hello(request, session);
      case 'auth':
        return this.auth(request, session);
      case 'append':
        return this.append(request, session);
      case 'snapshot':
        return this.snapshot(request, session);
      case 'lease':
        return this.renewLease(request, session);
      default:
        return assertNever(request);
    }
  }

  /**
   * Answered as text with the stored JSON spliced in: at once, unless the last write to
   * the key is not yet on every replica; then what was read waits for it, so a read never
   * returns what a failover could lose.
   */
  private get(id: NodeRequest['id'], key: string): Answer | Promise<Answer> {
    const state = this.role();
    if (state.role === 'replica') return this.notPrimary(state.view);
    const refused = state.primary.readError();
    if (refused) throw refused;
    const { primary } = state;
    const json = primary.pipeline.read(key, () => this.store.readJson(key));
    return json instanceof Promise ? json.then((read) => this.found(id, read, primary)) : this.found(id, json, primary);
  }

  private found(id: NodeRequest['id'], json: string | undefined, primary: PrimaryRole): Answer {
    // A lease may have lapsed while the read waited for replicas.
    const refused = primary.readError();
    if (refused) throw refused;
    const idJson = typeof id === 'number' ? String(id) : JSON.stringify(id);
    return json === undefined ? `{"id":${idJson},"ok":true,"found":false}` : `{"id":${idJson},"ok":true,"found":true,"value":${json}}`;
  }

  /** The reply is built as text: a batch's replies are many, and each is this small. */
  private write(id: NodeRequest['id'], op: Parameters<WritePipeline['submit']>[0]): Promise<Answer> {
    const state = this.role();
    if (state.role === 'replica') return this.notPrimary(state.view);
    const refused = state.primary.writeError();
    if (refused) return Promise.reject(refused);
    const idJson = typeof id === 'number' ? String(id) : JSON.stringify(id);
    return state.primary.pipeline
      .submit(op)
      .then((found) => (op.kind === 'del' ? `{"id":${idJson},"ok":true,"found":${found}}` : `{"id":${idJson},"ok":true}`));
  }

  /**
   * NOT_PRIMARY with the primary's address. The address is asked of the hub at most once
   * per PRIMARY_ADDRESS_TTL_MS, whatever the number of clients: a flood of requests at a
   * replica must not become a flood of hub requests that crowds out the node's own.
   */
  private async notPrimary(view: View | undefined): Promise<never> {
    if (!view) throw new KvError('UNAVAILABLE', `${this.name} has no view yet; retry shortly`, NOTHING_APPLIED);
    const now = this.env.clock.now();
    const cached = this.primaryAddress;
    if (!cached || cached.name !== view.primary || now - cached.at > PRIMARY_ADDRESS_TTL_MS) {
      this.primaryAddress = { at: now, name: view.primary, address: this.hub.resolve(view.primary).catch(() => undefined) };
    }
    const primary = await this.primaryAddress!.address;
    throw new KvError('NOT_PRIMARY', `${this.name} is not the primary; send requests to ${view.primary} (view ${view.epoch})`, {
      ...(primary ? { primary } : {}),
    });
  }

  private async hello(request: HelloRequest, session: Session): Promise<Reply> {
    session.isPrimary = false;
    const state = this.role();
    if (state.role !== 'replica') {
      return this.refuse(session, request.from, 'FORBIDDEN', `${this.name} is the primary; it takes no replication`);
    }
    const { view } = state;
    if (!view || request.epoch > view.epoch) {
      // The hub has a newer view than this node heard of yet: the primary retries shortly.
      throw new KvError('UNAVAILABLE', `${this.name} does not hold view ${request.epoch} yet`);
    }
    if (request.from !== view.primary || request.epoch < view.epoch) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${request.from} is not the primary of view ${view.epoch} (${view.primary})`);
    }
    const address = await this.hub.resolve(view.primary).catch(() => undefined);
    if (address === undefined || !(await hostAddresses(address)).includes(session.remoteAddress)) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${session.remoteAddress} is not the address of ${view.primary} (${address ?? 'unresolved'})`);
    }
    session.peer = request.from;
    session.viewEpoch = request.epoch;
    if (this.secret === undefined) return this.accept(session, this.applierOf(state), request.id);
    session.challenge = newChallenge(this.env.random);
    return okReply(request.id, { challenge: session.challenge });
  }

  private auth(request: AuthRequest, session: Session): Reply {
    const state = this.role();
    if (state.role !== 'replica' || !session.peer || !session.challenge || this.secret === undefined) {
      return this.refuse(session, session.peer, 'FORBIDDEN', 'auth comes after an accepted hello');
    }
    const valid = verifyProof(this.secret, session.challenge, session.peer, this.name, request.proof);
    session.challenge = undefined;
    if (!valid) return this.refuse(session, session.peer, 'UNAUTHORIZED', 'wrong cluster secret');
    return this.accept(session, this.applierOf(state), request.id);
  }

  /**
   * The peer proved it is the primary of the view this node holds. A different primary
   * than the one this node last granted a lease to waits until that lease has run out:
   * until then the old one may still answer reads.
   */
  private accept(session: Session, applier: ReplicaApplier, id: NodeRequest['id']): Reply {
    const lease = this.lease;
    const now = this.env.clock.now();
    if (lease && lease.holder !== session.peer && now < lease.untilMs) {
      throw new KvError('UNAVAILABLE', `${this.name} granted ${lease.holder} a lease for ${Math.ceil(lease.untilMs - now)} ms more`);
    }
    session.isPrimary = true;
    session.connection.trust();
    this.primarySessions.add(session);
    return okReply(id, { seq: applier.seq, epoch: applier.epoch });
  }

  /** Replication frames: only on an accepted session of the current view's primary; each one renews its lease. */
  private current(session: Session, what: string): ReplicaApplier {
    const state = this.role();
    if (state.role !== 'replica' || !session.isPrimary || !state.view || session.peer !== state.view.primary || session.viewEpoch !== state.view.epoch) {
      this.refuse(session, session.peer, 'FORBIDDEN', `${what} are accepted only from the primary of the current view`);
    }
    const applier = this.applierOf(state);
    this.lease = { holder: session.peer!, untilMs: this.env.clock.now() + LEASE_MS };
    return applier;
  }

  /** The applier, unless this node is still stepping down from primary. */
  private applierOf(state: Extract<RoleState, { role: 'replica' }>): ReplicaApplier {
    if (!state.applier) throw new KvError('UNAVAILABLE', `${this.name} is stepping down; retry shortly`);
    return state.applier;
  }

  private renewLease(_request: LeaseRequest, session: Session): Reply {
    const applier = this.current(session, 'leases');
    return okReply(_request.id, { seq: applier.seq });
  }

  private async append(request: AppendRequest, session: Session): Promise<Reply> {
    const applier = this.current(session, 'replication frames');
    try {
      return okReply(request.id, { seq: await applier.append(request.epoch, request.first, request.ops) });
    } catch (error) {
      throw this.refusedFromPrimary(`seqs ${request.first}-${request.first + request.ops.length - 1}`, error);
    }
  }

  private async snapshot(request: SnapshotRequest, session: Session): Promise<Reply> {
    const applier = this.current(session, 'snapshots');
    try {
      const { epoch, seq, part, entries, sessions, done } = request;
      return okReply(request.id, { seq: await applier.snapshotPart({ epoch, seq, part, entries, sessions, done }, session) });
    } catch (error) {
      throw this.refusedFromPrimary(`snapshot part ${request.part} at seq ${request.seq}`, error);
    }
  }

  /** A replica that cannot take what the primary sends says so in its own log too. */
  private refusedFromPrimary(what: string, error: unknown): KvError {
    const kvError = toKvError(error);
    this.trace({ event: 'fault', message: `refused ${what} from the primary: ${kvError.code}: ${kvError.message}` });
    return kvError;
  }

  /** The connection of `session` closed: a snapshot it was sending will not be finished. */
  closed(session: Session): void {
    this.primarySessions.delete(session);
    const state = this.role();
    if (session.isPrimary && state.role === 'replica') void state.applier?.abortRestore(session);
  }

  private refuse(session: Session, from: string | undefined, code: 'FORBIDDEN' | 'UNAUTHORIZED', reason: string): never {
    this.trace({ event: 'rejected', reason, code, address: session.remoteAddress, ...(from ? { from } : {}) });
    throw new KvError(code, reason);
  }
}

/** The IP addresses a ws:// URL's host stands for. */
async function hostAddresses(url: string): Promise<string[]> {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return [host];
  const addresses = await dnsLookup(host, { all: true }).catch(() => []);
  return addresses.map((entry) => entry.address);
}
