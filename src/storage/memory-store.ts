import Keyv from 'keyv';
import { Subject } from 'rxjs';
import { assert } from '../errors.js';
import type { Json, WriteOp } from '../protocol/messages.js';
import { existedBefore, keyvSerialization, storedText, type ReplicationState, type Store } from './store.js';

/** Keyv over its in-memory Map: for tests and demos; nothing survives the process. */
export class MemoryStore implements Store {
  readonly file = undefined;
  readonly syncMode = 'memory' as const;
  readonly errors$ = new Subject<Error>();
  private readonly map = new Map<string, string>();
  private readonly keyv = new Keyv({ store: this.map, useKeyPrefix: false, throwOnErrors: true, ...keyvSerialization });
  private replication: ReplicationState = { epoch: 0, seq: 0 };

  constructor() {
    this.keyv.on('error', (error: unknown) => this.errors$.next(error instanceof Error ? error : new Error(String(error))));
  }

  get state(): ReplicationState {
    return this.replication;
  }

  async get(key: string): Promise<Json | undefined> {
    return (await this.keyv.get<Json>(key)) ?? undefined;
  }

  /** Synchronous inside, so the batch is atomic to every reader. */
  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]> {
    assert(ops.length > 0, 'a batch is not empty');
    const found = existedBefore(ops, new Set(ops.filter((op) => this.map.has(op.key)).map((op) => op.key)));
    for (const op of ops) {
      if (op.kind === 'put') this.map.set(op.key, storedText(op.valueJson));
      else this.map.delete(op.key);
    }
    this.replication = { epoch, seq: first + ops.length - 1 };
    return found;
  }

  async *entries(): AsyncIterable<[string, string]> {
    for (const key of [...this.map.keys()].sort()) {
      const text = this.map.get(key);
      if (text !== undefined) yield [key, JSON.stringify((JSON.parse(text) as { value: Json }).value)];
    }
  }

  async count(): Promise<number> {
    return this.map.size;
  }

  async close(): Promise<void> {
    this.errors$.complete();
  }
}
