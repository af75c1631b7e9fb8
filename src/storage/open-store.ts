import { KvError } from '../errors.js';
import { MemoryStore } from './memory-store.js';
import type { Store, SyncMode } from './store.js';

/** Opens a node's store: `memory` needs no file; the other modes need their own file. */
export async function openStore(syncMode: SyncMode, file: string | undefined): Promise<Store> {
  if (syncMode === 'memory') return new MemoryStore();
  if (!file) throw new KvError('BAD_REQUEST', `sync mode "${syncMode}" needs a data file`);
  const { SqliteStore } = await loadSqliteStore();
  return SqliteStore.open(file, syncMode);
}

/**
 * The SQLite store needs node:sqlite as Node 24 has it (pbkv uses DatabaseSync's `timeout`
 * and `isTransaction`). The repository pins Node 24 through npm, so `npm start`, `npm test`
 * and `npm run node` run on it; a node started with an older `node` gets this message
 * instead of a stack trace.
 */
async function loadSqliteStore(): Promise<typeof import('./sqlite-store.js')> {
  try {
    return await import('./sqlite-store.js');
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_UNKNOWN_BUILTIN_MODULE') {
      throw new KvError('INTERNAL', `this Node (${process.version}) has no node:sqlite: pbkv's SQLite store needs Node 24 (in the pbkv repository: npm start, npm run node, npx node)`);
    }
    throw error;
  }
}
