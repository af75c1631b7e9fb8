/** Stores that misbehave on purpose, wrapped around a real one. */
import { KvError } from '../src/errors.js';
import type { Json, RequestTag, WriteIntent, WriteOp } from '../src/protocol/messages.js';
import type { ListQuery, PageLimits, Store } from '../src/storage/store.js';

/** The value stored under `key`, parsed: what a get would answer (expiry aside). */
export function storedValue(store: Store, key: string): Json | undefined {
  const json = store.read(key)?.valueJson;
  return json === undefined ? undefined : (JSON.parse(json) as Json);
}

/** Writes as a client asks for them, for tests that drive a write pipeline directly. */
export const intent = {
  put: (key: string, valueJson = '"v"', extra: Partial<Extract<WriteIntent, { kind: 'put' }>> = {}): WriteIntent => ({ kind: 'put', key, valueJson, ifVersion: undefined, expiry: undefined, tag: undefined, ...extra }),
  del: (key: string, extra: Partial<Extract<WriteIntent, { kind: 'del' }>> = {}): WriteIntent => ({ kind: 'del', key, ifVersion: undefined, tag: undefined, ...extra }),
  incr: (key: string, by = 1, extra: Partial<Extract<WriteIntent, { kind: 'incr' }>> = {}): WriteIntent => ({ kind: 'incr', key, by, ifVersion: undefined, expiry: undefined, tag: undefined, ...extra }),
  clear: (prefix: string, limit = 10_000): WriteIntent => ({ kind: 'clear', prefix, limit, tag: undefined }),
};

/** Ops as a primary would resolve them, for tests that drive stores and logs directly. */
export const op = {
  put: (key: string, valueJson: string, tag?: RequestTag): WriteOp => ({ kind: 'put', key, valueJson, expiresAt: undefined, incr: false, tag }),
  del: (key: string, found: boolean, tag?: RequestTag): WriteOp => ({ kind: 'del', key, found, expiredAt: undefined, tag }),
};

/** How many keys the store holds, counted through a snapshot (as a replica would receive them). */
export async function storedCount(store: Store): Promise<number> {
  const snapshot = await store.snapshot({ entriesMax: 1024, bytesMax: 1 << 20 });
  try {
    let count = 0;
    for await (const page of snapshot.pages()) count += page.length;
    return count;
  } finally {
    await snapshot.close();
  }
}

class DelegatingStore implements Store {
  constructor(protected readonly inner: Store) {}
  get file() { return this.inner.file; }
  get syncMode() { return this.inner.syncMode; }
  get state() { return this.inner.state; }
  get errors$() { return this.inner.errors$; }
  get watermark() { return this.inner.watermark; }
  read(key: string) { return this.inner.read(key); }
  list(query: ListQuery) { return this.inner.list(query); }
  keysToClear(prefix: string, limit: number, bytesMax: number, nowMs: number) { return this.inner.keysToClear(prefix, limit, bytesMax, nowMs); }
  expired(nowMs: number, limit: number) { return this.inner.expired(nowMs, limit); }
  apply(epoch: number, first: number, ops: readonly WriteOp[]): void | Promise<void> { return this.inner.apply(epoch, first, ops); }
  beginEpoch(epoch: number): Promise<void> { return this.inner.beginEpoch(epoch); }
  checkTag(tag: RequestTag) { return this.inner.checkTag(tag); }
  snapshot(limits: PageLimits) { return this.inner.snapshot(limits); }
  beginRestore() { return this.inner.beginRestore(); }
  close() { return this.inner.close(); }
}

/** Holds every batch at a gate until the test opens it: a replica whose acks are delayed. */
export class GatedStore extends DelegatingStore {
  private gate: Promise<void> | undefined;
  private release: (() => void) | undefined;
  /** Batches that reached the gate. */
  arrived = 0;

  closeGate(): void {
    this.gate = new Promise((resolve) => (this.release = resolve));
  }

  openGate(): void {
    this.release?.();
    this.gate = undefined;
  }

  override async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<void> {
    this.arrived += 1;
    await this.gate;
    return this.inner.apply(epoch, first, ops);
  }
}

/** Rejects every batch while `failing` is set: a disk that is full. */
export class FailingStore extends DelegatingStore {
  failing = true;
  override async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<void> {
    if (this.failing) throw new KvError('INTERNAL', 'store write failed: disk full (injected)');
    return this.inner.apply(epoch, first, ops);
  }
}
