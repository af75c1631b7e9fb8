/**
 * Opening many connections for the bench (1,000 client connections, the shape of a web
 * app's pool). Dialled all at once, they would not all get through: a node drops the
 * oldest of more than HANDSHAKES_MAX connections still in their WebSocket handshake, and a
 * listener's accept queue (Node's and Redis's backlog, 511) overflows into SYN retries of
 * a second or more. So at most CONNECT_CONCURRENCY are in their handshake at once, each
 * within the project's CONNECT_TIMEOUT_MS.
 */
import { readFileSync } from 'node:fs';
import { HANDSHAKES_MAX } from '../src/constants.js';

/** Connections dialled at once: well below a node's HANDSHAKES_MAX and the accept backlog. */
export const CONNECT_CONCURRENCY = 64;

if (CONNECT_CONCURRENCY > HANDSHAKES_MAX / 2) throw new Error('CONNECT_CONCURRENCY must stay well below HANDSHAKES_MAX');

/**
 * `count` connections from `open`, CONNECT_CONCURRENCY at a time, in the order asked. If
 * one fails, those already open are closed and the error is thrown.
 */
export async function openPaced<T>(count: number, open: () => Promise<T>, close: (connection: T) => void): Promise<T[]> {
  const opened: T[] = [];
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < count && !failed) {
      const index = next++;
      try {
        opened[index] = await open();
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: Math.min(CONNECT_CONCURRENCY, count) }, worker));
  const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
  if (failure) {
    for (const connection of opened) if (connection !== undefined) close(connection);
    throw failure.reason;
  }
  return opened;
}

/**
 * The open files this process may have (its soft RLIMIT_NOFILE, from /proc/self/limits;
 * Node raises it to the hard limit as it starts, and the processes it spawns inherit it),
 * or undefined where that cannot be read.
 */
export function fileDescriptorsMax(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}
