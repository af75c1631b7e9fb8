/**
 * The client sessions of a SQLite store (client-sessions.ts), kept in its file with every
 * batch's transaction, at the cost of one small row per batch instead of one row per client
 * per batch.
 *
 * A session's row holds its last REQUEST_TAG_WINDOW results (about 2 KB once a client has
 * made that many requests), and rewriting it for every batch the client wrote in was most
 * of what tags cost a store: at 8 clients a batch rewrote 8 such rows, on every node. So a
 * batch logs what it did to the sessions instead, its tagged writes (client, req, result)
 * in one row of `pbkv_tags`, and the sessions those writes changed are folded into their
 * rows of `pbkv_clients` now and then: once the log holds SESSION_LOG_WRITES_MAX tagged
 * writes, or its writes changed SESSION_FOLD_CLIENTS_MAX sessions (so a fold writes a
 * bounded number of rows), in that batch's transaction, which then empties the log.
 *
 * The rows plus the log, replayed in seq order through the same planning the batches went
 * through, are exactly the sessions as they stood after the last batch committed: on open,
 * and in a snapshot's read transaction. The rows alone are the sessions as of the last fold.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { REQUEST_TAG_WINDOW, SESSION_FOLD_CLIENTS_MAX, SESSION_LOG_WRITES_MAX } from '../constants.js';
import { assert } from '../errors.js';
import { isSessionResults, type ClientSession, type RequestTag, type WriteOp } from '../protocol/messages.js';
import { ClientSessions, replyFields, taggedResults, type SessionChanges, type TagCheck, type TaggedResult } from './client-sessions.js';

export const CLIENTS_TABLE = 'pbkv_clients';
export const TAGS_TABLE = 'pbkv_tags';
/** Sessions one upsert statement writes. */
const SESSION_ROWS_PER_STATEMENT = 16;

/** The tables, on a file that has none yet. */
export const SESSION_TABLES_SQL = `CREATE TABLE IF NOT EXISTS ${CLIENTS_TABLE}(client TEXT PRIMARY KEY, req INTEGER NOT NULL, seq INTEGER NOT NULL, results TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS ${TAGS_TABLE}(seq INTEGER PRIMARY KEY, tags TEXT NOT NULL);`;

/** What a batch's transaction wrote of the sessions, for `committed` to take on once it has committed. */
export interface SessionWrite {
  changes: SessionChanges;
  /** The log was folded into the rows (and emptied) in this transaction. */
  folded: boolean;
  /** Otherwise: the tagged writes logged, and the clients whose rows they left behind. */
  logged: number;
  touched: readonly string[];
}

export interface SessionLogLimits {
  writesMax: number;
  clientsMax: number;
}

export class SqliteSessions {
  private sessions = new ClientSessions();
  /** Clients whose rows are behind their sessions (changed, or forgotten, by writes in the log). */
  private readonly unfolded = new Set<string>();
  /** Tagged writes in the log. */
  private loggedWrites = 0;
  /** Prepared upserts of 1 to SESSION_ROWS_PER_STATEMENT sessions, by row count. */
  private readonly upserts: (StatementSync | undefined)[] = [];
  private readonly statements: { log: StatementSync; forget: StatementSync; clearLog: StatementSync };

  constructor(
    private readonly writer: DatabaseSync,
    private readonly limits: SessionLogLimits = { writesMax: SESSION_LOG_WRITES_MAX, clientsMax: SESSION_FOLD_CLIENTS_MAX },
  ) {
    this.statements = {
      log: writer.prepare(`INSERT INTO ${TAGS_TABLE}(seq, tags) VALUES (?, ?)`),
      forget: writer.prepare(`DELETE FROM ${CLIENTS_TABLE} WHERE client = ?`),
      clearLog: writer.prepare(`DELETE FROM ${TAGS_TABLE}`),
    };
    const { sessions, log } = readState(writer);
    this.sessions.replace(sessions);
    for (const tagged of log) this.take(this.sessions.planResults(tagged));
  }

  check(tag: RequestTag): TagCheck {
    return this.sessions.check(tag);
  }

  /**
   * In the transaction of the batch `ops` (at seqs first, ...): logs its tagged writes, or
   * folds the log and them into the rows. Undefined when the batch carries no tag.
   */
  write(first: number, ops: readonly WriteOp[]): SessionWrite | undefined {
    const tagged = taggedResults(first, ops);
    if (tagged.length === 0) return undefined;
    const changes = this.sessions.planResults(tagged);
    const touched = [...changes.changed.map((session) => session.client), ...changes.forgotten];
    const newlyBehind = touched.filter((client) => !this.unfolded.has(client)).length;
    if (this.loggedWrites + tagged.length > this.limits.writesMax || this.unfolded.size + newlyBehind > this.limits.clientsMax) {
      this.fold(changes, touched);
      return { changes, folded: true, logged: 0, touched: [] };
    }
    this.statements.log.run(first, encodeLogged(tagged));
    return { changes, folded: false, logged: tagged.length, touched };
  }

  /** The batch `write` was for has committed. */
  committed(write: SessionWrite): void {
    this.sessions.commit(write.changes);
    if (write.folded) {
      this.unfolded.clear();
      this.loggedWrites = 0;
      return;
    }
    for (const client of write.touched) this.unfolded.add(client);
    this.loggedWrites += write.logged;
    assert(this.loggedWrites <= this.limits.writesMax, `the session log holds ${this.loggedWrites} writes, at most ${this.limits.writesMax}`);
  }

  /** In a restore's transaction, whose start emptied both tables: the snapshot's sessions as rows. */
  writeRows(sessions: readonly ClientSession[]): void {
    this.upsert(sessions);
  }

  /** The restore that wrote `sessions` has committed. */
  restored(sessions: readonly ClientSession[]): void {
    this.sessions.replace(sessions);
    this.unfolded.clear();
    this.loggedWrites = 0;
  }

  /** Every session the log left behind, written as it stands after `changes`; the log emptied. */
  private fold(changes: SessionChanges, touched: readonly string[]): void {
    const latest = new Map(changes.changed.map((session) => [session.client, session]));
    const forgotten = new Set(changes.forgotten);
    const rows: ClientSession[] = [];
    for (const client of new Set([...this.unfolded, ...touched])) {
      const session = forgotten.has(client) ? undefined : (latest.get(client) ?? this.sessions.get(client));
      if (session === undefined) this.statements.forget.run(client);
      else rows.push(session);
    }
    this.upsert(rows);
    this.statements.clearLog.run();
  }

  /** Rows for `sessions`, SESSION_ROWS_PER_STATEMENT to a statement (one call into SQLite, not one per client). */
  private upsert(sessions: readonly ClientSession[]): void {
    for (let start = 0; start < sessions.length; start += SESSION_ROWS_PER_STATEMENT) {
      const rows = sessions.slice(start, start + SESSION_ROWS_PER_STATEMENT);
      const values: (string | number)[] = [];
      for (const session of rows) values.push(session.client, session.req, session.seq, JSON.stringify(session.results));
      this.upsertStatement(rows.length).run(...values);
    }
  }

  private upsertStatement(rows: number): StatementSync {
    let statement = this.upserts[rows];
    if (!statement) {
      statement = this.writer.prepare(
        `INSERT INTO ${CLIENTS_TABLE}(client, req, seq, results) VALUES ${Array(rows).fill('(?, ?, ?, ?)').join(', ')} ON CONFLICT(client) DO UPDATE SET req = excluded.req, seq = excluded.seq, results = excluded.results`,
      );
      this.upserts[rows] = statement;
    }
    return statement;
  }

  /** Replaying a logged batch on open: its changes are in memory, its clients' rows behind. */
  private take(changes: SessionChanges): void {
    this.sessions.commit(changes);
    for (const session of changes.changed) this.unfolded.add(session.client);
    for (const client of changes.forgotten) this.unfolded.add(client);
  }
}

/**
 * The sessions as they stood after the last batch this connection's view holds (a
 * snapshot's read transaction): the rows with the log replayed, least recently written first.
 */
export function readSessions(database: DatabaseSync): ClientSession[] {
  const { sessions, log } = readState(database);
  const replayed = new ClientSessions();
  replayed.replace(sessions);
  for (const tagged of log) replayed.commit(replayed.planResults(tagged));
  return replayed.all();
}

/** The rows, least recently written first, and the log's batches in seq order; a row that does not read as one is a fault. */
function readState(database: DatabaseSync): { sessions: ClientSession[]; log: TaggedResult[][] } {
  const rows = database.prepare(`SELECT client, req, seq, results FROM ${CLIENTS_TABLE} ORDER BY seq`).all() as { client: string; req: number; seq: number; results: string }[];
  const sessions = rows.map((row) => {
    const results = parsedOrUndefined(String(row.results));
    const session = { client: String(row.client), req: Number(row.req), seq: Number(row.seq), results: results as string[] };
    assert(Number.isSafeInteger(session.req) && session.req > 0 && isSessionResults(results, REQUEST_TAG_WINDOW), `malformed client session row: ${JSON.stringify(row)}`);
    return session;
  });
  const logged = database.prepare(`SELECT seq, tags FROM ${TAGS_TABLE} ORDER BY seq`).all() as { seq: number; tags: string }[];
  return { sessions, log: logged.map((row) => decodeLogged(String(row.tags))) };
}

/** A batch's tagged writes as its log row holds them: `[[client, req, result], ...]` (the result holds the seq). */
function encodeLogged(tagged: readonly TaggedResult[]): string {
  let text = '[';
  for (let index = 0; index < tagged.length; index += 1) {
    const { client, req, result } = tagged[index]!;
    text += `${index === 0 ? '' : ','}[${JSON.stringify(client)},${req},"${result}"]`;
  }
  return `${text}]`;
}

function decodeLogged(text: string): TaggedResult[] {
  const entries = parsedOrUndefined(text);
  assert(Array.isArray(entries) && entries.length > 0, `malformed session log row: ${text.slice(0, 200)}`);
  return entries.map((entry: unknown): TaggedResult => {
    const [client, req, result] = Array.isArray(entry) ? (entry as unknown[]) : [];
    assert(
      typeof client === 'string' && typeof req === 'number' && Number.isSafeInteger(req) && req > 0 && typeof result === 'string' && isSessionResults([result], 1),
      `malformed session log entry: ${JSON.stringify(entry)?.slice(0, 200)}`,
    );
    return { client, req, seq: replyFields(result).seq, result };
  });
}

function parsedOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
