import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import { Subject } from 'rxjs';
import { KEY_BYTES_MAX } from '../constants.js';
import { KvError, assert } from '../errors.js';
import type { Json, WriteOp } from '../protocol/messages.js';
import {
  existedBefore,
  keyvSerialization,
  lastOpPerKey,
  type ReplicationState,
  type Store,
} from './store.js';

const TABLE = 'keyv';
const META_TABLE = 'pbkv_meta';

/** Files open in this process: two stores on one file would corrupt each other's seq. */
const openFiles = new Set<string>();

type Query = (sql: string, ...params: unknown[]) => Promise<Record<string, unknown>[]>;

/** Keyv + @keyv/sqlite on one file, WAL journal; `full` fsyncs every commit. */
export class SqliteStore implements Store {
  readonly syncMode: 'full' | 'normal';
  readonly errors$ = new Subject<Error>();
  private replication: ReplicationState = { epoch: 0, seq: 0 };
  private applying = false;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly file: string,
    private readonly keyv: Keyv,
    private readonly adapter: KeyvSqlite,
    syncMode: 'full' | 'normal',
  ) {
    this.syncMode = syncMode;
  }

  static async open(file: string, syncMode: 'full' | 'normal'): Promise<SqliteStore> {
    const resolved = path.resolve(file);
    if (openFiles.has(resolved)) {
      throw new KvError('BAD_REQUEST', `${resolved} is already open: every node needs its own data file`);
    }
    openFiles.add(resolved);
    try {
      await mkdir(path.dirname(resolved), { recursive: true });
      const adapter = new KeyvSqlite({ uri: `sqlite://${resolved}`, table: TABLE, keySize: KEY_BYTES_MAX, busyTimeout: 5_000 });
      const keyv = new Keyv({ store: adapter, useKeyPrefix: false, throwOnErrors: true, ...keyvSerialization });
      const store = new SqliteStore(resolved, keyv, adapter, syncMode);
      keyv.on('error', (error: unknown) => store.errors$.next(error instanceof Error ? error : new Error(String(error))));
      await store.init();
      return store;
    } catch (error) {
      openFiles.delete(resolved);
      throw error instanceof KvError ? error : new KvError('INTERNAL', `cannot open ${resolved}: ${(error as Error).message}`);
    }
  }

  get state(): ReplicationState {
    return this.replication;
  }

  private get query(): Query {
    return this.adapter.query as unknown as Query;
  }

  private async init(): Promise<void> {
    const [mode] = await this.query('PRAGMA journal_mode=WAL');
    assert(mode?.['journal_mode'] === 'wal', `WAL journal refused: ${JSON.stringify(mode)}`);
    await this.query(`PRAGMA synchronous=${this.syncMode === 'full' ? 'FULL' : 'NORMAL'}`);
    await this.query(`CREATE TABLE IF NOT EXISTS ${META_TABLE}(name TEXT PRIMARY KEY, value INTEGER NOT NULL)`);
    const rows = await this.query(`SELECT name, value FROM ${META_TABLE}`);
    const meta = new Map(rows.map((row) => [row['name'], Number(row['value'])]));
    this.replication = { epoch: meta.get('epoch') ?? 0, seq: meta.get('seq') ?? 0 };
  }

  async get(key: string): Promise<Json | undefined> {
    try {
      return (await this.keyv.get<Json>(key)) ?? undefined;
    } catch (error) {
      throw new KvError('INTERNAL', `store read failed: ${(error as Error).message}`);
    }
  }

  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]> {
    assert(!this.applying, 'batches are applied one at a time');
    assert(ops.length > 0, 'a batch is not empty');
    this.applying = true;
    const seq = first + ops.length - 1;
    const { puts, dels } = lastOpPerKey(ops);
    const reportsFound = ops.some((op) => op.kind === 'del');
    try {
      await this.query('BEGIN IMMEDIATE');
      try {
        const existing = new Set<string>();
        if (reportsFound) {
          const keys = JSON.stringify([...new Set(ops.map((op) => op.key))]);
          const rows = await this.query(`SELECT key FROM ${TABLE} WHERE key IN (SELECT value FROM json_each(?))`, keys);
          for (const row of rows) existing.add(row['key'] as string);
        }
        if (puts.length > 0) {
          await this.query(
            `INSERT INTO ${TABLE}(key, value) SELECT value->>0, value->>1 FROM json_each(?) WHERE true
             ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
            JSON.stringify(puts),
          );
        }
        if (dels.length > 0) {
          await this.query(`DELETE FROM ${TABLE} WHERE key IN (SELECT value FROM json_each(?))`, JSON.stringify(dels));
        }
        await this.query(
          `INSERT INTO ${META_TABLE}(name, value) VALUES ('epoch', ?), ('seq', ?)
           ON CONFLICT(name) DO UPDATE SET value = excluded.value`,
          epoch,
          seq,
        );
        await this.query('COMMIT');
        this.replication = { epoch, seq };
        return reportsFound ? existedBefore(ops, existing) : ops.map(() => false);
      } catch (error) {
        await this.query('ROLLBACK').catch((rollbackError: Error) => this.errors$.next(rollbackError));
        throw error;
      }
    } catch (error) {
      throw new KvError('INTERNAL', `store write failed: ${(error as Error).message}`);
    } finally {
      this.applying = false;
    }
  }

  async *entries(pageSize = 1000): AsyncIterable<[string, string]> {
    let after = '';
    for (;;) {
      const rows = await this.query(
        `SELECT key, value->'$.value' AS json FROM ${TABLE} WHERE key > ? ORDER BY key LIMIT ?`,
        after,
        pageSize,
      );
      for (const row of rows) yield [row['key'] as string, row['json'] as string];
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1]!['key'] as string;
    }
  }

  async count(): Promise<number> {
    const [row] = await this.query(`SELECT count(*) AS n FROM ${TABLE}`);
    return Number(row?.['n'] ?? 0);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.keyv.disconnect();
      } finally {
        openFiles.delete(this.file);
        this.errors$.complete();
      }
    })();
    return this.closing;
  }
}
