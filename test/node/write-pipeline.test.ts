import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BehaviorSubject } from 'rxjs';
import { ReplicationLog } from '../../src/node/replication-log.js';
import { WritePipeline, type AckSource } from '../../src/node/write-pipeline.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import type { WriteIntent } from '../../src/protocol/messages.js';
import { realClock } from '../../src/transport/real-environment.js';
import { GatedStore, intent, storedValue } from '../stores.js';
import { KvError } from '../../src/errors.js';
import { waitFor, within } from '../helpers.js';

const put = (key: string, bytes = 1): WriteIntent => intent.put(key, JSON.stringify('x'.repeat(bytes)));
const rejection = (promise: Promise<unknown>) => promise.then(() => undefined, (error: { code: string; message: string }) => error);

function pipeline(options: Partial<ConstructorParameters<typeof WritePipeline>[3]> = {}, replicas: AckSource[] = []) {
  const store = new GatedStore(new MemoryStore());
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  const writes = new WritePipeline(store, log, replicas, { clock: realClock, epoch: 1, ackTimeoutMs: 5_000, ...options }, () => {});
  return { store, log, writes };
}

const Pipeline = suite('node: write pipeline limits');

Pipeline('a retry of an applied write is answered from the store only while the read\'s leases hold', async () => {
  let leases: { code: string } | undefined;
  const { store, writes } = pipeline({ readError: () => leases as never });
  const tagged = intent.put('k', '"x"', { tag: { client: 'c', req: 1 } });
  assert.is(await writes.submit(tagged), '"version":1');
  assert.is(await writes.submit(tagged), '"version":1', 'the retry gets the first reply');
  assert.is(store.state.seq, 1, 'and is not applied again');
  // A deposed primary (its leases lapsed) must not answer it: that answer needs no replica.
  leases = new KvError('UNAVAILABLE', 'no lease from r1') as never;
  const refused = await rejection(writes.submit(tagged));
  assert.is(refused?.code, 'UNAVAILABLE');
  assert.match(refused!.message, /no lease/);
  assert.is(store.state.seq, 1);
});

Pipeline('a refusal (CONFLICT) is a read: answered only while the read\'s leases hold', async () => {
  let leases: { code: string } | undefined;
  const { store, writes } = pipeline({ readError: () => leases as never });
  assert.is(await writes.submit(intent.put('k', '"x"')), '"version":1');
  const conflict = await rejection(writes.submit(intent.put('k', '"y"', { ifVersion: 0 })));
  assert.is(conflict?.code, 'CONFLICT');
  // Deposed (its leases lapsed), a primary may hold a store the new primary has moved past:
  // the version it would name may be gone (simulator seed 1211).
  leases = new KvError('UNAVAILABLE', 'no lease from r1', { applied: false }) as never;
  const refused = await rejection(writes.submit(intent.put('k', '"y"', { ifVersion: 0 })));
  assert.is(refused?.code, 'UNAVAILABLE');
  assert.match(refused!.message, /no lease/);
  assert.is(store.state.seq, 1, 'nothing written');
});

Pipeline('past the queue\'s write count, a put gets UNAVAILABLE; the queued ones still land', async () => {
  const { store, writes } = pipeline({ writeQueueMax: 3 });
  store.closeGate();
  const first = writes.submit(put('a'));
  await waitFor('the first batch to reach the store', () => store.arrived === 1);
  const queued = [writes.submit(put('b')), writes.submit(put('c')), writes.submit(put('d'))];
  const refused = await rejection(writes.submit(put('e')));
  assert.is(refused?.code, 'UNAVAILABLE');
  assert.match(refused!.message, /queue is full/);
  store.openGate();
  await within('the queued writes', Promise.all([first, ...queued]));
  assert.equal(store.state.seq, 4);
  assert.is(storedValue(store, 'e'), undefined);
});

Pipeline('past the queue\'s bytes, a put gets UNAVAILABLE, but one large write alone is taken', async () => {
  const { store, writes } = pipeline({ writeQueueBytesMax: 10_000 });
  store.closeGate();
  const first = writes.submit(put('a'));
  await waitFor('the first batch to reach the store', () => store.arrived === 1);
  const big = writes.submit(put('big', 50_000));
  const refused = await rejection(writes.submit(put('small')));
  assert.is(refused?.code, 'UNAVAILABLE');
  store.openGate();
  await within('the writes', Promise.all([first, big]));
  assert.is((storedValue(store, 'big') as string).length, 50_000);
});

/** A replica that acks whatever the log holds as soon as it grows. */
function ackingReplica(name: string, log: () => ReplicationLog): AckSource {
  const acked$ = new BehaviorSubject(0);
  log().appended$.subscribe(() => acked$.next(log().lastSeq));
  return { name, acked$ };
}

Pipeline('a write waits for every replica and fails with UNAVAILABLE at the ack timeout', async () => {
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  const silent: AckSource = { name: 'r2', acked$: new BehaviorSubject(0) };
  const writes = new WritePipeline(new MemoryStore(), log, [ackingReplica('r1', () => log), silent], { clock: realClock, epoch: 1, ackTimeoutMs: 100 }, () => {});
  const refused = await rejection(writes.submit(put('a')));
  assert.is(refused?.code, 'UNAVAILABLE');
  assert.match(refused!.message, /r2 did not acknowledge/);

  const log2 = new ReplicationLog({ epoch: 0, seq: 0 });
  const acking = [ackingReplica('r1', () => log2), ackingReplica('r2', () => log2)];
  const both = new WritePipeline(new MemoryStore(), log2, acking, { clock: realClock, epoch: 1, ackTimeoutMs: 5_000 }, () => {});
  await both.submit(put('a'));
  assert.is(await both.submit(intent.del('a')), '"found":true,"version":2');
  assert.equal(acking.map((r) => r.acked$.value), [2, 2]);
});

Pipeline('at most batchesInFlightMax batches wait for acks; what arrives meanwhile goes in one batch', async () => {
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  const held: AckSource = { name: 'r1', acked$: new BehaviorSubject(0) };
  const store = new MemoryStore();
  const writes = new WritePipeline(store, log, [held], { clock: realClock, epoch: 1, ackTimeoutMs: 5_000, batchesInFlightMax: 2 }, () => {});
  const first = writes.submit(put('a'));
  await waitFor('batch 1', () => log.lastSeq === 1);
  const second = writes.submit(put('b'));
  await waitFor('batch 2', () => log.lastSeq === 2);
  const rest = [writes.submit(put('c')), writes.submit(put('d')), writes.submit(put('e'))];
  await new Promise((resolve) => setImmediate(resolve));
  assert.is(log.lastSeq, 2, 'a third batch waits while two are unacked');
  assert.is(writes.queued, 3);
  held.acked$.next(1);
  await within('write 1', first);
  await waitFor('the waiting writes, as one batch', () => log.lastSeq === 5);
  assert.equal(log.after(2).map((batch) => [batch.first, batch.count]), [[3, 3]]);
  held.acked$.next(5);
  await within('the rest', Promise.all([second, ...rest]));
  assert.is(store.state.seq, 5);
});

Pipeline('a batch holds at most batchWritesMax writes; the rest follow in order', async () => {
  const { store, log, writes } = pipeline({ batchWritesMax: 3 });
  store.closeGate();
  const first = writes.submit(put('a'));
  await waitFor('the first batch to reach the store', () => store.arrived === 1);
  const rest = Array.from({ length: 8 }, (_, i) => writes.submit(put(`k${i}`)));
  store.openGate();
  await within('the writes', Promise.all([first, ...rest]));
  assert.equal(log.after(0).map((batch) => batch.count), [1, 3, 3, 2]);
  assert.is(store.state.seq, 9);
});

Pipeline('close() fails queued writes with UNAVAILABLE and refuses new ones', async () => {
  const { store, writes } = pipeline();
  store.closeGate();
  void writes.submit(put('a')).catch(() => undefined);
  await waitFor('the first batch to reach the store', () => store.arrived === 1);
  const queued = writes.submit(put('b'));
  writes.close();
  assert.is((await rejection(queued))?.code, 'UNAVAILABLE');
  assert.is((await rejection(writes.submit(put('c'))))?.code, 'UNAVAILABLE');
  store.openGate();
});

Pipeline('a read never returns a write that is not acknowledged, even one committed while the read waited', async () => {
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  const store = new MemoryStore();
  const replica: AckSource = { name: 'r1', acked$: new BehaviorSubject(0) };
  const writes = new WritePipeline(store, log, [replica], { clock: realClock, epoch: 1, ackTimeoutMs: 200 }, () => {});
  // The first put is committed here but its replica is slow: it ends UNAVAILABLE (outcome unknown).
  const first = await rejection(writes.submit(intent.put('k', '"v1"')));
  assert.is(first?.code, 'UNAVAILABLE');
  const value = writes.read('k', () => store.read('k')?.valueJson);
  assert.instance(value, Promise, 'the read waits: the last write to k is not on every replica');
  const second = rejection(writes.submit(intent.put('k', '"v2"')));
  await waitFor('the second put to be committed', () => store.state.seq === 2);
  // Only the first put reaches the replica: the second could still be lost by a failover.
  replica.acked$.next(1);
  assert.is(await within('the read', value as Promise<unknown>), '"v1"', 'the read returns what was acknowledged, not the newer write');
  replica.acked$.next(2);
  assert.is(await second, undefined, 'the second put is acknowledged');
});

Pipeline.run();
