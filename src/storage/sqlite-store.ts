import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import sqlite3 from 'sqlite3';
import { Subject } from 'rxjs';
import { CHECKPOINT_INTERVAL_MS, KEY_BYTES_MAX, READ_BATCH_KEYS_MAX, READ_QUEUE_MAX, WAL_AUTOCHECKPOINT_PAGES } from '../constants.js';
import { KvError, assert } from '../errors.js';
import type { Json, WriteOp } from '../protocol/messages.js';
import {
  existedBefore,
  keyvSerialization,
  lastOpPerKey,
  storedText,
  type PageLimits,
  type ReplicationState,
  type Restore,
  type Snapshot,
  type Store,
} from './store.js';

const TABLE = 'keyv';
const META_TABLE = 'pbkv_meta';
const BUSY_TIMEOUT_MS = 5_000;

/** Files open in this process: two stores on one file would corrupt each other's seq. */
const openFiles = new Set<string>();

type Query = (sql: string, ...params: unknown[]) => Promise<Record<string, unknown>[]>;

interface PendingRead {
  key: string;
  abandoned: (() => boolean) | undefined;
  resolve(value: Json | undefined): void;
  reject(error: KvError): void;
}

/**
 * Keyv + @keyv/sqlite on one file, WAL journal; `full` fsyncs every commit.
 *
 * Every SQLite call is a round trip through libuv's thread pool, and under load each one
 * costs far more than the SQL (docs/PERFORMANCE.md). So the store makes few: reads go
 * through Keyv, and gets that arrive while one is in flight are read together with one
 * `getMany`; a batch of writes is one `exec` on a write connection of its own (the
 * transaction, the data and the seq in one call). Readers on Keyv's connection see only
 * committed batches (WAL). A third connection checkpoints the WAL in the background, so
 * no commit waits for a checkpoint and its fsync.
 */
export class SqliteStore implements Store {
  readonly errors$ = new Subject<Error>();
  private replication: ReplicationState = { epoch: 0, seq: 0 };
  private applying = false;
  private restoring = false;
  private readQueue: PendingRead[] = [];
  private reading = false;
  private closing: Promise<void> | undefined;
  /** Whether a batch was committed since the last checkpoint, and the one running. */
  private walDirty = false;
  private checkpointing: Promise<void> | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  /** Reads waiting for the next batch read; past it a get is UNAVAILABLE (tests lower it). */
  readQueueMax = READ_QUEUE_MAX;

  private constructor(
    readonly file: string,
    readonly syncMode: 'full' | 'normal',
    private readonly keyv: Keyv,
    private readonly adapter: KeyvSqlite,
    private readonly writer: sqlite3.Database,
    private readonly checkpointer: sqlite3.Database,
  ) {
    this.checkpointTimer = setInterval(() => this.checkpoint(), CHECKPOINT_INTERVAL_MS);
    this.checkpointTimer.unref();
  }

  static async open(file: string, syncMode: 'full' | 'normal'): Promise<SqliteStore> {
    const resolved = path.resolve(file);
    if (openFiles.has(resolved)) {
      throw new KvError('BAD_REQUEST', `${resolved} is already open: every node needs its own data file`);
    }
    openFiles.add(resolved);
    let writer: sqlite3.Database | undefined;
    let checkpointer: sqlite3.Database | undefined;
    try {
      await mkdir(path.dirname(resolved), { recursive: true });
      // The write connection comes first: it sets WAL on the file before Keyv reads it.
      writer = await openDatabase(resolved);
      writer.configure('busyTimeout', BUSY_TIMEOUT_MS);
      const mode = await all(writer, 'PRAGMA journal_mode=WAL');
      assert(mode[0]?.['journal_mode'] === 'wal', `WAL journal refused: ${JSON.stringify(mode)}`);
      await exec(writer, `PRAGMA synchronous=${syncMode === 'full' ? 'FULL' : 'NORMAL'};
        PRAGMA wal_autocheckpoint=${WAL_AUTOCHECKPOINT_PAGES};
        CREATE TABLE IF NOT EXISTS ${TABLE}(key VARCHAR(${KEY_BYTES_MAX}) PRIMARY KEY, value TEXT);
        CREATE TABLE IF NOT EXISTS ${META_TABLE}(name TEXT PRIMARY KEY, value INTEGER NOT NULL);`);
      const adapter = new KeyvSqlite({ uri: `sqlite://${resolved}`, table: TABLE, keySize: KEY_BYTES_MAX, busyTimeout: BUSY_TIMEOUT_MS });
      const keyv = new Keyv({ store: adapter, useKeyPrefix: false, throwOnErrors: true, ...keyvSerialization });
      checkpointer = await openDatabase(resolved);
      checkpointer.configure('busyTimeout', BUSY_TIMEOUT_MS);
      await exec(checkpointer, `PRAGMA synchronous=${syncMode === 'full' ? 'FULL' : 'NORMAL'}`);
      const store = new SqliteStore(resolved, syncMode, keyv, adapter, writer, checkpointer);
      keyv.on('error', (error: unknown) => store.errors$.next(error instanceof Error ? error : new Error(String(error))));
      writer.on('error', (error: Error) => store.errors$.next(error));
      checkpointer.on('error', (error: Error) => store.errors$.next(error));
      const rows = await all(writer, `SELECT name, value FROM ${META_TABLE}`);
      const meta = new Map(rows.map((row) => [row['name'], Number(row['value'])]));
      store.replication = { epoch: meta.get('epoch') ?? 0, seq: meta.get('seq') ?? 0 };
      return store;
    } catch (error) {
      openFiles.delete(resolved);
      writer?.close();
      checkpointer?.close();
      throw error instanceof KvError ? error : new KvError('INTERNAL', `cannot open ${resolved}: ${(error as Error).message}`);
    }
  }

  get state(): ReplicationState {
    return this.replication;
  }

  private get query(): Query {
    return this.adapter.query as unknown as Query;
  }

  get(key: string, abandoned?: () => boolean): Promise<Json | undefined> {
    if (this.readQueue.length >= this.readQueueMax) {
      return Promise.reject(new KvError('UNAVAILABLE', `${this.readQueueMax} reads are queued already; retry later`));
    }
    return new Promise((resolve, reject) => {
      this.readQueue.push({ key, abandoned, resolve, reject });
      if (!this.reading) void this.readQueued();
    });
  }

  /**
   * Reads what queued up while the previous read was in flight, in one getMany of at most
   * READ_BATCH_KEYS_MAX keys: a batch holds every value it reads in memory at once.
   */
  private async readQueued(): Promise<void> {
    this.reading = true;
    while (this.readQueue.length > 0) {
      const reads = this.takeReads();
      if (reads.length === 0) continue;
      try {
        const keys = [...new Set(reads.map((read) => read.key))];
        const values = keys.length === 1 ? [await this.keyv.get<Json>(keys[0]!)] : await this.keyv.getMany<Json>(keys);
        const byKey = new Map(keys.map((key, index) => [key, values[index] ?? undefined]));
        for (const read of reads) read.resolve(byKey.get(read.key));
      } catch (error) {
        const kvError = new KvError('INTERNAL', `store read failed: ${(error as Error).message}`);
        for (const read of reads) read.reject(kvError);
      }
    }
    this.reading = false;
  }

  private takeReads(): PendingRead[] {
    const keys = new Set<string>();
    const taken: PendingRead[] = [];
    let count = 0;
    for (const read of this.readQueue) {
      if (read.abandoned?.()) {
        read.reject(new KvError('UNAVAILABLE', 'the reader is gone'));
        count += 1;
        continue;
      }
      if (!keys.has(read.key) && keys.size >= READ_BATCH_KEYS_MAX) break;
      keys.add(read.key);
      taken.push(read);
      count += 1;
    }
    this.readQueue.splice(0, count);
    return taken;
  }

  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]> {
    assert(!this.applying, 'batches are applied one at a time');
    assert(!this.restoring, 'no batch is applied during a restore');
    assert(ops.length > 0, 'a batch is not empty');
    this.applying = true;
    const seq = first + ops.length - 1;
    try {
      // Only dels report whether their key existed; puts need no read before the write.
      const found = ops.some((op) => op.kind === 'del') ? await this.existingKeys(ops) : undefined;
      await this.execBatch(epoch, seq, ops);
      this.replication = { epoch, seq };
      this.walDirty = true;
      return found ? existedBefore(ops, found) : ops.map(() => false);
    } catch (error) {
      throw error instanceof KvError ? error : new KvError('INTERNAL', `store write failed: ${(error as Error).message}`);
    } finally {
      this.applying = false;
    }
  }

  /** Which of the batch's keys exist now (batches are applied one at a time, so still before it). */
  private async existingKeys(ops: readonly WriteOp[]): Promise<Set<string>> {
    const rows = await all(this.writer, `SELECT key FROM ${TABLE} WHERE key IN ${keySet([...new Set(ops.map((op) => op.key))])}`);
    return new Set(rows.map((row) => row['key'] as string));
  }

  /** The whole transaction in one call: data and seq commit together or not at all. */
  private async execBatch(epoch: number, seq: number, ops: readonly WriteOp[]): Promise<void> {
    const { puts, dels } = lastOpPerKey(ops);
    const statements = ['BEGIN IMMEDIATE;'];
    if (puts.length > 0) statements.push(upsertSql(puts));
    if (dels.length > 0) {
      statements.push(`DELETE FROM ${TABLE} WHERE key IN ${keySet(dels)};`);
    }
    statements.push(stateSql({ epoch, seq }), 'COMMIT;');
    try {
      await exec(this.writer, statements.join('\n'));
    } catch (error) {
      // exec stops at the failing statement, inside the transaction: undo it.
      await exec(this.writer, 'ROLLBACK').catch(() => undefined);
      throw new KvError('INTERNAL', `store write failed: ${(error as Error).message}`);
    }
  }

  /**
   * One read transaction on a connection of its own: WAL gives it a consistent view, the
   * seq read in it matches the data, and writers are not blocked.
   */
  async snapshot(limits: PageLimits): Promise<Snapshot> {
    const reader = await openDatabase(this.file);
    try {
      await exec(reader, 'BEGIN');
      const rows = await all(reader, `SELECT name, value FROM ${META_TABLE}`);
      const meta = new Map(rows.map((row) => [row['name'], Number(row['value'])]));
      const state = { epoch: meta.get('epoch') ?? 0, seq: meta.get('seq') ?? 0 };
      let closed: Promise<void> | undefined;
      const close = () =>
        (closed ??= exec(reader, 'COMMIT')
          .catch(() => undefined)
          .then(() => new Promise<void>((resolve) => reader.close(() => resolve()))));
      return {
        state,
        // Sizes first, then as many values as fit: a page never holds more than its bytes.
        async *pages() {
          let after = '';
          for (;;) {
            const sizes = await all(
              reader,
              `SELECT length(key) + length(value) AS size FROM ${TABLE} WHERE key > ? ORDER BY key LIMIT ?`,
              [after, limits.entriesMax],
            );
            if (sizes.length === 0) return;
            let count = 0;
            let bytes = 0;
            for (const row of sizes) {
              bytes += Number(row['size']);
              if (count > 0 && bytes > limits.bytesMax) break;
              count += 1;
            }
            const page = await all(
              reader,
              `SELECT key, value->'$.value' AS json FROM ${TABLE} WHERE key > ? ORDER BY key LIMIT ?`,
              [after, count],
            );
            yield page.map((row): [string, string] => [row['key'] as string, row['json'] as string]);
            after = page[page.length - 1]!['key'] as string;
          }
        },
        close,
      };
    } catch (error) {
      reader.close();
      throw new KvError('INTERNAL', `snapshot failed: ${(error as Error).message}`);
    }
  }

  /** One transaction on the write connection, open from the first part to the last. */
  async beginRestore(): Promise<Restore> {
    assert(!this.applying && !this.restoring, 'a restore starts when no batch is being applied');
    this.restoring = true;
    try {
      await exec(this.writer, `BEGIN IMMEDIATE; DELETE FROM ${TABLE};`);
    } catch (error) {
      this.restoring = false;
      throw new KvError('INTERNAL', `restore failed: ${(error as Error).message}`);
    }
    const end = async (sql: string) => {
      try {
        await exec(this.writer, sql);
      } finally {
        this.restoring = false;
      }
    };
    return {
      add: async (entries) => {
        if (entries.length === 0) return;
        await exec(this.writer, upsertSql(entries.map(([key, valueJson]) => [key, storedText(valueJson)])));
      },
      finish: async (state) => {
        await end(`${stateSql(state)} COMMIT;`);
        this.replication = state;
        this.walDirty = true;
      },
      abort: () => end('ROLLBACK').catch(() => undefined),
    };
  }

  /** Copies committed WAL frames into the database file; PASSIVE never blocks the writer. */
  private checkpoint(): void {
    if (!this.walDirty || this.checkpointing || this.closing) return;
    this.walDirty = false;
    this.checkpointing = all(this.checkpointer, 'PRAGMA wal_checkpoint(PASSIVE)')
      .then(
        () => undefined,
        (error: Error) => this.errors$.next(new Error(`checkpoint failed: ${error.message}`)),
      )
      .finally(() => (this.checkpointing = undefined));
  }

  async count(): Promise<number> {
    const [row] = await this.query(`SELECT count(*) AS n FROM ${TABLE}`);
    return Number(row?.['n'] ?? 0);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.checkpointTimer);
      try {
        await this.checkpointing;
        await this.keyv.disconnect();
        for (const database of [this.checkpointer, this.writer]) {
          await new Promise<void>((resolve, reject) => database.close((error) => (error ? reject(error) : resolve())));
        }
      } finally {
        openFiles.delete(this.file);
        this.errors$.complete();
      }
    })();
    return this.closing;
  }
}

/**
 * Keys travel into SQL as hex, turned back into TEXT by SQLite: the exact UTF-8 bytes that
 * a bound parameter (Keyv's reads) carries. Through json_each directly, a key holding
 * U+0000 came out cut at the NUL, so "a\0b" and "a\0c" were one row.
 */
function hexKey(key: string): string {
  return Buffer.from(key, 'utf8').toString('hex');
}

/** `(SELECT ...)`: the keys as a set of TEXT values, for IN. */
function keySet(keys: readonly string[]): string {
  return `(SELECT CAST(unhex(value) AS TEXT) FROM json_each(${sqlText(JSON.stringify(keys.map(hexKey)))}))`;
}

/** Writes [key, stored text] rows, as one statement over json_each. */
function upsertSql(rows: readonly [string, string][]): string {
  const encoded = JSON.stringify(rows.map(([key, text]) => [hexKey(key), text]));
  return `INSERT INTO ${TABLE}(key, value) SELECT CAST(unhex(value->>0) AS TEXT), value->>1 FROM json_each(${sqlText(encoded)}) WHERE true
    ON CONFLICT(key) DO UPDATE SET value = excluded.value;`;
}

/** Records the replication state; inside the transaction that wrote the data. */
function stateSql(state: ReplicationState): string {
  return `INSERT INTO ${META_TABLE}(name, value) VALUES ('epoch', ${state.epoch}), ('seq', ${state.seq})
    ON CONFLICT(name) DO UPDATE SET value = excluded.value;`;
}

/**
 * A SQL string literal. The text is JSON (no raw control characters: JSON.stringify
 * escapes them), so doubling single quotes is all SQLite's grammar needs.
 */
function sqlText(json: string): string {
  return `'${json.replaceAll("'", "''")}'`;
}

function openDatabase(file: string): Promise<sqlite3.Database> {
  return new Promise((resolve, reject) => {
    const database = new sqlite3.Database(file, (error) => (error ? reject(error) : resolve(database)));
  });
}

function exec(database: sqlite3.Database, sql: string): Promise<void> {
  return new Promise((resolve, reject) => database.exec(sql, (error) => (error ? reject(error) : resolve())));
}

function all(database: sqlite3.Database, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) =>
    database.all(sql, params, (error, rows) => (error ? reject(error) : resolve(rows as Record<string, unknown>[]))),
  );
}
