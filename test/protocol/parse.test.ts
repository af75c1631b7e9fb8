import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHubFrame, parseNodeFrame } from '../../src/protocol/parse.js';
import { parseTextCommand } from '../../src/protocol/text-commands.js';
import { KvError } from '../../src/errors.js';
import { VALUE_DEPTH_MAX } from '../../src/constants.js';
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
  assert.equal(noId.ok && noId.request, { type: 'del', id: null, key: 'k', tag: undefined });
});

Parse('a request tag rides on a put or del; a client id at the length limit passes', () => {
  const client = 'c'.repeat(64);
  const put = parseNodeFrame(JSON.stringify({ id: 7, op: 'put', key: 'n', value: 1, client, req: 42 }), limits);
  assert.equal(put.ok && put.request, { type: 'put', id: 7, key: 'n', value: 1, valueJson: '1', tag: { client, req: 42 } });
  const del = parseNodeFrame('{"id": 8, "op": "del", "key": "n", "client": "c-3f2a9e", "req": 9007199254740991}', limits);
  assert.equal(del.ok && del.request, { type: 'del', id: 8, key: 'n', tag: { client: 'c-3f2a9e', req: 9007199254740991 } });
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
  const parsed = parseNodeFrame('{"id": 1, "op": "append", "epoch": 2, "first": 5, "ops": [["p", "a", "1"], ["d", "b"], ["p", "c", 1, "c-1", 3], ["d", "e", "c-1", 4]]}', limits);
  assert.ok(parsed.ok);
  assert.equal(parsed.ok && parsed.request, {
    type: 'append', id: 1, epoch: 2, first: 5,
    ops: [
      { kind: 'put', key: 'a', valueJson: '"1"', tag: undefined },
      { kind: 'del', key: 'b', tag: undefined },
      { kind: 'put', key: 'c', valueJson: '1', tag: { client: 'c-1', req: 3 } },
      { kind: 'del', key: 'e', tag: { client: 'c-1', req: 4 } },
    ],
  });
  const last = parseNodeFrame('{"id": 2, "op": "snapshot", "epoch": 2, "seq": 9, "part": 3, "done": true, "entries": [], "sessions": [["c-1", 4, 8, "tp.f"]]}', limits);
  assert.equal(last.ok && last.request.type === 'snapshot' && last.request.sessions, [{ client: 'c-1', req: 4, seq: 8, results: 'tp.f' }]);
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
