import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHubFrame, parseNodeFrame } from '../../src/protocol/parse.js';
import { parseTextCommand } from '../../src/protocol/text-commands.js';
import { KvError } from '../../src/errors.js';
import { VALUE_DEPTH_MAX } from '../../src/constants.js';
import { encodeBatch } from '../../src/node/replication-log.js';
import type { WriteOp } from '../../src/protocol/messages.js';
import { BAD_FRAMES } from './bad-frames.js';

const limits = { keyBytesMax: 16, valueBytesMax: 32 };

const Parse = suite('protocol: parse');

Parse('every bad frame gets its code and its id', () => {
  for (const [frame, code, id] of BAD_FRAMES) {
    const parsed = parseNodeFrame(frame, limits);
    assert.is(parsed.ok, false, frame);
    if (parsed.ok) continue;
    assert.is(parsed.error.code, code, frame);
    assert.is(parsed.id, id, frame);
    assert.ok(parsed.error.message.length > 0);
  }
});

Parse('good frames become typed requests, the value JSON kept exact', () => {
  const put = parseNodeFrame('{"id": "a", "op": "put", "key": "k", "value": {"n": [1, "1", true]}}', limits);
  assert.ok(put.ok);
  if (put.ok && put.request.type === 'put') {
    assert.is(put.request.valueJson, '{"n":[1,"1",true]}');
    assert.equal(put.request.value, { n: [1, '1', true] });
  } else assert.unreachable('not a put');
  const get = parseNodeFrame('{"id": 2, "op": "get", "key": "ключ"}', limits);
  assert.equal(get.ok && get.request, { type: 'get', id: 2, key: 'ключ' });
  const noId = parseNodeFrame('{"op": "del", "key": "k"}', limits);
  assert.equal(noId.ok && noId.request, { type: 'del', id: null, key: 'k', ifVersion: undefined, tag: undefined });
});

Parse('a request tag rides on a put or del; a client id at the length limit passes', () => {
  const client = 'c'.repeat(64);
  const put = parseNodeFrame(JSON.stringify({ id: 7, op: 'put', key: 'n', value: 1, client, req: 42 }), limits);
  assert.equal(put.ok && put.request, { type: 'put', id: 7, key: 'n', value: 1, valueJson: '1', ifVersion: undefined, expiry: undefined, tag: { client, req: 42 } });
  const del = parseNodeFrame('{"id": 8, "op": "del", "key": "n", "client": "c-3f2a9e", "req": 9007199254740991}', limits);
  assert.equal(del.ok && del.request, { type: 'del', id: 8, key: 'n', ifVersion: undefined, tag: { client: 'c-3f2a9e', req: 9007199254740991 } });
  const get = parseNodeFrame('{"id": 9, "op": "get", "key": "n", "client": "c", "req": 1}', limits);
  assert.equal(get.ok && get.request, { type: 'get', id: 9, key: 'n' }, 'a get needs no tag and ignores one');
});

Parse('a key at the byte limit passes, one byte over does not', () => {
  assert.ok(parseNodeFrame(JSON.stringify({ op: 'get', key: 'k'.repeat(16) }), limits).ok);
  const over = parseNodeFrame(JSON.stringify({ op: 'get', key: 'k'.repeat(15) + 'é' }), limits);
  assert.is(!over.ok && over.error.code, 'TOO_LARGE');
});

Parse('a value nested to the depth limit passes; one level deeper is TOO_LARGE, however deep', () => {
  const nested = (depth: number) => `{"id": 1, "op": "put", "key": "k", "value": ${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const wide = { keyBytesMax: 16, valueBytesMax: 1 << 21 };
  assert.ok(parseNodeFrame(nested(VALUE_DEPTH_MAX), wide).ok);
  for (const depth of [VALUE_DEPTH_MAX + 1, 100_000]) {
    const parsed = parseNodeFrame(nested(depth), wide);
    assert.is(!parsed.ok && parsed.error.code, 'TOO_LARGE', `depth ${depth}`);
  }
  const objects = `{"id": 2, "op": "put", "key": "k", "value": ${'{"a":'.repeat(VALUE_DEPTH_MAX + 1)}1${'}'.repeat(VALUE_DEPTH_MAX + 1)}}`;
  assert.is(!parseNodeFrame(objects, wide).ok, true);
});

Parse('replication ops are read back from their compact form', () => {
  const wire = '["p", "a", "\\"1\\""], ["d", "b", true], ["p", "c", "1", "c-1", 3], ["d", "e", false, "c-1", 4]';
  const parsed = parseNodeFrame(`{"id": 1, "op": "append", "epoch": 2, "first": 5, "ops": [${wire}]}`, limits);
  assert.ok(parsed.ok);
  assert.equal(parsed.ok && parsed.request, {
    type: 'append', id: 1, epoch: 2, first: 5,
    ops: [
      { kind: 'put', key: 'a', valueJson: '"1"', expiresAt: undefined, incr: false, tag: undefined },
      { kind: 'del', key: 'b', found: true, expiredAt: undefined, tag: undefined },
      { kind: 'put', key: 'c', valueJson: '1', expiresAt: undefined, incr: false, tag: { client: 'c-1', req: 3 } },
      { kind: 'del', key: 'e', found: false, expiredAt: undefined, tag: { client: 'c-1', req: 4 } },
    ],
    wire,
    offsets: new Uint32Array([0, 21, 39, 66]),
  });
  const last = parseNodeFrame('{"id": 2, "op": "snapshot", "epoch": 2, "seq": 9, "part": 3, "done": true, "watermark": 7, "entries": [["k", {"a": 1}, 6, null], ["e", 2, 3, 1700000000000]], "sessions": [["c-1", 4, 8, ["t8", "p7", ".", "f5"]]]}', limits);
  assert.ok(last.ok && last.request.type === 'snapshot');
  if (last.ok && last.request.type === 'snapshot') {
    assert.equal(last.request.sessions, [{ client: 'c-1', req: 4, seq: 8, results: ['t8', 'p7', '.', 'f5'] }]);
    assert.equal(last.request.entries, [['k', '{"a":1}', 6, null], ['e', '2', 3, 1_700_000_000_000]]);
    assert.is(last.request.watermark, 7);
  }
});

Parse('an append keeps its ops as the text that came, found by its framing, whatever its keys and values hold', () => {
  const awkward = ['"ops":[', ']', '[[', '\\', '\\"', 'a"],["p","b","1"]', 'é ✓ \u2028'];
  const ops: WriteOp[] = awkward.flatMap((text, i) => [
    { kind: 'put', key: text, valueJson: JSON.stringify({ [text]: [text, i] }), expiresAt: undefined, incr: false, tag: { client: `c${text}`, req: i + 1 } },
    { kind: 'put', key: `${text}${i}`, valueJson: JSON.stringify(text), expiresAt: 1_800_000_000_000, incr: i % 2 === 0, tag: undefined },
    { kind: 'clear', prefix: text, keys: [`${text}x`], deleted: 1, more: false, tag: undefined },
  ]);
  const batch = encodeBatch(3, 10, ops);
  const parsed = parseNodeFrame(`{"id":1,"op":"append","epoch":3,"first":10,"ops":[${batch.wire}]}`, limits);
  assert.equal(parsed.ok && parsed.request, { type: 'append', id: 1, epoch: 3, first: 10, ops, wire: batch.wire, offsets: batch.offsets });
  // The order of the fields does not matter; a field an append does not have is refused.
  const reordered = parseNodeFrame(`{"ops":[${batch.wire}],"epoch":3,"id":2,"first":10,"op":"append"}`, limits);
  assert.equal(reordered.ok && reordered.request.type === 'append' && [reordered.request.wire, reordered.request.offsets], [batch.wire, batch.offsets]);
  const extra = parseNodeFrame(`{"id":3,"op":"append","epoch":3,"first":10,"more":{"ops":[1]},"ops":[${batch.wire}]}`, limits);
  assert.is(!extra.ok && extra.error.code, 'BAD_REQUEST');
});

Parse('the results of conditions, counters, expiry and clears travel in their own forms', () => {
  const parsed = parseNodeFrame(
    '{"id": 1, "op": "append", "epoch": 2, "first": 5, "ops": [["P", "n", "3", null, true, "c", 1], ["P", "e", "\\"x\\"", 1800000000000, false, null, null], ["x", "old", 1700000000000], ["c", "u:", ["u:1", "u:2"], 1, true, null, null]]}',
    limits,
  );
  assert.equal(parsed.ok && parsed.request.type === 'append' && parsed.request.ops, [
    { kind: 'put', key: 'n', valueJson: '3', expiresAt: undefined, incr: true, tag: { client: 'c', req: 1 } },
    { kind: 'put', key: 'e', valueJson: '"x"', expiresAt: 1_800_000_000_000, incr: false, tag: undefined },
    { kind: 'del', key: 'old', found: true, expiredAt: 1_700_000_000_000, tag: undefined },
    { kind: 'clear', prefix: 'u:', keys: ['u:1', 'u:2'], deleted: 1, more: true, tag: undefined },
  ]);
  for (const op of ['["d", "b"]', '["P", "n", "3", null, "yes", null, null]', '["p", "n", 3]', '["p", "n", ""]', '["p", "n", "null"]', '["x", "k", -1]', '["c", "u:", ["v:1"], 1, false, null, null]', '["c", "u:", ["u:1"], 2, false, null, null]', '["q", "k"]']) {
    const bad = parseNodeFrame(`{"id": 2, "op": "append", "epoch": 2, "first": 5, "ops": [${op}]}`, limits);
    assert.is(!bad.ok && bad.error.code, 'BAD_REQUEST', op);
  }
});

Parse('the data API: conditions, expiry, counters, listing and clearing, and their limits', () => {
  const request = (frame: object) => {
    const parsed = parseNodeFrame(JSON.stringify({ id: 1, ...frame }), limits);
    return parsed.ok ? parsed.request : parsed.error.code;
  };
  assert.equal(request({ op: 'put', key: 'k', value: 1, ifVersion: 0, ttlMs: 500 }), { type: 'put', id: 1, key: 'k', value: 1, valueJson: '1', ifVersion: 0, expiry: { kind: 'ttl', ms: 500 }, tag: undefined });
  assert.equal(request({ op: 'incr', key: 'n' }), { type: 'incr', id: 1, key: 'n', by: 1, ifVersion: undefined, expiry: undefined, tag: undefined });
  assert.equal(request({ op: 'incr', key: 'n', by: -2.5, expiresAt: 1_800_000_000_000 }), { type: 'incr', id: 1, key: 'n', by: -2.5, ifVersion: undefined, expiry: { kind: 'at', ms: 1_800_000_000_000 }, tag: undefined });
  assert.equal(request({ op: 'del', key: 'k', ifVersion: 17 }), { type: 'del', id: 1, key: 'k', ifVersion: 17, tag: undefined });
  assert.equal(request({ op: 'list', prefix: '' }), { type: 'list', id: 1, prefix: '', after: undefined, limit: 100, values: true });
  assert.equal(request({ op: 'list', prefix: 'u:', after: 'u:3', limit: 1000, values: false }), { type: 'list', id: 1, prefix: 'u:', after: 'u:3', limit: 1000, values: false });
  assert.equal(request({ op: 'clear', prefix: 's:' }), { type: 'clear', id: 1, prefix: 's:', limit: 10_000, tag: undefined });
  for (const [frame, code] of [
    [{ op: 'put', key: 'k', value: 1, ttlMs: 5, expiresAt: 9 }, 'BAD_REQUEST'],
    [{ op: 'put', key: 'k', value: 1, ttlMs: 0 }, 'BAD_REQUEST'],
    [{ op: 'put', key: 'k', value: 1, ttlMs: 1.5 }, 'BAD_REQUEST'],
    [{ op: 'put', key: 'k', value: 1, ifVersion: -1 }, 'BAD_REQUEST'],
    [{ op: 'put', key: 'k', value: 1, ifVersion: '3' }, 'BAD_REQUEST'],
    [{ op: 'incr', key: 'n', by: '1' }, 'BAD_REQUEST'],
    [{ op: 'list', prefix: 'u:', limit: 1001 }, 'BAD_REQUEST'],
    [{ op: 'list', prefix: 'u:', limit: 0 }, 'BAD_REQUEST'],
    [{ op: 'list' }, 'BAD_REQUEST'],
    [{ op: 'list', prefix: 'u:', values: 'no' }, 'BAD_REQUEST'],
    [{ op: 'list', prefix: 'k'.repeat(17) }, 'TOO_LARGE'],
    [{ op: 'clear', prefix: 's:', limit: 10_001 }, 'BAD_REQUEST'],
    [{ op: 'clear', prefix: '\ud800' }, 'BAD_REQUEST'],
  ] as const) {
    assert.is(request(frame), code, JSON.stringify(frame));
  }
  // A by of 1e400 is Infinity once parsed: a JSON number, but not a finite one.
  const infinite = parseNodeFrame('{"id": 1, "op": "incr", "key": "n", "by": 1e400}', limits);
  assert.is(!infinite.ok && infinite.error.code, 'BAD_REQUEST');
});

Parse('text commands read like their JSON frames', () => {
  assert.equal(parseTextCommand('put color light blue'), { op: 'put', id: null, key: 'color', value: 'light blue' });
  assert.equal(parseTextCommand('GET color\n'), { op: 'get', id: null, key: 'color' });
  assert.equal(parseTextCommand('del color'), { op: 'del', id: null, key: 'color' });
  assert.equal(parseTextCommand('help'), { op: 'help', id: null });
  assert.instance(parseTextCommand('put'), KvError);
});

Parse('the hub has its own ops and refuses node ops', () => {
  assert.equal(parseHubFrame('lookup kv'), { ok: true, request: { type: 'lookup', id: null, service: 'kv' } });
  const put = parseHubFrame('{"id": 1, "op": "put", "key": "a", "value": 1}');
  assert.is(!put.ok && put.error.code, 'BAD_REQUEST');
  const address = parseHubFrame('{"id": 2, "op": "register", "name": "n9", "address": "http://x"}');
  assert.is(!address.ok && address.error.code, 'BAD_REQUEST');
});

Parse.run();
