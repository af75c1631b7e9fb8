/**
 * The hub's view on disk: one row in its own SQLite file (node:sqlite), written in a
 * transaction with synchronous=FULL, so a hub that restarts, even after a power loss,
 * never hands out an older view or a lower epoch than one it already gave.
 */
import { DatabaseSync } from 'node:sqlite';
import { KvError } from '../errors.js';
import type { SavedViews, ViewStore } from './views.js';

export class SqliteViewStore implements ViewStore {
  private readonly db: DatabaseSync;

  constructor(readonly file: string) {
    try {
      this.db = new DatabaseSync(file);
      this.db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;');
      this.db.exec('CREATE TABLE IF NOT EXISTS hub_views (id INTEGER PRIMARY KEY CHECK (id = 1), saved TEXT NOT NULL)');
    } catch (error) {
      throw new KvError('INTERNAL', `cannot open the hub's view file ${file}: ${(error as Error).message}`);
    }
  }

  load(): SavedViews | undefined {
    const row = this.db.prepare('SELECT saved FROM hub_views WHERE id = 1').get() as { saved?: string } | undefined;
    return typeof row?.saved === 'string' ? (JSON.parse(row.saved) as SavedViews) : undefined;
  }

  save(saved: SavedViews): void {
    this.db.prepare('INSERT INTO hub_views (id, saved) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET saved = excluded.saved').run(JSON.stringify(saved));
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}
