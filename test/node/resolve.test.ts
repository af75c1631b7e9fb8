import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BatchResolver } from '../../src/node/resolve.js';
import { MemoryStore } from '../../src/storage/memory-store.js';
import { intent, op } from '../stores.js';

const Resolve = suite('node: what the primary decides for each write of a batch (resolve.ts)');

/** A store holding a at version 1 (expiring at 1,000), b at 2, and n = 5 at 3. */
async function store(): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.apply(1, 1, [{ ...op.put('a', '"x"'), expiresAt: 1_000 } as never, op.put('b', '"y"'), op.put('n', '5')]);
  return store;
}

Resolve('a put, del or incr under a condition becomes a result, or CONFLICT with what it read and the seq it read', async () => {
  const resolver = new BatchResolver(await store(), 4, 500, (key) => (key === 'b' ? 2 : 0));
  assert.equal(resolver.resolve(intent.put('b', '1', { ifVersion: 2 })), { kind: 'op', op: { kind: 'put', key: 'b', valueJson: '1', expiresAt: undefined, incr: false, tag: undefined } });
  const conflict = resolver.resolve(intent.put('b', '2', { ifVersion: 2 }));
  assert.is(conflict.kind, 'refused');
  if (conflict.kind === 'refused') {
    assert.equal([conflict.error.code, conflict.error.details, conflict.seenSeq], ['CONFLICT', { found: true, version: 4 }, 4], 'it saw the put just before it, at seq 4');
  }
  assert.equal(resolver.resolve(intent.incr('n', 2, { ifVersion: 3 })), { kind: 'op', op: { kind: 'put', key: 'n', valueJson: '7', expiresAt: undefined, incr: true, tag: undefined } });
  assert.equal(resolver.resolve(intent.incr('n')), { kind: 'op', op: { kind: 'put', key: 'n', valueJson: '8', expiresAt: undefined, incr: true, tag: undefined } }, 'the batch\'s own incr counted');
  assert.equal(resolver.resolve(intent.del('zz')), { kind: 'op', op: { kind: 'del', key: 'zz', found: false, expiredAt: undefined, tag: undefined } });
});

Resolve('expiry: an expired key is absent to conditions and incr; ttl counts from the batch\'s time; an incr keeps the expiry', async () => {
  const late = new BatchResolver(await store(), 4, 1_000, () => 0);
  assert.equal(late.resolve(intent.put('a', '1', { ifVersion: 0, expiry: { kind: 'ttl', ms: 50 } })), { kind: 'op', op: { kind: 'put', key: 'a', valueJson: '1', expiresAt: 1_050, incr: false, tag: undefined } });
  const early = new BatchResolver(await store(), 4, 999, () => 0);
  const held = early.resolve(intent.put('a', '1', { ifVersion: 0 }));
  assert.equal(held.kind === 'refused' && held.error.details, { found: true, version: 1 });
  assert.equal(early.resolve(intent.incr('a')).kind, 'refused', 'a string is not a number');
  await (async () => {
    const counters = new MemoryStore();
    await counters.apply(1, 1, [{ ...op.put('c', '1'), expiresAt: 5_000 } as never]);
    const resolver = new BatchResolver(counters, 2, 100, () => 0);
    assert.equal(resolver.resolve(intent.incr('c')), { kind: 'op', op: { kind: 'put', key: 'c', valueJson: '2', expiresAt: 5_000, incr: true, tag: undefined } });
  })();
  const past = early.resolve(intent.put('p', '1', { expiry: { kind: 'at', ms: 999 } }));
  assert.equal(past.kind === 'refused' && past.error.code, 'BAD_REQUEST');
});

Resolve('an expiry delete applies only to the version that expired, judged at the batch\'s time', async () => {
  const resolver = new BatchResolver(await store(), 4, 1_000, () => 0);
  assert.equal(resolver.resolve({ kind: 'expire', key: 'a', version: 1, tag: undefined }), { kind: 'op', op: { kind: 'del', key: 'a', found: true, expiredAt: 1_000, tag: undefined } });
  const renewed = new BatchResolver(await store(), 4, 1_000, () => 0);
  renewed.resolve(intent.put('a', '"again"'));
  assert.equal(renewed.resolve({ kind: 'expire', key: 'a', version: 1, tag: undefined }), { kind: 'none' }, 'written again in the same batch');
  assert.equal(new BatchResolver(await store(), 4, 1_000, () => 0).resolve({ kind: 'expire', key: 'b', version: 2, tag: undefined }), { kind: 'none' }, 'b does not expire');
  assert.equal(new BatchResolver(await store(), 4, 999, () => 0).resolve({ kind: 'expire', key: 'a', version: 1, tag: undefined }), { kind: 'none' }, 'not yet');
  assert.equal(new BatchResolver(await store(), 4, 1_000, () => 0).resolve({ kind: 'expire', key: 'a', version: 7, tag: undefined }), { kind: 'none' }, 'another version');
});

Resolve('a clear takes the keys with its prefix and counts the live ones; the batch reads them as deleted after it', async () => {
  const resolver = new BatchResolver(await store(), 4, 1_000, () => 0);
  assert.equal(resolver.resolve(intent.clear('', 2)), { kind: 'op', op: { kind: 'clear', prefix: '', keys: ['a', 'b'], deleted: 1, more: true, tag: undefined } });
  assert.equal(resolver.resolve(intent.del('b')), { kind: 'op', op: { kind: 'del', key: 'b', found: false, expiredAt: undefined, tag: undefined } });
});

Resolve.run();
