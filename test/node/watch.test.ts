/**
 * Watches over real sockets and SQLite files (PROTOCOL.md, "Watching changes"): events
 * name only acknowledged writes, in version order, once each; history from the log meets
 * the live events with no gap and no duplicate; a watcher that does not read is cut off.
 */
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { openStore } from '../../src/storage/open-store.js';
import { Disposer, RawClient, tempDir, waitFor, type Frame } from '../helpers.js';
import { GatedStore } from '../stores.js';

const disposer = new Disposer();

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<InProcessCluster> {
  const dataDir = options.dataDir ?? (await tempDir(disposer));
  return disposer.add(await startInProcessCluster({ dataDir, ...options }), (cluster) => cluster.close());
}

/** The next `count` frames of `raw`, in order. */
async function frames(raw: RawClient, count: number): Promise<Frame[]> {
  const got: Frame[] = [];
  while (got.length < count) got.push(await raw.next());
  return got;
}

/** Events of watch `id` until one at `version` (or past it), failing on anything else. */
async function eventsThrough(raw: RawClient, id: number, version: number): Promise<Frame[]> {
  const events: Frame[] = [];
  for (;;) {
    const frame = await raw.next();
    assert.is(frame['id'], id, `an event of watch ${id}: ${JSON.stringify(frame)}`);
    events.push(frame);
    if (frame['version'] >= version) return events;
  }
}

const Watch = suite('node: watches (only acknowledged changes, in version order, with history)');
Watch.after.each(() => disposer.dispose());

Watch('put, incr, del, clear and an expiry delete each send one event in version order; a del that found nothing sends none', async () => {
  const cluster = await start();
  const writer = await RawClient.open(cluster.primary.url, disposer);
  const watcher = await RawClient.open(cluster.primary.url, disposer);
  assert.equal(await watcher.ask({ id: 10, op: 'watch', prefix: 'user:' }), { id: 10, ok: true, watching: true, version: 0 });
  assert.equal(await writer.ask({ id: 1, op: 'put', key: 'user:1', value: { name: 'ann' } }), { id: 1, ok: true, version: 1 });
  await writer.ask({ id: 2, op: 'put', key: 'other', value: 1 });
  await writer.ask({ id: 3, op: 'incr', key: 'user:n', by: 2 });
  await writer.ask({ id: 4, op: 'del', key: 'user:absent' });
  await writer.ask({ id: 5, op: 'del', key: 'user:n' });
  await writer.ask({ id: 6, op: 'put', key: 'user:2', value: 'b' });
  await writer.ask({ id: 7, op: 'put', key: 'user:brief', value: 'gone soon', ttlMs: 1 });
  const expired = await eventsThrough(watcher, 10, 7);
  assert.equal(expired, [
    { id: 10, event: 'put', key: 'user:1', value: { name: 'ann' }, version: 1 },
    { id: 10, event: 'put', key: 'user:n', value: 2, version: 3 },
    { id: 10, event: 'del', key: 'user:n', version: 5 },
    { id: 10, event: 'put', key: 'user:2', value: 'b', version: 6 },
    { id: 10, event: 'put', key: 'user:brief', value: 'gone soon', version: 7 },
  ]);
  // The expirer deletes the key as an ordinary write: a del event.
  const [expiry] = await frames(watcher, 1);
  assert.equal(expiry, { id: 10, event: 'del', key: 'user:brief', version: 8 });
  assert.equal(await writer.ask({ id: 8, op: 'clear', prefix: 'user:' }), { id: 8, ok: true, deleted: 2, more: false, version: 9 });
  assert.equal(await watcher.next(), { id: 10, event: 'clear', prefix: 'user:', keys: ['user:1', 'user:2'], version: 9 });
  // A clear of keys the watch does not cover sends nothing: the next frame is the next put's event.
  await writer.ask({ id: 9, op: 'clear', prefix: 'other' });
  await writer.ask({ id: 10, op: 'put', key: 'user:3', value: 3 });
  assert.equal(await watcher.next(), { id: 10, event: 'put', key: 'user:3', value: 3, version: 11 });
});

Watch('a key watch sees only its key; a prefix watch narrower than a clear lists only its keys; unwatch ends a watch', async () => {
  const cluster = await start();
  const writer = await RawClient.open(cluster.primary.url, disposer);
  const watcher = await RawClient.open(cluster.primary.url, disposer);
  assert.is((await watcher.ask({ id: 'k', op: 'watch', key: 'a:1' }))['watching'], true);
  assert.is((await watcher.ask({ id: 'p', op: 'watch', prefix: 'a:2' }))['watching'], true);
  assert.is((await watcher.ask({ id: 'p', op: 'watch', prefix: 'b' }))['error']?.code, 'BAD_REQUEST', 'an id in use is refused');
  assert.is((await watcher.ask({ id: 'x', op: 'watch', key: 'a', prefix: 'a' }))['error']?.code, 'BAD_REQUEST', 'a key or a prefix, not both');
  for (const key of ['a:1', 'a:10', 'a:2', 'a:20', 'a:3']) await writer.ask({ id: 1, op: 'put', key, value: key });
  assert.equal(await frames(watcher, 3), [
    { id: 'k', event: 'put', key: 'a:1', value: 'a:1', version: 1 },
    { id: 'p', event: 'put', key: 'a:2', value: 'a:2', version: 3 },
    { id: 'p', event: 'put', key: 'a:20', value: 'a:20', version: 4 },
  ]);
  await writer.ask({ id: 2, op: 'clear', prefix: 'a:' });
  assert.equal(await frames(watcher, 2), [
    { id: 'k', event: 'clear', prefix: 'a:', keys: ['a:1'], version: 6 },
    { id: 'p', event: 'clear', prefix: 'a:', keys: ['a:2', 'a:20'], version: 6 },
  ]);
  assert.equal(await watcher.ask({ id: 'u', op: 'unwatch', watch: 'k' }), { id: 'u', ok: true });
  await writer.ask({ id: 3, op: 'put', key: 'a:1', value: 'again' });
  await writer.ask({ id: 4, op: 'put', key: 'a:2', value: 'again' });
  // No event of the watch that ended: the next frame is the other watch's.
  assert.equal(await watcher.next(), { id: 'p', event: 'put', key: 'a:2', value: 'again', version: 8 });
  assert.is(cluster.primary.watchers, 1);
  watcher.close();
  await waitFor('a closed connection to end its watches', () => cluster.primary.watchers === 0);
});

Watch('fromVersion replays the log, then goes on live: with writes racing the watch, every version arrives exactly once, in order', async () => {
  const cluster = await start();
  const writer = await RawClient.open(cluster.primary.url, disposer);
  const historic = await RawClient.open(cluster.primary.url, disposer);
  const live = await RawClient.open(cluster.primary.url, disposer);
  const total = 600;
  for (let index = 0; index < total; index += 1) writer.send({ id: index, op: 'put', key: `k${index % 7}`, value: index });
  // The watches start while the puts are being written and acknowledged.
  let answered = 0;
  while (answered < total / 3) {
    await writer.next();
    answered += 1;
  }
  historic.send({ id: 1, op: 'watch', prefix: '', fromVersion: 1 });
  live.send({ id: 2, op: 'watch', prefix: 'k' });
  await frames(writer, total - answered);
  const historicReply = await historic.next();
  const liveReply = await live.next();
  assert.is(historicReply['watching'], true);
  assert.ok(historicReply['version'] >= total / 3 && historicReply['version'] <= total, `the reply's version ${historicReply['version']}`);
  const versionsOf = (events: Frame[]) => events.map((event) => event['version']);
  const all = await eventsThrough(historic, 1, total);
  assert.equal(versionsOf(all), Array.from({ length: total }, (_, index) => index + 1), 'every version once, in order, history and live alike');
  assert.equal(all.map((event) => event['value']), Array.from({ length: total }, (_, index) => index));
  const after = liveReply['version'] as number;
  const liveEvents = after === total ? [] : await eventsThrough(live, 2, total);
  assert.equal(versionsOf(liveEvents), Array.from({ length: total - after }, (_, index) => after + index + 1), 'a watch without fromVersion: every version after its reply');
});

Watch('a fromVersion the log no longer reaches is COMPACTED with the oldest version kept, from which a watch replays', async () => {
  const cluster = await start({ nodeOptions: { replicationLogEntriesMax: 10 } });
  const raw = await RawClient.open(cluster.primary.url, disposer);
  for (let index = 1; index <= 30; index += 1) await raw.ask({ id: index, op: 'put', key: 'k', value: index });
  const compacted = await raw.ask({ id: 'w', op: 'watch', key: 'k', fromVersion: 5 });
  assert.is(compacted['error']?.code, 'COMPACTED');
  const oldest = compacted['error'].version as number;
  assert.ok(oldest > 5 && oldest <= 21, `the oldest version kept: ${oldest}`);
  assert.equal(await raw.ask({ id: 'w', op: 'watch', key: 'k', fromVersion: oldest }), { id: 'w', ok: true, watching: true, version: 30 });
  const replayed = await eventsThrough(raw, 'w' as unknown as number, 30);
  assert.equal(replayed.map((event) => event['value']), Array.from({ length: 31 - oldest }, (_, index) => oldest + index));
});

Watch('an event is sent only once every replica holds the write', async () => {
  const dataDir = await tempDir(disposer);
  const held = new GatedStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 20_000 }, perNode: { n1: { store: held } } });
  const writer = await RawClient.open(cluster.primary.url, disposer);
  const watcher = await RawClient.open(cluster.primary.url, disposer);
  await writer.ask({ id: 1, op: 'put', key: 'k', value: 'before' });
  assert.is((await watcher.ask({ id: 'w', op: 'watch', key: 'k' }))['version'], 1);
  held.closeGate();
  const arrived = held.arrived;
  writer.send({ id: 2, op: 'put', key: 'k', value: 'held' });
  await waitFor('the replica to receive the put', () => held.arrived > arrived);
  // The primary has committed the put and sent it; had it announced it, the event would be ahead of this reply.
  assert.equal(await watcher.ask({ id: 'g', op: 'get', key: 'other' }), { id: 'g', ok: true, found: false });
  held.openGate();
  assert.equal(await writer.next(), { id: 2, ok: true, version: 2 });
  assert.equal(await watcher.next(), { id: 'w', event: 'put', key: 'k', value: 'held', version: 2 });
});

Watch('a watcher that never reads is cut off with cancelled; the node stays up and serves a new watcher', async () => {
  const cluster = await start({ nodeOptions: { sendBufferBytesMax: 64 * 1024 } });
  const writer = await RawClient.open(cluster.primary.url, disposer);
  const slow = await RawClient.open(cluster.primary.url, disposer);
  assert.is((await slow.ask({ id: 's', op: 'watch', prefix: '' }))['watching'], true);
  slow.socket.pause();
  const value = 'x'.repeat(100_000);
  let version = 0;
  for (let index = 0; cluster.primary.watchers > 0; index += 1) {
    // Loopback socket buffers hold a few MB; the watcher's own queue 2 MiB past them.
    assert.ok(index < 400, 'the watcher was cut off before 40 MB were written');
    version = (await writer.ask({ id: index, op: 'put', key: `big${index % 10}`, value }))['version'];
  }
  const fresh = await RawClient.open(cluster.primary.url, disposer);
  assert.equal(await fresh.ask({ id: 'f', op: 'watch', key: 'small' }), { id: 'f', ok: true, watching: true, version });
  await writer.ask({ id: 'p', op: 'put', key: 'small', value: 1 });
  assert.equal(await fresh.next(), { id: 'f', event: 'put', key: 'small', value: 1, version: version + 1 });
  // The slow watcher reads at last: consecutive events, then cancelled at the last version it was sent.
  slow.socket.resume();
  let last = 0;
  for (;;) {
    const frame = await slow.next();
    if (frame['event'] === 'cancelled') {
      assert.is(frame['error'].code, 'UNAVAILABLE');
      assert.match(frame['error'].message, /wait unsent, over the limit/, 'its own queue cut it off, not the node-wide bound');
      assert.is(frame['version'], last, 'resume from the version after the last one sent');
      break;
    }
    assert.is(frame['version'], last + 1, 'events arrive in order with no gap');
    last = frame['version'];
  }
  assert.ok(last < version, `cut off before the end (${last} of ${version})`);
});

Watch.run();
