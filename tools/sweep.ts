#!/usr/bin/env node
/**
 * npm run bench:sweep [-- --quick] [--only inflight,values,connections,replicas,keys]
 *   [--out DIR] [--seconds 5] [--verbose] [--plan]
 *
 * How pbkv's cost grows (issue 19, item 4), each point beside Redis in the same bench
 * invocation (tools/bench.ts --compare redis: pbkv's cluster, then Redis SET + WAIT <its
 * replicas> / GET with the same shape), 2 replicas and 100-byte values unless the point
 * varies them. One JSON line per point into OUT/bench-<dimension>.jsonl, then the figures
 * (tools/sweep-figures.ts):
 *   inflight     1x1, 2x2, 4x4, 8x8, 8x16; puts, gets      docs/throughput.svg, docs/latency.svg
 *   values       100 B, 4 KiB, 64 KiB at 8 x 8; puts, gets  docs/sweep-values.svg (ops/s, MB/s)
 *   connections  8 x 8 against 1,000 x 1; puts, gets        docs/sweep-connections.svg (ops/s, p99)
 *   replicas     0, 1, 2 replicas at 8 x 8; puts            docs/sweep-replicas.svg (ops/s, p99)
 *   keys         10k, 1M, 5M keys preloaded, 8 x 8; puts, gets (random keys among them)
 *                                                           docs/sweep-keys.svg (ops/s, peak RSS)
 *
 * How long: about 21 minutes on the 2-core machine when it is quiet (`--plan` prints the
 * estimate of every point). 29 points, each 5 s on pbkv then 5 s on Redis, plus a fixed
 * cost per point (start a hub and three nodes, warm up, start three Redis, stop both: 7-9 s
 * in a --quick run on a busy machine). The preloads of the keys dimension take most of the
 * rest: pbkv writes its keys through the whole write path, about 20k keys/s assumed
 * (100,000-key preloads ran at 10-43k keys/s on the busy machine; 5M was not measured), so
 * about 4 minutes for 5M keys, twice (the puts point and the gets point each start from an
 * empty cluster); Redis loaded 700,000 keys in MSETs in 9 s, AOF rewrites included. The
 * sweep stays under 25 minutes while pbkv's preloads average 15k keys/s or more; each
 * point's line shows its preload's rate. Every point is bounded: the bench's runs
 * (--seconds) and preload (PRELOAD_SECONDS_MAX) are, and a point past its deadline here is
 * stopped (its process group) and reported.
 * --quick runs each point for 1 s with the keys dimension at 10k, 20k and 50k keys, into
 * a temporary directory unless --out is given, to try the whole chain in about 5 minutes.
 *
 * Each point's bench runs in a process group of its own, with TMPDIR set to one scratch
 * directory of this sweep, removed at the end whatever happened: a point stopped at its
 * deadline leaves no cluster, Redis or data directory behind.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { failWith, readFlags, type Fail } from '../src/cli/flags.js';
import { redisAvailable } from './redis-compare.js';
import { drawFigure, readResults, type FigureKind } from './sweep-figures.js';

const USAGE = `usage: npm run bench:sweep [-- --quick] [--only inflight,values,connections,replicas,keys] [--out DIR] [--seconds 5] [--verbose] [--plan]
  --quick      1 s per point and small stores (10k, 20k, 50k keys), into a temporary directory unless --out
  --only       the dimensions to run (the others' files are left as they are)
  --out        where the JSON lines and SVGs go (default docs)
  --seconds    each system's run per point (default 5; --quick: 1)
  --verbose    show the bench's own output (progress bars, preload rates)
  --plan       print the points, each one's bench command and the estimate, and run nothing`;
const fail: Fail = failWith('sweep', USAGE);
const flags = readFlags(fail, USAGE, {
  quick: { type: 'boolean', default: false },
  only: { type: 'string' },
  out: { type: 'string' },
  seconds: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  plan: { type: 'boolean', default: false },
});

const BENCH = fileURLToPath(new URL('./bench.js', import.meta.url));
const SECONDS_MAX = 60;
/** The load average (1 min) above which figures taken now say more about the neighbours than about pbkv. */
const QUIET_LOAD_MAX = 0.5;

/** What a point costs besides its runs, for the estimate: cluster and Redis start and stop. */
const POINT_FIXED_SECONDS = 8;
/** Preload rates for the estimate (pbkv through the write path; Redis in MSETs), and for a point's deadline a quarter of them. */
const PBKV_PRELOAD_KEYS_PER_SECOND = 20_000;
const PBKV_PRELOAD_BYTES_PER_SECOND = 15e6;
const REDIS_PRELOAD_KEYS_PER_SECOND = 80_000;
const DEADLINE_SLACK = 4;
const DEADLINE_FIXED_SECONDS = 120;
/** After SIGTERM to a point's process group, how long before SIGKILL. */
const STOP_GRACE_MS = 5_000;

type DimensionName = 'inflight' | 'values' | 'connections' | 'replicas' | 'keys';
const DIMENSION_NAMES: readonly DimensionName[] = ['inflight', 'values', 'connections', 'replicas', 'keys'];

interface Point {
  label: string;
  connections: number;
  depth: number;
  mix: '1:0' | '0:1';
  valueBytes: number;
  keys: number;
  preload: number;
  replicas: number;
}

interface Dimension {
  name: DimensionName;
  file: string;
  figures: { file: string; kind: FigureKind }[];
  points: Point[];
}

const BASE = { connections: 8, depth: 8, valueBytes: 100, keys: 10_000, replicas: 2 } as const;
const KIB = 1024;

/** Puts on `keys` keys from an empty store, and gets of `keys` preloaded keys. */
function putsAndGets(label: string, shape: Omit<Point, 'label' | 'mix' | 'preload'>): Point[] {
  return [
    { ...shape, label: `${label}, puts`, mix: '1:0', preload: 0 },
    { ...shape, label: `${label}, gets`, mix: '0:1', preload: shape.keys },
  ];
}

function dimensions(quick: boolean): Dimension[] {
  // Large values with fewer keys, so that each size's store is tens of MB, not GB (10,000 x 64 KiB is 640 MB a node).
  const values = [
    { valueBytes: 100, keys: 10_000 },
    { valueBytes: 4 * KIB, keys: 10_000 },
    { valueBytes: 64 * KIB, keys: 1_000 },
  ];
  const storeSizes = quick ? [10_000, 20_000, 50_000] : [10_000, 1_000_000, 5_000_000];
  return [
    {
      name: 'inflight',
      file: 'bench-sweep.jsonl',
      figures: [{ file: 'throughput.svg', kind: 'throughput' }, { file: 'latency.svg', kind: 'latency' }],
      points: [[1, 1], [2, 2], [4, 4], [8, 8], [8, 16]].flatMap(([connections, depth]) => putsAndGets(`${connections} x ${depth}`, { ...BASE, connections: connections!, depth: depth! })),
    },
    {
      name: 'values',
      file: 'bench-values.jsonl',
      figures: [{ file: 'sweep-values.svg', kind: 'values' }],
      points: values.flatMap(({ valueBytes, keys }) => putsAndGets(`${valueBytes < KIB ? `${valueBytes} B` : `${valueBytes / KIB} KiB`} values`, { ...BASE, valueBytes, keys })),
    },
    {
      name: 'connections',
      file: 'bench-connections.jsonl',
      figures: [{ file: 'sweep-connections.svg', kind: 'connections' }],
      points: [[8, 8], [1000, 1]].flatMap(([connections, depth]) => putsAndGets(`${connections!.toLocaleString('en-US')} connections x ${depth}`, { ...BASE, connections: connections!, depth: depth! })),
    },
    {
      name: 'replicas',
      file: 'bench-replicas.jsonl',
      figures: [{ file: 'sweep-replicas.svg', kind: 'replicas' }],
      points: [0, 1, 2].map((replicas) => ({ ...BASE, label: `${replicas} replica${replicas === 1 ? '' : 's'}, puts`, mix: '1:0', preload: 0, replicas })),
    },
    {
      name: 'keys',
      file: 'bench-keys.jsonl',
      figures: [{ file: 'sweep-keys.svg', kind: 'keys' }],
      // Puts too write into the preloaded store: random keys among those it holds.
      points: storeSizes.flatMap((keys) => [
        { ...BASE, label: `${keys.toLocaleString('en-US')} keys, puts`, mix: '1:0', keys, preload: keys },
        { ...BASE, label: `${keys.toLocaleString('en-US')} keys, gets`, mix: '0:1', keys, preload: keys },
      ]),
    },
  ];
}

/** Seconds a point should take on a quiet machine: both runs, the fixed cost, both preloads. */
function expectedSeconds(point: Point, seconds: number): number {
  const pbkvPreload = Math.max(point.preload / PBKV_PRELOAD_KEYS_PER_SECOND, (point.preload * point.valueBytes) / PBKV_PRELOAD_BYTES_PER_SECOND);
  return POINT_FIXED_SECONDS + 2 * seconds + pbkvPreload + point.preload / REDIS_PRELOAD_KEYS_PER_SECOND;
}

function benchArgs(point: Point, seconds: number): string[] {
  return [
    BENCH,
    '--connections', String(point.connections), '--depth', String(point.depth), '--mix', point.mix,
    '--value-bytes', String(point.valueBytes), '--keys', String(point.keys), '--preload', String(point.preload),
    '--replicas', String(point.replicas), '--seconds', String(seconds), '--compare', 'redis', '--json',
  ];
}

interface Outcome {
  line?: string;
  error?: string;
  seconds: number;
  /** The bench's last preload line: "preloading 5000000/5000000 keys, 212.0 s, 23585 keys/s". */
  preload?: string;
}

/** The point's process group, while it runs: what Ctrl-C and a deadline stop. */
let running: number | undefined;
/** Set by Ctrl-C (or SIGTERM): no further point starts. */
let stopping = false;

/**
 * Runs one point's bench in a process group of its own (so its cluster and Redis can be
 * stopped with it) and returns its JSON line, or why there is none.
 */
function runPoint(point: Point, seconds: number, scratch: string, verbose: boolean): Promise<Outcome> {
  const started = Date.now();
  const deadlineMs = (DEADLINE_FIXED_SECONDS + DEADLINE_SLACK * expectedSeconds(point, seconds)) * 1000;
  const child = spawn(process.execPath, benchArgs(point, seconds), {
    detached: true,
    stdio: ['ignore', 'pipe', verbose ? 'inherit' : 'pipe'],
    env: { ...process.env, TMPDIR: scratch },
  });
  running = child.pid;
  let stdout = '';
  let stderr = '';
  let preload: string | undefined;
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  // Only the end of the bench's output is kept: its progress bars redraw with \r.
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
    preload = [...stderr.matchAll(/preloading \d+\/\d+ keys, [\d.]+ s, \d+ keys\/s/g)].at(-1)?.[0] ?? preload;
  });
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    stopGroup(child.pid);
  }, deadlineMs);
  return new Promise((resolve) => {
    child.once('error', (error) => resolve({ error: error.message, seconds: (Date.now() - started) / 1000 }));
    child.once('close', (code, signal) => {
      clearTimeout(deadline);
      running = undefined;
      const elapsed = (Date.now() - started) / 1000;
      const line = stdout.trim().split('\n').at(-1);
      if (timedOut) return resolve({ error: `stopped after ${Math.round(deadlineMs / 1000)} s (its deadline)`, seconds: elapsed });
      if (code !== 0 || !line) {
        const lastLines = stderr.split(/[\r\n]+/).filter((l) => l.trim() !== '').slice(-5).join('\n    ');
        return resolve({ error: `bench ${signal ? `was killed by ${signal}` : `exited with ${code}`}${lastLines ? `:\n    ${lastLines}` : ''}`, seconds: elapsed });
      }
      try {
        JSON.parse(line);
      } catch {
        return resolve({ error: `bench's last line is not JSON: ${line.slice(0, 200)}`, seconds: elapsed });
      }
      resolve({ line, seconds: elapsed, preload });
    });
  });
}

/** SIGTERM to a point's process group (bench, hub, nodes, Redis), then SIGKILL if it lingers. */
function stopGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-pid, name);
    } catch (error) {
      // ESRCH: the group is gone already.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };
  signal('SIGTERM');
  setTimeout(() => signal('SIGKILL'), STOP_GRACE_MS).unref();
}

/** "pbkv 12,345 ops/s, Redis 23,456 (0.53x)" from a point's JSON line. */
function summary(line: string): string {
  const pair = JSON.parse(line) as Record<string, { opsPerSecond: number; errors: number; latencyMs: { p99: number } }>;
  const { pbkv, redis } = pair;
  if (!pbkv || !redis) return line.slice(0, 120);
  const errors = pbkv.errors + redis.errors > 0 ? `, ERRORS pbkv ${pbkv.errors} Redis ${redis.errors}` : '';
  const ratio = redis.opsPerSecond > 0 ? ` (${(pbkv.opsPerSecond / redis.opsPerSecond).toFixed(2)}x)` : '';
  return `pbkv ${pbkv.opsPerSecond.toLocaleString('en-US')} ops/s p99 ${pbkv.latencyMs.p99} ms, Redis ${redis.opsPerSecond.toLocaleString('en-US')} p99 ${redis.latencyMs.p99} ms${ratio}${errors}`;
}

function minutes(seconds: number): string {
  const whole = Math.round(seconds);
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
}

async function main(): Promise<void> {
  const quick = flags.quick;
  const seconds = flags.seconds === undefined ? (quick ? 1 : 5) : Number(flags.seconds);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > SECONDS_MAX) fail(`--seconds is a whole number from 1 to ${SECONDS_MAX}`);
  const only = flags.only === undefined ? DIMENSION_NAMES : flags.only.split(',');
  const unknown = only.filter((name) => !(DIMENSION_NAMES as readonly string[]).includes(name));
  if (unknown.length > 0) fail(`--only takes ${DIMENSION_NAMES.join(', ')}, not ${unknown.join(', ')}`);
  if (!redisAvailable()) fail('the sweep compares with Redis: it needs redis-server on the PATH (Debian: apt-get install redis-server)', 1);
  const out = flags.out ?? (quick ? path.join(tmpdir(), 'pbkv-sweep-quick') : 'docs');
  mkdirSync(out, { recursive: true });
  const chosen = dimensions(quick).filter((dimension) => only.includes(dimension.name));
  const points = chosen.flatMap((dimension) => dimension.points.map((point) => ({ dimension, point })));
  const estimate = points.reduce((sum, { point }) => sum + expectedSeconds(point, seconds), 0);
  if (flags.plan) {
    for (const { dimension, point } of points) console.log(`${dimension.name}: ${point.label}, about ${minutes(expectedSeconds(point, seconds))}\n  node ${path.relative(process.cwd(), BENCH)} ${benchArgs(point, seconds).slice(1).join(' ')}`);
    console.log(`${points.length} points, about ${minutes(estimate)} on a quiet 2-core machine`);
    return;
  }
  const load = loadavg()[0]!;
  console.log(`sweep: ${points.length} points (${chosen.map((d) => d.name).join(', ')}), ${seconds} s per system per point, about ${minutes(estimate)} on a quiet 2-core machine; results into ${out}/`);
  if (load > QUIET_LOAD_MAX) console.log(`sweep: the load average is ${load.toFixed(2)}: figures taken on a busy machine are low, and move from run to run`);

  const scratch = mkdtempSync(path.join(tmpdir(), 'pbkv-sweep-'));
  const onSignal = (signal: NodeJS.Signals) => {
    console.log(`\nsweep: ${signal}: stopping the running point; no further point starts`);
    stopping = true;
    process.exitCode = 130;
    stopGroup(running);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const started = Date.now();
  const failures: string[] = [];
  try {
    let index = 0;
    for (const dimension of chosen) {
      const file = path.join(out, dimension.file);
      writeFileSync(file, '');
      for (const point of dimension.points) {
        if (stopping) break;
        index += 1;
        const tag = `[${String(index).padStart(2)}/${points.length}] ${dimension.name}: ${point.label}`;
        process.stdout.write(`${tag} ... `);
        const outcome = await runPoint(point, seconds, scratch, flags.verbose);
        if (outcome.line) {
          appendFileSync(file, `${outcome.line}\n`);
          console.log(`${summary(outcome.line)}  (${minutes(outcome.seconds)}${outcome.preload ? `; pbkv ${outcome.preload}` : ''})`);
        } else {
          failures.push(`${tag}: ${outcome.error}`);
          console.log(`FAILED after ${minutes(outcome.seconds)}: ${outcome.error}`);
        }
      }
      for (const figure of dimension.figures) {
        const target = path.join(out, figure.file);
        try {
          writeFileSync(target, `${drawFigure(figure.kind, readResults(file))}\n`);
          console.log(`drew ${target}`);
        } catch (error) {
          failures.push(`${dimension.name}: drawing ${target}: ${(error as Error).message}`);
        }
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const took = (Date.now() - started) / 1000;
  console.log(`sweep: took ${minutes(took)} (estimated ${minutes(estimate)}); load average now ${loadavg()[0]!.toFixed(2)}, at the start ${load.toFixed(2)}`);
  if (failures.length > 0) {
    console.log(`sweep: ${failures.length} failed:\n  ${failures.join('\n  ')}`);
    process.exitCode ??= 1;
  }
}

main().catch((error: unknown) => {
  console.error(`sweep: ${(error as Error).message}`);
  process.exitCode = 1;
});
