import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import { Subject } from 'rxjs';
import { CHECKPOINT_INTERVAL_MS, KEY_BYTES_MAX, WAL_AUTOCHECKPOINT_PAGES } from '../constants.js';
import { KvError, assert } from '../errors.js';
import type { Entry, RequestTag, SnapshotEntry, WriteOp } from '../protocol/messages.js';
import type { TagCheck } from './client-sessions.js';
import { CLIENTS_TABLE, SESSION_TABLES_SQL, SqliteSessions, TAGS_TABLE, readSessions } from './sqlite-sessions.js';
import {
  STORED_TEXT_EXTRA_BYTES,
  UNVERSIONED_KEY_VERSION,
  entryBytes,
  isExpired,
  storedText,
  valueJsonOf,
  type ListPage,
  type ListQuery,
  type PageLimits,
  type ReplicationState,
  type Restore,
  type Snapshot,
  type Store,
} from './store.js';

/**
 * Keyv's table and layout (@keyv/sqlite 6: key, value, namespace, expires, unique on key and
 * namespace, an index on expires), so Keyv can open a node's file and read every value.
 * pbkv's keys live in Keyv's default namespace (''); a column of pbkv's own, `version`,
 * holds the seq that last wrote each key (Keyv reads past it).
 */
const TABLE = 'keyv';
/** pbkv's rows: Keyv's default namespace. */
const OURS = `namespace = ''`;
/** The longest namespace Keyv's own table declares (it never holds pbkv's keys). */
const NAMESPACE_LENGTH = 255;
const META_TABLE = 'pbkv_meta';
const BUSY_TIMEOUT_MS = 5_000;
const CHECKPOINTER_STOP_DEADLINE_MS = 2_000;

/** Files open in this process: two stores on one file would corrupt each other's seq. */
const openFiles = new Set<string>();

interface Row {
  value: string;
  version: number;
  expires: number | null;
}

/**
 * A node's SQLite file through Node's built-in synchronous driver (node:sqlite), WAL
 * journal; `full` fsyncs every commit. The file is a Keyv store: table `keyv` as
 * @keyv/sqlite 6 makes it, values stored as `{"value": <JSON>}` and expiry in its
 * `expires` column, plus pbkv's `version` column and the tables `pbkv_meta` (epoch, seq,
 * the expiry watermark), `pbkv_clients` and `pbkv_tags` (the client sessions of request
 * tags, as rows and a log of the batches since they were last folded: sqlite-sessions.ts).
 * A file written before versions existed is migrated when it opens:
 * every key it holds is at version UNVERSIONED_KEY_VERSION, the same on every node.
 *
 * Every call is synchronous on the node's thread: a batch of 20 writes commits in about
 * 20 µs, where each call through the asynchronous sqlite3 driver was a round trip through
 * libuv's thread pool that cost far more than the SQL (docs/PERFORMANCE.md). So a batch
 * is one transaction of prepared statements with bound parameters; a read is one prepared
 * SELECT on a connection of its own, which under WAL sees only committed batches. A worker
 * thread checkpoints the WAL every second on its own connection, so no commit on this
 * thread pays for a checkpoint and its fsync.
 */
export class SqliteStore implements Store {
  readonly errors$ = new Subject<Error>();
  private replication: ReplicationState = { epoch: 0, seq: 0 };
  private expiryWatermark = 0;
  private restoring = false;
  private closing: Promise<void> | undefined;
  private readonly checkpointerExited: Promise<void>;
  private readonly statements: {
    upsert: StatementSync;
    remove: StatementSync;
    meta: StatementSync;
    watermark: StatementSync;
    read: StatementSync;
    list: StatementSync;
    listKeys: StatementSync;
    expired: StatementSync;
  };

  private constructor(
    readonly file: string,
    readonly syncMode: 'full' | 'normal',
    private readonly writer: DatabaseSync,
    private readonly reader: DatabaseSync,
    private readonly sessions: SqliteSessions,
    private readonly checkpointer: Worker,
  ) {
    this.statements = {
      upsert: writer.prepare(
        `INSERT INTO ${TABLE}(key, value, namespace, expires, version) VALUES (?, ?, '', ?, ?) ON CONFLICT(key, namespace) DO UPDATE SET value = excluded.value, expires = excluded.expires, version = excluded.version`,
      ),
      remove: writer.prepare(`DELETE FROM ${TABLE} WHERE key = ? AND ${OURS}`),
      meta: writer.prepare(`INSERT INTO ${META_TABLE}(name, value) VALUES ('epoch', ?), ('seq', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`),
      watermark: writer.prepare(`INSERT INTO ${META_TABLE}(name, value) VALUES ('watermark', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`),
      read: reader.prepare(`SELECT value, version, expires FROM ${TABLE} WHERE key = ? AND ${OURS}`),
      // Keys from the prefix on, after `after`; the caller stops at the first key without the prefix.
      list: reader.prepare(`SELECT key, value, version, expires FROM ${TABLE} WHERE key >= ? AND key > ? AND ${OURS} ORDER BY key`),
      listKeys: reader.prepare(`SELECT key, version, expires FROM ${TABLE} WHERE key >= ? AND key > ? AND ${OURS} ORDER BY key`),
      expired: reader.prepare(`SELECT key, version FROM ${TABLE} WHERE expires IS NOT NULL AND expires <= ? AND ${OURS} ORDER BY expires, key LIMIT ?`),
    };
    this.checkpointerExited = new Promise((resolve) => checkpointer.once('exit', () => resolve()));
    checkpointer.on('error', (error) => this.errors$.next(new Error(`checkpointer: ${error.message}`)));
    checkpointer.on('message', (message: { error?: string }) => {
      if (message.error) this.errors$.next(new Error(`checkpoint failed: ${message.error}`));
    });
  }

  static async open(file: string, syncMode: 'full' | 'normal'): Promise<SqliteStore> {
    const resolved = path.resolve(file);
    if (openFiles.has(resolved)) {
      throw new KvError('BAD_REQUEST', `${resolved} is already open: every node needs its own data file`);
    }
    openFiles.add(resolved);
    let writer: DatabaseSync | undefined;
    let reader: DatabaseSync | undefined;
    try {
      await mkdir(path.dirname(resolved), { recursive: true });
      // The write connection comes first: it sets WAL on the file before anyone reads it.
      writer = new DatabaseSync(resolved, { timeout: BUSY_TIMEOUT_MS });
      const mode = writer.prepare('PRAGMA journal_mode=WAL').get() as { journal_mode?: string } | undefined;
      assert(mode?.journal_mode === 'wal', `WAL journal refused: ${JSON.stringify(mode)}`);
      writer.exec(`PRAGMA synchronous=${syncMode === 'full' ? 'FULL' : 'NORMAL'};
        PRAGMA wal_autocheckpoint=${WAL_AUTOCHECKPOINT_PAGES};
        CREATE TABLE IF NOT EXISTS ${META_TABLE}(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        ${SESSION_TABLES_SQL}`);
      createOrMigrateTable(writer);
      reader = new DatabaseSync(resolved, { timeout: BUSY_TIMEOUT_MS, readOnly: true });
      const sessions = new SqliteSessions(writer);
      const checkpointer = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {
        workerData: { file: resolved, syncMode, intervalMs: CHECKPOINT_INTERVAL_MS, busyTimeoutMs: BUSY_TIMEOUT_MS },
      });
      const store = new SqliteStore(resolved, syncMode, writer, reader, sessions, checkpointer);
      const meta = readMeta(writer);
      store.replication = meta.state;
      store.expiryWatermark = meta.watermark;
      return store;
    } catch (error) {
      openFiles.delete(resolved);
      writer?.close();
      reader?.close();
      throw error instanceof KvError ? error : new KvError('INTERNAL', `cannot open ${resolved}: ${(error as Error).message}`);
    }
  }

  get state(): ReplicationState {
    return this.replication;
  }

  get watermark(): number {
    return this.expiryWatermark;
  }

  read(key: string): Entry | undefined {
    const row = this.query('store read failed', () => this.statements.read.get(key) as Row | undefined);
    return row === undefined ? undefined : { valueJson: valueJsonOf(row.value), version: Number(row.version), expiresAt: row.expires ?? undefined };
  }

  list(query: ListQuery): ListPage {
    const { prefix, after, limit, bytesMax, values, nowMs } = query;
    return this.query('store list failed', () => {
      const entries: ListPage['entries'] = [];
      let bytes = 0;
      const statement = values ? this.statements.list : this.statements.listKeys;
      // iterate() steps one row at a time; leaving the loop ends the statement.
      for (const row of statement.iterate(prefix, after ?? '') as Iterable<Row & { key: string }>) {
        if (!row.key.startsWith(prefix)) break;
        const expiresAt = row.expires ?? undefined;
        if (isExpired(expiresAt, nowMs)) continue;
        const valueJson = values ? valueJsonOf(row.value) : undefined;
        const size = valueJson === undefined ? 0 : Buffer.byteLength(valueJson);
        if (entries.length >= limit || (entries.length > 0 && bytes + size > bytesMax)) return { entries, more: true };
        bytes += size;
        entries.push({ key: row.key, valueJson, version: Number(row.version), expiresAt });
      }
      return { entries, more: false };
    });
  }

  keysToClear(prefix: string, limit: number, bytesMax: number, nowMs: number): { keys: string[]; live: number; more: boolean } {
    return this.query('store read failed', () => {
      const keys: string[] = [];
      let live = 0;
      let bytes = 0;
      for (const row of this.statements.listKeys.iterate(prefix, '') as Iterable<{ key: string; expires: number | null }>) {
        if (!row.key.startsWith(prefix)) break;
        const size = Buffer.byteLength(row.key);
        if (keys.length >= limit || (keys.length > 0 && bytes + size > bytesMax)) return { keys, live, more: true };
        bytes += size;
        keys.push(row.key);
        if (!isExpired(row.expires ?? undefined, nowMs)) live += 1;
      }
      return { keys, live, more: false };
    });
  }

  expired(nowMs: number, limit: number): { key: string; version: number }[] {
    const rows = this.query('store read failed', () => this.statements.expired.all(nowMs, limit) as { key: string; version: number }[]);
    return rows.map((row) => ({ key: row.key, version: Number(row.version) }));
  }

  apply(epoch: number, first: number, ops: readonly WriteOp[]): void {
    assert(!this.restoring, 'no batch is applied during a restore');
    assert(ops.length > 0, 'a batch is not empty');
    const seq = first + ops.length - 1;
    const { upsert, remove, meta, watermark } = this.statements;
    let expiredAt = this.expiryWatermark;
    const sessions = this.transaction('store write failed', () => {
      ops.forEach((op, index) => {
        switch (op.kind) {
          case 'put':
            upsert.run(op.key, storedText(op.valueJson), op.expiresAt ?? null, first + index);
            break;
          case 'del':
            remove.run(op.key);
            if (op.expiredAt !== undefined && op.expiredAt > expiredAt) expiredAt = op.expiredAt;
            break;
          case 'clear':
            for (const key of op.keys) remove.run(key);
            break;
        }
      });
      meta.run(epoch, seq);
      if (expiredAt > this.expiryWatermark) watermark.run(expiredAt);
      return this.sessions.write(first, ops);
    });
    if (sessions) this.sessions.committed(sessions);
    this.replication = { epoch, seq };
    this.expiryWatermark = expiredAt;
  }

  checkTag(tag: RequestTag): TagCheck {
    if (this.closing) throw new KvError('UNAVAILABLE', 'the store is closed');
    return this.sessions.check(tag);
  }

  async beginEpoch(epoch: number): Promise<void> {
    assert(!this.restoring, 'no epoch begins during a restore');
    assert(epoch > this.replication.epoch, `epoch ${epoch} is above ${this.replication.epoch}`);
    const { seq } = this.replication;
    this.transaction('store write failed', () => this.statements.meta.run(epoch, seq));
    this.replication = { epoch, seq };
  }

  /** A read on the reader connection; a fault is INTERNAL with what failed. */
  private query<T>(what: string, work: () => T): T {
    try {
      return work();
    } catch (error) {
      throw new KvError('INTERNAL', `${what}: ${(error as Error).message}`);
    }
  }

  /** `work` in one IMMEDIATE transaction: data and seq commit together or not at all. */
  private transaction<T>(what: string, work: () => T): T {
    try {
      this.writer.exec('BEGIN IMMEDIATE');
    } catch (error) {
      throw new KvError('INTERNAL', `${what}: ${(error as Error).message}`);
    }
    try {
      const result = work();
      this.writer.exec('COMMIT');
      return result;
    } catch (error) {
      if (this.writer.isTransaction) this.writer.exec('ROLLBACK');
      throw new KvError('INTERNAL', `${what}: ${(error as Error).message}`);
    }
  }

  /**
   * One read transaction on a connection of its own: WAL gives it a consistent view, the
   * seq read in it matches the data, and writers are not blocked.
   */
  async snapshot(limits: PageLimits): Promise<Snapshot> {
    const reader = new DatabaseSync(this.file, { timeout: BUSY_TIMEOUT_MS, readOnly: true });
    try {
      reader.exec('BEGIN');
      const { state, watermark } = readMeta(reader);
      const sessions = readSessions(reader);
      const statements = pageStatements(reader);
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        if (reader.isTransaction) reader.exec('COMMIT');
        reader.close();
      };
      return { state, sessions, watermark, pages: () => readPages(statements, limits), close };
    } catch (error) {
      reader.close();
      throw new KvError('INTERNAL', `snapshot failed: ${(error as Error).message}`);
    }
  }

  /** One transaction on the write connection, open from the first part to the last. */
  async beginRestore(): Promise<Restore> {
    assert(!this.restoring, 'one restore at a time');
    try {
      this.writer.exec(`BEGIN IMMEDIATE; DELETE FROM ${TABLE} WHERE ${OURS}; DELETE FROM ${CLIENTS_TABLE}; DELETE FROM ${TAGS_TABLE};`);
    } catch (error) {
      if (this.writer.isTransaction) this.writer.exec('ROLLBACK');
      throw new KvError('INTERNAL', `restore failed: ${(error as Error).message}`);
    }
    this.restoring = true;
    const end = (sql: string) => {
      try {
        if (this.writer.isTransaction) this.writer.exec(sql);
      } finally {
        this.restoring = false;
      }
    };
    return {
      add: async (entries) => {
        for (const [key, valueJson, version, expiresAt] of entries) this.statements.upsert.run(key, storedText(valueJson), expiresAt, version);
      },
      finish: async (state, sessions, watermark) => {
        try {
          this.statements.meta.run(state.epoch, state.seq);
          this.statements.watermark.run(watermark);
          this.sessions.writeRows(sessions);
        } catch (error) {
          end('ROLLBACK');
          throw new KvError('INTERNAL', `restore failed: ${(error as Error).message}`);
        }
        end('COMMIT');
        this.replication = state;
        this.expiryWatermark = watermark;
        this.sessions.restored(sessions);
      },
      abort: async () => end('ROLLBACK'),
    };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        // The checkpointer finishes what it is doing and closes its own connection; one
        // that does not within the deadline is stopped (SQLite recovers the WAL on open).
        this.checkpointer.postMessage('stop');
        const deadline = setTimeout(() => void this.checkpointer.terminate(), CHECKPOINTER_STOP_DEADLINE_MS);
        await this.checkpointerExited;
        clearTimeout(deadline);
        this.reader.close();
        if (this.writer.isTransaction) this.writer.exec('ROLLBACK');
        this.writer.close();
      } finally {
        openFiles.delete(this.file);
        this.errors$.complete();
      }
    })();
    return this.closing;
  }
}

interface PageStatements {
  /** Each key after the first parameter with its entry's bytes, as entryBytes counts them for pbkv's rows. */
  sizes: StatementSync;
  /** The rows of keys after the first parameter up to the second. */
  values: StatementSync;
}

function pageStatements(reader: DatabaseSync): PageStatements {
  return {
    sizes: reader.prepare(
      `SELECT key, octet_length(key) + octet_length(value) - ${STORED_TEXT_EXTRA_BYTES} AS bytes FROM ${TABLE} WHERE key > ? AND ${OURS} ORDER BY key LIMIT ?`,
    ),
    values: reader.prepare(`SELECT key, value, version, expires FROM ${TABLE} WHERE key > ? AND key <= ? AND ${OURS} ORDER BY key`),
  };
}

/**
 * A snapshot's pages, in key order: as many rows as fit the page's entries and bytes, and
 * always one. Sizes are read first (octet_length does not load a value), so a page reads
 * only the values it holds: a page of 1 MiB values never reads the rows after it.
 */
async function* readPages({ sizes, values }: PageStatements, limits: PageLimits): AsyncGenerator<SnapshotEntry[]> {
  let after = '';
  for (;;) {
    const last = lastKeyThatFits(sizes, after, limits);
    if (last === undefined) return;
    const rows = values.all(after, last) as unknown as (Row & { key: string })[];
    // The sizes read are those of pbkv's rows; a row Keyv wrote (with more fields) can
    // differ once its value is re-serialized, so the page is measured again.
    const entries: SnapshotEntry[] = [];
    let bytes = 0;
    for (const row of rows) {
      const json = valueJsonOf(row.value);
      bytes += entryBytes(row.key, json);
      if (entries.length > 0 && bytes > limits.bytesMax) break;
      entries.push([row.key, json, Number(row.version), row.expires === null ? null : Number(row.expires)]);
    }
    assert(entries.length > 0, `the rows whose sizes were read up to ${JSON.stringify(last)} are there to read`);
    after = entries[entries.length - 1]![0];
    yield entries;
  }
}

/** The last key after `after` that still fits one page, read from sizes alone; undefined past the last key. */
function lastKeyThatFits(sizes: StatementSync, after: string, limits: PageLimits): string | undefined {
  let last: string | undefined;
  let bytes = 0;
  // iterate() steps one row at a time; leaving the loop ends the statement.
  for (const row of sizes.iterate(after, limits.entriesMax) as Iterable<{ key: string; bytes: number | null }>) {
    bytes += Number(row.bytes ?? 0);
    if (last !== undefined && bytes > limits.bytesMax) break;
    last = row.key;
  }
  return last;
}

/**
 * Makes `keyv` the table @keyv/sqlite 6 makes, with pbkv's `version` column. A file of an
 * older pbkv (`keyv(key PRIMARY KEY, value)`, no namespace, no versions) is migrated in one
 * transaction: its keys go to the default namespace at version UNVERSIONED_KEY_VERSION,
 * the same on every node, so conditions agree wherever they are decided after a failover.
 * (Keyv itself would migrate such a table by splitting keys at their first ':' into a
 * namespace: pbkv's keys must not be moved that way, so pbkv migrates first.)
 */
function createOrMigrateTable(writer: DatabaseSync): void {
  const columns = new Set((writer.prepare(`PRAGMA table_info(${TABLE})`).all() as { name: string }[]).map((column) => column.name));
  const create = `CREATE TABLE ${TABLE}(key VARCHAR(${KEY_BYTES_MAX}) NOT NULL, value TEXT, namespace VARCHAR(${NAMESPACE_LENGTH}) NOT NULL DEFAULT '', expires BIGINT DEFAULT NULL, version INTEGER NOT NULL DEFAULT ${UNVERSIONED_KEY_VERSION}, UNIQUE(key, namespace))`;
  const index = `CREATE INDEX IF NOT EXISTS ${TABLE}_expires_idx ON ${TABLE} (expires) WHERE expires IS NOT NULL`;
  if (columns.size === 0) {
    writer.exec(`${create}; ${index};`);
    return;
  }
  writer.exec('BEGIN IMMEDIATE');
  try {
    if (!columns.has('namespace')) {
      writer.exec(`ALTER TABLE ${TABLE} RENAME TO ${TABLE}_before_versions;
        ${create};
        INSERT INTO ${TABLE}(key, value, namespace, expires, version) SELECT key, value, '', NULL, ${UNVERSIONED_KEY_VERSION} FROM ${TABLE}_before_versions;
        DROP TABLE ${TABLE}_before_versions;`);
    } else {
      if (!columns.has('expires')) writer.exec(`ALTER TABLE ${TABLE} ADD COLUMN expires BIGINT DEFAULT NULL`);
      if (!columns.has('version')) writer.exec(`ALTER TABLE ${TABLE} ADD COLUMN version INTEGER NOT NULL DEFAULT ${UNVERSIONED_KEY_VERSION}`);
    }
    writer.exec(index);
    writer.exec('COMMIT');
  } catch (error) {
    if (writer.isTransaction) writer.exec('ROLLBACK');
    throw error;
  }
}

function readMeta(database: DatabaseSync): { state: ReplicationState; watermark: number } {
  const rows = database.prepare(`SELECT name, value FROM ${META_TABLE}`).all() as { name: string; value: number }[];
  const meta = new Map(rows.map((row) => [row.name, Number(row.value)]));
  return { state: { epoch: meta.get('epoch') ?? 0, seq: meta.get('seq') ?? 0 }, watermark: meta.get('watermark') ?? 0 };
}
