/**
 * The primary's recent writes, in memory, so a replica that reconnects catches up from
 * the seq it reports instead of from a snapshot. A batch is kept as its wire text (the
 * compact ops joined, built once, sent to every replica as is) with the offset of each
 * op, so it costs about its own bytes and can be cut at any seq. Bounded by writes and
 * bytes; the oldest batches go first.
 */
import { REPLICATION_LOG_BYTES_MAX, REPLICATION_LOG_ENTRIES_MAX } from '../constants.js';
import { Subject } from 'rxjs';
import { assert } from '../errors.js';
import type { RequestTag, WriteIntent, WriteOp } from '../protocol/messages.js';
import type { ReplicationState } from '../storage/store.js';

/** Epoch starts a log remembers (one per failover it saw while its batches lasted). */
const EPOCH_STARTS_KEPT = 64;

export interface Batch {
  epoch: number;
  first: number;
  count: number;
  /** The ops as JSON array elements joined by commas: `["p","k","1"],["d","x",true,"client-id",7]`. */
  wire: string;
  /** Where each op starts in `wire`. */
  offsets: Uint32Array;
}

/** An append frame (a JSON object's text, without an id) and the seqs it carries. */
export interface AppendFrame {
  text: string;
  epoch: number;
  first: number;
  last: number;
}

export function lastSeq(batch: Batch): number {
  return batch.first + batch.count - 1;
}

/** Memory a batch holds while logged (UTF-16 text, offsets, the record itself). */
export function batchBytes(batch: Batch): number {
  return batch.wire.length * 2 + batch.offsets.byteLength + 128;
}

/** What one write held in a queue costs beyond its key and value (V8 object, string headers). */
const OP_OVERHEAD_BYTES = 192;
/** What a request tag adds beyond its client id (the object, the number). */
const TAG_OVERHEAD_BYTES = 48;

/** The memory a write costs while it waits in the primary's queue. */
export function intentBytes(intent: WriteIntent): number {
  const key = intent.kind === 'clear' ? intent.prefix : intent.key;
  return key.length + (intent.kind === 'put' ? intent.valueJson.length : 0) + (intent.tag ? intent.tag.client.length + TAG_OVERHEAD_BYTES : 0) + OP_OVERHEAD_BYTES;
}

/**
 * One op's wire form (parse.ts reads each back, and lists the forms): a value as its JSON
 * text in a string, which a replica takes as it is, never parsing or serializing the value
 * again. The common put and del keep their short forms; the rest say everything.
 */
export function encodeOp(op: WriteOp): string {
  switch (op.kind) {
    case 'put':
      return op.expiresAt === undefined && !op.incr
        ? `["p",${JSON.stringify(op.key)},${JSON.stringify(op.valueJson)}${shortTag(op.tag)}]`
        : `["P",${JSON.stringify(op.key)},${JSON.stringify(op.valueJson)},${op.expiresAt ?? null},${op.incr},${longTag(op.tag)}]`;
    case 'del':
      return op.expiredAt === undefined ? `["d",${JSON.stringify(op.key)},${op.found}${shortTag(op.tag)}]` : `["x",${JSON.stringify(op.key)},${op.expiredAt}]`;
    case 'clear':
      return `["c",${JSON.stringify(op.prefix)},${JSON.stringify(op.keys)},${op.deleted},${op.more},${longTag(op.tag)}]`;
  }
}

function shortTag(tag: RequestTag | undefined): string {
  return tag ? `,${JSON.stringify(tag.client)},${tag.req}` : '';
}

function longTag(tag: RequestTag | undefined): string {
  return tag ? `${JSON.stringify(tag.client)},${tag.req}` : 'null,null';
}

/** The wire form of writes first..: one batch, kept as text. */
export function encodeBatch(epoch: number, first: number, ops: readonly WriteOp[]): Batch {
  const offsets = new Uint32Array(ops.length);
  const parts = new Array<string>(ops.length);
  let length = 0;
  ops.forEach((op, index) => {
    const part = encodeOp(op);
    offsets[index] = length;
    parts[index] = part;
    length += part.length + 1;
  });
  // join, not +=: the log keeps this string, and += would keep a rope of every piece.
  return { epoch, first, count: ops.length, wire: parts.join(','), offsets };
}

/** The part of `batch` from seq `from` on. */
export function tail(batch: Batch, from: number): Batch {
  const skip = from - batch.first;
  if (skip <= 0) return batch;
  const start = batch.offsets[skip]!;
  return {
    epoch: batch.epoch,
    first: from,
    count: batch.count - skip,
    wire: batch.wire.slice(start),
    offsets: batch.offsets.subarray(skip).map((offset) => offset - start),
  };
}

export class ReplicationLog {
  private readonly batches: Batch[] = [];
  private entries = 0;
  private bytes = 0;
  /** The log holds seqs base+1 .. last; base was written in baseEpoch. */
  private base: number;
  private baseEpoch: number;
  private last: number;
  /** Epochs begun (by a primary taking over) with the seq they began at: positions on the history too. */
  private readonly epochStarts: ReplicationState[] = [];
  /** Emits after each append: every link (replica or candidate) sends what is new. */
  readonly appended$ = new Subject<void>();
  /** The last append frame built, for the next link that sends from the same seq. */
  private lastFrame: { after: number; bytesMax: number; logLast: number; frame: AppendFrame } | undefined;

  constructor(
    start: ReplicationState,
    private readonly entriesMax = REPLICATION_LOG_ENTRIES_MAX,
    private readonly bytesMax = REPLICATION_LOG_BYTES_MAX,
  ) {
    this.base = start.seq;
    this.baseEpoch = start.epoch;
    this.last = start.seq;
  }

  get lastSeq(): number {
    return this.last;
  }

  /** The oldest seq the log still holds (lastSeq + 1 when it holds none). */
  get oldestSeq(): number {
    return this.base + 1;
  }

  /**
   * The batch holding `seq`, cut so it starts there (a watch reads history a batch at a
   * time); undefined once the log no longer holds it, or before it was written.
   */
  batchFrom(seq: number): Batch | undefined {
    if (seq <= this.base || seq > this.last) return undefined;
    const batch = this.batches[this.indexAfter(seq - 1)];
    assert(batch !== undefined && batch.first <= seq && lastSeq(batch) >= seq, `the log holds seq ${seq}`);
    return tail(batch, seq);
  }

  /** A new epoch goes on from the current seq (a primary took over). */
  beginEpoch(epoch: number): void {
    this.epochStarts.push({ epoch, seq: this.last });
    if (this.epochStarts.length > EPOCH_STARTS_KEPT) this.epochStarts.shift();
  }

  /**
   * Whether a node standing at `position` holds a prefix of this log's history, so the
   * log alone can catch it up: its seq is in the log and was written in its epoch (or its
   * epoch began there). Seqs alone are never compared: the same seq in another epoch is
   * another write.
   */
  covers(position: ReplicationState): boolean {
    const { epoch, seq } = position;
    if (seq < this.base || seq > this.last) return false;
    if (this.epochStarts.some((start) => start.epoch === epoch && start.seq === seq)) return true;
    return this.epochAt(seq) === epoch;
  }

  /** The epoch the write at `seq` (in the log, or its base) was made in. */
  private epochAt(seq: number): number {
    if (seq === this.base) return this.baseEpoch;
    const batch = this.batches[this.indexAfter(seq - 1)];
    assert(batch !== undefined && batch.first <= seq, `the log holds seq ${seq}`);
    return batch.epoch;
  }

  /** The index of the first batch whose last seq is past `seq`. */
  private indexAfter(seq: number): number {
    let low = 0;
    let high = this.batches.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (lastSeq(this.batches[middle]!) <= seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  append(batch: Batch): void {
    assert(batch.first === this.last + 1, `log append at ${batch.first}, expected ${this.last + 1}`);
    this.batches.push(batch);
    this.entries += batch.count;
    this.bytes += batchBytes(batch);
    this.last = lastSeq(batch);
    while (this.batches.length > 1 && (this.entries > this.entriesMax || this.bytes > this.bytesMax)) {
      const dropped = this.batches.shift()!;
      this.entries -= dropped.count;
      this.bytes -= batchBytes(dropped);
      this.base = lastSeq(dropped);
      this.baseEpoch = dropped.epoch;
    }
    this.appended$.next();
  }

  /**
   * The append frame of `after(seq, bytesMax)`: the batches' wire text as it was logged,
   * joined once for every link that sends from `seq` while the log has not grown (the
   * links of a primary's replicas usually stand at the same seq: one text for all).
   */
  appendFrame(seq: number, bytesMax: number): AppendFrame {
    const cached = this.lastFrame;
    if (cached !== undefined && cached.after === seq && cached.bytesMax === bytesMax && cached.logLast === this.last) return cached.frame;
    const batches = this.after(seq, bytesMax);
    const { epoch, first } = batches[0]!;
    const wire = batches.length === 1 ? batches[0]!.wire : batches.map((batch) => batch.wire).join(',');
    const frame = { text: `{"op":"append","epoch":${epoch},"first":${first},"ops":[${wire}]}`, epoch, first, last: lastSeq(batches[batches.length - 1]!) };
    this.lastFrame = { after: seq, bytesMax, logLast: this.last, frame };
    return frame;
  }

  /**
   * The batches after `seq`, the first one cut so it starts at seq + 1: of one epoch, and
   * no more than `bytesMax` of wire text past the first.
   */
  after(seq: number, bytesMax = Number.MAX_SAFE_INTEGER): Batch[] {
    assert(seq >= this.base && seq <= this.last, `log does not cover seq ${seq}`);
    const low = this.indexAfter(seq);
    const result: Batch[] = [];
    let bytes = 0;
    for (let index = low; index < this.batches.length; index += 1) {
      const batch = tail(this.batches[index]!, seq + 1);
      if (result.length > 0 && (batch.epoch !== result[0]!.epoch || bytes + batch.wire.length > bytesMax)) break;
      bytes += batch.wire.length;
      result.push(batch);
    }
    return result;
  }
}
