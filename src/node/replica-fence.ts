/**
 * What a node takes from its peers: replication frames, snapshots and lease renewals, only
 * from a session that said hello as the primary of the view this node holds, from that
 * primary's resolved address, that proved the cluster secret when one is set, and only once
 * the lease this node granted any other primary has run out. When the node takes on a
 * newer view, sessions of an older one are closed: every frame of an older epoch is refused.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { LEASE_MS } from '../constants.js';
import type { Environment } from '../env/environment.js';
import type { Connection } from '../env/transport.js';
import { KvError, assertNever, toKvError } from '../errors.js';
import type { HubClient } from '../hub/hub-client.js';
import { newChallenge, verifyProof } from '../protocol/auth.js';
import type { AppendRequest, AuthRequest, HelloRequest, PeerRequest, Reply, RequestId, SnapshotRequest, View } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import type { ReplicaApplier } from './replica-applier.js';
import type { RoleState } from './role.js';
import type { TraceEvent } from './trace.js';

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

export interface ReplicaFenceOptions {
  name: string;
  env: Environment;
  hub: HubClient;
  /** Peers must prove it; undefined only when the node runs insecure. */
  secret: string | undefined;
  /** The node's role now (the object it holds, not a copy). */
  role(): RoleState;
  trace(event: TraceEvent): void;
}

export class ReplicaFence {
  /** The primary this node last granted a lease to, and until when (this node's clock). */
  private lease: { holder: string; untilMs: number } | undefined;
  /** Sessions of primaries this node accepted: closed when a newer view replaces theirs. */
  private readonly primarySessions = new Set<Session>();

  constructor(private readonly options: ReplicaFenceOptions) {}

  /** When the lease this node granted runs out (0: none): a node taking over waits for it. */
  get leaseGrantedUntilMs(): number {
    return this.lease?.untilMs ?? 0;
  }

  /** The node took on a view: sessions of any other primary, or of an older view, end now. */
  viewChanged(view: View): void {
    for (const session of [...this.primarySessions]) {
      if (session.peer !== view.primary || (session.viewEpoch ?? 0) < view.epoch || view.primary === this.options.name) {
        this.primarySessions.delete(session);
        session.isPrimary = false;
        session.connection.close();
      }
    }
  }

  handle(request: PeerRequest, session: Session): Reply | Promise<Reply> {
    switch (request.type) {
      case 'hello':
        return this.hello(request, session);
      case 'auth':
        return this.auth(request, session);
      case 'append':
        return this.append(request, session);
      case 'snapshot':
        return this.snapshot(request, session);
      case 'lease':
        return okReply(request.id, { seq: this.current(session, 'leases').seq });
      default:
        return assertNever(request);
    }
  }

  /** The connection of `session` closed: a snapshot it was sending will not be finished. */
  closed(session: Session): void {
    this.primarySessions.delete(session);
    const state = this.options.role();
    if (session.isPrimary && 'applier' in state) void state.applier.abortRestore(session);
  }

  private async hello(request: HelloRequest, session: Session): Promise<Reply> {
    session.isPrimary = false;
    const { name, hub, secret, env } = this.options;
    const state = this.options.role();
    if (state.kind === 'leading' || state.kind === 'taking-over') {
      return this.refuse(session, request.from, 'FORBIDDEN', `${name} is the primary; it takes no replication`);
    }
    if (state.kind === 'unassigned' || request.epoch > state.view.epoch) {
      // The hub has a newer view than this node heard of yet: the primary retries shortly.
      throw new KvError('UNAVAILABLE', `${name} does not hold view ${request.epoch} yet`);
    }
    const { view } = state;
    if (request.from !== view.primary || request.epoch < view.epoch) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${request.from} is not the primary of view ${view.epoch} (${view.primary})`);
    }
    const address = await hub.resolve(view.primary).catch(() => undefined);
    if (address === undefined || !(await hostAddresses(address)).includes(session.remoteAddress)) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${session.remoteAddress} is not the address of ${view.primary} (${address ?? 'unresolved'})`);
    }
    session.peer = request.from;
    session.viewEpoch = request.epoch;
    if (secret === undefined) return this.accept(session, request.id);
    session.challenge = newChallenge(env.random);
    return okReply(request.id, { challenge: session.challenge });
  }

  private auth(request: AuthRequest, session: Session): Reply {
    const { name, secret } = this.options;
    if (!session.peer || !session.challenge || secret === undefined) {
      return this.refuse(session, session.peer, 'FORBIDDEN', 'auth comes after an accepted hello');
    }
    const valid = verifyProof(secret, session.challenge, session.peer, name, request.proof);
    session.challenge = undefined;
    if (!valid) return this.refuse(session, session.peer, 'UNAUTHORIZED', 'wrong cluster secret');
    return this.accept(session, request.id);
  }

  /**
   * The peer proved it is the primary of the view this node holds. A different primary
   * than the one this node last granted a lease to waits until that lease has run out:
   * until then the old one may still answer reads.
   */
  private accept(session: Session, id: RequestId): Reply {
    const applier = this.follower(session, `${session.peer} no longer names the primary of the view ${this.options.name} holds`);
    const lease = this.lease;
    const now = this.options.env.clock.now();
    if (lease && lease.holder !== session.peer && now < lease.untilMs) {
      throw new KvError('UNAVAILABLE', `${this.options.name} granted ${lease.holder} a lease for ${Math.ceil(lease.untilMs - now)} ms more`);
    }
    session.isPrimary = true;
    session.connection.trust();
    this.primarySessions.add(session);
    return okReply(id, { seq: applier.seq, epoch: applier.epoch });
  }

  /**
   * The applier taking the frames of the view's primary, if this node follows the view
   * `session` spoke as primary of (the state may have moved on while a hello waited).
   */
  private follower(session: Session, refusal: string): ReplicaApplier {
    const state = this.options.role();
    if (state.kind === 'stepping-down') throw new KvError('UNAVAILABLE', `${this.options.name} is stepping down; retry shortly`);
    if (state.kind !== 'following' || session.peer !== state.view.primary || session.viewEpoch !== state.view.epoch) {
      return this.refuse(session, session.peer, 'FORBIDDEN', refusal);
    }
    return state.applier;
  }

  /** Replication frames: only on an accepted session of the current view's primary; each one renews its lease. */
  private current(session: Session, what: string): ReplicaApplier {
    const refusal = `${what} are accepted only from the primary of the current view`;
    if (!session.isPrimary) this.refuse(session, session.peer, 'FORBIDDEN', refusal);
    const applier = this.follower(session, refusal);
    this.lease = { holder: session.peer!, untilMs: this.options.env.clock.now() + LEASE_MS };
    return applier;
  }

  private async append(request: AppendRequest, session: Session): Promise<Reply> {
    const applier = this.current(session, 'replication frames');
    try {
      const { epoch, first, ops, wire, offsets } = request;
      return okReply(request.id, { seq: await applier.append({ epoch, first, count: ops.length, wire, offsets }, ops) });
    } catch (error) {
      throw this.refusedFromPrimary(`seqs ${request.first}-${request.first + request.ops.length - 1}`, error);
    }
  }

  private async snapshot(request: SnapshotRequest, session: Session): Promise<Reply> {
    const applier = this.current(session, 'snapshots');
    try {
      const { epoch, seq, part, entries, sessions, watermark, done } = request;
      return okReply(request.id, { seq: await applier.snapshotPart({ epoch, seq, part, entries, sessions, watermark, done }, session) });
    } catch (error) {
      throw this.refusedFromPrimary(`snapshot part ${request.part} at seq ${request.seq}`, error);
    }
  }

  /** A replica that cannot take what the primary sends says so in its own log too. */
  private refusedFromPrimary(what: string, error: unknown): KvError {
    const kvError = toKvError(error);
    this.options.trace({ event: 'fault', message: `refused ${what} from the primary: ${kvError.code}: ${kvError.message}` });
    return kvError;
  }

  private refuse(session: Session, from: string | undefined, code: 'FORBIDDEN' | 'UNAUTHORIZED', reason: string): never {
    this.options.trace({ event: 'rejected', reason, code, address: session.remoteAddress, ...(from ? { from } : {}) });
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
