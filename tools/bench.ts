#!/usr/bin/env node
/**
 * npm run bench -- [--connections 8] [--depth 8] [--seconds 10 | --ops N]
 *   [--op mix | incr | cas] [--mix 1:0] [--value-bytes 100] [--keys 10000] [--preload N]
 *   [--replicas 2] [--sync normal] [--hub URL] [--json] [--compare redis,echo] [--untagged]
 *   [--no-metrics]
 *
 * Starts a local cluster (one process per node, temp directories, loopback, free ports) or
 * uses the one at --hub, then keeps `depth` requests in flight on each of `connections`
 * connections for `seconds` (or until `ops`), and prints ops/s, latency percentiles
 * (HDR histogram, microseconds), errors, each node's peak RSS (VmHWM) and the CPU time each
 * node used during the run per op (user + system, all its threads). Writes carry a
 * request tag, as the client library's do (each connection is one client), unless
 * --untagged. With
 * --compare redis, the same workload runs against Redis (SET + WAIT for puts, GET for
 * gets; tools/redis-compare.ts); with --compare echo, against a bare WebSocket echo of the
 * same shape and ws settings (tools/echo-server.ts), the transport's own limit. All are
 * printed side by side, with pbkv's ratio to each.
 *
 * --op picks the shape: `mix` (the default) puts and gets as --mix says; `incr` an incr of
 * one of --keys counters (default 100) per request (Redis: INCR + WAIT); `cas` `depth`
 * compare-and-set loops per connection on --keys keys (default 100) that every loop
 * shares: get the key's version, put with ifVersion, on CONFLICT get again and retry
 * (Redis: WATCH + GET, MULTI + SET + EXEC + WAIT, one connection per loop). For cas, ops/s
 * and latencies are per successful CAS (retries included) and conflicts are counted. After
 * an incr or cas run, the counters are read back and their sum checked against the
 * acknowledged writes.
 *
 * Up to 1,024 connections (a node's CONNECTIONS_MAX; 1,000 with one request each is a web
 * app's connection pool), dialled 64 at a time (tools/connect-paced.ts). --preload N
 * writes key0..keyN-1 before the run (pbkv: 1,000 puts in flight on one connection;
 * Redis: pipelined MSETs) and prints how long it took. With --compare redis, each Redis
 * process's peak RSS is reported beside the nodes'.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import hdr from 'hdr-histogram-js';
import { WebSocket } from 'ws';
import { localClusterSpec } from '../src/cluster/config.js';
import { CONNECT_TIMEOUT_MS, CONNECTIONS_MAX, CONNECTION_REQUESTS_IN_FLIGHT_MAX, WRITE_QUEUE_BYTES_MAX } from '../src/constants.js';
import { spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import { HubClient } from '../src/hub/hub-client.js';
import { SYNC_MODES, type SyncMode } from '../src/storage/store.js';
import { fileDescriptorsMax, openPaced } from './connect-paced.js';
import { casCount, casValue, driveRedis, redisAvailable, redisValues, startRedis, type Recorder, type Op } from './redis-compare.js';

const SECONDS_MAX = 600;
const OPS_MAX = 50_000_000;
/** Open files the bench holds besides the measured connections: the hub client, pipes to its children, files. */
const FILE_DESCRIPTORS_RESERVED = 128;

const { values } = parseArgs({
  allowNegative: true,
  options: {
    connections: { type: 'string', default: '8' },
    depth: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '10' },
    ops: { type: 'string' },
    op: { type: 'string', default: 'mix' },
    mix: { type: 'string' },
    'value-bytes': { type: 'string', default: '100' },
    keys: { type: 'string' },
    preload: { type: 'string', default: '0' },
    replicas: { type: 'string', default: '2' },
    sync: { type: 'string', default: 'normal' },
    hub: { type: 'string' },
    json: { type: 'boolean', default: false },
    compare: { type: 'string' },
    untagged: { type: 'boolean', default: false },
    watchers: { type: 'string', default: '0' },
    'watch-own-keys': { type: 'boolean', default: false },
    /** --no-metrics: nodes count and report nothing (to measure what metrics cost). */
    metrics: { type: 'boolean', default: true },
  },
});
const compare = (values.compare ?? '').split(',').filter((name) => name !== '');
if (compare.some((name) => name !== 'redis' && name !== 'echo')) fail('--compare takes redis, echo or redis,echo');
const OPS: readonly Op[] = ['mix', 'incr', 'cas'];
const op = values.op as Op;
if (!OPS.includes(op)) fail('--op is mix, incr or cas');
if (op !== 'mix' && values.mix !== undefined) fail(`--mix applies to --op mix only, not ${op}`);
const mix = values.mix ?? '1:0';
values.keys ??= op === 'mix' ? '10000' : '100';

const config = {
  // As many as a node accepts (the warm-up's and the preload's connections close first).
  connections: bounded('connections', 1, CONNECTIONS_MAX),
  depth: bounded('depth', 1, 4096),
  seconds: Math.min(Number(values.seconds), SECONDS_MAX),
  ops: values.ops === undefined ? undefined : bounded('ops', 1, OPS_MAX),
  valueBytes: bounded('value-bytes', 1, 1024 * 1024 - 2),
  keys: bounded('keys', 1, 10_000_000),
  preload: bounded('preload', 0, 10_000_000),
  replicas: bounded('replicas', 0, 8),
  sync: values.sync as SyncMode,
  putShare: mixShare(mix),
  tagged: !values.untagged,
  op,
  /** pbkv only: watches open during the run, on the written keys' prefix or (--watch-own-keys) one key each. */
  watchers: bounded('watchers', 0, 10_000),
  watchOwnKeys: values['watch-own-keys'],
  metrics: values.metrics,
};
if (!SYNC_MODES.includes(config.sync)) fail(`--sync is one of ${SYNC_MODES.join(', ')}`);
// Redis's WATCH is per connection: every CAS loop in flight needs a connection of its own.
if (op === 'cas' && compare.includes('redis') && config.connections * config.depth > 1024) fail('--op cas --compare redis opens a Redis connection per loop: connections x depth at most 1024');
checkFileDescriptors(op === 'cas' && compare.includes('redis') ? config.connections * config.depth : config.connections);
/** The keys of an incr or cas run: named per run, so that reading them back against --hub counts this run's writes only. */
const keyPrefix = op === 'mix' ? 'key' : `${op === 'incr' ? 'ctr' : 'cas'}-${randomBytes(3).toString('hex')}-`;

function bounded(name: keyof typeof values, min: number, max: number): number {
  const value = Number(values[name]);
  if (!Number.isInteger(value) || value < min || value > max) fail(`--${name} is a whole number from ${min} to ${max}`);
  return value;
}

function mixShare(mix: string): number {
  const [puts, gets] = mix.split(':').map(Number);
  if (!Number.isFinite(puts) || !Number.isFinite(gets) || puts! < 0 || gets! < 0 || puts! + gets! === 0) fail('--mix is PUTS:GETS, e.g. 1:0 or 1:9');
  return puts! / (puts! + gets!);
}

/** Fails before the run if this process may not open a socket per connection (the nodes and Redis inherit its limit). */
function checkFileDescriptors(connections: number): void {
  const max = fileDescriptorsMax();
  const needed = connections + FILE_DESCRIPTORS_RESERVED;
  if (max !== undefined && max < needed) fail(`${connections} connections need about ${needed} open files, and this process may open ${max}: raise the hard limit (ulimit -Hn)`);
}

function fail(message: string): never {
  console.error(`bench: ${message}`);
  process.exit(2);
}

interface Cluster {
  hubUrl: string;
  nodes: ChildHandle[];
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'pbkv-bench-'));
  const spec = localClusterSpec({ replicas: config.replicas, dataDir, sync: config.sync, hubPort: 0, nodePortFirst: 0 });
  const children: ChildHandle[] = [];
  const stop = async () => {
    for (const child of [...children].reverse()) await child.stop();
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const onLine = (name: string, line: string) => console.error(`[${name}] ${line}`);
    const hub = await spawnHub(spec, { onLine });
    children.push(hub);
    const extraArgs = config.metrics ? [] : ['--no-metrics'];
    for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url, { onLine, extraArgs }));
    return { hubUrl: hub.url, nodes: children.slice(1), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux port that matters). */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The CPU time a process has used so far, user + system, all its threads, in ms (Linux:
 * /proc/PID/stat). Unlike a profile's samples, it does not count time the process waited
 * for a core, so it holds up on a shared machine.
 */
function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // The fields after the command's closing parenthesis; utime and stime are the 14th and 15th of the line.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Peak resident set size of a process, in MB (Linux: VmHWM). */
function peakRssMb(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Math.round(Number(match[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

function open(url: string): Promise<WebSocket> {
  return openWithSocket(url).then(({ socket }) => socket);
}

/** A WebSocket with the TCP socket under it (`raw`), which the preload corks. */
function openWithSocket(url: string): Promise<{ socket: WebSocket; raw: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, handshakeTimeout: CONNECT_TIMEOUT_MS });
    let raw: Socket | undefined;
    socket.once('upgrade', (response) => (raw = response.socket));
    socket.once('open', () => (raw ? resolve({ socket, raw }) : reject(new Error(`no TCP socket after the upgrade to ${url}`))));
    socket.once('error', reject);
  });
}

/** Latencies, counts and the progress bar of one run. */
class Measurement implements Recorder {
  readonly histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  done = 0;
  errors = 0;
  /** CAS: failed conditions (each one then read again and retried). */
  conflicts = 0;
  readonly errorCodes: Record<string, number> = {};
  readonly started = Date.now();

  conflicted(): void {
    this.conflicts += 1;
  }

  record(microseconds: number, ok: boolean, code = 'UNKNOWN'): void {
    this.histogram.recordValue(microseconds);
    this.done += 1;
    if (!ok) {
      this.errors += 1;
      this.errorCodes[code] = (this.errorCodes[code] ?? 0) + 1;
    }
  }

  progress(label: string): void {
    const elapsed = (Date.now() - this.started) / 1000;
    const share = config.ops ? this.done / config.ops : elapsed / config.seconds;
    const bar = '#'.repeat(Math.round(Math.min(1, share) * 30)).padEnd(30, '.');
    process.stderr.write(`\r${label} [${bar}] ${elapsed.toFixed(1)} s  ${Math.round(this.done / Math.max(elapsed, 0.001))} ops/s `);
  }

  result(system: string, seconds: number, peakRssMb: Record<string, number | undefined>, cpuMs: Record<string, number | undefined> = {}): Result {
    const ms = (p: number) => Number((this.histogram.getValueAtPercentile(p) / 1000).toFixed(2));
    return {
      system,
      workload: { ...config, mix: op === 'mix' ? mix : undefined, seconds: Number(seconds.toFixed(2)) },
      opsPerSecond: Math.round(this.done / seconds),
      ops: this.done,
      errors: this.errors,
      errorCodes: this.errorCodes,
      latencyMs: { p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9), max: Number((this.histogram.maxValue / 1000).toFixed(2)) },
      peakRssMb,
      cpuUsPerOp: Object.fromEntries(Object.entries(cpuMs).map(([name, ms]) => [name, ms === undefined ? undefined : Number(((ms * 1000) / Math.max(1, this.done)).toFixed(1))])),
      operation: operationOf(system),
      ...(op === 'cas' ? { conflicts: this.conflicts, conflictsPerOp: Number((this.conflicts / Math.max(1, this.done - this.errors)).toFixed(3)) } : {}),
    };
  }
}

/**
 * One system's run. For --op cas, `ops` counts CAS operations (a success, or an error that
 * ended one), `opsPerSecond` and the latencies are theirs (from the first read to the
 * acknowledged write, retries included), and `conflicts` the failed conditions.
 */
interface Result {
  system: string;
  workload: Record<string, unknown>;
  opsPerSecond: number;
  ops: number;
  errors: number;
  errorCodes: Record<string, number>;
  latencyMs: Record<string, number>;
  peakRssMb: Record<string, number | undefined>;
  /** CPU time each process used during the run (user + system, all threads) per op done, in µs. */
  cpuUsPerOp: Record<string, number | undefined>;
  /** What one op is on this system, e.g. "INCR + WAIT 2". */
  operation: string;
  conflicts?: number;
  /** Conflicts per successful CAS. */
  conflictsPerOp?: number;
  /** incr, cas: the counters read back after the run against the writes acknowledged (undefined: over CHECK_KEYS_MAX keys, or the echo). */
  check?: { sum: number; acknowledged: number; ok: boolean };
  /** pbkv with --watchers: events the watchers received, and a probe's delay from a put's reply to its event. */
  watch?: { watchers: number; events: number; cancelled: number; eventAfterReplyMs: { p50: number; p99: number } };
}

/** What one op is on `system`, for the table and the JSON. */
function operationOf(system: string): string {
  const tagged = config.tagged ? ', tagged' : '';
  const wait = `WAIT ${config.replicas}`;
  if (system === 'echo') return op === 'mix' ? 'echo' : op === 'incr' ? 'echo of incr frames' : 'echo of get, put frames';
  switch (op) {
    case 'mix':
      return system === 'redis' ? `SET + ${wait} / GET` : `put${config.tagged ? ' (tagged)' : ''} / get`;
    case 'incr':
      return system === 'redis' ? `INCR + ${wait}` : `incr by 1${tagged}`;
    case 'cas':
      return system === 'redis'
        ? `WATCH + GET, then MULTI + SET + EXEC + ${wait} (one connection per loop); a nil EXEC: again`
        : `get, then put with ifVersion${tagged}; a CONFLICT: get again`;
  }
}

/**
 * Keeps `depth` requests in flight on one connection until `stopAt` or `budget` runs out.
 * Latencies are recorded in microseconds.
 */
function drive(socket: WebSocket, measurement: Measurement, budget: { left: number }, stopAt: number, value: string): Promise<void> {
  // The request id doubles as the tag's req: it grows with every request, gets included.
  const tag = config.tagged ? `,"client":"bench-${randomBytes(8).toString('hex')}","req":` : undefined;
  return new Promise((resolve, reject) => {
    const sentAt = new Map<number, bigint>();
    let nextId = 1;
    let inFlight = 0;
    const send = () => {
      if (budget.left <= 0 || Date.now() >= stopAt) {
        if (inFlight === 0) resolve();
        return;
      }
      budget.left -= 1;
      const id = nextId++;
      const key = `${keyPrefix}${Math.floor(Math.random() * config.keys)}`;
      const tagged = tag === undefined ? '' : `${tag}${id}`;
      const frame = op === 'incr'
        ? `{"id":${id},"op":"incr","key":"${key}","by":1${tagged}}`
        : Math.random() < config.putShare
          ? `{"id":${id},"op":"put","key":"${key}","value":${distinct(value, id)}${tagged}}`
          : `{"id":${id},"op":"get","key":"${key}"}`;
      sentAt.set(id, process.hrtime.bigint());
      inFlight += 1;
      socket.send(frame);
    };
    socket.on('message', (data) => {
      const reply = JSON.parse(data.toString()) as { id: number; ok: boolean; error?: { code: string } };
      const started = sentAt.get(reply.id);
      if (started === undefined) return;
      sentAt.delete(reply.id);
      inFlight -= 1;
      measurement.record(Math.max(1, Number((process.hrtime.bigint() - started) / 1000n)), reply.ok, reply.error?.code);
      send();
    });
    socket.once('close', () => (inFlight > 0 ? reject(new Error('connection closed during the run')) : resolve()));
    for (let i = 0; i < config.depth; i += 1) send();
  });
}

interface Reply {
  id: number;
  ok: boolean;
  found?: boolean;
  value?: unknown;
  version?: number;
  error?: { code: string; version?: number };
}

/**
 * `depth` compare-and-set loops on one connection, as users write them: get the key (its
 * value and version; an absent key is version 0), put the next value with ifVersion, and
 * on CONFLICT get it again and retry. The value counts the key's successful CASes
 * (casValue), so the sum can be checked after the run. Every loop picks its key at random
 * from the --keys keys that all connections share: fewer keys, more contention.
 */
function driveCas(socket: WebSocket, measurement: Measurement, budget: { left: number }, stopAt: number): Promise<void> {
  // Puts are tagged as the library tags writes: one client per connection, req rising per write.
  const client = config.tagged ? `,"client":"bench-${randomBytes(8).toString('hex')}","req":` : undefined;
  let nextReq = 1;
  let nextId = 1;
  const pending = new Map<number, (reply: Reply) => void>();
  let closed = false;
  const request = (frame: (id: number) => string): Promise<Reply> => {
    if (closed) return Promise.reject(new Error('connection closed during the run'));
    const id = nextId++;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      socket.send(frame(id));
    });
  };
  socket.on('message', (data) => {
    const reply = JSON.parse(data.toString()) as Reply;
    const resolve = pending.get(reply.id);
    pending.delete(reply.id);
    resolve?.(reply);
  });
  const closing = new Promise<never>((_, reject) => socket.once('close', () => {
    closed = true;
    reject(new Error('connection closed during the run'));
  }));
  closing.catch(() => {});
  const loop = async (): Promise<void> => {
    while (budget.left > 0 && Date.now() < stopAt) {
      budget.left -= 1;
      const key = `${keyPrefix}${Math.floor(Math.random() * config.keys)}`;
      const started = process.hrtime.bigint();
      let failed: string | undefined;
      for (;;) {
        const read = await Promise.race([request((id) => `{"id":${id},"op":"get","key":"${key}"}`), closing]);
        if (!read.ok) {
          failed = read.error?.code ?? 'UNKNOWN';
          break;
        }
        const next = JSON.stringify(casValue(read.found ? casCount(read.value) + 1 : 1, config.valueBytes));
        const version = read.version ?? 0;
        const tag = client === undefined ? '' : `${client}${nextReq++}`;
        const write = await Promise.race([request((id) => `{"id":${id},"op":"put","key":"${key}","value":${next},"ifVersion":${version}${tag}}`), closing]);
        if (write.ok) break;
        if (write.error?.code !== 'CONFLICT') {
          failed = write.error?.code ?? 'UNKNOWN';
          break;
        }
        measurement.conflicted();
      }
      measurement.record(Math.max(1, Number((process.hrtime.bigint() - started) / 1000n)), failed === undefined, failed);
    }
  };
  return Promise.all(Array.from({ length: config.depth }, loop)).then(() => undefined);
}

/**
 * Waits until a put succeeds: the primary's replica links are connected, so the measured
 * run does not include their start-up.
 */
async function primaryAddress(hub: HubClient): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return (await hub.lookup('kv')).address;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function warmUp(url: string): Promise<void> {
  const socket = await open(url);
  const deadline = Date.now() + 30_000;
  try {
    for (let attempt = 1; ; attempt += 1) {
      const reply = await new Promise<{ ok: boolean; error?: { code: string; message: string } }>((resolve) => {
        socket.once('message', (data) => resolve(JSON.parse(data.toString())));
        socket.send(`{"id":${attempt},"op":"put","key":"bench:warm-up","value":${attempt}}`);
      });
      if (reply.ok) return;
      if (Date.now() > deadline) throw new Error(`the cluster did not take a write: ${reply.error?.message}`);
    }
  } finally {
    socket.close();
  }
}

/**
 * The preload's puts in flight, on one connection (below CONNECTION_REQUESTS_IN_FLIGHT_MAX,
 * past which a node stops reading it), and for large values fewer: half the primary's
 * WRITE_QUEUE_BYTES_MAX at most, past which it refuses writes. More connections did not
 * load faster: four with 1,000 each loaded 100,000 keys at 15.7k and 18.3k keys/s against
 * 22.3k and 25.8k for one (alternating runs on a busy machine).
 */
const PRELOAD_IN_FLIGHT_MAX = Math.min(1000, CONNECTION_REQUESTS_IN_FLIGHT_MAX);
const PRELOAD_BYTES_IN_FLIGHT_MAX = WRITE_QUEUE_BYTES_MAX / 2;
/** A preload that takes longer fails the run: 5M keys at 4,200 keys/s, a fifth of the rate expected. */
const PRELOAD_SECONDS_MAX = 1200;

/**
 * Loads `count` keys (key0..), untagged puts of `value`, through the whole write path (so
 * the store is one grown by writes), keeping PRELOAD_IN_FLIGHT_MAX in flight. The puts a
 * socket read's replies make room for leave in one write (corked), as a node's replies do,
 * instead of a system call each. Prints how long it took.
 */
async function preload(url: string, count: number, value: string): Promise<void> {
  const inFlightMax = Math.max(1, Math.min(PRELOAD_IN_FLIGHT_MAX, Math.floor(PRELOAD_BYTES_IN_FLIGHT_MAX / value.length)));
  const { socket, raw } = await openWithSocket(url);
  const started = Date.now();
  const deadline = started + PRELOAD_SECONDS_MAX * 1000;
  let next = 0;
  let done = 0;
  const report = () => {
    const seconds = (Date.now() - started) / 1000;
    process.stderr.write(`\rpreloading ${done}/${count} keys, ${seconds.toFixed(1)} s, ${Math.round(done / Math.max(seconds, 0.001))} keys/s `);
  };
  const progress = setInterval(report, 1000);
  try {
    await new Promise<void>((resolve, reject) => {
      let corked = false;
      const send = () => {
        if (next >= count) return;
        if (Date.now() > deadline) return reject(new Error(`the preload took more than ${PRELOAD_SECONDS_MAX} s (${done} of ${count} keys)`));
        if (!corked) {
          corked = true;
          raw.cork();
          process.nextTick(() => {
            corked = false;
            raw.uncork();
          });
        }
        socket.send(`{"id":${next},"op":"put","key":"key${next}","value":${value}}`);
        next += 1;
      };
      socket.on('message', (data) => {
        const reply = JSON.parse(data.toString()) as { ok: boolean; error?: { code: string; message: string } };
        if (!reply.ok) return reject(new Error(`a preload put failed: ${reply.error?.code} ${reply.error?.message}`));
        done += 1;
        if (done === count) resolve();
        else send();
      });
      socket.once('close', () => reject(new Error(`the preload's connection closed after ${done} of ${count} keys`)));
      for (let i = 0; i < inFlightMax; i += 1) send();
    });
  } finally {
    clearInterval(progress);
    report();
    process.stderr.write('\n');
    socket.close();
  }
}

/** A JSON string of about --value-bytes bytes. */
function benchValue(): string {
  return JSON.stringify('v'.repeat(Math.max(0, config.valueBytes - 2)));
}

/**
 * `value` (a JSON string) with the request id in front, same length: every put writes a
 * value its key did not hold, as real writes do. SQLite skips rewriting a row that an
 * upsert leaves unchanged, so puts of one constant value over a small key space measured
 * writes that changed nothing on disk (docs/PERFORMANCE.md, "Distinct values").
 */
function distinct(value: string, id: number): string {
  const digits = String(id);
  return value.length > digits.length + 2 ? `"${digits}${value.slice(1 + digits.length)}` : value;
}

/** The measured run against one WebSocket server: `connections` x `depth` until the time or the ops run out. */
async function measure(system: string, url: string, processes: Record<string, number | undefined>): Promise<Result> {
  const sockets = await openPaced(config.connections, () => open(url), (socket) => socket.close());
  const cpuAt = () => Object.fromEntries(Object.entries(processes).map(([name, pid]) => [name, cpuMs(pid)]));
  const cpuBefore = cpuAt();
  const measurement = new Measurement();
  const budget = { left: config.ops ?? Number.MAX_SAFE_INTEGER };
  const progress = setInterval(() => measurement.progress(system.padEnd(5)), 250);
  try {
    const stopAt = measurement.started + config.seconds * 1000;
    await Promise.all(sockets.map((socket) => (op === 'cas' ? driveCas(socket, measurement, budget, stopAt) : drive(socket, measurement, budget, stopAt, benchValue()))));
  } finally {
    clearInterval(progress);
    process.stderr.write('\n');
    for (const socket of sockets) socket.close();
  }
  const cpuAfter = cpuAt();
  const cpuUsed = Object.fromEntries(Object.entries(cpuAfter).map(([name, ms]) => [name, ms === undefined || cpuBefore[name] === undefined ? undefined : ms - cpuBefore[name]]));
  const peakRss = Object.fromEntries(Object.entries(processes).map(([name, pid]) => [name, peakRssMb(pid)]));
  return measurement.result(system, (Date.now() - measurement.started) / 1000, peakRss, cpuUsed);
}

/** incr and cas runs read their counters back when there are at most this many keys. */
const CHECK_KEYS_MAX = 100_000;

/**
 * The sum of this run's counters on pbkv (incr: the values; cas: the counts in them), listed
 * page by page. Every acknowledged incr or CAS added exactly 1 and nothing else did, so the
 * sum is the acknowledged ops (unless a write failed with an unknown outcome).
 */
async function pbkvCounterSum(url: string): Promise<number> {
  const socket = await open(url);
  try {
    let sum = 0;
    let after: string | undefined;
    for (let id = 1; ; id += 1) {
      const page = await new Promise<{ ok: boolean; entries?: { key: string; value: unknown }[]; more?: boolean; error?: { message: string } }>((resolve) => {
        socket.once('message', (data) => resolve(JSON.parse(data.toString())));
        socket.send(JSON.stringify({ id, op: 'list', prefix: keyPrefix, ...(after === undefined ? {} : { after }), limit: 1000 }));
      });
      if (!page.ok) throw new Error(`listing the counters failed: ${page.error?.message}`);
      for (const entry of page.entries!) sum += op === 'incr' ? Number(entry.value) : casCount(entry.value);
      if (!page.more || page.entries!.length === 0) return sum;
      after = page.entries![page.entries!.length - 1]!.key;
    }
  } finally {
    socket.close();
  }
}

function checked(sum: number, result: Result): NonNullable<Result['check']> {
  const acknowledged = result.ops - result.errors;
  return { sum, acknowledged, ok: sum === acknowledged };
}

async function runPbkv(): Promise<Result> {
  const cluster: Cluster | undefined = values.hub ? undefined : await startCluster();
  const hub = new HubClient(values.hub ?? cluster!.hubUrl);
  try {
    // The hub names the primary once it has made the first view.
    const address = await primaryAddress(hub);
    await warmUp(address);
    if (config.preload > 0) await preload(address, config.preload, benchValue());
    const watchers = config.watchers > 0 ? await openWatchers(address) : undefined;
    try {
      const result = await measure('pbkv', address, Object.fromEntries((cluster?.nodes ?? []).map((node) => [node.name, node.process.pid])));
      if (op !== 'mix' && config.keys <= CHECK_KEYS_MAX) result.check = checked(await pbkvCounterSum(address), result);
      if (watchers) result.watch = { watchers: config.watchers, events: watchers.events(), cancelled: watchers.cancelled(), eventAfterReplyMs: await probeEventDelay(address) };
      return result;
    } finally {
      watchers?.close();
    }
  } finally {
    await hub.close();
    await cluster?.stop();
  }
}

/** Watches per connection (below the node's WATCHES_PER_CONNECTION_MAX). */
const WATCHES_PER_SOCKET = 50;
/** Puts the delay probe times, one at a time. */
const PROBE_PUTS = 200;

/** --watchers watches, on the run's key prefix or one key each, open before the run starts. */
async function openWatchers(address: string): Promise<{ events(): number; cancelled(): number; close(): void }> {
  let events = 0;
  let cancelled = 0;
  const sockets: WebSocket[] = [];
  for (let first = 0; first < config.watchers; first += WATCHES_PER_SOCKET) {
    const socket = await open(address);
    sockets.push(socket);
    const count = Math.min(WATCHES_PER_SOCKET, config.watchers - first);
    let answered = 0;
    await new Promise<void>((resolve, reject) => {
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { ok?: boolean; event?: string; error?: { message: string } };
        if (frame.event === 'cancelled') cancelled += 1;
        else if (frame.event !== undefined) events += 1;
        else if (frame.ok === false) reject(new Error(`a watch was refused: ${frame.error?.message}`));
        else if (++answered === count) resolve();
      });
      for (let i = 0; i < count; i += 1) {
        const target = config.watchOwnKeys ? `"key":"${keyPrefix}${first + i}"` : `"prefix":"${keyPrefix}"`;
        socket.send(`{"id":${i},"op":"watch",${target}}`);
      }
    });
  }
  return { events: () => events, cancelled: () => cancelled, close: () => sockets.forEach((socket) => socket.close()) };
}

/**
 * After the run, with the watchers still open: PROBE_PUTS puts of one key, one at a time,
 * each timed from its reply to the event a watch of that key gets (negative: the event
 * came first, which it may, since both go out once every replica holds the write).
 */
async function probeEventDelay(address: string): Promise<{ p50: number; p99: number }> {
  const writer = await open(address);
  const watcher = await open(address);
  const key = `${keyPrefix}probe`;
  const eventAt = new Map<number, bigint>();
  const replyAt = new Map<number, bigint>();
  let wake: (() => void) | undefined;
  watcher.on('message', (data) => {
    const frame = JSON.parse(data.toString()) as { event?: string; version?: number };
    if (frame.event === 'put') eventAt.set(frame.version!, process.hrtime.bigint());
    wake?.();
  });
  await new Promise<void>((resolve) => {
    watcher.once('message', () => resolve());
    watcher.send(`{"id":1,"op":"watch","key":"${key}"}`);
  });
  const delays: number[] = [];
  for (let i = 0; i < PROBE_PUTS; i += 1) {
    const version = await new Promise<number>((resolve) => {
      writer.once('message', (data) => {
        const reply = JSON.parse(data.toString()) as { version: number };
        replyAt.set(reply.version, process.hrtime.bigint());
        resolve(reply.version);
      });
      writer.send(`{"id":${i},"op":"put","key":"${key}","value":${i}}`);
    });
    while (!eventAt.has(version)) await new Promise<void>((resolve) => (wake = resolve));
    delays.push(Number(eventAt.get(version)! - replyAt.get(version)!) / 1e6);
  }
  writer.close();
  watcher.close();
  delays.sort((a, b) => a - b);
  const at = (q: number) => Number(delays[Math.min(delays.length - 1, Math.floor(q * delays.length))]!.toFixed(3));
  return { p50: at(0.5), p99: at(0.99) };
}

async function runRedis(): Promise<Result> {
  if (!redisAvailable()) fail('--compare redis needs redis-server on the PATH (Debian: apt-get install redis-server)');
  const redis = await startRedis(config.replicas);
  try {
    const measurement = new Measurement();
    const seconds = await driveRedis(redis.primaryPort, { ...config, keyPrefix }, measurement, () => measurement.progress('redis'));
    process.stderr.write('\n');
    const result = measurement.result('redis', seconds, Object.fromEntries(Object.entries(redis.pids).map(([name, pid]) => [name, peakRssMb(pid)])));
    if (op !== 'mix' && config.keys <= CHECK_KEYS_MAX) {
      const stored = await redisValues(redis.primaryPort, Array.from({ length: config.keys }, (_, i) => `${keyPrefix}${i}`));
      result.check = checked(stored.reduce((sum, value) => sum + (value === null ? 0 : op === 'incr' ? Number(value) : casCount(value)), 0), result);
    }
    return result;
  } finally {
    await redis.stop();
  }
}

/** The same workload against a bare ws echo in a process of its own. */
async function runEcho(): Promise<Result> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./echo-server.js', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { url: string }).url));
      child.once('exit', (code) => reject(new Error(`the echo server exited with ${code}`)));
    });
    return await measure('echo', url, { echo: child.pid });
  } finally {
    child.stdin!.end();
    if (child.exitCode === null) await new Promise((resolve) => child.once('exit', resolve));
  }
}

async function main(): Promise<void> {
  const results = [await runPbkv()];
  if (compare.includes('redis')) results.push(await runRedis());
  if (compare.includes('echo')) results.push(await runEcho());
  if (values.json) console.log(JSON.stringify(results.length === 1 ? results[0] : Object.fromEntries(results.map((r) => [r.system, r]))));
  else printTable(results);
}

function printTable(results: Result[]): void {
  const w = results[0]!.workload;
  const common = `${w['replicas']} replicas, sync ${w['sync']}`;
  if (op === 'mix') console.log(`workload     ${w['connections']} connections x ${w['depth']} in flight, mix ${w['mix']} (put:get), ${w['valueBytes']} B values, ${w['keys']} keys, ${common}`);
  else if (op === 'incr') console.log(`workload     ${w['connections']} connections x ${w['depth']} in flight, incr by 1 of ${w['keys']} counters, ${common}`);
  else console.log(`workload     ${w['connections']} connections x ${w['depth']} CAS loops, ${w['keys']} key${w['keys'] === 1 ? '' : 's'} shared by all loops, ${w['valueBytes']} B values, ${common}`);
  if (op !== 'mix') {
    for (const r of results) console.log(`${r.system.padEnd(12)} ${r.operation}`);
    if (results.some((r) => r.system === 'redis')) console.log(`${'acked'.padEnd(12)} both systems acknowledge a write only once every replica holds it (pbkv's replication, Redis's WAIT ${w['replicas']})`);
  }
  const unit = op === 'cas' ? 'CAS' : 'ops';
  type Row = [string, (r: Result) => string, ((r: Result) => number) | undefined];
  const rows: Row[] = [
    [`${unit}/s`, (r) => r.opsPerSecond.toLocaleString('en-US'), (r) => r.opsPerSecond],
    [unit, (r) => `${r.ops.toLocaleString('en-US')} in ${r.workload['seconds']} s`, undefined],
    ...(op === 'cas'
      ? [
          ['conflicts', (r) => (r.conflicts ?? 0).toLocaleString('en-US'), undefined],
          ['conflicts/op', (r) => String(r.conflictsPerOp ?? 0), undefined],
        ] satisfies Row[]
      : []),
    ...(['p50', 'p90', 'p99', 'p999', 'max'] as const).map((p): Row => [`${p} ms`, (r) => String(r.latencyMs[p]), (r) => r.latencyMs[p]!]),
    ['errors', (r) => (r.errors === 0 ? '0' : `${r.errors} ${JSON.stringify(r.errorCodes)}`), undefined],
    ['peak RSS MB', (r) => Object.entries(r.peakRssMb).map(([k, v]) => `${k} ${v ?? '?'}`).join(' ') || '-', undefined],
    ['CPU µs/op', (r) => Object.entries(r.cpuUsPerOp).map(([k, v]) => `${k} ${v ?? '?'}`).join(' ') || '-', undefined],
    ...(results[0]!.watch === undefined
      ? []
      : ([
          ['watchers', (r) => (r.watch === undefined ? '-' : `${r.watch.watchers}${config.watchOwnKeys ? ' (own keys)' : ' (prefix)'}, ${r.watch.events.toLocaleString('en-US')} events, ${r.watch.cancelled} cancelled`), undefined],
          ['event-reply', (r) => (r.watch === undefined ? '-' : `p50 ${r.watch.eventAfterReplyMs.p50} ms, p99 ${r.watch.eventAfterReplyMs.p99} ms`), undefined],
        ] satisfies Row[])),
    ...(op === 'mix'
      ? []
      : [['check', (r) => (r.check === undefined ? '-' : r.check.ok ? `sum = acked ${r.check.sum.toLocaleString('en-US')}` : `sum ${r.check.sum} != acked ${r.check.acknowledged}`), undefined]] satisfies Row[]),
  ];
  const [pbkv, ...others] = results;
  const header = ['', ...results.map((r) => r.system), ...others.map((r) => `pbkv / ${r.system}`)];
  console.log(header.map((cell, i) => (i === 0 ? cell.padEnd(12) : cell.padEnd(20))).join(' '));
  for (const [name, cell, figure] of rows) {
    const cells = results.map(cell);
    for (const other of others) {
      const ratio = figure === undefined ? undefined : figure(pbkv!) / figure(other);
      cells.push(ratio === undefined || !Number.isFinite(ratio) ? '' : `${ratio.toFixed(2)}x`);
    }
    console.log([name.padEnd(12), ...cells.map((c) => c.padEnd(20))].join(' '));
  }
}

main().catch((error: unknown) => {
  console.error(`bench: ${(error as Error).message}`);
  process.exitCode = 1;
});
