import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RequestTag, WriteOp } from '../../src/protocol/messages.js';
import { ClientSessions } from '../../src/storage/client-sessions.js';

const Sessions = suite('storage: client sessions of request tags');

const tag = (client: string, req: number): RequestTag => ({ client, req });
const put = (key: string, client: string, req: number): WriteOp => ({ kind: 'put', key, valueJson: '1', tag: tag(client, req) });
const del = (key: string, client: string, req: number): WriteOp => ({ kind: 'del', key, tag: tag(client, req) });

/** Plans and commits one batch, as a store does once its transaction committed. */
function apply(sessions: ClientSessions, first: number, ops: WriteOp[], found: boolean[] = ops.map(() => false)): void {
  sessions.commit(sessions.plan(first, ops, found));
}

Sessions('a put and a del are answered from their first reply; a new request is new', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 8 });
  apply(sessions, 1, [put('a', 'c', 1), del('a', 'c', 2), del('b', 'c', 3)], [false, true, false]);
  assert.equal(sessions.check(tag('c', 1)), { kind: 'applied', found: false, seq: 3 });
  assert.equal(sessions.check(tag('c', 2)), { kind: 'applied', found: true, seq: 3 });
  assert.equal(sessions.check(tag('c', 3)), { kind: 'applied', found: false, seq: 3 });
  assert.equal(sessions.check(tag('c', 4)), { kind: 'new' });
  assert.equal(sessions.check(tag('other', 1)), { kind: 'new' });
  assert.equal(sessions.get('c'), { client: 'c', req: 3, seq: 3, results: 'ftp' });
});

Sessions('a request that failed (a gap) or arrives late is new, and is then remembered', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 8 });
  apply(sessions, 1, [put('a', 'c', 5)]);
  // 1-4 were never seen: below the session's first request, and after it (3, 4) as gaps.
  apply(sessions, 2, [put('a', 'c', 8)]);
  assert.is(sessions.get('c')!.results, 'p..p');
  for (const req of [1, 4, 6, 7]) assert.equal(sessions.check(tag('c', req)), { kind: 'new' }, `req ${req}`);
  apply(sessions, 3, [del('x', 'c', 6), put('a', 'c', 2)], [true, false]);
  assert.is(sessions.get('c')!.results, 'p.tp..p', 'req 8 first, then 7 to 2');
  assert.equal(sessions.check(tag('c', 6)), { kind: 'applied', found: true, seq: 4 });
  assert.equal(sessions.check(tag('c', 2)), { kind: 'applied', found: false, seq: 4 });
  assert.is(sessions.get('c')!.req, 8, 'a late request does not lower the newest');
});

Sessions('past the window a request is stale; the window slides with the newest request', () => {
  const sessions = new ClientSessions({ sessionsMax: 10, window: 4 });
  apply(sessions, 1, [1, 2, 3, 4, 5, 6].map((req) => put('k', 'c', req)));
  assert.is(sessions.get('c')!.results, 'pppp');
  assert.equal(sessions.check(tag('c', 3)), { kind: 'applied', found: false, seq: 6 });
  assert.equal(sessions.check(tag('c', 2)), { kind: 'stale', oldest: 3 });
  // A jump further than the window leaves only the new request.
  apply(sessions, 7, [put('k', 'c', 100)]);
  assert.is(sessions.get('c')!.results, 'p...');
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
  const changes = sessions.plan(5, [put('k', 'd', 1)], [false]);
  assert.equal(changes.forgotten, ['b']);
  sessions.commit(changes);
  assert.equal(sessions.all().map((session) => session.client), ['c', 'a', 'd']);
  assert.equal(sessions.check(tag('b', 1)), { kind: 'new' }, 'forgotten: a retry now would be applied again');
  // A batch of more new clients than the limit keeps its own.
  const flood = sessions.plan(6, [put('k', 'x', 1), put('k', 'y', 1), put('k', 'a', 3)], [false, false, false]);
  assert.equal(flood.forgotten, ['c', 'd']);
  sessions.commit(flood);
  assert.equal(sessions.all().map((session) => session.client), ['x', 'y', 'a']);
});

Sessions('a plan changes nothing until committed; replicas applying the same batches hold the same sessions', () => {
  const primary = new ClientSessions({ sessionsMax: 2, window: 4 });
  const replica = new ClientSessions({ sessionsMax: 2, window: 4 });
  const planned = primary.plan(1, [put('k', 'a', 1)], [false]);
  assert.is(primary.size, 0, 'a batch that failed to commit leaves no trace');
  assert.ok(planned.changed.length === 1);
  const batches: [number, WriteOp[], boolean[]][] = [
    [1, [put('k', 'a', 1), del('k', 'b', 7)], [false, true]],
    [3, [put('k', 'c', 2), { kind: 'put', key: 'untagged', valueJson: '2' }], [false, false]],
    [5, [del('k', 'a', 3), put('k', 'a', 2)], [true, false]],
  ];
  for (const [first, ops, found] of batches) {
    apply(primary, first, ops, found);
    apply(replica, first, ops, found);
  }
  assert.equal(replica.all(), primary.all());
  assert.equal(primary.all().map((session) => [session.client, session.seq, session.results]), [['c', 3, 'p'], ['a', 6, 'tp']]);
  const copy = new ClientSessions({ sessionsMax: 2, window: 4 });
  copy.replace(primary.all());
  assert.equal(copy.all(), primary.all());
});

Sessions.run();
