/**
 * The durability floor on the primary: while its view holds fewer replicas than the
 * view's minReplicas, nothing is acknowledged. The write pipeline over fake replicas, then
 * a lone primary in one process with a real hub.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BehaviorSubject } from 'rxjs';
import { LEASE_MS } from '../../src/constants.js';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { KvError } from '../../src/errors.js';
import { ReplicationLog } from '../../src/node/replication-log.js';
import { WritePipeline, type AckSource } from '../../src/node/write-pipeline.js';
import type { WriteIntent } from '../../src/protocol/messages.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import { realClock } from '../../src/transport/real-environment.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { GatedStore, intent, op } from '../stores.js';

const disposer = new Disposer();
const put = (key: string): WriteIntent => intent.put(key);
const rejection = (promise: Promise<unknown>): Promise<KvError> =>
  promise.then(
    () => {
      throw new Error('expected a refusal, not an answer');
    },
    (error: KvError) => error,
  );

/** A replica whose acks the test gives. */
const replica = (name: string): AckSource & { acked$: BehaviorSubject<number> } => ({ name, acked$: new BehaviorSubject(0) });

/** A pipeline whose view {epoch 1, r1} has a floor of 1. */
function pipeline() {
  const store = new GatedStore(new MemoryStore());
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  const r1 = replica('r1');
  const writes = new WritePipeline(store, log, [r1], { clock: realClock, epoch: 1, minReplicas: 1, ackTimeoutMs: 60_000 }, () => {});
  return { store, log, r1, writes };
}

const Pipeline = suite('node: the durability floor in the write pipeline');
Pipeline.after.each(() => disposer.dispose());

Pipeline('below the floor a new write is refused before it is applied: UNAVAILABLE, applied: false, saying how many replicas the view has and needs', async () => {
  const { store, r1, writes } = pipeline();
  const first = writes.submit(put('a'));
  await waitFor('a to be sent', () => store.state.seq === 1);
  r1.acked$.next(1);
  await within('a acknowledged at the floor', first);
  await writes.setView({ epoch: 2, minReplicas: 1 }, () => []);
  const refused = await rejection(writes.submit(put('b')));
  assert.is(refused.code, 'UNAVAILABLE');
  assert.is(refused.details['applied'], false);
  assert.match(refused.message, /^view 2 has 0 replicas and a write needs at least 1 to be acknowledged \(min replicas\); writes resume when a replica rejoins$/);
  assert.is(store.state.seq, 1, 'b was applied nowhere');
  assert.is(writes.read('a', () => 'read at once'), 'read at once', 'reads go on: a is on r1, which left holding it');
});

Pipeline('a write applied when the view went below the floor ends UNAVAILABLE, not applied: false; one still queued is refused unapplied', async () => {
  const { store, writes } = pipeline();
  store.closeGate();
  const applying = writes.submit(put('a'));
  await waitFor('a to reach the store', () => store.arrived === 1);
  const queued = writes.submit(put('b'));
  const shrinking = writes.setView({ epoch: 2, minReplicas: 1 }, () => []);
  store.openGate();
  await within('the view to be taken on', shrinking);
  const [applied, notApplied] = await Promise.all([rejection(applying), rejection(queued)]);
  assert.is(applied.code, 'UNAVAILABLE');
  assert.is(applied.details['applied'], undefined, 'a is in the store: its outcome is unknown');
  assert.match(applied.message, /view 2 has 0 replicas.*the write may be on some nodes/);
  assert.is(notApplied.details['applied'], false);
  assert.is(store.state.seq, 1);
  // a is on no replica the hub could promote: it is not read until one holds it.
  const read = writes.read('a', () => 'read at once');
  assert.instance(read, Promise, 'the read of a is not answered at once');
  const unread = await rejection(read as Promise<unknown>);
  assert.is(unread.code, 'UNAVAILABLE');
  assert.match(unread.message, /the last write to a may be on no replica, and view 2 has 0 replicas/);
});

Pipeline('a retry of a tagged write applied but never acknowledged is not answered ok below the floor', async () => {
  const { store, writes } = pipeline();
  const tagged = intent.put('a', '"v"', { tag: { client: 'c', req: 1 } });
  const first = writes.submit(tagged);
  await waitFor('a to be applied', () => store.state.seq === 1);
  await writes.setView({ epoch: 2, minReplicas: 1 }, () => []);
  assert.is((await rejection(first)).code, 'UNAVAILABLE');
  const retry = await rejection(writes.submit(tagged));
  assert.is(retry.code, 'UNAVAILABLE');
  assert.is(retry.details['applied'], undefined, 'it was applied: never said otherwise');
  assert.is(store.state.seq, 1, 'and not applied again');
});

Pipeline('when a replica rejoins, writes resume, and what it holds is read again', async () => {
  const { store, writes } = pipeline();
  const lost = writes.submit(put('a'));
  await waitFor('a to be applied', () => store.state.seq === 1);
  await writes.setView({ epoch: 2, minReplicas: 1 }, () => []);
  await rejection(lost);
  const r2 = replica('r2');
  await writes.setView({ epoch: 3, minReplicas: 1 }, () => [r2]);
  const resumed = writes.submit(put('b'));
  await waitFor('b to be applied', () => store.state.seq === 2);
  r2.acked$.next(2);
  await within('b acknowledged', resumed);
  assert.is(writes.read('a', () => 'read at once'), 'read at once', 'the rejoined replica holds a');
});

Pipeline('a primary whose first view is below the floor answers no read of what it held when it took over', async () => {
  const store = new MemoryStore();
  await store.apply(1, 1, [op.put('old', '"v"')]);
  const writes = new WritePipeline(store, new ReplicationLog(store.state), [], { clock: realClock, epoch: 2, minReplicas: 1, ackTimeoutMs: 60_000 }, () => {});
  await writes.setView({ epoch: 2, minReplicas: 1 }, () => []);
  const read = writes.read('old', () => 'read at once');
  assert.instance(read, Promise, 'not answered at once');
  assert.is((await rejection(read as Promise<unknown>)).code, 'UNAVAILABLE');
  assert.is((await rejection(writes.submit(put('new')))).details['applied'], false);
});

Pipeline('with a floor of 0 a view without replicas takes writes (a one-node cluster)', async () => {
  const writes = new WritePipeline(new MemoryStore(), new ReplicationLog({ epoch: 0, seq: 0 }), [], { clock: realClock, epoch: 1, minReplicas: 0, ackTimeoutMs: 60_000 }, () => {});
  await writes.setView({ epoch: 1, minReplicas: 0 }, () => []);
  assert.is(await within('a put', writes.submit(put('a'))), '"version":1');
  assert.is(writes.read('a', () => 'read at once'), 'read at once');
});

Pipeline.run();

const Alone = suite('node: a primary holding its view alone');
Alone.after.each(() => disposer.dispose());

Alone('refuses writes and serves reads while the hub answers it; once the hub is silent for LEASE_MS, reads stop too', async () => {
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), replicas: 1 }), (c) => c.close());
  const raw = await RawClient.open(cluster.primary.url, disposer);
  assert.equal(await raw.ask({ id: 1, op: 'put', key: 'k', value: 1 }), { id: 1, ok: true, version: 1 });
  await cluster.replicas[0]!.close();
  // The first of these waits for n1 until the view leaves it out, then ends UNAVAILABLE
  // (applied on n0 alone); the next ones are refused unapplied.
  const refused = await waitFor('n1 to leave the view', async () => {
    const reply = await raw.ask({ id: 2, op: 'put', key: 'probe', value: 2 });
    return reply['error']?.['applied'] === false ? reply : undefined;
  }, 15_000);
  assert.match(refused['error'].message, /has 0 replicas and a write needs at least 1/);
  assert.equal(await raw.ask({ id: 3, op: 'get', key: 'k' }), { id: 3, ok: true, found: true, value: 1, version: 1 }, 'reads go on');
  assert.is((await raw.ask({ id: 3, op: 'get', key: 'probe' }))['error']?.code, 'UNAVAILABLE', 'but not of a write on n0 alone');

  const hubClosed = Date.now();
  await cluster.hub.close();
  const silent = await waitFor('reads to stop without the hub', async () => {
    const reply = await raw.ask({ id: 4, op: 'get', key: 'k' });
    return reply['ok'] === false ? reply : undefined;
  }, 5_000);
  assert.is(silent['error'].code, 'UNAVAILABLE');
  assert.match(silent['error'].message, /n0 holds view \d+ alone and has no answer from the hub for \d+ ms: another node may be primary now/);
  assert.ok(Date.now() - hubClosed < LEASE_MS + 1_000, `reads stopped ${Date.now() - hubClosed} ms after the hub went away`);
});

Alone.run();
