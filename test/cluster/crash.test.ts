/**
 * The crash and flood findings of issue 7 over real processes: a hub, a primary n0 and
 * replicas n1, n2 started by the tools, sync normal, each with its own SQLite file in a
 * temp directory. A crash is kill -9 of a child; a lost file is a file deleted or
 * replaced on disk; floods come from this process's own sockets. test/node/hardening.test.ts
 * tests the same findings in one process.
 */
import { copyFile, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import type { HubStatus } from '../../src/hub/hub-client.js';
import { CONNECTIONS_MAX, HANDSHAKES_MAX, HANDSHAKE_TIMEOUT_MS } from '../../src/constants.js';
import { CloseCode } from '../../src/env/transport.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { fileContents, readSqlite } from '../sqlite-files.js';
import { startProcessCluster, type ProcessCluster } from './process-cluster.js';

const disposer = new Disposer();

/** How long a restarted primary may take to halt or to serve. */
const SETTLE_DEADLINE_MS = 15_000;
/** Puts in flight at once from one client. */
const PUTS_IN_FLIGHT_MAX = 32;
/** WebSocket connections opened at once when filling slots: well below HANDSHAKES_MAX, so none is dropped in its handshake. */
const CONNECTS_IN_FLIGHT_MAX = 100;
/** Past the client slots, so the flood is refused as well as held. */
const FLOOD_CONNECTIONS = CONNECTIONS_MAX + 6;
/** The half-open attack of the issue, bounded in count and time. */
const HALF_OPEN_TOTAL = 20_000;
const HALF_OPEN_FLOOD_MS_MAX = 15_000;
/** How late past HANDSHAKE_TIMEOUT_MS a half-open socket may still be closed (a loaded loopback). */
const HALF_OPEN_CLOSE_MARGIN_MS = 2_000;

/** n0's health at the hub once it is `state` as reported by n0's current process (the hub holds its address). */
async function n0AtHub(cluster: ProcessCluster, client: KvClient, state: 'serving') {
  return waitFor(`the hub to show n0 ${state}`, async () => {
    const status = await client.status();
    const health = status.nodes['n0'];
    return status.names['n0'] === cluster.node('n0').url && health?.state === state ? health : undefined;
  }, SETTLE_DEADLINE_MS);
}

/** Puts k<from> .. k<from+count-1> (value: the number), at most PUTS_IN_FLIGHT_MAX at once; fails on the first error. */
async function putAll(client: KvClient, from: number, count: number): Promise<void> {
  let next = from;
  const worker = async () => {
    while (next < from + count) {
      const i = next++;
      await client.put(`k${i}`, i);
    }
  };
  await within(`${count} puts from k${from}`, Promise.all(Array.from({ length: PUTS_IN_FLIGHT_MAX }, worker)), 60_000);
}

/** The first success of `attempt`, retried while `retryable` says so; at the deadline the last error is named. */
async function eventually<T>(what: string, attempt: () => Promise<T>, retryable: (error: unknown) => boolean, deadlineMs: number) {
  let last: unknown;
  let attempts = 0;
  try {
    const value = await waitFor(what, async () => {
      attempts += 1;
      try {
        return { value: await attempt() };
      } catch (error) {
        if (!retryable(error)) throw error;
        last = error;
        return undefined;
      }
    }, deadlineMs);
    return { value: value.value, attempts };
  } catch (error) {
    throw new Error(`${(error as Error).message} (${attempts} attempts; the last failed with: ${String(last)})`);
  }
}

const isUnavailable = (error: unknown) => (error as { code?: string }).code === 'UNAVAILABLE';

async function removeSqlite(file: string): Promise<void> {
  for (const suffix of ['', '-wal', '-shm']) await rm(file + suffix, { force: true });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false);
}

const metaRows = (file: string) => readSqlite(file, 'SELECT name, value FROM pbkv_meta ORDER BY name');

/** Every key k0 .. k<count-1> with its number, as fileContents reads them. */
function expectedKeys(count: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, i]));
}

/** The open-files limit of this process (Linux: /proc/self/limits), or undefined where it cannot be read. */
async function openFilesMax(): Promise<number | undefined> {
  const limits = await readFile('/proc/self/limits', 'utf8').catch(() => '');
  const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1];
  if (soft === undefined) return undefined;
  return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft);
}

/**
 * `count` raw WebSocket connections to `url`, opened at most CONNECTS_IN_FLIGHT_MAX at a
 * time and held open (the disposer closes them). Those past the node's client slots open
 * and are then closed by the node.
 */
async function hold(url: string, count: number): Promise<RawClient[]> {
  const held: RawClient[] = [];
  while (held.length < count) {
    const wave = Math.min(CONNECTS_IN_FLIGHT_MAX, count - held.length);
    // Settled, not all: every connection that opened is on the disposer before a failure is reported.
    const opens = await within(`${wave} connections to ${url}`, Promise.allSettled(Array.from({ length: wave }, () => RawClient.open(url, disposer))));
    const failed = opens.find((open) => open.status === 'rejected');
    if (failed) throw new Error(`a connection to ${url} failed to open after ${held.length}: ${String(failed.reason)}`);
    held.push(...opens.map((open) => (open as PromiseFulfilledResult<RawClient>).value));
  }
  return held;
}

/** Waits until `refused` of the held connections were closed with 1013, then asserts that all others are still open. */
async function assertSlotsFull(name: string, held: RawClient[], refused: number): Promise<void> {
  await waitFor(`${name} to refuse ${refused} connections past its slots`, () =>
    held.filter((c) => c.closeCode === CloseCode.TryAgainLater).length >= refused);
  const closed = held.filter((c) => c.closeCode !== undefined);
  assert.is(closed.length, refused, `${name}: only the connections past its slots were closed (${closed.map((c) => c.closeCode).join(',')})`);
}

const Crash = suite('cluster: kill -9, lost files and floods over real processes');
// When a test fails and its after.each then fails too, uvu reports neither error: say the second here.
Crash.after.each(() =>
  disposer.dispose().catch((error: unknown) => {
    console.error(`disposing what the test started failed: ${String(error)}`);
    throw error;
  }));

Crash('kill -9 of all three nodes right after a burst of acknowledged puts loses none of them', async () => {
  const cluster = await startProcessCluster(disposer);
  const client = cluster.client();
  await eventually('the primary to serve', () => client.put('warm', 0), isUnavailable, SETTLE_DEADLINE_MS);
  await putAll(client, 0, 2_000);
  // No pause, no clean stop: the processes die the moment the last ack arrived.
  await Promise.all(['n0', 'n1', 'n2'].map((name) => cluster.kill(name)));
  const expected = { ...expectedKeys(2_000), warm: 0 };
  for (const name of ['n0', 'n1', 'n2']) {
    assert.equal(await fileContents(cluster.file(name)), expected, `${name}'s file holds every acknowledged put`);
    assert.equal(await metaRows(cluster.file(name)), [{ name: 'epoch', value: 1 }, { name: 'seq', value: 2_001 }], `${name}'s seq`);
  }
});

/** The hub's view once `accept` holds for it. */
async function viewWhere(client: KvClient, what: string, accept: (view: NonNullable<HubStatus['view']>) => boolean) {
  return waitFor(what, async () => {
    const { view } = await client.status();
    return view && accept(view) ? view : undefined;
  }, SETTLE_DEADLINE_MS);
}

/** Every node stopped first (nothing changes the files after), then each file holds `expected`. */
async function assertFilesHold(cluster: ProcessCluster, expected: Record<string, number>): Promise<void> {
  for (const name of ['n0', 'n1', 'n2']) await cluster.node(name).stop();
  for (const name of ['n0', 'n1', 'n2']) assert.equal(await fileContents(cluster.file(name)), expected, `${name} holds every acknowledged write`);
}

Crash('kill -9 of the primary, its files deleted, restarted with the same flags: a replica takes over with every acknowledged write; n0 rejoins by snapshot', async () => {
  const cluster = await startProcessCluster(disposer);
  const client = cluster.client();
  await n0AtHub(cluster, client, 'serving');
  await putAll(client, 0, 2_000);

  await cluster.kill('n0');
  await removeSqlite(cluster.file('n0'));
  await cluster.start('n0');

  const view = await viewWhere(client, 'a replica to take over', (candidate) => candidate.primary !== 'n0');
  assert.match(view.changes.at(-1)!.why, /n0 (missed heartbeats|came back behind where it stood)/);
  for (const i of [0, 1_000, 1_999]) assert.is(await client.get(`k${i}`), i, `k${i} is served by ${view.primary}`);
  await viewWhere(client, 'n0 to rejoin as a replica', (candidate) => candidate.replicas.includes('n0'));
  await assertFilesHold(cluster, expectedKeys(2_000));
});

Crash('kill -9 of the primary restarted on an older copy of its file: a replica takes over and the writes made after the copy survive', async () => {
  const cluster = await startProcessCluster(disposer);
  const n0File = cluster.file('n0');
  const backup = `${n0File}.backup`;
  const client = cluster.client();
  await n0AtHub(cluster, client, 'serving');
  await putAll(client, 0, 1_000);
  await cluster.node('n0').stop();
  assert.is(await cluster.node('n0').exited, 0, 'n0 stops cleanly on SIGTERM');
  assert.not.ok(await exists(`${n0File}-wal`), 'a clean stop leaves no WAL behind: the file alone is the copy');
  await copyFile(n0File, backup);

  // A clean restart on its own file serves again (as primary, or as a replica if the hub
  // gave up on it meanwhile): the writes go on.
  await cluster.start('n0');
  await putAll(cluster.client(), 1_000, 1_000);

  await cluster.kill('n0');
  await removeSqlite(n0File);
  await copyFile(backup, n0File);
  await cluster.start('n0');
  await viewWhere(client, 'a replica to lead while n0 is behind', (candidate) => candidate.primary !== 'n0');
  for (const i of [0, 999, 1_500, 1_999]) assert.is(await client.get(`k${i}`), i, `k${i} survives`);
  await viewWhere(client, 'n0 to rejoin as a replica', (candidate) => candidate.replicas.includes('n0'));
  await assertFilesHold(cluster, expectedKeys(2_000));
});

Crash('1,030 client connections held open to a replica and the primary cannot starve replication across a primary restart', async () => {
  // This process opens three floods (about 3,100 sockets), each node holds one (about
  // 1,030); ulimit -n was 20,000 where this was written. The count cannot be scaled down:
  // the point is to be past a node's 1,024 client slots, so a lower limit fails here, saying so.
  const filesMax = await openFilesMax();
  assert.ok(filesMax === undefined || filesMax >= 4 * FLOOD_CONNECTIONS, `ulimit -n is ${filesMax}: this test needs ${4 * FLOOD_CONNECTIONS}`);
  const cluster = await startProcessCluster(disposer);
  const before = cluster.client(); // holds one of n0's client slots
  await n0AtHub(cluster, before, 'serving');
  await before.put('before', 1);

  const onN1 = await hold(cluster.node('n1').url, FLOOD_CONNECTIONS);
  await assertSlotsFull('n1', onN1, FLOOD_CONNECTIONS - CONNECTIONS_MAX);
  const onN0 = await hold(cluster.node('n0').url, FLOOD_CONNECTIONS);
  await assertSlotsFull('n0', onN0, FLOOD_CONNECTIONS - (CONNECTIONS_MAX - 1));
  await before.put('flooded', 2);

  // The restarted primary's links need slots on the flooded replica.
  await cluster.kill('n0');
  await cluster.start('n0');
  const client = cluster.client();
  await eventually('a put through the restarted primary', () => client.put('first', 0), isUnavailable, SETTLE_DEADLINE_MS);
  const onNewN0 = await hold(cluster.node('n0').url, FLOOD_CONNECTIONS);
  await assertSlotsFull('the restarted n0', onNewN0, FLOOD_CONNECTIONS - (CONNECTIONS_MAX - 1));
  await putAll(client, 0, 200);

  assert.is(onN1.filter((c) => c.closeCode === undefined).length, CONNECTIONS_MAX, 'n1\'s client slots stayed full throughout');
  const expected = { ...expectedKeys(200), before: 1, first: 0, flooded: 2 };
  for (const name of ['n1', 'n2']) assert.equal(await fileContents(cluster.file(name)), expected, `${name} holds every write`);
});

/**
 * TCP connections to host:port that send the start of an HTTP upgrade and nothing more.
 * It never closes a socket itself while it runs; `stop()` (on the disposer) ends the loop
 * and destroys what is left.
 */
class HalfOpenFlood {
  opened = 0;
  connected = 0;
  /** Most connected sockets open at once. */
  connectedAtOnceMax = 0;
  /** For each connected socket the node closed: milliseconds from connect to close. */
  readonly lifetimesMs: number[] = [];
  readonly errors = new Map<string, number>();
  private readonly sockets = new Set<net.Socket>();
  private connectedNow = 0;
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  /** Sockets not closed yet, connected or still connecting. */
  get open(): number {
    return this.sockets.size;
  }

  /** Connected sockets not closed yet: handshakes the node has been sent the start of. */
  get halfOpen(): number {
    return this.connectedNow;
  }

  /** Opens sockets, at most `atOnce` open, until `done()`, `stop()` or the time bound. */
  async run(atOnce: number, done: () => boolean): Promise<void> {
    const end = Date.now() + HALF_OPEN_FLOOD_MS_MAX;
    while (!this.stopped && !done() && Date.now() < end) {
      if (this.sockets.size >= atOnce) {
        await this.nodeClosesOne(end);
        continue;
      }
      const wave = Math.min(CONNECTS_IN_FLIGHT_MAX, atOnce - this.sockets.size);
      for (let i = 0; i < wave; i += 1) this.openOne();
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Destroys the sockets whose connect has not completed (the node has not accepted them
   * yet, so they are not in a handshake); returns how many.
   */
  abandonConnecting(): number {
    const connecting = [...this.sockets].filter((socket) => socket.connecting);
    for (const socket of connecting) socket.destroy();
    return connecting.length;
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
    for (const socket of this.sockets) socket.destroy();
  }

  private openOne(): void {
    const socket = net.connect({ host: this.host, port: this.port });
    let connectedAt: number | undefined;
    this.opened += 1;
    this.sockets.add(socket);
    socket.on('connect', () => {
      connectedAt = Date.now();
      this.connected += 1;
      this.connectedNow += 1;
      this.connectedAtOnceMax = Math.max(this.connectedAtOnceMax, this.connectedNow);
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? error.message;
      this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (connectedAt !== undefined) {
        this.connectedNow -= 1;
        if (!this.stopped) this.lifetimesMs.push(Date.now() - connectedAt);
      }
      this.wake?.();
    });
  }

  private async nodeClosesOne(end: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, end - Date.now()));
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wake = undefined;
  }
}

Crash('20,000 half-open handshakes do not stop a node from serving new clients', async () => {
  // At most 2,000 half-open sockets at once from this process, fewer under a lower fd
  // limit (a quarter of it: the node, the cluster and this process share the machine).
  const filesMax = (await openFilesMax()) ?? 1_024;
  const atOnce = Math.min(2_000, Math.floor(filesMax / 4));
  assert.ok(atOnce > HANDSHAKES_MAX, `ulimit -n is ${filesMax}: too low to open more than ${HANDSHAKES_MAX} half-open connections at once`);
  const cluster = await startProcessCluster(disposer);
  const client = cluster.client();
  await n0AtHub(cluster, client, 'serving');
  const n0 = cluster.node('n0');
  const { hostname, port } = new URL(n0.url);

  const flood = disposer.add(new HalfOpenFlood(hostname, Number(port)), (f) => f.stop());
  let probe: { attempts: number; halfOpenAtReply: number } | undefined;
  const flooding = flood.run(atOnce, () => flood.connected >= HALF_OPEN_TOTAL && probe !== undefined);
  await waitFor('the flood to be under way', () => flood.connected >= atOnce);
  const probed = await eventually('a new client to put and get on n0 during the flood', async () => {
    const raw = await RawClient.open(n0.url, disposer);
    const put = await raw.ask({ id: 1, op: 'put', key: 'during', value: 'flood' });
    assert.equal(put, { id: 1, ok: true, version: put['version'] });
    const reply = await raw.ask({ id: 2, op: 'get', key: 'during' });
    return { reply, halfOpenAtReply: flood.halfOpen };
  }, (error) => !(error instanceof assert.Assertion), 10_000);
  probe = { attempts: probed.attempts, halfOpenAtReply: probed.value.halfOpenAtReply };
  assert.equal(probed.value.reply, { id: 2, ok: true, found: true, value: 'flood', version: probed.value.reply['version'] });

  await flooding;
  const abandoned = flood.abandonConnecting();
  await waitFor('the node to close every half-open socket', () => flood.open === 0, HANDSHAKE_TIMEOUT_MS + HALF_OPEN_CLOSE_MARGIN_MS);
  const longestMs = flood.lifetimesMs.reduce((a, b) => Math.max(a, b), 0);
  const droppedEarly = flood.lifetimesMs.filter((lifetimeMs) => lifetimeMs < HANDSHAKE_TIMEOUT_MS).length;
  const summary = `${flood.opened} opened, ${flood.connected} connected, ${abandoned} still connecting at the end, ${droppedEarly} closed before the timeout, ` +
    `at most ${flood.connectedAtOnceMax} connected at once, the longest lived ${longestMs} ms, errors ${JSON.stringify([...flood.errors])}; ` +
    `the client needed ${probe.attempts} attempt(s), ${probe.halfOpenAtReply} half-open sockets were open at its reply`;
  assert.ok(flood.connected >= HALF_OPEN_TOTAL, `the whole flood connected within ${HALF_OPEN_FLOOD_MS_MAX} ms (${summary})`);
  assert.ok(probe.halfOpenAtReply > HANDSHAKES_MAX, `the client was served while more half-open sockets were open than the node has handshake slots (${summary})`);
  assert.is(flood.lifetimesMs.length, flood.connected, `every connected socket was closed by the node (${summary})`);
  assert.ok(longestMs <= HANDSHAKE_TIMEOUT_MS + HALF_OPEN_CLOSE_MARGIN_MS, `no half-open socket outlived the handshake timeout (${summary})`);
  assert.ok(droppedEarly > flood.connected / 2, `most were dropped before their timeout to make room: at most ${HANDSHAKES_MAX} wait in a handshake (${summary})`);
  assert.is(n0.process.exitCode, null, 'n0 is still running');
  assert.is(await client.get('during'), 'flood');
});

Crash.run();
