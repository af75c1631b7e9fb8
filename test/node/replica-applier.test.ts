import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ReplicaApplier } from '../../src/node/replica-applier.js';
import { encodeBatch } from '../../src/node/replication-log.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import type { WriteOp } from '../../src/protocol/messages.js';
import { within } from '../helpers.js';
import { storedValue } from '../stores.js';

const put = (key: string, value: unknown): WriteOp => ({ kind: 'put', key, valueJson: JSON.stringify(value), expiresAt: undefined, incr: false, tag: undefined });

/** A batch as a replica gets it: the primary's wire text and the ops decoded from it. */
const append = (replica: ReplicaApplier, epoch: number, first: number, ops: WriteOp[]) => replica.append(encodeBatch(epoch, first, ops), ops);

function applier() {
  const store = new MemoryStore();
  return { store, replica: new ReplicaApplier(store, () => {}) };
}

const Applier = suite('node: replica applier');

Applier('a batch past a gap waits for it; then both are applied in seq order', async () => {
  const { store, replica } = applier();
  let laterDone = false;
  const later = append(replica, 1, 3, [put('a', 'second')]).then((seq) => ((laterDone = true), seq));
  await new Promise((resolve) => setImmediate(resolve));
  assert.is(laterDone, false, 'seq 3 waits for 1 and 2');
  assert.is(store.state.seq, 0);
  // Seqs 1-2 fill the gap; they and the waiting seq 3 may land in one transaction.
  assert.ok((await append(replica, 1, 1, [put('a', 'first'), put('b', 1)])) >= 2);
  assert.is(await later, 3);
  assert.is(storedValue(store, 'a'), 'second');
  assert.equal(store.state, { epoch: 1, seq: 3 });
});

Applier('a snapshot that would roll the replica back is FORBIDDEN and changes nothing', async () => {
  const { store, replica } = applier();
  await append(replica, 2, 1, [put('a', 1), put('b', 2), put('c', 3)]);
  for (const [epoch, seq] of [[2, 2], [1, 10], [0, 0]] as const) {
    await replica.snapshotPart({ epoch, seq, part: 0, entries: [['a', '"older"', 1, null]], sessions: [], watermark: 0, done: true }).then(
      () => assert.unreachable(`a snapshot at (${epoch}, ${seq}) must be refused`),
      (error: { code: string; message: string }) => {
        assert.is(error.code, 'FORBIDDEN');
        assert.match(error.message, /would roll this replica back from \(epoch 2, seq 3\)|epoch [01] is older than this replica's 2/);
      },
    );
  }
  assert.equal(store.state, { epoch: 2, seq: 3 });
  assert.is(storedValue(store, 'a'), 1);
  // One at or past the replica's position is taken.
  assert.is(await replica.snapshotPart({ epoch: 2, seq: 3, part: 0, entries: [['a', '"same"', 1, null]], sessions: [], watermark: 0, done: true }), 3);
  assert.is(storedValue(store, 'a'), 'same');
});

Applier('a duplicate is acked again without being reapplied; an overlap is trimmed', async () => {
  const { store, replica } = applier();
  assert.is(await append(replica, 1, 1, [put('a', 1), put('b', 1)]), 2);
  assert.is(await append(replica, 1, 1, [put('a', 'again'), put('b', 'again')]), 2, 'already applied: the current seq comes back');
  assert.is(storedValue(store, 'a'), 1, 'and nothing is written twice');
  assert.is(await append(replica, 1, 2, [put('b', 'overlap'), put('c', 'new')]), 3);
  assert.is(storedValue(store, 'b'), 1, 'seq 2 of the overlap was skipped');
  assert.is(storedValue(store, 'c'), 'new');
  assert.equal(store.state, { epoch: 1, seq: 3 });
});

Applier('at most pendingBatchesMax batches wait past a gap; one more is UNAVAILABLE', async () => {
  const store = new MemoryStore();
  const replica = new ReplicaApplier(store, () => {}, 2);
  // These two wait for seqs 1-4, which never come in this test.
  void append(replica, 1, 5, [put('e', 5)]);
  void append(replica, 1, 7, [put('g', 7)]);
  await append(replica, 1, 9, [put('i', 9)]).then(
    () => assert.unreachable('a third batch past the gap'),
    (error: { code: string; message: string }) => {
      assert.is(error.code, 'UNAVAILABLE');
      assert.match(error.message, /wait for seq 1/);
    },
  );
  assert.is(store.state.seq, 0);
});

Applier('an older epoch is FORBIDDEN', async () => {
  const { replica } = applier();
  await append(replica, 3, 1, [put('a', 1)]);
  await append(replica, 2, 2, [put('a', 2)]).then(
    () => assert.unreachable('epoch 2 after epoch 3'),
    (error: { code: string }) => assert.is(error.code, 'FORBIDDEN'),
  );
});

Applier('an abandoned restore leaves the store as it was; appends wait for none and a new snapshot works', async () => {
  const { store, replica } = applier();
  await append(replica, 1, 1, [put('keep', 1)]);
  assert.is(await replica.snapshotPart({ epoch: 1, seq: 50, part: 0, entries: [['lost', '1', 1, null]], sessions: [], watermark: 0, done: false }), 1);
  await append(replica, 1, 2, [put('during', 1)]).then(
    () => assert.unreachable('no append during a restore'),
    (error: { code: string }) => assert.is(error.code, 'UNAVAILABLE'),
  );
  await replica.abortRestore();
  assert.is(storedValue(store, 'keep'), 1);
  assert.is(storedValue(store, 'lost'), undefined);
  assert.equal(store.state, { epoch: 1, seq: 1 });

  await replica.snapshotPart({ epoch: 1, seq: 50, part: 1, entries: [], sessions: [], watermark: 0, done: true }).then(
    () => assert.unreachable('part 1 of an abandoned snapshot'),
    (error: { code: string }) => assert.is(error.code, 'BAD_REQUEST'),
  );
  await replica.snapshotPart({ epoch: 1, seq: 50, part: 0, entries: [['a', '"A"', 1, null]], sessions: [], watermark: 0, done: false });
  assert.is(await replica.snapshotPart({ epoch: 1, seq: 50, part: 1, entries: [['b', '2', 1, null]], sessions: [], watermark: 0, done: true }), 50);
  assert.is(storedValue(store, 'keep'), undefined);
  assert.equal([storedValue(store, 'a'), storedValue(store, 'b')], ['A', 2]);
  assert.is(await within('the next append', append(replica, 1, 51, [put('c', 3)])), 51);
});

Applier('client sessions come after the entries, over several parts, and are restored with them at done', async () => {
  const { store, replica } = applier();
  await append(replica, 1, 1, [{ ...put('mine', 1), tag: { client: 'local', req: 1 } }]);
  const one = { client: 'c1', req: 3, seq: 7, results: ['p7', '.', 'p6'] };
  const two = { client: 'c2', req: 1, seq: 9, results: ['t9'] };
  await replica.snapshotPart({ epoch: 1, seq: 9, part: 0, entries: [['a', '1', 1, null]], sessions: [], watermark: 0, done: false });
  await replica.snapshotPart({ epoch: 1, seq: 9, part: 1, entries: [], sessions: [one], watermark: 0, done: false });
  assert.equal(store.checkTag({ client: 'local', req: 1 }), { kind: 'applied', reply: '"version":1', seq: 1 }, 'nothing changes before done');
  assert.is(await replica.snapshotPart({ epoch: 1, seq: 9, part: 2, entries: [], sessions: [two], watermark: 0, done: true }), 9);
  assert.equal(store.checkTag({ client: 'local', req: 1 }), { kind: 'new' });
  assert.equal(store.checkTag({ client: 'c1', req: 1 }), { kind: 'applied', reply: '"version":6', seq: 6 });
  assert.equal(store.checkTag({ client: 'c1', req: 2 }), { kind: 'new' });
  assert.equal(store.checkTag({ client: 'c2', req: 1 }), { kind: 'applied', reply: '"found":true,"version":9', seq: 9 });
});

Applier.run();
