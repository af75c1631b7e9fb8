/**
 * A watcher that never reads, over real processes: while 300 MB of puts go by, the primary
 * (the same process, never restarted) stays under 300 MB of RSS, the watcher is cut off
 * with a `cancelled` event, and a new watcher is still served.
 */
import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { Disposer, RawClient, waitFor, within } from '../helpers.js';
import { startProcessCluster } from './process-cluster.js';

const disposer = new Disposer();
const VALUE_BYTES = 100_000;
const PUTS = 3_000;
const PUTS_IN_FLIGHT = 16;
const RSS_MB_MAX = 300;

/** The process's resident set in MB; 0 once it is gone (the test then finds it not running). */
function rssMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

const Slow = suite('cluster: a watcher that never reads');
Slow.after.each(() => disposer.dispose());

Slow('300 MB of puts go by: the primary stays under 300 MB RSS, cuts the watcher off and serves a new one', async () => {
  const cluster = await startProcessCluster(disposer);
  const client = cluster.client();
  await waitFor('the cluster to take a write', () => client.put('warm', 1).then(() => true, () => false), 20_000);
  const primaryName = (await client.status()).view!.primary;
  const primary = cluster.node(primaryName);
  const pid = primary.process.pid!;

  // The slow watcher: its watch is answered, then its socket stops reading.
  const slow = new WebSocket(primary.url, { perMessageDeflate: false });
  disposer.add(slow, (socket) => socket.terminate());
  const frames: string[] = [];
  slow.on('message', (data) => frames.push(data.toString()));
  await new Promise((resolve) => slow.once('open', resolve));
  slow.send(JSON.stringify({ id: 1, op: 'watch', prefix: '' }));
  await waitFor('the watch to be answered', () => frames.some((frame) => JSON.parse(frame)['watching'] === true));
  slow.pause();

  const value = 'v'.repeat(VALUE_BYTES);
  let next = 0;
  let rssMax = 0;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssMb(pid))), 100);
  try {
    await within('300 MB of puts', Promise.all(Array.from({ length: PUTS_IN_FLIGHT }, async () => {
      while (next < PUTS) {
        const i = next++;
        await client.put(`big:${i % 500}`, `${i}${value}`);
      }
    })), 180_000);
  } finally {
    clearInterval(sampler);
  }
  rssMax = Math.max(rssMax, rssMb(pid));
  console.log(`      ${(PUTS * VALUE_BYTES) / 1e6} MB of puts; the primary's RSS peaked at ${rssMax.toFixed(0)} MB`);
  assert.ok(rssMax < RSS_MB_MAX, `the primary's RSS peaked at ${rssMax.toFixed(0)} MB`);
  assert.is(primary.process.exitCode, null, 'the primary is the same process, still running');

  // Reading again, the watcher finds its watch was cut off (or its connection dropped).
  slow.resume();
  await waitFor('the cancelled event or the dropped connection', () =>
    slow.readyState !== WebSocket.OPEN || frames.some((frame) => JSON.parse(frame)['event'] === 'cancelled'), 30_000);
  const cancelled = frames.map((frame) => JSON.parse(frame)).find((frame) => frame['event'] === 'cancelled');
  if (cancelled) assert.is(cancelled['error'].code, 'UNAVAILABLE');

  // A new watcher is served.
  const fresh = await RawClient.open(primary.url, disposer);
  const reply = await fresh.ask({ id: 2, op: 'watch', prefix: 'big:' });
  assert.is(reply['watching'], true);
  await client.put('big:after', 'x');
  const event = await within('the new watcher\'s event', fresh.next());
  assert.is(event['key'], 'big:after');
});

Slow.run();
