import { KvError } from '../errors.js';
import { MemoryStore } from './memory-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store, SyncMode } from './store.js';

/** Opens a node's store: `memory` needs no file; the other modes need their own file. */
export async function openStore(syncMode: SyncMode, file: string | undefined): Promise<Store> {
  if (syncMode === 'memory') return new MemoryStore();
  if (!file) throw new KvError('BAD_REQUEST', `sync mode "${syncMode}" needs a data file`);
  return SqliteStore.open(file, syncMode);
}
