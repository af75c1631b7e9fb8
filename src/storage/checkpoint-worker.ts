/**
 * The WAL checkpointer of a SqliteStore, on a thread of its own with a connection of its
 * own: copying WAL frames into the database file (and its fsync) never stalls the node's
 * event loop. PASSIVE never blocks the writer; the writer still checkpoints by itself past
 * WAL_AUTOCHECKPOINT_PAGES, should this fall behind.
 */
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

const { file, syncMode, intervalMs, busyTimeoutMs } = workerData as { file: string; syncMode: string; intervalMs: number; busyTimeoutMs: number };
const database = new DatabaseSync(file, { timeout: busyTimeoutMs });
database.exec(`PRAGMA synchronous=${syncMode === 'full' ? 'FULL' : 'NORMAL'}`);
const checkpoint = database.prepare('PRAGMA wal_checkpoint(PASSIVE)');

const timer = setInterval(() => {
  try {
    checkpoint.get();
  } catch (error) {
    parentPort?.postMessage({ error: (error as Error).message });
  }
}, intervalMs);

parentPort?.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  database.close();
  parentPort?.close();
});
