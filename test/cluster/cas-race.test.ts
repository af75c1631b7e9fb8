/**
 * Compare-and-set under a race and a crash, over real processes: two clients increment one
 * counter by CAS (read its version, put the next value with ifVersion, read again on
 * CONFLICT) while the primary is killed with SIGKILL and restarted. Request tags make every
 * try's outcome definite: the counter ends at exactly the number of CASes that succeeded.
 * A try whose outcome is still unknown at the client's retry deadline is counted apart and
 * widens the check by one, and the test says how many there were.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { KvClient } from '../../src/client/client.js';
import { ConflictError } from '../../src/client/data-api.js';
import { KvError } from '../../src/errors.js';
import { Disposer, waitFor, within } from '../helpers.js';
import { readSqlite } from '../sqlite-files.js';
import { startProcessCluster } from './process-cluster.js';

const disposer = new Disposer();
/** Successful CASes each client makes. */
const CAS_PER_CLIENT = 150;
/** A client's CAS loop gives up after this long; the whole test is bounded by it. */
const RACE_DEADLINE_MS = 120_000;

interface Tally {
  succeeded: number;
  conflicts: number;
  unknown: number;
}

/** One client's CAS loop on `key` until it has succeeded `count` times. */
async function casLoop(client: KvClient, key: string, count: number, tally: Tally): Promise<void> {
  while (tally.succeeded + tally.unknown < count) {
    const entry = await client.getEntry(key);
    const value = (entry?.value as number | undefined) ?? 0;
    try {
      await client.put(key, value + 1, { ifVersion: entry?.version ?? 0 });
      tally.succeeded += 1;
    } catch (error) {
      if (error instanceof ConflictError) tally.conflicts += 1;
      // Unknown at the client's retry deadline (a failover longer than it): maybe applied.
      else if (error instanceof KvError && error.code === 'UNAVAILABLE' && error.details['applied'] !== false) tally.unknown += 1;
      else if (!(error instanceof KvError && error.code === 'UNAVAILABLE')) throw error;
    }
  }
}

const Race = suite('cluster: compare-and-set increments race through a kill -9 of the primary');
Race.after.each(() => disposer.dispose());

Race('the counter ends at exactly the CASes that succeeded, on every node', async () => {
  const cluster = await startProcessCluster(disposer);
  const clients = [cluster.client(), cluster.client()];
  await waitFor('the cluster to take a write', () => clients[0]!.put('warm', 1).then(() => true, () => false), 20_000);

  const tallies: Tally[] = clients.map(() => ({ succeeded: 0, conflicts: 0, unknown: 0 }));
  const race = Promise.all(clients.map((client, index) => casLoop(client, 'counter', CAS_PER_CLIENT, tallies[index]!)));
  // The primary dies in the middle of the race, then comes back (as a replica of the new view).
  await waitFor('a third of the race', () => tallies.reduce((sum, tally) => sum + tally.succeeded, 0) >= (2 * CAS_PER_CLIENT) / 3, 60_000);
  const primary = (await clients[0]!.status()).view!.primary;
  await cluster.kill(primary);
  await cluster.start(primary);
  await within('the race', race, RACE_DEADLINE_MS);

  const succeeded = tallies.reduce((sum, tally) => sum + tally.succeeded, 0);
  const unknown = tallies.reduce((sum, tally) => sum + tally.unknown, 0);
  const conflicts = tallies.reduce((sum, tally) => sum + tally.conflicts, 0);
  const final = (await clients[0]!.getEntry('counter'))!.value as number;
  console.log(`      ${succeeded} CASes succeeded, ${conflicts} conflicts, ${unknown} unknown at the deadline; counter ${final}`);
  assert.ok(conflicts > 0, 'the two clients did race');
  assert.ok(final >= succeeded && final <= succeeded + unknown, `counter ${final}, ${succeeded} succeeded, ${unknown} unknown`);
  if (unknown === 0) assert.is(final, succeeded);
  // Every node's file holds that value once the restarted node caught up.
  await waitFor('every file to hold the final counter', async () => {
    const rows = await Promise.all(cluster.spec.nodes.map((node) => readSqlite(node.dataFile!, `SELECT value FROM keyv WHERE key = 'counter'`)));
    return rows.every(([row]) => row?.['value'] === `{"value":${final}}`);
  }, 30_000);
});

Race.run();
