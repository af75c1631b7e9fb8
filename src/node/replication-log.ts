/**
 * The primary's recent writes, in memory, so a replica that reconnects catches up from
 * the seq it reports instead of from a snapshot. Bounded by entries and bytes; the
 * oldest batches go first.
 */
import { REPLICATION_LOG_BYTES_MAX, REPLICATION_LOG_ENTRIES_MAX } from '../constants.js';
import { assert } from '../errors.js';
import type { WriteOp } from '../protocol/messages.js';

export interface Batch {
  epoch: number;
  first: number;
  ops: readonly WriteOp[];
  bytes: number;
}

export function lastSeq(batch: Batch): number {
  return batch.first + batch.ops.length - 1;
}

export function opBytes(op: WriteOp): number {
  return op.key.length + (op.kind === 'put' ? op.valueJson.length : 0) + 16;
}

export class ReplicationLog {
  private readonly batches: Batch[] = [];
  private entries = 0;
  private bytes = 0;
  /** The seq the log starts after: entries first..last are (firstSeq, lastSeq]. */
  private base: number;
  private last: number;

  constructor(
    startSeq: number,
    private readonly entriesMax = REPLICATION_LOG_ENTRIES_MAX,
    private readonly bytesMax = REPLICATION_LOG_BYTES_MAX,
  ) {
    this.base = startSeq;
    this.last = startSeq;
  }

  get lastSeq(): number {
    return this.last;
  }

  append(batch: Batch): void {
    assert(batch.first === this.last + 1, `log append at ${batch.first}, expected ${this.last + 1}`);
    this.batches.push(batch);
    this.entries += batch.ops.length;
    this.bytes += batch.bytes;
    this.last = lastSeq(batch);
    while (this.batches.length > 1 && (this.entries > this.entriesMax || this.bytes > this.bytesMax)) {
      const dropped = this.batches.shift()!;
      this.entries -= dropped.ops.length;
      this.bytes -= dropped.bytes;
      this.base = lastSeq(dropped);
    }
  }

  /** Whether a replica at `seq` can catch up from this log alone. */
  covers(seq: number): boolean {
    return seq >= this.base && seq <= this.last;
  }

  /**
   * The batches after `seq`, the first one cut so it starts at seq + 1: at most `limit`
   * of them, of one epoch, and no more than `bytesMax` past the first.
   */
  after(seq: number, limit: number, bytesMax = Number.MAX_SAFE_INTEGER): Batch[] {
    assert(this.covers(seq), `log does not cover seq ${seq}`);
    const result: Batch[] = [];
    let low = 0;
    let high = this.batches.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (lastSeq(this.batches[middle]!) <= seq) low = middle + 1;
      else high = middle;
    }
    let bytes = 0;
    for (let index = low; index < this.batches.length && result.length < limit; index += 1) {
      const batch = this.batches[index]!;
      if (result.length > 0 && (batch.epoch !== result[0]!.epoch || bytes + batch.bytes > bytesMax)) break;
      bytes += batch.bytes;
      if (batch.first > seq) result.push(batch);
      else {
        const ops = batch.ops.slice(seq + 1 - batch.first);
        result.push({ epoch: batch.epoch, first: seq + 1, ops, bytes: ops.reduce((sum, op) => sum + opBytes(op), 0) });
      }
    }
    return result;
  }
}
