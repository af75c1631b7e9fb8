#!/usr/bin/env node
/**
 * Measures a primary's memory under clients that never read their replies (issue 7,
 * finding 7): a local cluster of real processes, one value of about 1 MiB, then
 * CONNECTIONS sockets that stop reading and pipeline GETS gets of it each. Prints the
 * primary's peak RSS (VmHWM) and whether another client was served meanwhile.
 *   node dist/tools/probe-slow-readers.js [--connections 3] [--gets 1500] [--keys 1] [--seconds 8]
 * With --keys N the gets cycle over N distinct 1 MiB values (no reply shares its value).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { KvClient } from '../src/client/client.js';
import { localClusterSpec } from '../src/cluster/config.js';
import { describeExit, spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '3' },
    gets: { type: 'string', default: '1500' },
    keys: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '8' },
  },
});
const connections = Number(values.connections);
const gets = Number(values.gets);
const keys = Number(values.keys);
const seconds = Number(values.seconds);

async function memory(pid: number): Promise<{ rssMb: number; peakMb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'pbkv-probe-'));
const children: ChildHandle[] = [];
const sockets: WebSocket[] = [];
const client = { current: undefined as KvClient | undefined };
try {
  const spec = localClusterSpec({ replicas: 2, dataDir, hubPort: 0, nodePortFirst: 0 });
  const hub = await spawnHub(spec);
  children.push(hub);
  for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url));
  const primary = children[1]!;
  client.current = new KvClient({ hubUrl: hub.url });
  for (let attempt = 0; ; attempt += 1) {
    try {
      await client.current.get('probe');
      break;
    } catch (error) {
      if (attempt > 200) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  const big = 'x'.repeat(1024 * 1024 - 64);
  for (let k = 0; k < keys; k += 1) await client.current.put(`big${k}`, big);
  const before = await memory(primary.process.pid!);

  for (let c = 0; c < connections; c += 1) {
    const socket = new WebSocket(primary.url);
    sockets.push(socket);
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('open', resolve));
    socket.pause(); // never read a reply
    for (let i = 0; i < gets; i += 1) socket.send(JSON.stringify({ id: i, op: 'get', key: `big${i % keys}` }));
  }
  let peakRss = 0;
  let served = 0;
  let slowestMs = 0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const started = Date.now();
    const failure = await client.current.get('probe').then(() => undefined, (error: Error) => error);
    if (failure) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      throw new Error(`the other client failed: ${failure.message}; ${describeExit(primary)}\n${primary.recentOutput().join("\n")}`);
    }
    served += 1;
    slowestMs = Math.max(slowestMs, Date.now() - started);
    peakRss = Math.max(peakRss, (await memory(primary.process.pid!)).rssMb);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const after = await memory(primary.process.pid!);
  console.log(
    JSON.stringify({
      connections, gets, keys, seconds,
      rssBeforeMb: Math.round(before.rssMb), peakRssSampledMb: Math.round(peakRss), vmHwmMb: Math.round(after.peakMb),
      otherClientGets: served, slowestOtherGetMs: slowestMs,
    }),
  );
} finally {
  for (const socket of sockets) socket.terminate();
  await client.current?.close();
  for (const child of children.reverse()) await child.stop();
  await rm(dataDir, { recursive: true, force: true });
}
