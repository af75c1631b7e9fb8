/**
 * What a node does with each request: client ops on the primary, replication ops on a
 * replica. A replica takes replication frames only from a session that said hello as the
 * primary from the primary's resolved address and, when a secret is set, proved it.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { PRIMARY_ADDRESS_TTL_MS } from '../constants.js';
import { KvError, assertNever, toKvError } from '../errors.js';
import { newChallenge, verifyProof } from '../protocol/auth.js';
import type { Answer, AppendRequest, AuthRequest, HelloRequest, NodeRequest, Reply, SnapshotRequest } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import { HELP_TEXT } from '../protocol/text-commands.js';
import type { Environment } from '../env/environment.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Store } from '../storage/store.js';
import type { Connection } from '../transport/transport.js';
import type { PrimaryGate } from './primary-gate.js';
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
}

/** The primary serves only once its gate is open (no replica ahead of it), through its pipeline. */
export type RoleState =
  | { role: 'primary'; gate: PrimaryGate | undefined; pipeline: WritePipeline | undefined }
  | { role: 'replica'; primary: string; applier: ReplicaApplier };

export class KvService {
  private primaryAddress: { at: number; address: Promise<string | undefined> } | undefined;
  constructor(
    private readonly name: string,
    private readonly env: Environment,
    private readonly store: Store,
    private readonly hub: HubClient,
    private readonly state: RoleState,
    private readonly secret: string | undefined,
    private readonly trace: (event: TraceEvent) => void,
  ) {}

  handle(request: NodeRequest, session: Session): Answer | Promise<Answer> {
    switch (request.type) {
      case 'get':
        return this.get(request.id, request.key);
      case 'put':
        return this.write(request.id, { kind: 'put', key: request.key, valueJson: request.valueJson });
      case 'del':
        return this.write(request.id, { kind: 'del', key: request.key });
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
      default:
        return assertNever(request);
    }
  }

  /**
   * Answered at once, as text with the stored JSON spliced in, unless the last write to the
   * key is not yet on every replica: the read waits for it, so it never returns what a
   * failover could lose.
   */
  private get(id: NodeRequest['id'], key: string): Answer | Promise<Answer> {
    const { state } = this;
    if (state.role === 'replica') return this.notPrimary(state.primary);
    const unacked = this.servingPipeline(state).readable(key);
    return unacked ? unacked.then(() => this.read(id, key)) : this.read(id, key);
  }

  private read(id: NodeRequest['id'], key: string): Answer {
    const json = this.store.readJson(key);
    const idJson = typeof id === 'number' ? String(id) : JSON.stringify(id);
    return json === undefined ? `{"id":${idJson},"ok":true,"found":false}` : `{"id":${idJson},"ok":true,"found":true,"value":${json}}`;
  }

  /** The reply is built as text: a batch's replies are many, and each is this small. */
  private async write(id: NodeRequest['id'], op: Parameters<WritePipeline['submit']>[0]): Promise<Answer> {
    const { state } = this;
    if (state.role === 'replica') return this.notPrimary(state.primary);
    const found = await this.servingPipeline(state).submit(op);
    const idJson = typeof id === 'number' ? String(id) : JSON.stringify(id);
    return op.kind === 'del' ? `{"id":${idJson},"ok":true,"found":${found}}` : `{"id":${idJson},"ok":true}`;
  }

  /**
   * NOT_PRIMARY with the primary's address. The address is asked of the hub at most once
   * per PRIMARY_ADDRESS_TTL_MS, whatever the number of clients: a flood of requests at a
   * replica must not become a flood of hub requests that crowds out the node's own.
   */
  private async notPrimary(primaryName: string): Promise<never> {
    const now = this.env.clock.now();
    if (!this.primaryAddress || now - this.primaryAddress.at > PRIMARY_ADDRESS_TTL_MS) {
      this.primaryAddress = { at: now, address: this.hub.resolve(primaryName).catch(() => undefined) };
    }
    const primary = await this.primaryAddress.address;
    throw new KvError('NOT_PRIMARY', `${this.name} is a replica; send requests to the primary ${primaryName}`, {
      ...(primary ? { primary } : {}),
    });
  }

  private servingPipeline(state: Extract<RoleState, { role: 'primary' }>): WritePipeline {
    const serving = state.gate?.state;
    if (serving?.state === 'halted' || serving?.state === 'starting') throw new KvError('UNAVAILABLE', serving.reason);
    if (!state.pipeline) throw new KvError('UNAVAILABLE', `${this.name} is starting; retry shortly`);
    return state.pipeline;
  }

  private async hello(request: HelloRequest, session: Session): Promise<Reply> {
    const { state } = this;
    session.isPrimary = false;
    if (state.role !== 'replica') {
      return this.refuse(session, request.from, 'FORBIDDEN', `${this.name} is the primary; it takes no replication`);
    }
    if (request.from !== state.primary) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${request.from} is not the primary (${state.primary})`);
    }
    // No epoch check here: the primary first learns where this replica stands (and halts
    // if the replica is ahead); appends and snapshots are what carry and check epochs.
    const address = await this.hub.resolve(state.primary).catch(() => undefined);
    if (address === undefined || !(await hostAddresses(address)).includes(session.remoteAddress)) {
      return this.refuse(session, request.from, 'FORBIDDEN', `${session.remoteAddress} is not the address of ${state.primary} (${address ?? 'unresolved'})`);
    }
    session.peer = request.from;
    if (this.secret === undefined) {
      session.isPrimary = true;
      session.connection.trust();
      return okReply(request.id, { seq: state.applier.seq, epoch: state.applier.epoch });
    }
    session.challenge = newChallenge(this.env.random);
    return okReply(request.id, { challenge: session.challenge });
  }

  private auth(request: AuthRequest, session: Session): Reply {
    const { state } = this;
    if (state.role !== 'replica' || !session.peer || !session.challenge || this.secret === undefined) {
      return this.refuse(session, session.peer, 'FORBIDDEN', 'auth comes after an accepted hello');
    }
    const valid = verifyProof(this.secret, session.challenge, session.peer, this.name, request.proof);
    session.challenge = undefined;
    if (!valid) return this.refuse(session, session.peer, 'UNAUTHORIZED', 'wrong cluster secret');
    session.isPrimary = true;
    session.connection.trust();
    return okReply(request.id, { seq: state.applier.seq, epoch: state.applier.epoch });
  }

  private async append(request: AppendRequest, session: Session): Promise<Reply> {
    const { state } = this;
    if (state.role !== 'replica' || !session.isPrimary) {
      return this.refuse(session, session.peer, 'FORBIDDEN', 'replication frames are accepted only from the primary');
    }
    try {
      return okReply(request.id, { seq: await state.applier.append(request.epoch, request.first, request.ops) });
    } catch (error) {
      throw this.refusedFromPrimary(`seqs ${request.first}-${request.first + request.ops.length - 1}`, error);
    }
  }

  private async snapshot(request: SnapshotRequest, session: Session): Promise<Reply> {
    const { state } = this;
    if (state.role !== 'replica' || !session.isPrimary) {
      return this.refuse(session, session.peer, 'FORBIDDEN', 'snapshots are accepted only from the primary');
    }
    try {
      return okReply(request.id, { seq: await state.applier.snapshotPart(request.epoch, request.seq, request.part, request.entries, request.done, session) });
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
    if (session.isPrimary && this.state.role === 'replica') void this.state.applier.abortRestore(session);
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
