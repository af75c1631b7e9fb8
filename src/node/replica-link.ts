/**
 * The primary's side of one replica: one connection, opened by the primary and reused.
 * It resolves the replica's name through the hub (lazily, retried), connects from the
 * primary's own address, proves the cluster secret, learns the replica's applied seq and
 * sends it everything after that from the replication log, then streams new batches as
 * they are logged. Acks advance `acked$`. Any failure closes the connection; one loop with
 * backoff reconnects and catches up again, which also heals frames lost in between.
 */
import { BehaviorSubject, Subject, firstValueFrom, takeUntil } from 'rxjs';
import { backoffDelayMs } from '../backoff.js';
import { PEER_FRAME_BYTES_MAX } from '../constants.js';
import { KvError, toKvError } from '../errors.js';
import { proofFor } from '../protocol/auth.js';
import type { WriteOp } from '../protocol/messages.js';
import { RpcChannel } from '../client/rpc.js';
import type { HubClient } from '../hub/hub-client.js';
import { connect } from '../transport/ws-transport.js';
import { lastSeq, type Batch, type ReplicationLog } from './replication-log.js';
import type { TraceEvent } from './trace.js';
import type { AckSource } from './write-pipeline.js';

/** Append frames sent but not yet acked; more wait in the log. */
const APPENDS_IN_FLIGHT_MAX = 32;

export interface ReplicaLinkOptions {
  /** The primary's own name, host (bound for outgoing connections) and epoch. */
  self: string;
  localAddress: string | undefined;
  epoch: number;
  secret: string | undefined;
  ackTimeoutMs: number;
  resolveDeadlineMs: number;
}

export class ReplicaLink implements AckSource {
  readonly acked$: BehaviorSubject<number>;
  private channel: RpcChannel | undefined;
  private sentSeq = 0;
  private appendsInFlight = 0;
  private closed = false;
  private readonly closed$ = new Subject<void>();
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly hub: HubClient,
    private readonly log: ReplicationLog,
    private readonly options: ReplicaLinkOptions,
    private readonly trace: (event: TraceEvent) => void,
  ) {
    this.acked$ = new BehaviorSubject(0);
  }

  /** Starts the connect loop; resolution of the replica's name begins now, not before. */
  start(): void {
    this.running ??= this.run();
  }

  notify(): void {
    this.pump();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.closed$.next();
    this.closed$.complete();
    this.channel?.close();
    this.wake?.();
    await this.running;
    this.acked$.complete();
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.closed) {
      try {
        const channel = await this.open();
        attempt = 0;
        await new Promise<void>((resolve) => channel.connection.frames$.subscribe({ complete: resolve }));
        this.trace({ event: 'peer', peer: this.name, state: 'disconnected' });
      } catch (error) {
        if (!this.closed) {
          const kvError = toKvError(error);
          this.trace({ event: 'rejected', reason: `replica ${this.name}: ${kvError.message}`, code: kvError.code });
        }
      } finally {
        this.channel = undefined;
        this.appendsInFlight = 0;
      }
      attempt += 1;
      if (!this.closed) await this.sleep(backoffDelayMs(attempt));
    }
  }

  private async open(): Promise<RpcChannel> {
    const { self, secret, epoch } = this.options;
    const address = await firstValueFrom(
      this.hub.resolveUntil$(this.name, this.options.resolveDeadlineMs).pipe(takeUntil(this.closed$)),
    );
    const connection = await connect(address, { maxPayload: PEER_FRAME_BYTES_MAX, localAddress: this.options.localAddress });
    const channel = new RpcChannel(connection, this.options.ackTimeoutMs * 4);
    try {
      this.trace({ event: 'peer', peer: this.name, state: 'connected' });
      let reply = await channel.request({ op: 'hello', from: self, epoch });
      if (typeof reply['challenge'] === 'string') {
        if (secret === undefined) throw new KvError('UNAUTHORIZED', `replica ${this.name} wants the cluster secret`);
        reply = await channel.request({ op: 'auth', proof: proofFor(secret, reply['challenge'], self, this.name) });
      }
      const replicaSeq = Number(reply['seq']);
      if (!Number.isSafeInteger(replicaSeq)) throw new KvError('INTERNAL', `replica ${this.name} sent no seq`);
      if (!this.log.covers(replicaSeq)) {
        // Catch-up from a snapshot comes with failover; until then this replica stays behind.
        throw new KvError('UNAVAILABLE', `replica ${this.name} is at seq ${replicaSeq}, outside the log (${this.log.lastSeq}); it needs a snapshot`);
      }
      this.trace({ event: 'peer', peer: this.name, state: 'authenticated', seq: replicaSeq });
      this.sentSeq = replicaSeq;
      this.advance(replicaSeq);
      this.channel = channel;
      this.pump();
      return channel;
    } catch (error) {
      channel.close();
      throw error;
    }
  }

  /** Sends what the log holds past sentSeq, keeping at most APPENDS_IN_FLIGHT_MAX unacked. */
  private pump(): void {
    const channel = this.channel;
    if (!channel || this.sentSeq >= this.log.lastSeq) return;
    const room = APPENDS_IN_FLIGHT_MAX - this.appendsInFlight;
    if (room <= 0) return;
    for (const batch of this.log.after(this.sentSeq, room)) {
      this.send(channel, batch);
      this.sentSeq = lastSeq(batch);
    }
  }

  private send(channel: RpcChannel, batch: Batch): void {
    this.appendsInFlight += 1;
    const last = lastSeq(batch);
    this.trace({ event: 'forwarded', to: this.name, first: batch.first, last });
    channel.request$({ op: 'append', epoch: batch.epoch, first: batch.first, ops: batch.ops.map(wireOp) }).subscribe({
      next: (reply) => {
        this.appendsInFlight -= 1;
        const seq = Number(reply['seq']);
        this.trace({ event: 'ack', from: this.name, seq });
        this.advance(seq);
        this.pump();
      },
      error: (error: unknown) => {
        const kvError = toKvError(error);
        this.trace({ event: 'rejected', reason: `replica ${this.name} refused append: ${kvError.message}`, code: kvError.code });
        channel.close();
      },
    });
  }

  private advance(seq: number): void {
    if (seq > this.acked$.value) this.acked$.next(Math.min(seq, this.log.lastSeq));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** The compact wire form of a write (parse.ts reads it back). */
function wireOp(op: WriteOp): unknown[] {
  return op.kind === 'put' ? ['p', op.key, JSON.parse(op.valueJson)] : ['d', op.key];
}
