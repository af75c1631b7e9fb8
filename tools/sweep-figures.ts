/**
 * The figures of `npm run bench:sweep`, drawn from the bench's JSON lines (one
 * `--compare redis --json` pair {pbkv, redis} per line, or a lone result):
 * - throughput, latency: ops/s, and p50 and p99, against requests in flight (lines);
 * - values: ops/s and MB/s of values per value size (grouped bars);
 * - connections: ops/s and p99 for 8 x 8 against 1,000 connections x 1;
 * - keys: ops/s and each process's peak RSS per store size;
 * - replicas: puts/s and p99 per number of replicas.
 * pbkv is blue and Redis red, puts dark and gets light, in every figure.
 */
import { readFileSync } from 'node:fs';
import { barChart, compact, lineChart, type BarPanel, type LineSeries } from './svg-chart.js';

export const FIGURE_KINDS = ['throughput', 'latency', 'values', 'connections', 'keys', 'replicas'] as const;
export type FigureKind = (typeof FIGURE_KINDS)[number];

/** What the figures read of one bench result. */
export interface BenchResult {
  system: string;
  workload: { connections: number; depth: number; seconds: number; valueBytes: number; keys: number; preload: number; replicas: number; mix?: string };
  opsPerSecond: number;
  errors: number;
  latencyMs: { p50: number; p99: number };
  peakRssMb: Record<string, number | undefined>;
}

/** Every result in a file of the bench's JSON lines; the echo's are left out. */
export function readResults(file: string): BenchResult[] {
  const results: BenchResult[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const parsed = JSON.parse(line) as BenchResult | Record<string, BenchResult>;
    const found = 'opsPerSecond' in parsed ? [parsed as BenchResult] : Object.values(parsed as Record<string, BenchResult>);
    results.push(...found.filter((result) => result.system !== 'echo'));
  }
  return results;
}

export function drawFigure(kind: FigureKind, results: BenchResult[]): string {
  if (results.length === 0) throw new Error(`no results to draw the ${kind} figure from`);
  switch (kind) {
    case 'throughput':
    case 'latency':
      return inFlightFigure(kind, results);
    case 'values':
      return valuesFigure(results);
    case 'connections':
      return connectionsFigure(results);
    case 'keys':
      return keysFigure(results);
    case 'replicas':
      return replicasFigure(results);
  }
}

type Mix = 'puts' | 'gets';
type System = 'pbkv' | 'redis';

const COLORS: Record<System, Record<Mix, string>> = {
  pbkv: { puts: '#1f5fa8', gets: '#8fbce6' },
  redis: { puts: '#c8302c', gets: '#f4a29a' },
};

function mixOf(result: BenchResult): Mix | undefined {
  const mix = result.workload.mix;
  return mix === '1:0' ? 'puts' : mix === '0:1' ? 'gets' : undefined;
}

/** How a system's op is named in a legend: Redis's put is SET + WAIT <its replicas>. */
function seriesName(system: System, mix: Mix, replicas?: number): string {
  if (system === 'pbkv') return `pbkv ${mix}`;
  return mix === 'gets' ? 'Redis GET' : `Redis SET + WAIT ${replicas ?? 'n'}`;
}

/** The result of `system` and `mix` whose group key is `key` (the last such line, if a point ran twice). */
function find(results: BenchResult[], system: System, mix: Mix, keyOf: (result: BenchResult) => number, key: number): BenchResult | undefined {
  return results.filter((result) => result.system === system && mixOf(result) === mix && keyOf(result) === key).at(-1);
}

function groupKeys(results: BenchResult[], keyOf: (result: BenchResult) => number): number[] {
  return [...new Set(results.map(keyOf))].sort((a, b) => a - b);
}

function tooltip(name: string, group: string, result: BenchResult, extra = ''): string {
  const errors = result.errors > 0 ? `, ${result.errors.toLocaleString('en-US')} ERRORS` : '';
  return `${name}, ${group}: ${result.opsPerSecond.toLocaleString('en-US')} ops/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms${extra}${errors}`;
}

/** "puts 0.41x, gets 0.56x": pbkv's ops/s over Redis's, for each mix both ran. */
function ratios(results: BenchResult[], keyOf: (result: BenchResult) => number, key: number, mixes: readonly Mix[]): string | undefined {
  const parts = mixes.flatMap((mix) => {
    const pbkv = find(results, 'pbkv', mix, keyOf, key);
    const redis = find(results, 'redis', mix, keyOf, key);
    if (!pbkv || !redis || redis.opsPerSecond === 0) return [];
    const ratio = (pbkv.opsPerSecond / redis.opsPerSecond).toFixed(2);
    return [mixes.length === 1 ? `${ratio}x Redis` : `${mix} ${ratio}x`];
  });
  return parts.length === 0 ? undefined : parts.join(', ');
}

/** "one run of 5 s per bar": the runs' length, rounded, as the results say. */
function runLength(results: BenchResult[]): string {
  const seconds = [...new Set(results.map((result) => Math.round(result.workload.seconds)))].sort((a, b) => a - b);
  return `one run of ${seconds.join('-')} s per ${seconds.length === 1 ? 'point' : 'point (varied)'}`;
}

function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / 1024 / 1024} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

/**
 * A panel of ops/s-like bars: for each group, pbkv and Redis for each mix, side by side
 * (pbkv puts, Redis puts, pbkv gets, Redis gets).
 */
function systemsPanel(
  title: string,
  results: BenchResult[],
  keyOf: (result: BenchResult) => number,
  keys: number[],
  groupLabel: (key: number) => string,
  mixes: readonly Mix[],
  value: (result: BenchResult) => number,
  replicas: number | undefined,
): BarPanel {
  const bars = mixes.flatMap((mix) => (['pbkv', 'redis'] as const).map((system) => ({ system, mix })));
  const cells = keys.map((key) => bars.map(({ system, mix }) => find(results, system, mix, keyOf, key)));
  return {
    title,
    bars: bars.map(({ system, mix }) => ({ name: seriesName(system, mix, replicas), color: COLORS[system][mix] })),
    values: cells.map((row) => row.map((result) => (result === undefined ? undefined : value(result)))),
    titles: cells.map((row, g) =>
      row.map((result, b) => (result === undefined ? undefined : tooltip(seriesName(bars[b]!.system, bars[b]!.mix, replicas), groupLabel(keys[g]!), result))),
    ),
  };
}

/** The one value of a workload field across results, or `fallback` when they differ. */
function common<T, F>(results: BenchResult[], field: (result: BenchResult) => T, fallback: F): T | F {
  const seen = [...new Set(results.map(field))];
  return seen.length === 1 ? seen[0]! : fallback;
}

function shape(results: BenchResult[]): string {
  const connections = common(results, (r) => r.workload.connections, 'n');
  const depth = common(results, (r) => r.workload.depth, 'n');
  return `${typeof connections === 'number' ? connections.toLocaleString('en-US') : connections} connections x ${depth} in flight`;
}

function inFlightFigure(metric: 'throughput' | 'latency', results: BenchResult[]): string {
  const series = new Map<string, LineSeries>();
  const palette = ['#1f5fa8', '#c8302c', '#2e8b57', '#e07b00', '#7b4ea3', '#8c564b', '#17a2b8', '#7f7f7f'];
  const add = (name: string, color: string, dashed: boolean, x: number, y: number, title: string) => {
    const entry = series.get(name) ?? { name, color, dashed, points: [] };
    entry.points.push({ x, y, title });
    series.set(name, entry);
  };
  for (const result of results) {
    const mix = mixOf(result) ?? `mix ${result.workload.mix}`;
    const system = result.system as System;
    const name = mix === 'puts' || mix === 'gets' ? seriesName(system, mix, result.workload.replicas) : `${system} ${mix}`;
    const inFlight = result.workload.connections * result.workload.depth;
    const color = mix === 'puts' || mix === 'gets' ? COLORS[system]?.[mix] ?? palette[series.size % palette.length]! : palette[series.size % palette.length]!;
    if (metric === 'throughput') {
      add(name, color, false, inFlight, result.opsPerSecond, tooltip(name, `${inFlight} in flight`, result));
    } else {
      add(`${name} p50`, color, false, inFlight, result.latencyMs.p50, `${name} p50: ${result.latencyMs.p50} ms at ${inFlight} in flight`);
      add(`${name} p99`, color, true, inFlight, result.latencyMs.p99, `${name} p99: ${result.latencyMs.p99} ms at ${inFlight} in flight`);
    }
  }
  const replicas = common(results, (r) => r.workload.replicas, 'n');
  const valueBytes = common(results, (r) => r.workload.valueBytes, 0);
  const conditions = `${replicas} replicas, ${typeof valueBytes === 'number' ? sizeLabel(valueBytes) : 'mixed'} values, pbkv then Redis in the same run, ${runLength(results)}`;
  return lineChart({
    title: metric === 'throughput' ? 'Throughput against requests in flight' : 'Latency (p50 solid, p99 dashed) against requests in flight',
    subtitle: conditions,
    xLabel: 'requests in flight (connections x depth)',
    yLabel: metric === 'throughput' ? 'ops/s' : 'ms',
    log2X: true,
    series: [...series.values()],
  });
}

function valuesFigure(results: BenchResult[]): string {
  const keyOf = (result: BenchResult) => result.workload.valueBytes;
  const sizes = groupKeys(results, keyOf);
  const keysPerSize = sizes.map((size) => `${sizeLabel(size)}: ${common(results.filter((r) => keyOf(r) === size), (r) => r.workload.keys, '?').toLocaleString('en-US')}`);
  const label = (size: number) => sizeLabel(size);
  const replicas = common(results, (r) => r.workload.replicas, 'n');
  const mixes = ['puts', 'gets'] as const;
  const replicaCount = typeof replicas === 'number' ? replicas : undefined;
  return barChart({
    title: `Cost against value size (${shape(results)}, ${replicas} replicas)`,
    subtitle: `Keys per size (gets read preloaded keys) ${keysPerSize.join(', ')}; ${runLength(results)}. Under each size: pbkv's ops/s over Redis's.`,
    groups: sizes.map((size) => ({ label: label(size), note: ratios(results, keyOf, size, mixes) })),
    panels: [
      systemsPanel('ops/s', results, keyOf, sizes, label, mixes, (r) => r.opsPerSecond, replicaCount),
      systemsPanel('MB/s of values (ops/s x value size)', results, keyOf, sizes, label, mixes, (r) => (r.opsPerSecond * r.workload.valueBytes) / 1e6, replicaCount),
    ],
  });
}

function connectionsFigure(results: BenchResult[]): string {
  const keyOf = (result: BenchResult) => result.workload.connections;
  const counts = groupKeys(results, keyOf);
  const depthOf = (connections: number) => common(results.filter((r) => keyOf(r) === connections), (r) => r.workload.depth, '?');
  const label = (connections: number) => `${connections.toLocaleString('en-US')} conns x ${depthOf(connections)}`;
  const replicas = common(results, (r) => r.workload.replicas, 'n');
  const replicaCount = typeof replicas === 'number' ? replicas : undefined;
  const mixes = ['puts', 'gets'] as const;
  return barChart({
    title: `Many connections, one request in flight on each (a web app's pool)`,
    subtitle: `${replicas} replicas, ${sizeLabel(Number(common(results, (r) => r.workload.valueBytes, 0)))} values; ${runLength(results)}. Under each shape: pbkv's ops/s over Redis's.`,
    groups: counts.map((connections) => ({ label: label(connections), note: ratios(results, keyOf, connections, mixes) })),
    panels: [
      systemsPanel('ops/s', results, keyOf, counts, label, mixes, (r) => r.opsPerSecond, replicaCount),
      systemsPanel('p99 latency, ms', results, keyOf, counts, label, mixes, (r) => r.latencyMs.p99, replicaCount),
    ],
  });
}

function keysFigure(results: BenchResult[]): string {
  const keyOf = (result: BenchResult) => result.workload.preload;
  const sizes = groupKeys(results, keyOf);
  const label = (keys: number) => `${compact(keys)} keys`;
  const replicas = common(results, (r) => r.workload.replicas, 'n');
  const replicaCount = typeof replicas === 'number' ? replicas : undefined;
  const mixes = ['puts', 'gets'] as const;
  return barChart({
    title: `Cost against store size (${shape(results)}, ${replicas} replicas)`,
    subtitle: `Keys preloaded, then puts or gets of random keys among them; ${runLength(results)}. RSS: each process's peak (VmHWM), preload included.`,
    groups: sizes.map((keys) => ({ label: label(keys), note: ratios(results, keyOf, keys, mixes) })),
    panels: [
      systemsPanel('ops/s', results, keyOf, sizes, label, mixes, (r) => r.opsPerSecond, replicaCount),
      rssPanel(results, keyOf, sizes, label),
    ],
  });
}

/**
 * Peak RSS per store size: pbkv's primary (n0, the first view's primary) and its largest
 * replica, Redis's primary and its largest replica, each the larger of the puts and the
 * gets run.
 */
function rssPanel(results: BenchResult[], keyOf: (result: BenchResult) => number, keys: number[], label: (key: number) => string): BarPanel {
  const roles = [
    { name: 'pbkv primary (n0)', color: COLORS.pbkv.puts, system: 'pbkv', pick: (rss: [string, number][]) => rss.filter(([name]) => name === 'n0') },
    { name: 'pbkv replica, largest', color: COLORS.pbkv.gets, system: 'pbkv', pick: (rss: [string, number][]) => rss.filter(([name]) => name !== 'n0') },
    { name: 'Redis primary', color: COLORS.redis.puts, system: 'redis', pick: (rss: [string, number][]) => rss.filter(([name]) => name === 'primary') },
    { name: 'Redis replica, largest', color: COLORS.redis.gets, system: 'redis', pick: (rss: [string, number][]) => rss.filter(([name]) => name !== 'primary') },
  ] as const;
  const cells = keys.map((key) =>
    roles.map((role) => {
      const runs = results.filter((result) => result.system === role.system && keyOf(result) === key);
      const rss = runs.flatMap((run) => Object.entries(run.peakRssMb).filter((entry): entry is [string, number] => entry[1] !== undefined));
      const picked = role.pick(rss);
      if (picked.length === 0) return undefined;
      const [name, mb] = picked.reduce((a, b) => (b[1] > a[1] ? b : a));
      return { mb, title: `${role.name}, ${label(key)}: ${mb} MB peak (${name}; largest of ${runs.length} run${runs.length === 1 ? '' : 's'})` };
    }),
  );
  return {
    title: 'peak RSS per process, MB',
    bars: roles.map((role) => ({ name: role.name, color: role.color })),
    values: cells.map((row) => row.map((cell) => cell?.mb)),
    titles: cells.map((row) => row.map((cell) => cell?.title)),
  };
}

function replicasFigure(results: BenchResult[]): string {
  const keyOf = (result: BenchResult) => result.workload.replicas;
  const counts = groupKeys(results, keyOf);
  const label = (replicas: number) => `${replicas} replica${replicas === 1 ? '' : 's'}`;
  const mixes = ['puts'] as const;
  return barChart({
    title: `Cost against replicas: puts (${shape(results)})`,
    subtitle: `${sizeLabel(Number(common(results, (r) => r.workload.valueBytes, 0)))} values; Redis waits for as many replicas as it has (WAIT n); ${runLength(results)}.`,
    groups: counts.map((replicas) => ({ label: label(replicas), note: ratios(results, keyOf, replicas, mixes) })),
    panels: [
      systemsPanel('puts/s', results, keyOf, counts, label, mixes, (r) => r.opsPerSecond, undefined),
      systemsPanel('p99 latency, ms', results, keyOf, counts, label, mixes, (r) => r.latencyMs.p99, undefined),
    ],
  });
}
