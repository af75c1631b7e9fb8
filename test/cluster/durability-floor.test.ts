/**
 * The durability floor over real processes: a hub, a primary n0 and replicas n1, n2 started
 * by the tools (the floor is the default, 1), each with its own SQLite file in a temp
 * directory; a crash is kill -9 of a child. Nothing is acknowledged while the view holds no
 * replica, so the replica that left it last holds every acknowledged write and is promoted
 * when the primary left alone dies.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import type { HubStatus } from '../../src/hub/hub-client.js';
import { Disposer, RawClient, waitFor, within } from '../helpers.js';
import { fileContents } from '../sqlite-files.js';
import { startProcessCluster } from './process-cluster.js';

const disposer = new Disposer();
/** How long a view change or a rejoin may take on a loaded machine. */
const SETTLE_DEADLINE_MS = 20_000;
/** Puts in flight at once from one client. */
const PUTS_IN_FLIGHT_MAX = 16;

/** The hub's view once `accept` holds for it. */
async function viewWhere(client: KvClient, what: string, accept: (view: NonNullable<HubStatus['view']>) => boolean) {
  let last: HubStatus | undefined;
  try {
    return await waitFor(what, async () => {
      last = await client.status();
      return last.view && accept(last.view) ? last.view : undefined;
    }, SETTLE_DEADLINE_MS);
  } catch (error) {
    throw new Error(`${(error as Error).message}; the hub's last status: ${JSON.stringify(last)}`);
  }
}

/** Puts k<from> .. k<from+count-1> (value: the number); fails on the first error. */
async function putAll(client: KvClient, from: number, count: number): Promise<void> {
  let next = from;
  const worker = async () => {
    while (next < from + count) {
      const i = next++;
      await client.put(`k${i}`, i);
    }
  };
  await within(`${count} puts from k${from}`, Promise.all(Array.from({ length: PUTS_IN_FLIGHT_MAX }, worker)), 60_000);
}

function expectedKeys(count: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, i]));
}

const Floor = suite('cluster: the durability floor over real processes');
Floor.after.each(() =>
  disposer.dispose().catch((error: unknown) => {
    console.error(`disposing what the test started failed: ${String(error)}`);
    throw error;
  }));

Floor('both replicas killed: no put is acknowledged; one back: puts are; the lone primary killed: the last replica to leave takes over with every acknowledged write', async () => {
  const cluster = await startProcessCluster(disposer);
  const client = cluster.client();
  await waitFor('the primary to take writes', () => client.put('warm', 0).then(() => true, () => false), SETTLE_DEADLINE_MS);
  await putAll(client, 0, 200);

  await Promise.all(['n1', 'n2'].map((name) => cluster.kill(name)));
  await viewWhere(client, 'n0 to hold the view alone', (view) => view.primary === 'n0' && view.replicas.length === 0);
  const raw = await RawClient.open(cluster.node('n0').url, disposer);
  // Until n0 takes on that view a put waits for the dead replicas and ends UNAVAILABLE,
  // applied on n0 alone (outcome unknown): a probe key of its own.
  await waitFor('n0 to refuse writes unapplied', async () => (await raw.ask({ id: 'p', op: 'put', key: 'probe', value: 'p' }))['error']?.applied === false, SETTLE_DEADLINE_MS);
  for (let i = 0; i < 5; i += 1) {
    const reply = await raw.ask({ id: i, op: 'put', key: `refused${i}`, value: i });
    assert.is(reply['ok'], false, `put ${i} is not acknowledged`);
    assert.is(reply['error'].code, 'UNAVAILABLE');
    assert.is(reply['error'].applied, false, 'and was applied nowhere');
    assert.match(reply['error'].message, /^view \d+ has 0 replicas and a write needs at least 1 to be acknowledged/);
  }
  const read = await raw.ask({ id: 'r', op: 'get', key: 'k7' });
  assert.equal(read, { id: 'r', ok: true, found: true, value: 7, version: read['version'] }, 'reads go on');
  assert.type(read['version'], 'number');
  const status = await client.status();
  assert.match(status.view?.writesRefused ?? '', /has 0 replicas/, 'the hub says writes are refused, and why');

  // One replica back: it catches up, rejoins, and writes resume with no operator step.
  await cluster.start('n1');
  await viewWhere(client, 'n1 to rejoin', (view) => view.replicas.includes('n1'));
  await putAll(client, 200, 100);
  assert.is((await client.status()).view?.writesRefused, undefined);
  // A replica that joined holds every acknowledged write once the primary reports it synced
  // (a beat or two); before, it is not counted on, and leaving then it would not be promoted.
  await viewWhere(client, 'n1 to be reported synced', (view) => view.members['n1']?.trusted === true);

  // n1 leaves again: the last to leave. Then the primary, left alone, dies.
  await cluster.kill('n1');
  await viewWhere(client, 'n0 alone again', (view) => view.primary === 'n0' && view.replicas.length === 0);
  await cluster.kill('n0');
  await cluster.start('n1');
  const promoted = await viewWhere(client, 'n1 to take over', (view) => view.primary === 'n1');
  assert.match(promoted.changes.at(-1)!.why, /n0 missed heartbeats.*n1 holds .*the most of those that left/);
  assert.equal(promoted.replicas, [], 'n2 is still down and n0 dead');

  // The others come back as its replicas; every acknowledged write is served by n1.
  await cluster.start('n0');
  await cluster.start('n2');
  await viewWhere(client, 'n0 and n2 to rejoin n1', (view) => view.primary === 'n1' && view.replicas.length === 2);
  for (const i of [0, 123, 199, 200, 299]) assert.is(await client.get(`k${i}`), i, `k${i} is served by n1`);
  assert.is(await client.get('refused0'), undefined, 'a refused put was applied nowhere');
  await client.put('after', 1);
  // The hub may name n2 in the view a beat before n1 takes that view on: a put acknowledged
  // meanwhile waited for n0 alone. Every node holds it once it reports n1's seq.
  await viewWhere(client, 'every node at the primary\'s seq', (view) => ['n0', 'n2'].every((name) => view.members[name]?.state === 'in view' && view.members[name]?.lag === 0));
  for (const name of ['n0', 'n1', 'n2']) await cluster.node(name).stop();
  const expected = { ...expectedKeys(300), warm: 0, after: 1 };
  for (const name of ['n0', 'n1', 'n2']) {
    const { probe, ...held } = await fileContents(cluster.file(name));
    assert.equal(held, expected, `${name} holds every acknowledged write and nothing refused`);
    assert.ok(probe === undefined || probe === 'p', 'the probe, if it was applied, as it was put');
  }
});

Floor.run();
