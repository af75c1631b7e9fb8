/** Direct access to a node's SQLite file, as an operator would have: not through pbkv. */
import { DatabaseSync, StatementSync } from 'node:sqlite';
import type { ClientSession } from '../src/protocol/messages.js';
import { readSessions } from '../src/storage/sqlite-sessions.js';

/** Runs a statement on a SQLite file through a connection of its own. */
export async function execSqlite(file: string, sql: string): Promise<void> {
  const database = new DatabaseSync(file, { timeout: 5_000 });
  try {
    database.exec(sql);
  } finally {
    database.close();
  }
}

/** Reads a SQLite file directly, as an operator would, not through pbkv. */
export async function readSqlite(file: string, sql: string): Promise<Record<string, unknown>[]> {
  const database = new DatabaseSync(file, { readOnly: true, timeout: 5_000 });
  try {
    // Plain objects: node:sqlite's rows have no prototype, which deep equality tells apart.
    return database.prepare(sql).all().map((row) => ({ ...row }));
  } finally {
    database.close();
  }
}

/**
 * The client sessions a node's file holds, least recently written first: the rows of
 * `pbkv_clients` with the log of tags since their last fold replayed (sqlite-sessions.ts).
 */
export async function fileSessions(file: string): Promise<ClientSession[]> {
  const database = new DatabaseSync(file, { readOnly: true, timeout: 5_000 });
  try {
    database.exec('BEGIN');
    return readSessions(database);
  } finally {
    database.close();
  }
}

/** Every key and value in a node's file, values parsed from their stored form. */
export async function fileContents(file: string): Promise<Record<string, unknown>> {
  const rows = await readSqlite(file, 'SELECT key, value FROM keyv ORDER BY key');
  return Object.fromEntries(rows.map((row) => [row['key'], (JSON.parse(row['value'] as string) as { value: unknown }).value]));
}

/**
 * Runs `work` and returns the most text that any one read through node:sqlite returned
 * meanwhile (`all` and `get` calls, each row of an `iterate`): what a read holds in memory
 * at once. Every statement of the process is watched, so nothing else should read.
 */
export async function largestSqliteRead(work: () => Promise<void>): Promise<number> {
  type Read = (this: StatementSync, ...parameters: unknown[]) => unknown;
  const prototype = StatementSync.prototype as unknown as Record<'all' | 'get' | 'iterate', Read>;
  const { all, get, iterate } = prototype;
  let largest = 0;
  const note = <T>(result: T): T => {
    largest = Math.max(largest, textLength(result));
    return result;
  };
  prototype.all = function (...parameters) {
    return note(all.apply(this, parameters));
  };
  prototype.get = function (...parameters) {
    return note(get.apply(this, parameters));
  };
  prototype.iterate = function (...parameters) {
    const rows = iterate.apply(this, parameters) as Iterator<unknown>;
    const next = rows.next.bind(rows);
    rows.next = () => note(next());
    return rows;
  };
  try {
    await work();
    return largest;
  } finally {
    Object.assign(prototype, { all, get, iterate });
  }
}

/** Characters of every string in a result (rows, a row, an iterator step). */
function textLength(value: unknown): number {
  if (typeof value === 'string') return value.length;
  if (typeof value !== 'object' || value === null) return 0;
  let length = 0;
  for (const field of Object.values(value)) length += textLength(field);
  return length;
}
