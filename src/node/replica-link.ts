/**
 * The primary's side of one replica: one connection, opened by the primary and reused.
 * It resolves the replica's name through the hub (lazily, retried), connects from the
 * primary's own address, proves the cluster secret, learns the replica's applied seq and
 * sends it everything after that from the replication log (or, when the log no longer
 * reaches back that far, a snapshot of the store first), then streams new batches as they
 * are logged. Acks advance `acked$`. Any failure closes the connection; the Redialer
 * reconnects with backoff and the link catches up again, which also heals frames lost in
 * between.
 *
 * Append frames carry no id: the replica answers each with the highest seq it applied,
 * which is all the link needs (acks are cumulative), so every link at the same seq sends
 * one frame text, built once by the log, and an append costs no pending request and no
 * timer. The link keeps the frames in flight, oldest first, and its lease loop, which
 * runs anyway, drops a connection whose oldest frame went unanswered too long.
 */
import { BehaviorSubject, Subject, firstValueFrom, takeUntil } from 'rxjs';
import type { OkReply } from '../protocol/reply.js';
import { APPENDS_IN_FLIGHT_MAX, BATCH_BYTES_MAX, LEASE_MS, LEASE_RENEW_BELOW_MS, LEASE_RENEW_MS, PEER_FRAME_BYTES_MAX, SNAPSHOT_PART_BYTES_MAX, SNAPSHOT_PART_ENTRIES_MAX } from '../constants.js';
import { ConnectionClosedError, KvError, assert, toKvError } from '../errors.js';
import { proofFor } from '../protocol/auth.js';
import { replyCount } from '../protocol/reply.js';
import { RpcChannel } from '../protocol/rpc-channel.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Environment } from '../env/environment.js';
import type { ClientSession, SnapshotEntry } from '../protocol/messages.js';
import type { ReplicationState, Store } from '../storage/store.js';
import { Redialer } from '../transport/redialer.js';
import type { AppendFrame, ReplicationLog } from './replication-log.js';
import { formatPosition, isAhead } from './position.js';
import type { TraceEvent } from './trace.js';
import type { AckSource } from './write-pipeline.js';


export interface ReplicaLinkOptions {
  env: Environment;
  /** The primary's own name and host (bound for outgoing connections). */
  self: string;
  localAddress: string | undefined;
  secret: string | undefined;
  /** The epoch of the view this node is primary of: the replica accepts no older one. */
  viewEpoch(): number;
  /** Where the primary's store stands: a replica ahead of it is never overwritten. */
  position(): ReplicationState;
  ackTimeoutMs: number;
  resolveDeadlineMs: number;
  /** Told when the replica starts or stops refusing what it is sent (undefined: all is well). */
  onProblem(replica: string, problem: string | undefined): void;
  /** Told of every position the replica reports: `ahead` when it holds more than this primary (which then lost writes). */
  onPosition(replica: string, ahead: boolean): void;
}

export class ReplicaLink implements AckSource {
  readonly acked$: BehaviorSubject<number>;
  private channel: RpcChannel | undefined;
  private sentSeq = 0;
  /** Append frames sent on the connection and not yet answered, oldest first (at most APPENDS_IN_FLIGHT_MAX). */
  private unanswered: { first: number; last: number; sentMs: number }[] = [];
  private closed = false;
  private readonly closed$ = new Subject<void>();
  private readonly redialer: Redialer<RpcChannel>;
  /** Why the replica last refused a frame, until it acknowledges again. */
  private refusal: string | undefined;
  /**
   * Until when the replica's lease holds, on this node's clock: LEASE_MS from when the
   * primary sent a request the replica then acknowledged (it counts from its reply, later).
   */
  private leaseUntilMs = 0;
  /** When the last request went out on the connection (renewals go only when it idles). */
  private lastSentMs = 0;
  /** When the replica last answered a frame (or was caught up): one silent too long is unreachable. */
  lastAckMs: number;
  private stopRenewing: (() => void) | undefined;

  constructor(
    readonly name: string,
    private readonly hub: HubClient,
    private readonly log: ReplicationLog,
    private readonly store: Store,
    private readonly options: ReplicaLinkOptions,
    private readonly trace: (event: TraceEvent) => void,
  ) {
    this.acked$ = new BehaviorSubject(0);
    this.lastAckMs = options.env.clock.now();
    this.redialer = new Redialer(() => this.open(), {
      env: options.env,
      onError: (error) => {
        if (!this.closed) this.trace({ event: 'rejected', reason: `replica ${this.name}: ${error.message}`, code: error.code });
      },
      onDown: () => {
        this.channel = undefined;
        this.unanswered = [];
        this.stopRenewing?.();
        this.trace({ event: 'peer', peer: this.name, state: 'disconnected' });
      },
    });
  }

  /** Starts the connect loop; resolution of the replica's name begins now, not before. */
  start(): void {
    this.redialer.keepUp();
    this.log.appended$.pipe(takeUntil(this.closed$)).subscribe(() => this.pump());
  }

  /** Whether the replica has granted a lease at all (health is `starting` until every one has). */
  get leasedOnce(): boolean {
    return this.leaseUntilMs > 0;
  }

  /** Whether the replica's lease holds now: the primary answers reads only while every one does. */
  get leaseHolds(): boolean {
    return this.options.env.clock.now() < this.leaseUntilMs;
  }

  /** Whether the replica has acknowledged everything up to `seq` and is connected. */
  holds(seq: number): boolean {
    return this.channel !== undefined && this.acked$.value >= seq;
  }

  /** How long a request on the link (an append among them) may go unanswered before the connection is dropped. */
  private get appendTimeoutMs(): number {
    return this.options.ackTimeoutMs * 4;
  }

  /** Why the replica is not acknowledging, when it said so (for the error a client gets). */
  get problem(): string | undefined {
    return this.refusal;
  }

  /** Resolves once a connect or catch-up in progress has stopped and the connection is closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closed$.next();
    this.closed$.complete();
    this.stopRenewing?.();
    this.channel?.close();
    await this.redialer.close();
    this.acked$.complete();
  }

  private async open(): Promise<RpcChannel> {
    const { self, secret } = this.options;
    const address = await firstValueFrom(
      this.hub.resolveUntil$(this.name, this.options.resolveDeadlineMs).pipe(takeUntil(this.closed$)),
    );
    const connection = await this.options.env.transport.connect(address, { maxPayload: PEER_FRAME_BYTES_MAX, kind: 'peer', localAddress: this.options.localAddress });
    const channel = new RpcChannel(connection, this.options.env.clock, this.appendTimeoutMs);
    // close() ends the handshake and catch-up too: its requests fail at once.
    const closing = this.closed$.subscribe({ complete: () => channel.close() });
    try {
      this.trace({ event: 'peer', peer: this.name, state: 'connected' });
      let reply = await this.request(channel, { op: 'hello', from: self, epoch: this.options.viewEpoch() });
      if (typeof reply['challenge'] === 'string') {
        if (secret === undefined) throw new KvError('UNAUTHORIZED', `replica ${this.name} wants the cluster secret`);
        reply = await this.request(channel, { op: 'auth', proof: proofFor(secret, reply['challenge'], self, this.name) });
      }
      const position = { epoch: replyCount(reply, 'epoch'), seq: replyCount(reply, 'seq') };
      this.trace({ event: 'peer', peer: this.name, state: 'authenticated', seq: position.seq });
      const own = this.options.position();
      this.options.onPosition(this.name, isAhead(position, own));
      if (isAhead(position, own)) {
        // Never overwrite a node that is ahead; the hub makes the most advanced node primary.
        throw new KvError('UNAVAILABLE', `${this.name} holds ${formatPosition(position)}, ahead of this primary's ${formatPosition(own)}: not overwritten`);
      }
      // The log catches up a replica whose position lies on this primary's history; any
      // other gets a snapshot (which discards writes of a deposed primary never acknowledged).
      const replicaSeq = this.log.covers(position) ? position.seq : await this.sendSnapshot(channel);
      if (this.closed) this.closingError();
      this.sentSeq = replicaSeq;
      // What this connection found, even if lower than before (the replica lost data):
      // `holds` and the acks count only what the replica has now.
      this.acked$.next(Math.min(replicaSeq, this.log.lastSeq));
      this.lastAckMs = this.options.env.clock.now();
      channel.onUnnumbered = (result) => this.answered(channel, result);
      this.channel = channel;
      this.renewLease(channel);
      this.pump();
      return channel;
    } catch (error) {
      channel.close();
      throw error;
    } finally {
      closing.unsubscribe();
    }
  }

  private closingError(): never {
    throw new KvError('UNAVAILABLE', 'the link is closing');
  }

  /**
   * Sends the whole store as it stood at one seq, part after acked part, to a replica the
   * log cannot catch up (behind its start, or ahead of the primary). Returns that seq.
   */
  private async sendSnapshot(channel: RpcChannel): Promise<number> {
    const snapshot = await this.store.snapshot({ entriesMax: SNAPSHOT_PART_ENTRIES_MAX, bytesMax: SNAPSHOT_PART_BYTES_MAX });
    // The snapshot carries the epoch of the store's last write: its position in the history.
    const { epoch, seq } = snapshot.state;
    this.trace({ event: 'peer', peer: this.name, state: 'snapshot', seq });
    let part = 0;
    let entries = 0;
    const send = (page: readonly SnapshotEntry[], sessions: readonly string[] = [], done = false) => {
      const sentMs = this.sent();
      return firstValueFrom(channel.requestText$(snapshotFrame({ epoch, seq, part: part++, page, sessions, watermark: snapshot.watermark, done }), 'snapshot')).then((reply) => {
        this.extendLease(sentMs);
        return reply;
      });
    };
    try {
      for await (const page of snapshot.pages()) {
        if (this.closed) this.closingError();
        await send(page);
        entries += page.length;
      }
      // Then the client sessions, in parts of their own (a retry after a failover onto this
      // replica is still recognized); the last part is done.
      const parts = sessionParts(snapshot.sessions, SNAPSHOT_PART_BYTES_MAX);
      for (const [index, sessions] of parts.entries()) {
        if (this.closed) this.closingError();
        await send([], sessions, index === parts.length - 1);
      }
    } finally {
      await snapshot.close();
    }
    if (!this.log.covers(snapshot.state)) {
      throw new KvError('UNAVAILABLE', `the log moved past seq ${seq} while ${this.name}'s snapshot was sent; sending another`);
    }
    // The replica was at replicaSeq, outside the log; it now holds the store as of seq.
    this.trace({ event: 'peer', peer: this.name, state: 'caught-up', seq, keys: entries });
    return seq;
  }

  /**
   * Sends what the log holds past sentSeq, keeping at most APPENDS_IN_FLIGHT_MAX frames
   * unanswered; consecutive batches of one epoch travel together in one frame.
   */
  private pump(): void {
    const channel = this.channel;
    while (channel && this.sentSeq < this.log.lastSeq && this.unanswered.length < APPENDS_IN_FLIGHT_MAX) {
      const frame = this.log.appendFrame(this.sentSeq, BATCH_BYTES_MAX);
      // On one connection what is sent only moves forward, in seq order with no gap.
      assert(frame.first === this.sentSeq + 1 && frame.last > this.sentSeq, `frame ${frame.first}-${frame.last} follows seq ${this.sentSeq}`);
      this.send(channel, frame);
      this.sentSeq = frame.last;
    }
  }

  private send(channel: RpcChannel, frame: AppendFrame): void {
    const { first, last } = frame;
    this.trace({ event: 'forwarded', to: this.name, first, last });
    this.unanswered.push({ first, last, sentMs: this.sent() });
    // A closed connection sends nothing; the Redialer hears it close and catches the replica up again.
    channel.post(frame.text);
  }

  /**
   * The replica answered an append (replies come one per frame, in any order): a seq is
   * the highest it applied, and every frame up to it arrived, so the lease runs from when
   * the newest of those was sent. Anything else is a refusal.
   */
  private answered(channel: RpcChannel, result: OkReply | KvError): void {
    if (channel !== this.channel) return;
    const oldest = this.unanswered[0];
    if (oldest === undefined) {
      this.refused(this.sentSeq, this.sentSeq, result instanceof KvError ? result : new KvError('INTERNAL', 'an answer to no append'));
      channel.close();
      return;
    }
    let seq: number;
    try {
      if (result instanceof KvError) throw result;
      seq = replyCount(result, 'seq');
    } catch (error) {
      this.refused(oldest.first, this.sentSeq, toKvError(error));
      channel.close();
      return;
    }
    let arrived: number | undefined;
    for (const frame of this.unanswered) if (frame.last <= seq) arrived = frame.sentMs;
    if (arrived !== undefined) this.extendLease(arrived);
    this.unanswered.shift();
    this.trace({ event: 'ack', from: this.name, seq });
    if (this.refusal !== undefined) {
      this.refusal = undefined;
      this.options.onProblem(this.name, undefined);
    }
    this.advance(seq);
    this.pump();
  }

  /**
   * The replica refused a batch (or its ack made no sense). The connection is dropped and
   * the loop sends it again; meanwhile the primary's log, its health at the hub and the
   * error its clients get all say which seqs and why, so the cluster never wedges silently.
   */
  private refused(first: number, last: number, error: KvError): void {
    if (error instanceof ConnectionClosedError) return;
    this.refusal = `replica ${this.name} refused seqs ${first}-${last}: ${error.code}: ${error.message}`;
    this.trace({ event: 'fault', message: this.refusal });
    this.options.onProblem(this.name, this.refusal);
  }

  /** A request of the handshake, which grants no lease. */
  private request(channel: RpcChannel, fields: Record<string, unknown>) {
    this.sent();
    return channel.request(fields);
  }

  private sent(): number {
    this.lastSentMs = this.options.env.clock.now();
    return this.lastSentMs;
  }

  private extendLease(sentMs: number): void {
    this.leaseUntilMs = Math.max(this.leaseUntilMs, sentMs + LEASE_MS);
    this.lastAckMs = this.options.env.clock.now();
  }

  /**
   * While the connection is up, a lease request goes whenever nothing else went for
   * LEASE_RENEW_MS, so an idle primary keeps its leases and a busy one sends nothing extra.
   */
  private renewLease(channel: RpcChannel): void {
    this.stopRenewing?.();
    const { clock } = this.options.env;
    const renew = () => {
      if (this.channel !== channel) return;
      const oldest = this.unanswered[0];
      if (oldest !== undefined && clock.now() - oldest.sentMs >= this.appendTimeoutMs) {
        this.refused(oldest.first, this.sentSeq, new KvError('UNAVAILABLE', `no reply to "append" within ${this.appendTimeoutMs} ms`));
        channel.close();
        return;
      }
      if (clock.now() - this.lastSentMs >= LEASE_RENEW_MS || this.leaseUntilMs - clock.now() < LEASE_RENEW_BELOW_MS) {
        const sentMs = this.sent();
        channel.request({ op: 'lease', epoch: this.options.viewEpoch() }).then(
          () => this.extendLease(sentMs),
          (error: unknown) => {
            const kvError = toKvError(error);
            if (!(kvError instanceof ConnectionClosedError)) this.trace({ event: 'rejected', reason: `replica ${this.name} refused a lease: ${kvError.message}`, code: kvError.code });
            channel.close();
          },
        );
      }
      this.stopRenewing = clock.after(LEASE_RENEW_MS, renew);
    };
    renew();
  }

  private advance(seq: number): void {
    if (seq > this.acked$.value) this.acked$.next(Math.min(seq, this.log.lastSeq));
  }
}

/** A snapshot part as text: values spliced in as the JSON they are stored as, sessions as their JSON. */
function snapshotFrame(frame: { epoch: number; seq: number; part: number; page: readonly SnapshotEntry[]; sessions: readonly string[]; watermark: number; done: boolean }): string {
  const { epoch, seq, part, page, sessions, watermark, done } = frame;
  const entries = page.map(([key, valueJson, version, expiresAt]) => `[${JSON.stringify(key)},${valueJson},${version},${expiresAt}]`).join(',');
  return `{"op":"snapshot","epoch":${epoch},"seq":${seq},"part":${part},"done":${done},"watermark":${watermark},"entries":[${entries}],"sessions":[${sessions.join(',')}]}`;
}

/** Client sessions as JSON rows, in parts of at most `bytesMax` (UTF-16 units, as parts count); at least one part. */
function sessionParts(sessions: readonly ClientSession[], bytesMax: number): string[][] {
  const parts: string[][] = [[]];
  let bytes = 0;
  for (const session of sessions) {
    const row = JSON.stringify([session.client, session.req, session.seq, session.results]);
    if (bytes + row.length > bytesMax && parts.at(-1)!.length > 0) {
      parts.push([]);
      bytes = 0;
    }
    parts.at(-1)!.push(row);
    bytes += row.length + 1;
  }
  return parts;
}
