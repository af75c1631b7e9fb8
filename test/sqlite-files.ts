/** Direct access to a node's SQLite file, as an operator would have: not through pbkv. */
import sqlite3 from 'sqlite3';

/** Runs a statement on a SQLite file through a connection of its own. */
export function execSqlite(file: string, sql: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, (error) => {
      if (error) return reject(error);
      db.exec(sql, (execError) => db.close(() => (execError ? reject(execError) : resolve())));
    });
  });
}

/** Reads a SQLite file directly, as an operator would, not through pbkv. */
export function readSqlite(file: string, sql: string): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READONLY, (error) => {
      if (error) return reject(error);
      db.all(sql, (queryError, rows) => {
        db.close();
        if (queryError) reject(queryError);
        else resolve(rows as Record<string, unknown>[]);
      });
    });
  });
}

/** Every key and value in a node's file, values parsed from their stored form. */
export async function fileContents(file: string): Promise<Record<string, unknown>> {
  const rows = await readSqlite(file, 'SELECT key, value FROM keyv ORDER BY key');
  return Object.fromEntries(rows.map((row) => [row['key'], (JSON.parse(row['value'] as string) as { value: unknown }).value]));
}
