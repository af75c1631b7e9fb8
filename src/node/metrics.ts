/**
 * What a node counts of its own work, for the hub (every heartbeat carries a report) and
 * for its own GET /metrics: requests by op and outcome with their latency, client bytes
 * and connections, watches, and the primary's write batches. Counting is a few additions
 * per request; the report is built only when a heartbeat goes.
 */
import { BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_MS } from '../constants.js';
import type { Clock } from '../env/environment.js';
import type { Connection } from '../env/transport.js';
import type { ErrorCode } from '../errors.js';
import { METERED_OPS, type MeteredOp, type MetricsReport, type OpCounts } from '../protocol/messages.js';
import type { RequestMeter } from '../protocol/serve.js';

class OpMeter {
  count = 0;
  sumMs = 0;
  readonly errors = new Map<ErrorCode, number>();
  readonly latency: number[] = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);

  add(ms: number, error: ErrorCode | undefined): void {
    this.count += 1;
    this.sumMs += ms;
    this.latency[bucketOf(LATENCY_BUCKETS_MS, ms)]! += 1;
    if (error !== undefined) this.errors.set(error, (this.errors.get(error) ?? 0) + 1);
  }

  report(): OpCounts {
    return { count: this.count, errors: Object.fromEntries(this.errors), latency: [...this.latency], sumMs: this.sumMs };
  }
}

/** The index of the first bucket whose upper bound holds `value`; past the last, one more. */
export function bucketOf(bounds: readonly number[], value: number): number {
  let index = 0;
  while (index < bounds.length && value > bounds[index]!) index += 1;
  return index;
}

export class NodeMetrics implements RequestMeter<{ type: string }> {
  private readonly startedAtMs: number;
  private readonly ops = new Map<string, OpMeter>(METERED_OPS.map((op) => [op, new OpMeter()]));
  private batches = 0;
  private batchedWrites = 0;
  private readonly batchSizes: number[] = new Array<number>(BATCH_SIZE_BUCKETS.length + 1).fill(0);
  private readonly open = new Set<Connection>();
  private connectionsTotal = 0;
  /** Bytes of client connections already closed (open ones are read off their sockets). */
  private closedBytesIn = 0;
  private closedBytesOut = 0;

  constructor(
    private readonly clock: Clock,
    /** Watches open now (the watch hub counts them). */
    private readonly watchers: () => number,
  ) {
    this.startedAtMs = clock.wallNow();
  }

  begin(): number {
    return this.clock.now();
  }

  /** A request answered (peer ops are not metered). */
  answered(request: { type: string }, beganMs: number, error: ErrorCode | undefined): void {
    this.ops.get(request.type)?.add(this.clock.now() - beganMs, error);
  }

  /** A frame that held no request: answered at once with its error. */
  refused(error: ErrorCode): void {
    this.ops.get('frame')!.add(0, error);
  }

  batch(writes: number): void {
    this.batches += 1;
    this.batchedWrites += writes;
    this.batchSizes[bucketOf(BATCH_SIZE_BUCKETS, writes)]! += 1;
  }

  /** A client connection, counted until it closes. */
  connected(connection: Connection): void {
    this.connectionsTotal += 1;
    this.open.add(connection);
    connection.frames$.subscribe({
      complete: () => {
        this.open.delete(connection);
        this.closedBytesIn += connection.bytesRead;
        this.closedBytesOut += connection.bytesWritten;
      },
    });
  }

  report(): MetricsReport {
    let bytesIn = this.closedBytesIn;
    let bytesOut = this.closedBytesOut;
    for (const connection of this.open) {
      bytesIn += connection.bytesRead;
      bytesOut += connection.bytesWritten;
    }
    const ops: Partial<Record<MeteredOp, OpCounts>> = {};
    for (const [op, meter] of this.ops) if (meter.count > 0) ops[op as MeteredOp] = meter.report();
    return {
      startedAtMs: this.startedAtMs,
      ops,
      batches: this.batches,
      batchedWrites: this.batchedWrites,
      batchSizes: [...this.batchSizes],
      connections: this.open.size,
      connectionsTotal: this.connectionsTotal,
      watchers: this.watchers(),
      bytesIn,
      bytesOut,
    };
  }
}
