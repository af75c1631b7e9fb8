/**
 * What the primary decides for each write of a batch, in seq order, against the state
 * every earlier write left (the store, and the batch's own earlier writes over it):
 * whether a condition holds, what a counter becomes, when a key expires, which keys a
 * clear takes. A write that holds becomes a WriteOp, the result every node applies alike;
 * one that does not writes nothing and uses no seq. Expiry is judged at one wall time per
 * batch, never below the replicated watermark (store.ts).
 */
import { CLEAR_KEY_BYTES_MAX } from '../constants.js';
import { KvError } from '../errors.js';
import type { Entry, Expiry, WriteIntent, WriteOp } from '../protocol/messages.js';
import { isExpired, type Store } from '../storage/store.js';

/** What a write comes to. */
export type Resolution =
  /** Applied as `op` at the batch's next seq. */
  | { kind: 'op'; op: WriteOp }
  /** Refused (CONFLICT, or an incr of a value that is not a number): it read the key as written at `seenSeq`. */
  | { kind: 'refused'; error: KvError; seenSeq: number }
  /** An expiry delete of a key that was written again meanwhile: nothing to do. */
  | { kind: 'none' };

/** The key as the batch's earlier writes left it, and the seq of the write that did. */
interface Written {
  entry: Entry | undefined;
  seq: number;
}

export class BatchResolver {
  private readonly written = new Map<string, Written>();
  private nextSeq: number;

  constructor(
    private readonly store: Pick<Store, 'read' | 'keysToClear'>,
    first: number,
    /** The wall time (Unix ms) expiry is judged at in this batch. */
    private readonly nowMs: number,
    /** The seq of the last write to `key` this node committed that may not be on every replica yet, else 0. */
    private readonly lastWriteSeq: (key: string) => number,
  ) {
    this.nextSeq = first;
  }

  resolve(intent: WriteIntent): Resolution {
    switch (intent.kind) {
      case 'put': {
        const refused = this.condition(intent.key, intent.ifVersion);
        if (refused) return refused;
        const expiresAt = this.expiresAt(intent.expiry, undefined);
        if (expiresAt instanceof KvError) return { kind: 'refused', error: expiresAt, seenSeq: 0 };
        return this.put({ kind: 'put', key: intent.key, valueJson: intent.valueJson, expiresAt, incr: false, tag: intent.tag });
      }
      case 'incr': {
        const refused = this.condition(intent.key, intent.ifVersion);
        if (refused) return refused;
        const { entry, seq } = this.live(intent.key);
        const current = entry === undefined ? 0 : (JSON.parse(entry.valueJson) as unknown);
        if (typeof current !== 'number') return { kind: 'refused', error: new KvError('BAD_REQUEST', `${intent.key} holds a value that is not a number`), seenSeq: seq };
        const value = current + intent.by;
        if (!Number.isFinite(value)) return { kind: 'refused', error: new KvError('BAD_REQUEST', `${intent.key} + ${intent.by} is not a finite number`), seenSeq: seq };
        // An incr without an expiry keeps the key's; one with an expiry sets it.
        const expiresAt = this.expiresAt(intent.expiry, entry?.expiresAt);
        if (expiresAt instanceof KvError) return { kind: 'refused', error: expiresAt, seenSeq: 0 };
        return this.put({ kind: 'put', key: intent.key, valueJson: JSON.stringify(value), expiresAt, incr: true, tag: intent.tag });
      }
      case 'del': {
        const refused = this.condition(intent.key, intent.ifVersion);
        if (refused) return refused;
        const found = this.live(intent.key).entry !== undefined;
        return this.take({ kind: 'del', key: intent.key, found, expiredAt: undefined, tag: intent.tag }, [intent.key]);
      }
      case 'clear': {
        // A clear starts its batch (WritePipeline), so the store alone says which keys it takes.
        const { keys, live, more } = this.store.keysToClear(intent.prefix, intent.limit, CLEAR_KEY_BYTES_MAX, this.nowMs);
        return this.take({ kind: 'clear', prefix: intent.prefix, keys, deleted: live, more, tag: intent.tag }, keys);
      }
      case 'expire': {
        // Only if the key is still at the version that expired: one written again survives.
        const entry = this.stored(intent.key).entry;
        if (entry === undefined || entry.version !== intent.version || !isExpired(entry.expiresAt, this.nowMs)) return { kind: 'none' };
        return this.take({ kind: 'del', key: intent.key, found: true, expiredAt: this.nowMs, tag: undefined }, [intent.key]);
      }
    }
  }

  /** CONFLICT unless the key is at `ifVersion` (0: absent; an expired key is absent). */
  private condition(key: string, ifVersion: number | undefined): Resolution | undefined {
    if (ifVersion === undefined) return undefined;
    const { entry, seq } = this.live(key);
    const version = entry?.version ?? 0;
    if (version === ifVersion) return undefined;
    return { kind: 'refused', error: new KvError('CONFLICT', `${key} is at version ${version}, not ${ifVersion}`, { found: entry !== undefined, version }), seenSeq: seq };
  }

  /** When the key expires, or BAD_REQUEST for an `expiresAt` that is not in the future. */
  private expiresAt(expiry: Expiry | undefined, kept: number | undefined): number | undefined | KvError {
    if (expiry === undefined) return kept;
    if (expiry.kind === 'ttl') return this.nowMs + expiry.ms;
    if (expiry.ms <= this.nowMs) return new KvError('BAD_REQUEST', `expiresAt ${expiry.ms} is not in the future (the primary's time is ${this.nowMs})`);
    return expiry.ms;
  }

  private put(op: Extract<WriteOp, { kind: 'put' }>): Resolution {
    return this.take(op, [op.key], { valueJson: op.valueJson, version: this.nextSeq, expiresAt: op.expiresAt });
  }

  /** `op` takes the next seq; the keys it writes read as `entry` for the rest of the batch. */
  private take(op: WriteOp, keys: readonly string[], entry?: Entry): Resolution {
    const seq = this.nextSeq;
    this.nextSeq += 1;
    for (const key of keys) this.written.set(key, { entry, seq });
    return { kind: 'op', op };
  }

  /** The key as stored or as this batch left it, expired or not. */
  private stored(key: string): Written {
    return this.written.get(key) ?? { entry: this.store.read(key), seq: this.lastWriteSeq(key) };
  }

  /** The key as reads see it: absent once expired. */
  private live(key: string): Written {
    const written = this.stored(key);
    return written.entry !== undefined && isExpired(written.entry.expiresAt, this.nowMs) ? { entry: undefined, seq: written.seq } : written;
  }
}
