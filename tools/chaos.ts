#!/usr/bin/env node
/**
 * The chaos loop with real processes: npm run chaos [-- --rounds N]
 * A hub and three nodes as child processes on SQLite files in a temp folder, a client
 * writing under load (each put a new key), and in each round: kill -9 of the primary,
 * the time until the first write is acknowledged again, the killed node restarted on its
 * file, and the wait until it is back in the view. Then replica rounds: kill -9 and
 * SIGSTOP of a replica, and the time until writes resume. At the end every acknowledged
 * write must be in every node's file, and the files must be identical.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { KvClient } from '../src/client/client.js';
import { localClusterSpec, type NodeSpec } from '../src/cluster/config.js';
import { spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import type { HubStatus } from '../src/hub/hub-client.js';
import { failWith, readFlags, type Fail } from '../src/cli/flags.js';

const USAGE = `usage: npm run chaos -- [options]
  --rounds N          kill -9 of the primary N times (default 20)
  --replica-rounds N  kill -9, then SIGSTOP, of a replica N times each (default 3)
  --keep              keep the temp folder (its path is printed)
  -h, --help          this text`;
const fail: Fail = failWith('chaos', USAGE);
const values = readFlags(fail, USAGE, {
  rounds: { type: 'string', default: '20' },
  'replica-rounds': { type: 'string', default: '3' },
  keep: { type: 'boolean', default: false },
});
const rounds = Number(values.rounds);
const replicaRounds = Number(values['replica-rounds']);
if (!Number.isSafeInteger(rounds) || rounds < 0 || !Number.isSafeInteger(replicaRounds) || replicaRounds < 0) fail('rounds are whole numbers');

/** Writes in flight at once; every one is a new key, so "acknowledged" means "must be there". */
const IN_FLIGHT = 16;
const ROUND_DEADLINE_MS = 30_000;
const POLL_MS = 50;

const dataDir = await mkdtemp(path.join(tmpdir(), 'pbkv-chaos-'));
const spec = localClusterSpec({ replicas: 2, dataDir, nodePortFirst: 0, hubPort: 0 });
const hub = await spawnHub(spec);
const children = new Map<string, ChildHandle>();
const start = async (node: NodeSpec) => children.set(node.name, await spawnNode(node, spec, hub.url));
for (const node of spec.nodes) await start(node);
const client = new KvClient({ hubUrl: hub.url, requestTimeoutMs: 5_000 });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function view(): Promise<NonNullable<HubStatus['view']>> {
  for (;;) {
    const status = await client.status().catch(() => undefined);
    if (status?.view) return status.view;
    await sleep(POLL_MS);
  }
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ROUND_DEADLINE_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`chaos: ${what} did not happen within ${ROUND_DEADLINE_MS} ms`);
    await sleep(POLL_MS);
  }
}

// The load: puts of new keys, IN_FLIGHT at a time, until told to stop.
const acked = new Map<string, number>();
let next = 0;
let failures = 0;
/** When the write sent last of those acknowledged so far was sent, and when it was acknowledged. */
let lastAck = { sentMs: 0, ackMs: 0 };
let loading = true;
const workers = Array.from({ length: IN_FLIGHT }, async () => {
  while (loading) {
    const i = next++;
    const sentMs = Date.now();
    try {
      await client.put(`k${i}`, i);
      acked.set(`k${i}`, i);
      if (sentMs > lastAck.sentMs) lastAck = { sentMs, ackMs: Date.now() };
    } catch {
      failures += 1;
      await sleep(20);
    }
  }
});

/**
 * Milliseconds from `sinceMs` to the first acknowledgement of a write sent after it: an
 * ack already on its way when a primary was killed says nothing of the new one.
 */
async function writesResume(sinceMs: number): Promise<number> {
  await until('a write acknowledged again', async () => lastAck.sentMs > sinceMs);
  return lastAck.ackMs - sinceMs;
}

const failoverMs: number[] = [];
const replicaMs: { kind: string; ms: number }[] = [];
try {
  await until('writes to start', async () => acked.size > 0);
  for (let round = 1; round <= rounds; round += 1) {
    const before = await view();
    const primary = spec.nodes.find((node) => node.name === before.primary)!;
    await sleep(300);
    const killedMs = Date.now();
    children.get(primary.name)!.process.kill('SIGKILL');
    const ms = await writesResume(killedMs);
    failoverMs.push(ms);
    const after = await view();
    console.log(`round ${round}: kill -9 of primary ${primary.name} (view ${before.epoch}); writes resumed after ${ms} ms on ${after.primary} (view ${after.epoch}); ${acked.size} writes acknowledged so far`);
    await children.get(primary.name)!.exited;
    await start(primary);
    await until(`${primary.name} to rejoin the view`, async () => (await view()).replicas.includes(primary.name));
  }
  for (let round = 1; round <= replicaRounds * 2; round += 1) {
    const current = await view();
    const replica = spec.nodes.find((node) => node.name === current.replicas[0])!;
    const child = children.get(replica.name)!;
    const kind = round % 2 === 1 ? 'kill -9' : 'SIGSTOP';
    await sleep(300);
    const stoppedMs = Date.now();
    child.process.kill(kind === 'kill -9' ? 'SIGKILL' : 'SIGSTOP');
    await sleep(100);
    const ms = await writesResume(stoppedMs + 100) + 100;
    replicaMs.push({ kind, ms });
    console.log(`replica round ${round}: ${kind} of ${replica.name}; writes resumed after ${ms} ms`);
    if (kind === 'kill -9') {
      await child.exited;
      await start(replica);
    } else {
      child.process.kill('SIGCONT');
    }
    await until(`${replica.name} to rejoin the view`, async () => (await view()).replicas.includes(replica.name));
  }
} finally {
  loading = false;
  await Promise.all(workers);
}

// Healing: every node in the view, then stopped; every file holds every acknowledged write.
await until('every node in the view', async () => (await view()).replicas.length === 2);
await sleep(1_000);
await client.close();
for (const child of children.values()) await child.stop();
await hub.stop();
const files = spec.nodes.map((node) => {
  const db = new DatabaseSync(node.dataFile!, { readOnly: true });
  const rows = db.prepare('SELECT key, value FROM keyv ORDER BY key').all() as { key: string; value: string }[];
  db.close();
  return new Map(rows.map((row) => [row.key, row.value]));
});
let lost = 0;
for (const [key, value] of acked) {
  for (const file of files) if (file.get(key) !== `{"value":${value}}`) lost += 1;
}
const identical = files.every((file) => file.size === files[0]!.size && [...file].every(([key, value]) => files[0]!.get(key) === value));
const sorted = [...failoverMs].sort((a, b) => a - b);
const summary = {
  rounds,
  acknowledged: acked.size,
  failedOrUnknown: failures,
  failoverMs: { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted.at(-1) },
  replicaMs,
  lostAcknowledgedWrites: lost,
  filesIdentical: identical,
};
console.log(JSON.stringify(summary));
if (!values.keep) await rm(dataDir, { recursive: true, force: true });
else console.log(`kept ${dataDir}`);
console.log(`${lost === 0 && identical ? 1 : 0} passed, ${lost === 0 && identical ? 0 : 1} failed`);
process.exitCode = lost === 0 && identical ? 0 : 1;
