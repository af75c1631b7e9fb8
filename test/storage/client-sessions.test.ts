import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RequestTag, WriteOp } from '../../src/protocol/messages.js';
import { isSessionResults } from '../../src/protocol/messages.js';
import { ClientSessions, replyFields, replyOf, resultOf } from '../../src/storage/client-sessions.js';

const Sessions = suite('storage: client sessions of request tags');

const tag = (client: string, req: number): RequestTag => ({ client, req });
const put = (key: string, client: string, req: number): WriteOp => ({ kind: 'put', key, valueJson: '1', expiresAt: undefined, incr: false, tag: tag(client, req) });
const del = (key: string, client: string, req: number, found = false): WriteOp => ({ kind: 'del', key, found, expiredAt: undefined, tag: tag(client, req) });
const incr = (key: string, value: number, client: string, req: number): WriteOp => ({ kind: 'put', key, valueJson: JSON.stringify(value), expiresAt: undefined, incr: true, tag: tag(client, req) });
const clear = (keys: string[], deleted: number, more: boolean, client: string, req: number): WriteOp => ({ kind: 'clear', prefix: '', keys, deleted, more, tag: tag(client, req) });

/** Plans and commits one batch, as a store does once its transaction committed. */
function apply(sessions: ClientSessions, first: number, ops: WriteOp[]): void {
  sessions.commit(sessions.plan(first, ops));
}

const applied = (reply: string, seq: number) => ({ kind: 'applied', reply, seq });

Sessions('every kind of write is answered with its first reply, version included; a new request is new', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 8 });
  apply(sessions, 1, [put('a', 'c', 1), del('a', 'c', 2, true), del('b', 'c', 3), incr('n', -2.5, 'c', 4), clear(['x', 'y'], 1, true, 'c', 5)]);
  assert.equal(sessions.check(tag('c', 1)), applied('"version":1', 1));
  assert.equal(sessions.check(tag('c', 2)), applied('"found":true,"version":2', 2));
  assert.equal(sessions.check(tag('c', 3)), applied('"found":false,"version":3', 3));
  assert.equal(sessions.check(tag('c', 4)), applied('"value":-2.5,"version":4', 4));
  assert.equal(sessions.check(tag('c', 5)), applied('"deleted":1,"more":true,"version":5', 5));
  assert.equal(sessions.check(tag('c', 6)), { kind: 'new' });
  assert.equal(sessions.check(tag('other', 1)), { kind: 'new' });
  assert.equal(sessions.get('c'), { client: 'c', req: 5, seq: 5, results: ['c5:1:1', 'i4:-2.5', 'f3', 't2', 'p1'] });
});

Sessions('a result reads back as the reply it records, and the wire check takes exactly these forms', () => {
  for (const [op, seq, reply] of [
    [put('k', 'c', 1), 9, '"version":9'],
    [incr('k', 1e21, 'c', 1), 10, '"value":1e+21,"version":10'],
    [clear([], 0, false, 'c', 1), 11, '"deleted":0,"more":false,"version":11'],
    [clear(['a', 'b'], 2, true, 'c', 1), 12, '"deleted":2,"more":true,"version":12'],
    [del('k', 'c', 1, true), 13, '"found":true,"version":13'],
    [del('k', 'c', 1), 14, '"found":false,"version":14'],
  ] as const) {
    const result = resultOf(op, seq);
    assert.ok(isSessionResults([result], 8), result);
    assert.equal(replyFields(result), { reply, seq });
    assert.is(replyOf(op, seq), reply, 'the first reply, built at once, is the one a retry reads back');
  }
  for (const bad of [[], ['x1'], ['p'], ['i3:abc'], ['c3:1'], ['p1', 5]]) assert.not.ok(isSessionResults(bad, 8), JSON.stringify(bad));
  assert.not.ok(isSessionResults(['p1', 'p2', 'p3'], 2), 'longer than the window');
});

Sessions('a request that failed (a gap) or arrives late is new, and is then remembered', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 8 });
  apply(sessions, 1, [put('a', 'c', 5)]);
  // 1-4 were never seen: below the session's first request, and after it (3, 4) as gaps.
  apply(sessions, 2, [put('a', 'c', 8)]);
  assert.equal(sessions.get('c')!.results, ['p2', '.', '.', 'p1']);
  for (const req of [1, 4, 6, 7]) assert.equal(sessions.check(tag('c', req)), { kind: 'new' }, `req ${req}`);
  apply(sessions, 3, [del('x', 'c', 6, true), put('a', 'c', 2)]);
  assert.equal(sessions.get('c')!.results, ['p2', '.', 't3', 'p1', '.', '.', 'p4'], 'req 8 first, then 7 to 2');
  assert.equal(sessions.check(tag('c', 6)), applied('"found":true,"version":3', 3));
  assert.equal(sessions.check(tag('c', 2)), applied('"version":4', 4));
  assert.is(sessions.get('c')!.req, 8, 'a late request does not lower the newest');
});

Sessions('past the window a request is stale; the window slides with the newest request', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 4 });
  apply(sessions, 1, [1, 2, 3, 4, 5, 6].map((req) => put('k', 'c', req)));
  assert.equal(sessions.get('c')!.results, ['p6', 'p5', 'p4', 'p3']);
  assert.equal(sessions.check(tag('c', 3)), applied('"version":3', 3));
  assert.equal(sessions.check(tag('c', 2)), { kind: 'stale', oldest: 3 });
  // A jump further than the window leaves only the new request.
  apply(sessions, 7, [put('k', 'c', 100)]);
  assert.equal(sessions.get('c')!.results, ['p7', '.', '.', '.']);
  assert.equal(sessions.check(tag('c', 6)), { kind: 'stale', oldest: 97 });
  // A stale request that reaches a store anyway (none should) changes no session.
  const before = sessions.get('c');
  apply(sessions, 8, [put('k', 'c', 50)]);
  assert.is(sessions.get('c'), before);
});

Sessions('past sessionsMax the least recently written client is forgotten, never one of the batch', () => {
  const sessions = new ClientSessions({ sessionsMax: 3, window: 8 });
  apply(sessions, 1, [put('k', 'a', 1), put('k', 'b', 1), put('k', 'c', 1)]);
  apply(sessions, 4, [put('k', 'a', 2)]);
  // b wrote least recently: d takes its place.
  const changes = sessions.plan(5, [put('k', 'd', 1)]);
  assert.equal(changes.forgotten, ['b']);
  sessions.commit(changes);
  assert.equal(sessions.all().map((session) => session.client), ['c', 'a', 'd']);
  assert.equal(sessions.check(tag('b', 1)), { kind: 'new' }, 'forgotten: a retry now would be applied again');
  // A batch of more new clients than the limit keeps its own.
  const flood = sessions.plan(6, [put('k', 'x', 1), put('k', 'y', 1), put('k', 'a', 3)]);
  assert.equal(flood.forgotten, ['c', 'd']);
  sessions.commit(flood);
  assert.equal(sessions.all().map((session) => session.client), ['x', 'y', 'a']);
});

Sessions('a plan changes nothing until committed; replicas applying the same batches hold the same sessions', () => {
  const primary = new ClientSessions({ sessionsMax: 2, window: 4 });
  const replica = new ClientSessions({ sessionsMax: 2, window: 4 });
  const planned = primary.plan(1, [put('k', 'a', 1)]);
  assert.is(primary.size, 0, 'a batch that failed to commit leaves no trace');
  assert.ok(planned.changed.length === 1);
  const batches: [number, WriteOp[]][] = [
    [1, [put('k', 'a', 1), del('k', 'b', 7, true)]],
    [3, [put('k', 'c', 2), { kind: 'put', key: 'untagged', valueJson: '2', expiresAt: undefined, incr: false, tag: undefined }]],
    [5, [del('k', 'a', 3, true), put('k', 'a', 2)]],
  ];
  for (const [first, ops] of batches) {
    apply(primary, first, ops);
    apply(replica, first, ops);
  }
  assert.equal(replica.all(), primary.all());
  assert.equal(primary.all().map((session) => [session.client, session.seq, session.results]), [['c', 3, ['p3']], ['a', 6, ['t5', 'p6']]]);
  const copy = new ClientSessions({ sessionsMax: 2, window: 4 });
  copy.replace(primary.all());
  assert.equal(copy.all(), primary.all());
});

Sessions.run();
