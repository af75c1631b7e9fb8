/**
 * Nodes' reports in the Prometheus text format (0.0.4), through prom-client: the hub
 * serves every node's last report, a node serves its own beside its process's metrics.
 * Both use the same names with a `node` label, so one dashboard reads either.
 *
 * Counters and gauges are prom-client's, filled at scrape time (`collect`). A node's
 * histograms arrive as bucket counts, which prom-client's Histogram cannot take, so they
 * are metrics of our own that the registry formats like any other (its custom-collector
 * contract: `get()` returns the samples).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import { BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_MS } from '../constants.js';
import { METERED_OPS, type MetricsReport } from '../protocol/messages.js';

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** Each node's last report, by node name. */
export type ReportsOf = () => Iterable<[string, MetricsReport]>;

/** Registers the metrics of nodes' reports: requests, errors, latency, batches, connections, bytes. */
export function registerReportMetrics(registry: Registry, reportsOf: ReportsOf): void {
  const eachReport = (fill: (node: string, report: MetricsReport) => void) => {
    for (const [node, report] of reportsOf()) fill(node, report);
  };
  counter(registry, 'pbkv_node_ops_total', 'Requests answered, by op (ok or not).', ['node', 'op'], (set) =>
    eachReport((node, report) => {
      for (const op of METERED_OPS) {
        const counts = report.ops[op];
        if (counts) set({ node, op }, counts.count);
      }
    }),
  );
  counter(registry, 'pbkv_node_errors_total', 'Requests answered with an error, by op and error code.', ['node', 'op', 'code'], (set) =>
    eachReport((node, report) => {
      for (const op of METERED_OPS) {
        for (const [code, count] of Object.entries(report.ops[op]?.errors ?? {})) set({ node, op, code }, count);
      }
    }),
  );
  registry.registerMetric(
    new ReportedHistogram('pbkv_node_request_seconds', 'Time from handling a request to queueing its answer, by op.', secondsOf(LATENCY_BUCKETS_MS), function* () {
      for (const [node, report] of reportsOf()) {
        for (const op of METERED_OPS) {
          const counts = report.ops[op];
          if (counts) yield { labels: { node, op }, counts: counts.latency, sum: counts.sumMs / 1000 };
        }
      }
    }) as unknown as Metric,
  );
  counter(registry, 'pbkv_node_batches_total', 'Write batches the primary committed.', ['node'], (set) => eachReport((node, report) => set({ node }, report.batches)));
  counter(registry, 'pbkv_node_batched_writes_total', 'Writes in those batches.', ['node'], (set) => eachReport((node, report) => set({ node }, report.batchedWrites)));
  registry.registerMetric(
    new ReportedHistogram('pbkv_node_batch_writes', 'Write batches by how many writes they held.', BATCH_SIZE_BUCKETS, function* () {
      for (const [node, report] of reportsOf()) yield { labels: { node }, counts: report.batchSizes, sum: report.batchedWrites };
    }) as unknown as Metric,
  );
  gauge(registry, 'pbkv_node_connections', 'Client connections open.', ['node'], (set) => eachReport((node, report) => set({ node }, report.connections)));
  counter(registry, 'pbkv_node_connections_total', 'Client connections accepted.', ['node'], (set) => eachReport((node, report) => set({ node }, report.connectionsTotal)));
  gauge(registry, 'pbkv_node_watchers', 'Watches open.', ['node'], (set) => eachReport((node, report) => set({ node }, report.watchers)));
  counter(registry, 'pbkv_node_received_bytes_total', 'Bytes read from client connections.', ['node'], (set) => eachReport((node, report) => set({ node }, report.bytesIn)));
  counter(registry, 'pbkv_node_sent_bytes_total', 'Bytes written to client connections.', ['node'], (set) => eachReport((node, report) => set({ node }, report.bytesOut)));
}

type Setter<L extends string> = (labels: Record<L, string>, value: number) => void;

/** A counter whose values are read at scrape time (a node's own count, reported). */
export function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], fill: (set: Setter<L>) => void): void {
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      fill((labels, value) => this.inc(labels as never, value));
    },
  });
}

/** A gauge whose values are read at scrape time. */
export function gauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], fill: (set: Setter<L>) => void): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      fill((labels, value) => this.set(labels as never, value));
    },
  });
}

interface HistogramSeries {
  labels: Record<string, string>;
  /** Counts by bucket (the bounds, then one past the last), not cumulative. */
  counts: readonly number[];
  sum: number;
}

/** A histogram whose buckets were counted elsewhere: formatted as prom-client formats its own. */
class ReportedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    private readonly series: () => Iterable<HistogramSeries>,
  ) {}

  get() {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
    for (const { labels, counts, sum } of this.series()) {
      let cumulative = 0;
      this.bounds.forEach((bound, index) => {
        cumulative += counts[index]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
      });
      cumulative += counts[this.bounds.length]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative });
      values.push({ metricName: `${this.name}_sum`, labels, value: sum });
      values.push({ metricName: `${this.name}_count`, labels, value: cumulative });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

function secondsOf(boundsMs: readonly number[]): number[] {
  return boundsMs.map((ms) => ms / 1000);
}

let processRegistry: Registry | undefined;

/**
 * This process's metrics (event-loop lag, heap, RSS, GC, CPU, handles), collected from the
 * first call on: one registry per process, however many nodes it runs (tests run several).
 */
export function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** A node's GET /metrics: its process's metrics and its own report. */
export function nodeMetricsText(name: string, report: () => MetricsReport): Promise<string> {
  const own = new Registry();
  registerReportMetrics(own, () => [[name, report()]]);
  return Registry.merge([processMetrics(), own]).metrics();
}
