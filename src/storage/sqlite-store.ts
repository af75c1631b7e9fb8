import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import { Subject } from 'rxjs';
import { CHECKPOINT_INTERVAL_MS, KEY_BYTES_MAX, REQUEST_TAG_WINDOW, WAL_AUTOCHECKPOINT_PAGES } from '../constants.js';
import { KvError, assert } from '../errors.js';
import { isSessionResults, type ClientSession, type RequestTag, type WriteOp } from '../protocol/messages.js';
import { ClientSessions, type SessionChanges, type TagCheck } from './client-sessions.js';
import {
  STORED_TEXT_EXTRA_BYTES,
  entryBytes,
  existedBefore,
  lastOpPerKey,
  storedText,
  valueJsonOf,
  type PageLimits,
  type ReplicationState,
  type Restore,
  type Snapshot,
  type Store,
} from './store.js';

/** Keyv's table and layout (@keyv/sqlite): Keyv can open and read a node's file. */
const TABLE = 'keyv';
const META_TABLE = 'pbkv_meta';
const CLIENTS_TABLE = 'pbkv_clients';
/** Sessions one upsert statement writes (a batch changes one per client writing in it). */
const SESSION_ROWS_PER_STATEMENT = 16;
const BUSY_TIMEOUT_MS = 5_000;
const CHECKPOINTER_STOP_DEADLINE_MS = 2_000;

/** Files open in this process: two stores on one file would corrupt each other's seq. */
const openFiles = new Set<string>();

/**
 * A node's SQLite file through Node's built-in synchronous driver (node:sqlite), WAL
 * journal; `full` fsyncs every commit. The file is a Keyv store: table `keyv(key, value)`
 * with values stored as `{"value": <JSON>}`, plus the tables `pbkv_meta` (epoch, seq) and
 * `pbkv_clients` (the client sessions of request tags, client-sessions.ts).
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
  private readonly sessions = new ClientSessions();
  /** Prepared upserts of 1 to SESSION_ROWS_PER_STATEMENT sessions, by row count. */
  private readonly sessionStatements: (StatementSync | undefined)[] = [];
  private restoring = false;
  private closing: Promise<void> | undefined;
  private readonly checkpointerExited: Promise<void>;
  private readonly statements: {
    upsert: StatementSync;
    remove: StatementSync;
    exists: StatementSync;
    meta: StatementSync;
    read: StatementSync;
    saveSession: StatementSync;
    forgetSession: StatementSync;
  };

  private constructor(
    readonly file: string,
    readonly syncMode: 'full' | 'normal',
    private readonly writer: DatabaseSync,
    private readonly reader: DatabaseSync,
    private readonly checkpointer: Worker,
  ) {
    this.statements = {
      upsert: writer.prepare(`INSERT INTO ${TABLE}(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`),
      remove: writer.prepare(`DELETE FROM ${TABLE} WHERE key = ?`),
      exists: writer.prepare(`SELECT 1 AS found FROM ${TABLE} WHERE key = ?`),
      meta: writer.prepare(`INSERT INTO ${META_TABLE}(name, value) VALUES ('epoch', ?), ('seq', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`),
      read: reader.prepare(`SELECT value FROM ${TABLE} WHERE key = ?`),
      saveSession: writer.prepare(
        `INSERT INTO ${CLIENTS_TABLE}(client, req, seq, results) VALUES (?, ?, ?, ?) ON CONFLICT(client) DO UPDATE SET req = excluded.req, seq = excluded.seq, results = excluded.results`,
      ),
      forgetSession: writer.prepare(`DELETE FROM ${CLIENTS_TABLE} WHERE client = ?`),
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
        CREATE TABLE IF NOT EXISTS ${TABLE}(key VARCHAR(${KEY_BYTES_MAX}) PRIMARY KEY, value TEXT);
        CREATE TABLE IF NOT EXISTS ${META_TABLE}(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS ${CLIENTS_TABLE}(client TEXT PRIMARY KEY, req INTEGER NOT NULL, seq INTEGER NOT NULL, results TEXT NOT NULL);`);
      reader = new DatabaseSync(resolved, { timeout: BUSY_TIMEOUT_MS, readOnly: true });
      const checkpointer = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {
        workerData: { file: resolved, syncMode, intervalMs: CHECKPOINT_INTERVAL_MS, busyTimeoutMs: BUSY_TIMEOUT_MS },
      });
      const store = new SqliteStore(resolved, syncMode, writer, reader, checkpointer);
      store.replication = readState(writer);
      store.sessions.replace(readSessions(writer));
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

  readJson(key: string): string | undefined {
    let row: { value?: unknown } | undefined;
    try {
      row = this.statements.read.get(key) as { value?: unknown } | undefined;
    } catch (error) {
      throw new KvError('INTERNAL', `store read failed: ${(error as Error).message}`);
    }
    return typeof row?.value === 'string' ? valueJsonOf(row.value) : undefined;
  }

  async apply(epoch: number, first: number, ops: readonly WriteOp[]): Promise<boolean[]> {
    assert(!this.restoring, 'no batch is applied during a restore');
    assert(ops.length > 0, 'a batch is not empty');
    const seq = first + ops.length - 1;
    const { upsert, remove, exists, meta } = this.statements;
    const found = this.transaction('store write failed', () => {
      // Only dels report whether their key existed; puts need no read before the write.
      const existed = ops.some((op) => op.kind === 'del')
        ? existedBefore(ops, new Set(ops.filter((op) => exists.get(op.key) !== undefined).map((op) => op.key)))
        : ops.map(() => false);
      const { puts, dels } = lastOpPerKey(ops);
      for (const [key, text] of puts) upsert.run(key, text);
      for (const key of dels) remove.run(key);
      meta.run(epoch, seq);
      const sessions = ops.some((op) => op.tag !== undefined) ? this.sessions.plan(first, ops, existed) : undefined;
      if (sessions) this.saveSessions(sessions);
      return { existed, sessions };
    });
    if (found.sessions) this.sessions.commit(found.sessions);
    this.replication = { epoch, seq };
    return found.existed;
  }

  /** The sessions a batch changed, SESSION_ROWS_PER_STATEMENT rows to a statement (one call into SQLite, not one per client). */
  private saveSessions(changes: SessionChanges): void {
    for (const client of changes.forgotten) this.statements.forgetSession.run(client);
    const { changed } = changes;
    for (let start = 0; start < changed.length; start += SESSION_ROWS_PER_STATEMENT) {
      const rows = changed.slice(start, start + SESSION_ROWS_PER_STATEMENT);
      const values: (string | number)[] = [];
      for (const session of rows) values.push(session.client, session.req, session.seq, session.results);
      this.saveSessionsStatement(rows.length).run(...values);
    }
  }

  private saveSessionsStatement(rows: number): StatementSync {
    let statement = this.sessionStatements[rows];
    if (!statement) {
      statement = this.writer.prepare(
        `INSERT INTO ${CLIENTS_TABLE}(client, req, seq, results) VALUES ${Array(rows).fill('(?, ?, ?, ?)').join(', ')} ON CONFLICT(client) DO UPDATE SET req = excluded.req, seq = excluded.seq, results = excluded.results`,
      );
      this.sessionStatements[rows] = statement;
    }
    return statement;
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
      const state = readState(reader);
      const sessions = readSessions(reader);
      const statements = pageStatements(reader);
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        if (reader.isTransaction) reader.exec('COMMIT');
        reader.close();
      };
      return { state, sessions, pages: () => readPages(statements, limits), close };
    } catch (error) {
      reader.close();
      throw new KvError('INTERNAL', `snapshot failed: ${(error as Error).message}`);
    }
  }

  /** One transaction on the write connection, open from the first part to the last. */
  async beginRestore(): Promise<Restore> {
    assert(!this.restoring, 'one restore at a time');
    try {
      this.writer.exec(`BEGIN IMMEDIATE; DELETE FROM ${TABLE}; DELETE FROM ${CLIENTS_TABLE};`);
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
        for (const [key, valueJson] of entries) this.statements.upsert.run(key, storedText(valueJson));
      },
      finish: async (state, sessions) => {
        try {
          this.statements.meta.run(state.epoch, state.seq);
          for (const session of sessions) this.statements.saveSession.run(session.client, session.req, session.seq, session.results);
        } catch (error) {
          end('ROLLBACK');
          throw new KvError('INTERNAL', `restore failed: ${(error as Error).message}`);
        }
        end('COMMIT');
        this.replication = state;
        this.sessions.replace(sessions);
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
      `SELECT key, octet_length(key) + octet_length(value) - ${STORED_TEXT_EXTRA_BYTES} AS bytes FROM ${TABLE} WHERE key > ? ORDER BY key LIMIT ?`,
    ),
    values: reader.prepare(`SELECT key, value FROM ${TABLE} WHERE key > ? AND key <= ? ORDER BY key`),
  };
}

/**
 * A snapshot's pages, in key order: as many rows as fit the page's entries and bytes, and
 * always one. Sizes are read first (octet_length does not load a value), so a page reads
 * only the values it holds: a page of 1 MiB values never reads the rows after it.
 */
async function* readPages({ sizes, values }: PageStatements, limits: PageLimits): AsyncGenerator<[string, string][]> {
  let after = '';
  for (;;) {
    const last = lastKeyThatFits(sizes, after, limits);
    if (last === undefined) return;
    const rows = values.all(after, last) as { key: string; value: string }[];
    // The sizes read are those of pbkv's rows; a row Keyv wrote (with more fields) can
    // differ once its value is re-serialized, so the page is measured again.
    const entries: [string, string][] = [];
    let bytes = 0;
    for (const row of rows) {
      const json = valueJsonOf(row.value);
      bytes += entryBytes(row.key, json);
      if (entries.length > 0 && bytes > limits.bytesMax) break;
      entries.push([row.key, json]);
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

/** The client sessions, least recently written first; a row that does not read as one is a fault. */
function readSessions(database: DatabaseSync): ClientSession[] {
  const rows = database.prepare(`SELECT client, req, seq, results FROM ${CLIENTS_TABLE} ORDER BY seq`).all() as unknown as ClientSession[];
  return rows.map((row) => {
    const session = { client: String(row.client), req: Number(row.req), seq: Number(row.seq), results: String(row.results) };
    assert(Number.isSafeInteger(session.req) && session.req > 0 && isSessionResults(session.results, REQUEST_TAG_WINDOW), `malformed client session row: ${JSON.stringify(row)}`);
    return session;
  });
}

function readState(database: DatabaseSync): ReplicationState {
  const rows = database.prepare(`SELECT name, value FROM ${META_TABLE}`).all() as { name: string; value: number }[];
  const meta = new Map(rows.map((row) => [row.name, Number(row.value)]));
  return { epoch: meta.get('epoch') ?? 0, seq: meta.get('seq') ?? 0 };
}
