import Keyv from 'keyv';
import { Subject } from 'rxjs';
import { assert } from '../errors.js';
import type { Json, WriteOp } from '../protocol/messages.js';
import { existedBefore, keyvSerialization, storedText, valueJsonOf, type ReplicationState, type PageLimits, type Restore, type Snapshot, type Store } from './store.js';

/** Keyv over its in-memory Map: for tests and demos; nothing survives the process. */
export class MemoryStore implements Store {
  readonly file = undefined;
  readonly syncMode = 'memory' as const;
  readonly errors$ = new Subject<Error>();
  /** Keyv 6 keeps a Map's entries as `{ value: <serialized>, expires }`. */
  private readonly map = new Map<string, { value: string }>();
  private readonly keyv = new Keyv({ store: this.map, ...keyvSerialization });
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

  readJson(key: string): string | undefined {
    const stored = this.map.get(key);
    return stored === undefined ? undefined : valueJsonOf(stored.value);
  }

  /** Synchronous inside, so the batch is atomic to every reader. */
  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]> {
    assert(ops.length > 0, 'a batch is not empty');
    const found = existedBefore(ops, new Set(ops.filter((op) => this.map.has(op.key)).map((op) => op.key)));
    for (const op of ops) {
      if (op.kind === 'put') this.map.set(op.key, { value: storedText(op.valueJson) });
      else this.map.delete(op.key);
    }
    this.replication = { epoch, seq: first + ops.length - 1 };
    return found;
  }

  /** A copy taken synchronously, so no batch lands halfway through it. */
  async snapshot(limits: PageLimits): Promise<Snapshot> {
    const state = this.replication;
    const rows = [...this.map.keys()].sort().map((key): [string, string] => [
      key,
      valueJsonOf(this.map.get(key)!.value),
    ]);
    return {
      state,
      async *pages() {
        let page: [string, string][] = [];
        let bytes = 0;
        for (const row of rows) {
          const size = row[0].length + row[1].length;
          if (page.length > 0 && (page.length >= limits.entriesMax || bytes + size > limits.bytesMax)) {
            yield page;
            page = [];
            bytes = 0;
          }
          page.push(row);
          bytes += size;
        }
        if (page.length > 0) yield page;
      },
      close: async () => undefined,
    };
  }

  async beginRestore(): Promise<Restore> {
    const next = new Map<string, { value: string }>();
    return {
      add: async (entries) => {
        for (const [key, valueJson] of entries) next.set(key, { value: storedText(valueJson) });
      },
      finish: async (state) => {
        this.map.clear();
        for (const [key, text] of next) this.map.set(key, text);
        this.replication = state;
      },
      abort: async () => undefined,
    };
  }

  async count(): Promise<number> {
    return this.map.size;
  }

  async close(): Promise<void> {
    this.errors$.complete();
  }
}
