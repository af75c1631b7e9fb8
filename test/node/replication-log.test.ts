import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeBatch, lastSeq, ReplicationLog, type Batch } from '../../src/node/replication-log.js';
import { parseNodeFrame } from '../../src/protocol/parse.js';
import type { WriteOp } from '../../src/protocol/messages.js';

const put = (key: string, value: unknown): WriteOp => ({ kind: 'put', key, valueJson: JSON.stringify(value), expiresAt: undefined, incr: false, tag: undefined });
const limits = { keyBytesMax: 1024, valueBytesMax: 1 << 20 };

/** What a replica reads back from batches sent in one append frame. */
function decode(batches: Batch[]): { first: number; ops: WriteOp[] } {
  const frame = `{"id":1,"op":"append","epoch":1,"first":${batches[0]!.first},"ops":[${batches.map((b) => b.wire).join(',')}]}`;
  const parsed = parseNodeFrame(frame, limits);
  assert.ok(parsed.ok && parsed.request.type === 'append', frame);
  return parsed.ok && parsed.request.type === 'append' ? { first: parsed.request.first, ops: parsed.request.ops } : { first: 0, ops: [] };
}

const Log = suite('node: replication log');

Log('batches round-trip through the wire text, cut at any seq', () => {
  const log = new ReplicationLog({ epoch: 1, seq: 10 });
  const ops: WriteOp[] = [
    put('a', 1),
    { kind: 'del', key: 'quote"d\\', found: true, expiredAt: undefined, tag: undefined },
    { ...put('ключ', { x: [null, '1'] }), tag: { client: 'c-"quoted"', req: 7 } },
    { kind: 'del', key: 'k', found: false, expiredAt: undefined, tag: { client: 'c', req: 8 } },
    put('c', 'text, with ["brackets"]'),
    { kind: 'put', key: 'n', valueJson: '-2.5', expiresAt: 1_800_000_000_000, incr: true, tag: { client: 'c', req: 9 } },
    { kind: 'put', key: 'e', valueJson: '"x"', expiresAt: 1_700_000_000_000, incr: false, tag: undefined },
    { kind: 'del', key: 'old', found: true, expiredAt: 1_700_000_000_123, tag: undefined },
    { kind: 'clear', prefix: 'u:', keys: ['u:1', 'u:"2"'], deleted: 1, more: true, tag: { client: 'c', req: 10 } },
    { kind: 'clear', prefix: '', keys: [], deleted: 0, more: false, tag: undefined },
  ];
  log.append(encodeBatch(1, 11, ops.slice(0, 4)));
  log.append(encodeBatch(1, 15, ops.slice(4)));
  assert.equal(decode(log.after(10)), { first: 11, ops });
  for (let seq = 10; seq <= 19; seq += 1) {
    assert.equal(decode(log.after(seq)), { first: seq + 1, ops: ops.slice(seq - 10) }, `after ${seq}`);
  }
  assert.equal(log.after(20), []);
});

Log('covers only what it holds; the oldest batches go past the bounds', () => {
  const log = new ReplicationLog({ epoch: 1, seq: 0 }, 5);
  for (let first = 1; first <= 9; first += 2) log.append(encodeBatch(1, first, [put(`k${first}`, 1), put(`k${first + 1}`, 2)]));
  assert.is(log.lastSeq, 10);
  assert.ok(log.covers({ epoch: 1, seq: 10 }) && log.covers({ epoch: 1, seq: 6 }));
  assert.not.ok(log.covers({ epoch: 1, seq: 5 }), 'seqs 1-6 were trimmed to keep at most 5 writes (whole batches)');
  assert.not.ok(log.covers({ epoch: 1, seq: 11 }));
  assert.throws(() => log.after(2), /does not cover/);
  assert.throws(() => log.append(encodeBatch(1, 12, [put('gap', 1)])), /expected 11/);
});

Log('a position is on the history only in the epoch its seq was written in, or where an epoch began', () => {
  const log = new ReplicationLog({ epoch: 1, seq: 0 });
  log.append(encodeBatch(1, 1, [put('a', 1), put('b', 2)]));
  log.beginEpoch(3);
  log.append(encodeBatch(3, 3, [put('c', 3)]));
  assert.ok(log.covers({ epoch: 1, seq: 0 }), 'the base');
  assert.ok(log.covers({ epoch: 1, seq: 2 }));
  assert.ok(log.covers({ epoch: 3, seq: 2 }), 'epoch 3 began at seq 2 (a snapshot taken then stands there)');
  assert.ok(log.covers({ epoch: 3, seq: 3 }));
  assert.not.ok(log.covers({ epoch: 2, seq: 2 }), 'seq 2 of epoch 2 is another write: a deposed primary\'s');
  assert.not.ok(log.covers({ epoch: 2, seq: 3 }), 'seq alone is never enough');
  assert.not.ok(log.covers({ epoch: 1, seq: 3 }));
});

Log('a frame stops at an epoch change and at its byte budget', () => {
  const log = new ReplicationLog({ epoch: 0, seq: 0 });
  log.append(encodeBatch(1, 1, [put('a', 'x'.repeat(100))]));
  log.append(encodeBatch(1, 2, [put('b', 'x'.repeat(100))]));
  log.append(encodeBatch(2, 3, [put('c', 1)]));
  assert.equal(log.after(0).map(lastSeq), [1, 2], 'epoch 2 goes in its own frame');
  assert.equal(log.after(0, 150).map(lastSeq), [1], 'the first batch always goes, the next only within the budget');
  assert.equal(log.after(2).map((b) => b.epoch), [2]);
});

Log('an append frame is built once for every link that sends from the same seq, until the log grows', () => {
  const log = new ReplicationLog({ epoch: 1, seq: 0 });
  log.append(encodeBatch(1, 1, [put('a', 1), put('b', 2)]));
  log.append(encodeBatch(1, 3, [put('c', 3)]));
  const frame = log.appendFrame(0, 1 << 20);
  assert.equal({ ...frame, text: undefined }, { text: undefined, epoch: 1, first: 1, last: 3 });
  assert.is(log.appendFrame(0, 1 << 20), frame, 'the second link gets the same text');
  const parsed = parseNodeFrame(frame.text, limits);
  assert.equal(parsed.ok && parsed.request.type === 'append' && [parsed.request.first, parsed.request.ops], [1, [put('a', 1), put('b', 2), put('c', 3)]]);
  assert.equal(log.appendFrame(2, 1 << 20).first, 3, 'another seq, another frame');
  log.append(encodeBatch(1, 4, [put('d', 4)]));
  assert.is(log.appendFrame(0, 1 << 20).last, 4, 'the log grew: the frame is built again');
});

Log.run();
