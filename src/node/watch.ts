/**
 * Watches on the primary (PROTOCOL.md, "Watching changes"). The write pipeline tells the
 * hub of every batch once every replica of the view holds it, in seq order, so events
 * name only acknowledged writes, in version order, one per version at most.
 *
 * The seam between history and live events is one number: `announced`, the last seq the
 * hub has handed out. A watch registers and takes its history (from the replication log,
 * up to `announced`) in one synchronous step; everything after `announced` reaches it
 * live. Nothing is sent twice and nothing is skipped.
 *
 * Matching a write costs what the watchers that match it cost, not all watchers: exact
 * keys are a Map, prefixes a Map per prefix length, and only the lengths some watcher
 * uses are looked at (at most KEY_BYTES_MAX of them, however many watchers).
 *
 * A watcher's events go straight to its connection while the connection is under its
 * send limit; past it they wait in the watcher's queue, which is bounded (events, bytes,
 * and all queues of the node together): past a bound the watch is cut off with a
 * `cancelled` event and its state dropped.
 */
import {
  WATCHERS_MAX,
  WATCH_QUEUES_BYTES_MAX,
  WATCH_QUEUE_BYTES_MAX,
  WATCH_QUEUE_EVENTS_MAX,
} from '../constants.js';
import { KvError, NOTHING_APPLIED, assert } from '../errors.js';
import type { Subscription } from 'rxjs';
import type { RequestId, WatchTarget, WriteOp } from '../protocol/messages.js';
import { decodeWireOps } from '../protocol/parse.js';
import type { Channel } from '../protocol/serve.js';
import { lastSeq, type ReplicationLog } from './replication-log.js';

export interface WatchLimits {
  watchersMax: number;
  queueEventsMax: number;
  queueBytesMax: number;
  queuesBytesMax: number;
}

export const DEFAULT_WATCH_LIMITS: WatchLimits = {
  watchersMax: WATCHERS_MAX,
  queueEventsMax: WATCH_QUEUE_EVENTS_MAX,
  queueBytesMax: WATCH_QUEUE_BYTES_MAX,
  queuesBytesMax: WATCH_QUEUES_BYTES_MAX,
};

/** An event as it waits: its version and its fields after the id (`"event":"put",...}`), shared by the watchers it goes to. */
interface WatchEvent {
  version: number;
  body: string;
}

export interface WatchStart {
  id: RequestId;
  target: WatchTarget;
  fromVersion: number | undefined;
  channel: Channel;
  /** Told once when the watch ends, however it ends. */
  onEnd(watcher: Watcher): void;
}

export class WatchHub {
  private readonly exact = new Map<string, Set<Watcher>>();
  /** Prefix watchers by prefix length, then by prefix. */
  private readonly prefixes = new Map<number, Map<string, Set<Watcher>>>();
  /** The prefix lengths some watcher uses, ascending. */
  private lengths: number[] = [];
  private readonly all = new Set<Watcher>();
  private queuedBytes = 0;
  private closedWhy: string | undefined;

  constructor(
    private readonly log: ReplicationLog,
    /** The last seq every replica of the view held when the hub began (what the primary held when it took over). */
    private announced: number,
    private readonly limits: WatchLimits = DEFAULT_WATCH_LIMITS,
  ) {}

  /** The last acknowledged version handed to watchers: a watch begun now gets every later one live. */
  get version(): number {
    return this.announced;
  }

  get size(): number {
    return this.all.size;
  }

  /**
   * Registers a watch and takes its history in the same step: the changes from
   * `fromVersion` through `version` come from the log, later ones live. COMPACTED when the
   * log no longer reaches back that far. The watcher sends nothing before start().
   */
  watch(start: WatchStart): Watcher {
    if (this.closedWhy !== undefined) throw new KvError('UNAVAILABLE', this.closedWhy, NOTHING_APPLIED);
    if (this.all.size >= this.limits.watchersMax) {
      throw new KvError('UNAVAILABLE', `this node serves ${this.limits.watchersMax} watches, its limit; retry later`, NOTHING_APPLIED);
    }
    const { fromVersion } = start;
    let history: { next: number; end: number } | undefined;
    if (fromVersion !== undefined && fromVersion <= this.announced) {
      const oldest = this.log.oldestSeq;
      if (fromVersion < oldest) throw new KvError('COMPACTED', `changes before version ${oldest} are no longer kept; list and watch again from the list's version + 1`, { version: oldest });
      history = { next: fromVersion, end: this.announced };
    }
    const resumeFrom = fromVersion === undefined ? this.announced : fromVersion - 1;
    const watcher = new Watcher(start, history, Math.max(resumeFrom, 0), fromVersion ?? 0, this);
    this.all.add(watcher);
    this.index(watcher, true);
    return watcher;
  }

  /**
   * A batch every replica of the view holds (the pipeline's hook): its changes go to the
   * watchers that cover them. A batch whose acknowledgement failed and that a later one
   * covers (acks are cumulative) is read back from the log first.
   */
  acknowledged(first: number, ops: readonly WriteOp[]): void {
    const last = first + ops.length - 1;
    if (last <= this.announced) return;
    if (this.all.size > 0) {
      if (first > this.announced + 1) this.announceFromLog(first - 1);
      ops.forEach((op, index) => {
        const version = first + index;
        if (version > this.announced) this.dispatch(op, version);
      });
    }
    this.announced = last;
  }

  /** Ends every watch with `cancelled` (the node stops being primary): clients resume elsewhere. */
  close(reason: string): void {
    if (this.closedWhy !== undefined) return;
    this.closedWhy = reason;
    for (const watcher of [...this.all]) watcher.cancel(reason);
  }

  private announceFromLog(through: number): void {
    let seq = this.announced + 1;
    while (seq <= through) {
      const batch = this.log.batchFrom(seq);
      if (batch === undefined) {
        for (const watcher of [...this.all]) watcher.cancel(`changes from version ${seq} are no longer kept`);
        return;
      }
      decodeWireOps(batch.wire).forEach((op, index) => {
        if (batch.first + index <= through) this.dispatch(op, batch.first + index);
      });
      seq = lastSeq(batch) + 1;
    }
  }

  private dispatch(op: WriteOp, version: number): void {
    switch (op.kind) {
      case 'put':
      case 'del': {
        const body = eventBody(op, version);
        if (body !== undefined) this.forEachWatching(op.key, (watcher) => watcher.offer({ version, body }));
        return;
      }
      case 'clear':
        this.dispatchClear(op, version);
        return;
    }
  }

  /** One `clear` event per watcher that covers some of the keys, listing those. */
  private dispatchClear(op: Extract<WriteOp, { kind: 'clear' }>, version: number): void {
    const keysOf = new Map<Watcher, string[]>();
    for (const key of op.keys) {
      this.forEachWatching(key, (watcher) => {
        const keys = keysOf.get(watcher);
        if (keys) keys.push(key);
        else keysOf.set(watcher, [key]);
      });
    }
    let whole: string | undefined;
    for (const [watcher, keys] of keysOf) {
      // A watcher whose prefix the clear's starts with covers every key: one body for all of them.
      const body = keys.length === op.keys.length ? (whole ??= clearBody(op.prefix, op.keys, version)) : clearBody(op.prefix, keys, version);
      watcher.offer({ version, body });
    }
  }

  private forEachWatching(key: string, visit: (watcher: Watcher) => void): void {
    const exact = this.exact.get(key);
    if (exact) for (const watcher of exact) visit(watcher);
    for (const length of this.lengths) {
      if (length > key.length) break;
      const watchers = this.prefixes.get(length)!.get(length === key.length ? key : key.slice(0, length));
      if (watchers) for (const watcher of watchers) visit(watcher);
    }
  }

  /** Adds a watcher to the index, or takes it out. */
  private index(watcher: Watcher, add: boolean): void {
    const { target } = watcher;
    let map: Map<string, Set<Watcher>>;
    let name: string;
    if (target.kind === 'key') {
      map = this.exact;
      name = target.key;
    } else {
      name = target.prefix;
      let byPrefix = this.prefixes.get(name.length);
      if (!byPrefix) {
        if (!add) return;
        byPrefix = new Map();
        this.prefixes.set(name.length, byPrefix);
        this.lengths = [...this.prefixes.keys()].sort((a, b) => a - b);
      }
      map = byPrefix;
    }
    let watchers = map.get(name);
    if (add) {
      if (!watchers) map.set(name, (watchers = new Set()));
      watchers.add(watcher);
      return;
    }
    if (!watchers) return;
    watchers.delete(watcher);
    if (watchers.size > 0) return;
    map.delete(name);
    if (target.kind === 'prefix' && map.size === 0) {
      this.prefixes.delete(name.length);
      this.lengths = this.lengths.filter((length) => length !== name.length);
    }
  }

  /** A watcher's queue grew or shrank by `bytes`; past the node's bound the largest queue goes. */
  queued(bytes: number): void {
    this.queuedBytes += bytes;
    assert(this.queuedBytes >= 0, `watch queues hold ${this.queuedBytes} bytes, never below 0`);
    while (this.queuedBytes > this.limits.queuesBytesMax) {
      let largest: Watcher | undefined;
      for (const watcher of this.all) if (!largest || watcher.queuedBytes > largest.queuedBytes) largest = watcher;
      assert(largest !== undefined && largest.queuedBytes > 0, 'bytes queued are held by some watcher');
      largest.cancel(`the node's watch queues are over ${this.limits.queuesBytesMax} bytes and this watch held the most: read events faster`);
    }
  }

  /** A watcher ended: it is forgotten. */
  removed(watcher: Watcher): void {
    if (!this.all.delete(watcher)) return;
    this.index(watcher, false);
  }

  get queueLimits(): Pick<WatchLimits, 'queueEventsMax' | 'queueBytesMax'> {
    return this.limits;
  }

  /** The log, for a watcher reading its history. */
  get history(): ReplicationLog {
    return this.log;
  }
}

/** One watch: its history still to send, the events waiting for its connection, where it stands. */
export class Watcher {
  readonly id: RequestId;
  readonly target: WatchTarget;
  private readonly idJson: string;
  private readonly channel: Channel;
  private queue: WatchEvent[] = [];
  private queueHead = 0;
  queuedBytes = 0;
  private started = false;
  private ended = false;
  private pumping = false;
  private readonly subscriptions: Subscription[] = [];

  constructor(
    private readonly start_: WatchStart,
    /** History still to send, read from the log a batch at a time. */
    private history: { next: number; end: number } | undefined,
    /** Every change this watch covers up to here was sent (resume from the next). */
    private sentThrough: number,
    /** Events below this version are not sent (a fromVersion past the reply's version). */
    private readonly fromVersion: number,
    private readonly hub: WatchHub,
  ) {
    this.id = start_.id;
    this.target = start_.target;
    this.channel = start_.channel;
    this.idJson = JSON.stringify(start_.id);
  }

  /** The reply was queued: history and waiting events follow it, then events as they come. */
  start(): void {
    if (this.ended) return;
    this.started = true;
    this.subscriptions.push(this.channel.writable$.subscribe(() => this.pump()));
    this.pump();
  }

  /** An acknowledged change this watch covers. */
  offer(event: WatchEvent): void {
    if (this.ended || event.version < this.fromVersion) return;
    if (this.started && this.history === undefined && this.queueHead === this.queue.length && this.channel.writable) {
      this.send(event);
      return;
    }
    this.queue.push(event);
    this.queuedBytes += event.body.length;
    this.hub.queued(event.body.length);
    const { queueEventsMax, queueBytesMax } = this.hub.queueLimits;
    const waiting = this.queue.length - this.queueHead;
    if (!this.ended && (waiting > queueEventsMax || this.queuedBytes > queueBytesMax)) {
      this.cancel(`${waiting} events (${this.queuedBytes} bytes) wait unsent, over the limit of ${queueEventsMax} events or ${queueBytesMax} bytes: read events faster`);
    }
  }

  /** Ends the watch with a `cancelled` event: resume from `version` + 1. */
  cancel(why: string): void {
    if (this.ended) return;
    const error = JSON.stringify({ code: 'UNAVAILABLE', message: `watch ended: ${why}` });
    this.channel.push(`{"id":${this.idJson},"event":"cancelled","error":${error},"version":${this.sentThrough}}`);
    this.end();
  }

  /** Ends the watch without a word (unwatch, a closed connection); calling it again does nothing. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const subscription of this.subscriptions) subscription.unsubscribe();
    this.hub.queued(-this.queuedBytes);
    this.queuedBytes = 0;
    this.queue = [];
    this.queueHead = 0;
    this.history = undefined;
    this.hub.removed(this);
    this.start_.onEnd(this);
  }

  /** Sends history, then what waits, while the connection takes it. */
  private pump(): void {
    if (this.pumping || !this.started) return;
    this.pumping = true;
    try {
      while (!this.ended && this.channel.writable) {
        if (this.history) this.sendHistoryBatch(this.history);
        else if (this.queueHead < this.queue.length) this.sendQueued();
        else break;
      }
    } finally {
      this.pumping = false;
    }
  }

  private sendQueued(): void {
    const event = this.queue[this.queueHead]!;
    this.queueHead += 1;
    this.queuedBytes -= event.body.length;
    this.hub.queued(-event.body.length);
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    this.send(event);
  }

  /** One batch of history: the log may have dropped it meanwhile, and then the watch ends. */
  private sendHistoryBatch(history: { next: number; end: number }): void {
    const batch = this.hub.history.batchFrom(history.next);
    if (batch === undefined) {
      this.cancel(`changes from version ${history.next} are no longer kept`);
      return;
    }
    const ops = decodeWireOps(batch.wire);
    for (let index = 0; index < ops.length && !this.ended; index += 1) {
      const version = batch.first + index;
      if (version > history.end) break;
      const body = covered(this.target, ops[index]!, version);
      if (body !== undefined) this.send({ version, body });
    }
    history.next = lastSeq(batch) + 1;
    if (history.next > history.end) {
      this.sentThrough = Math.max(this.sentThrough, history.end);
      this.history = undefined;
    }
  }

  private send(event: WatchEvent): void {
    assert(event.version > this.sentThrough, `watch events rise: ${event.version} after ${this.sentThrough}`);
    if (!this.channel.push(`{"id":${this.idJson},${event.body}`)) {
      this.end();
      return;
    }
    this.sentThrough = event.version;
  }
}

/** The event `op` makes for a watch of `target`, if it covers it. */
function covered(target: WatchTarget, op: WriteOp, version: number): string | undefined {
  if (op.kind === 'clear') {
    const keys = op.keys.filter((key) => matches(target, key));
    return keys.length === 0 ? undefined : clearBody(op.prefix, keys, version);
  }
  return matches(target, op.key) ? eventBody(op, version) : undefined;
}

function matches(target: WatchTarget, key: string): boolean {
  return target.kind === 'key' ? key === target.key : key.startsWith(target.prefix);
}

/** A put's or del's event after its id; none for a del that found nothing (it changed nothing). */
function eventBody(op: Extract<WriteOp, { kind: 'put' | 'del' }>, version: number): string | undefined {
  if (op.kind === 'put') return `"event":"put","key":${JSON.stringify(op.key)},"value":${op.valueJson},"version":${version}}`;
  return op.found ? `"event":"del","key":${JSON.stringify(op.key)},"version":${version}}` : undefined;
}

function clearBody(prefix: string, keys: readonly string[], version: number): string {
  return `"event":"clear","prefix":${JSON.stringify(prefix)},"keys":${JSON.stringify(keys)},"version":${version}}`;
}
