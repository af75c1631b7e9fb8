/** Direct access to a node's SQLite file, as an operator would have: not through pbkv. */
import { DatabaseSync } from 'node:sqlite';

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

/** Every key and value in a node's file, values parsed from their stored form. */
export async function fileContents(file: string): Promise<Record<string, unknown>> {
  const rows = await readSqlite(file, 'SELECT key, value FROM keyv ORDER BY key');
  return Object.fromEntries(rows.map((row) => [row['key'], (JSON.parse(row['value'] as string) as { value: unknown }).value]));
}
