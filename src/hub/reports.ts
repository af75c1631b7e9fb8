/**
 * What the hub keeps of the metrics nodes report with their heartbeats: each node's last
 * report (counters since it started, served to Prometheus as they are), and once a second
 * a sample of its rates and p99 over that second, five minutes of them, for the page and
 * for `status`. Bounded: METRICS_NODES_MAX nodes, METRICS_HISTORY_SAMPLES samples each.
 */
import { LATENCY_BUCKETS_MS, METRICS_HISTORY_SAMPLES, METRICS_NODES_MAX, METRICS_SAMPLE_INTERVAL_MS, METRICS_STATUS_WINDOW_SAMPLES } from '../constants.js';
import type { Clock } from '../env/environment.js';
import { METERED_OPS, type MeteredOp, type MetricsReport } from '../protocol/messages.js';

/** One node's second: ops per second by op and in all, and the p99 latency of all its requests. */
export interface Sample {
  /** Wall-clock ms at the end of the second. */
  t: number;
  rates: Partial<Record<MeteredOp, number>>;
  requests: number;
  /** null: no request in that second. */
  p99Ms: number | null;
}

/** What `status` says of a node's load: over the last METRICS_STATUS_WINDOW_SAMPLES seconds. */
export interface NodeLoad {
  heartbeatAgeMs: number;
  rates: Partial<Record<MeteredOp, number>>;
  requests: number;
  p99Ms: Partial<Record<MeteredOp, number>>;
  p99AllMs: number | null;
  connections: number;
  watchers: number;
}

interface Reported {
  last: MetricsReport;
  /** When it came (the hub's monotonic clock). */
  atMs: number;
  /** The report each of the last samples was taken from, oldest first (the status window and one more). */
  window: Array<{ report: MetricsReport; atMs: number }>;
  history: Sample[];
}

export class NodeReports {
  private readonly nodes = new Map<string, Reported>();

  constructor(private readonly clock: Clock) {}

  /** A heartbeat's report. */
  take(name: string, report: MetricsReport): void {
    const node = this.nodes.get(name);
    if (node) {
      node.last = report;
      node.atMs = this.clock.now();
      // Most recently heard last: the one to forget is the first.
      this.nodes.delete(name);
      this.nodes.set(name, node);
      return;
    }
    if (this.nodes.size >= METRICS_NODES_MAX) this.nodes.delete(this.nodes.keys().next().value!);
    this.nodes.set(name, { last: report, atMs: this.clock.now(), window: [{ report, atMs: this.clock.now() }], history: [] });
  }

  /** The last report of every node, as it came. */
  reports(): ReadonlyMap<string, { report: MetricsReport; ageMs: number }> {
    const now = this.clock.now();
    return new Map([...this.nodes].map(([name, node]) => [name, { report: node.last, ageMs: now - node.atMs }]));
  }

  /**
   * Closes one second: a sample for each node heard since the last one (a silent node gets
   * none: its line on the page stops). Returns the new samples by node.
   */
  sample(): Record<string, Sample> {
    const samples: Record<string, Sample> = {};
    const t = this.clock.wallNow();
    for (const [name, node] of this.nodes) {
      const previous = node.window[node.window.length - 1]!;
      if (previous.atMs === node.atMs) continue;
      const sample = { t, ...between(previous, { report: node.last, atMs: node.atMs }) };
      node.window.push({ report: node.last, atMs: node.atMs });
      if (node.window.length > METRICS_STATUS_WINDOW_SAMPLES + 1) node.window.shift();
      node.history.push(sample);
      if (node.history.length > METRICS_HISTORY_SAMPLES) node.history.shift();
      samples[name] = sample;
    }
    return samples;
  }

  history(): Record<string, Sample[]> {
    return Object.fromEntries([...this.nodes].map(([name, node]) => [name, [...node.history]]));
  }

  /**
   * Each node's load over the status window, from its first and last sampled reports; a
   * node not heard for two samples has none (its last rates would read as load it no
   * longer serves).
   */
  load(): Record<string, NodeLoad> {
    const now = this.clock.now();
    const out: Record<string, NodeLoad> = {};
    for (const [name, node] of this.nodes) {
      if (now - node.atMs > 2 * METRICS_SAMPLE_INTERVAL_MS) {
        const silent = { heartbeatAgeMs: Math.round(now - node.atMs), rates: {}, requests: 0, p99Ms: {}, p99AllMs: null, connections: 0, watchers: 0 };
        out[name] = silent;
        continue;
      }
      const first = node.window[0]!;
      const last = node.window[node.window.length - 1]!;
      const { rates, requests } = between(first, last);
      const p99Ms: Partial<Record<MeteredOp, number>> = {};
      let all: number[] | undefined;
      for (const op of METERED_OPS) {
        const counts = latencyDelta(first.report, last.report, op);
        if (!counts) continue;
        all = all ? all.map((count, index) => count + counts[index]!) : counts;
        const p99 = quantile(counts, 0.99);
        if (p99 !== null) p99Ms[op] = p99;
      }
      out[name] = {
        heartbeatAgeMs: Math.round(now - node.atMs),
        rates,
        requests,
        p99Ms,
        p99AllMs: all ? quantile(all, 0.99) : null,
        connections: node.last.connections,
        watchers: node.last.watchers,
      };
    }
    return out;
  }
}

/** Rates between two reports of one node, and the p99 of all requests between them. */
function between(from: { report: MetricsReport; atMs: number }, to: { report: MetricsReport; atMs: number }): Omit<Sample, 't'> {
  const seconds = (to.atMs - from.atMs) / 1000;
  const rates: Partial<Record<MeteredOp, number>> = {};
  let requests = 0;
  let all: number[] | undefined;
  for (const op of METERED_OPS) {
    const count = countDelta(from.report, to.report, op);
    if (count > 0 && seconds > 0) {
      rates[op] = round(count / seconds);
      requests += count;
    }
    const counts = latencyDelta(from.report, to.report, op);
    if (counts) all = all ? all.map((n, index) => n + counts[index]!) : counts;
  }
  return { rates, requests: seconds > 0 ? round(requests / seconds) : 0, p99Ms: all ? quantile(all, 0.99) : null };
}

/** A counter's rise; a node that restarted counts from zero again. */
function countDelta(from: MetricsReport, to: MetricsReport, op: MeteredOp): number {
  const now = to.ops[op]?.count ?? 0;
  if (from.startedAtMs !== to.startedAtMs) return now;
  return Math.max(0, now - (from.ops[op]?.count ?? 0));
}

function latencyDelta(from: MetricsReport, to: MetricsReport, op: MeteredOp): number[] | undefined {
  const now = to.ops[op]?.latency;
  if (!now) return undefined;
  const before = from.startedAtMs === to.startedAtMs ? from.ops[op]?.latency : undefined;
  const counts = now.map((count, index) => Math.max(0, count - (before?.[index] ?? 0)));
  return counts.some((count) => count > 0) ? counts : undefined;
}

/**
 * The q-quantile of a histogram of LATENCY_BUCKETS_MS counts (not cumulative), by linear
 * interpolation inside the bucket it falls in, as Prometheus's histogram_quantile does;
 * past the last bound it is that bound. null when the histogram is empty.
 */
export function quantile(counts: readonly number[], q: number): number | null {
  const total = counts.reduce((sum, count) => sum + count, 0);
  if (total === 0) return null;
  const rank = q * total;
  let below = 0;
  for (let index = 0; index < counts.length; index += 1) {
    const count = counts[index]!;
    if (below + count >= rank && count > 0) {
      if (index >= LATENCY_BUCKETS_MS.length) return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
      const lower = index === 0 ? 0 : LATENCY_BUCKETS_MS[index - 1]!;
      const upper = LATENCY_BUCKETS_MS[index]!;
      return round(lower + ((upper - lower) * (rank - below)) / count);
    }
    below += count;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
