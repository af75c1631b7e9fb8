/**
 * How long clearing a large prefix takes, and how long other writes wait meanwhile:
 *   npm run clear-probe -- [--keys 1000000] [--value-bytes 100]
 * Starts a local cluster of processes (a hub, a primary and two replicas, SQLite normal),
 * loads --keys keys under `bulk:`, then clears them the way a client does (one clear
 * request after another while `more` is true) while a second connection keeps one put in
 * flight to another key. Prints the clear's time and chunks, and the other writes' latency
 * (p50, p99, max) during the clear beside the same writes' latency before it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { localClusterSpec } from '../src/cluster/config.js';
import { spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import { HubClient } from '../src/hub/hub-client.js';

const { values } = parseArgs({ options: { keys: { type: 'string', default: '1000000' }, 'value-bytes': { type: 'string', default: '100' } } });
const keys = Number(values.keys);
const value = JSON.stringify('v'.repeat(Math.max(0, Number(values['value-bytes']) - 2)));
/** Writes timed before the clear, for the baseline. */
const BASELINE_WRITES = 2_000;
/** The load's requests in flight on its one connection. */
const LOAD_IN_FLIGHT = 1_000;

class Connection {
  private nextId = 0;
  private readonly waiting = new Map<number, (reply: Record<string, any>) => void>();
  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const reply = JSON.parse(data.toString()) as Record<string, any>;
      this.waiting.get(reply['id'])?.(reply);
      this.waiting.delete(reply['id']);
    });
  }
  static open(url: string): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
      socket.once('open', () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }
  ask(fields: Record<string, unknown>): Promise<Record<string, any>> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.socket.send(JSON.stringify({ ...fields, id }));
    });
  }
  close(): void {
    this.socket.close();
  }
}

function percentiles(samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(1);
  return `p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${sorted.at(-1)!.toFixed(1)} ms (${sorted.length} writes)`;
}

async function timedWrites(connection: Connection, until: () => boolean, countMax = Number.MAX_SAFE_INTEGER): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; !until() && i < countMax; i += 1) {
    const started = performance.now();
    const reply = await connection.ask({ op: 'put', key: `other:${i % 100}`, value: i });
    if (!reply['ok']) throw new Error(`a write failed: ${JSON.stringify(reply)}`);
    samples.push(performance.now() - started);
  }
  return samples;
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'pbkv-clear-'));
const spec = localClusterSpec({ replicas: 2, dataDir, sync: 'normal', hubPort: 0, nodePortFirst: 0 });
const children: ChildHandle[] = [];
try {
  const hub = await spawnHub(spec, {});
  children.push(hub);
  for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url, {}));
  const hubClient = new HubClient(hub.url);
  let url: string | undefined;
  while (!url) url = await hubClient.lookup('kv').then((found) => found.address, () => undefined);
  await hubClient.close();
  const load = await Connection.open(url);
  // The cluster takes writes once its first view has a lease from every replica.
  while (!(await load.ask({ op: 'put', key: 'warm', value: 1 }))['ok']);
  const loadStarted = performance.now();
  let sent = 0;
  await Promise.all(Array.from({ length: LOAD_IN_FLIGHT }, async () => {
    while (sent < keys) {
      const i = sent++;
      const reply = await load.ask({ op: 'put', key: `bulk:${String(i).padStart(8, '0')}`, value: JSON.parse(value) });
      if (!reply['ok']) throw new Error(`load failed: ${JSON.stringify(reply)}`);
    }
  }));
  console.log(`loaded ${keys} keys in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s`);
  const other = await Connection.open(url);
  const baseline = await timedWrites(other, () => false, BASELINE_WRITES);
  console.log(`other writes before the clear: ${percentiles(baseline)}`);
  let clearing = true;
  const during = timedWrites(other, () => !clearing);
  const started = performance.now();
  let chunks = 0;
  let deleted = 0;
  for (;;) {
    const reply = await load.ask({ op: 'clear', prefix: 'bulk:' });
    if (!reply['ok']) throw new Error(`clear failed: ${JSON.stringify(reply)}`);
    chunks += 1;
    deleted += reply['deleted'];
    if (!reply['more']) break;
  }
  const clearMs = performance.now() - started;
  clearing = false;
  console.log(`cleared ${deleted} keys in ${(clearMs / 1000).toFixed(2)} s, ${chunks} chunks (${(deleted / (clearMs / 1000)).toFixed(0)} keys/s)`);
  console.log(`other writes during the clear: ${percentiles(await during)}`);
  load.close();
  other.close();
} finally {
  for (const child of [...children].reverse()) await child.stop();
  await rm(dataDir, { recursive: true, force: true });
}
