/**
 * The operator's view over real sockets (PROTOCOL.md, "The hub over HTTP"): nodes count
 * what they do and report it with their heartbeats; the hub serves it, with the view, as
 * Prometheus text, as the status JSON and as a stream of events; a node serves its own
 * process's metrics. Every exposition is read with a strict parser of the text format.
 */
import { request } from 'node:http';
import { asyncScheduler } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { EVENT_STREAMS_MAX, LATENCY_BUCKETS_MS } from '../../src/constants.js';
import type { Clock } from '../../src/env/environment.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { NodeReports, quantile } from '../../src/hub/reports.js';
import type { MetricsReport } from '../../src/protocol/messages.js';
import { parseHubFrame } from '../../src/protocol/parse.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { parsePrometheusText, valueOf, type Family } from '../prom-text.js';

const disposer = new Disposer();

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<InProcessCluster> {
  return disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), ...options }), (cluster) => cluster.close());
}

const httpOf = (wsUrl: string) => wsUrl.replace(/^ws:/, 'http:');

async function get(url: string, init?: RequestInit): Promise<{ status: number; type: string; text: string }> {
  const response = await fetch(url, init);
  return { status: response.status, type: response.headers.get('content-type') ?? '', text: await response.text() };
}

async function scrape(url: string): Promise<Map<string, Family>> {
  const { status, type, text } = await get(`${httpOf(url)}/metrics`);
  assert.is(status, 200);
  assert.is(type, 'text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(text);
}

/** An open GET /events: the events as they come (name and parsed data), until closed. */
function follow(url: string): Promise<{ status: number; events: Array<{ event: string; data: any }>; close(): void }> {
  return new Promise((resolve, reject) => {
    const events: Array<{ event: string; data: any }> = [];
    const req = request(`${httpOf(url)}/events`, (response) => {
      let buffered = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        buffered += chunk;
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(block)?.[1];
          events.push({ event, data: data === undefined ? undefined : JSON.parse(data) });
        }
      });
      response.on('error', () => {});
      resolve({ status: response.statusCode ?? 0, events, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

const Parser = suite('metrics: the strict parser of the text format');

Parser('reads a good exposition and refuses what a scraper would misread', () => {
  const good = [
    '# HELP a_total Things.',
    '# TYPE a_total counter',
    'a_total{node="n0",op="put"} 3',
    'a_total{node="n\\"1\\\\"} 1e3',
    '# TYPE h histogram',
    'h_bucket{le="0.1"} 1',
    'h_bucket{le="+Inf"} 2',
    'h_sum 0.3',
    'h_count 2',
    '',
  ].join('\n');
  const families = parsePrometheusText(good);
  assert.is(valueOf(families, 'a_total', 'a_total', { node: 'n0', op: 'put' }), 3);
  assert.is(valueOf(families, 'a_total', 'a_total', { node: 'n"1\\' }), 1000);
  const bad: Record<string, string> = {
    'no newline at the end': '# TYPE a gauge\na 1',
    'a sample of no family': 'b 1\n',
    'a value that is no number': '# TYPE a gauge\na one\n',
    'an unquoted label': '# TYPE a gauge\na{x=1} 1\n',
    'an unknown escape': '# TYPE a gauge\na{x="\\t"} 1\n',
    'a series twice': '# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',
    'a TYPE after samples': '# TYPE a gauge\na 1\n# TYPE a gauge\n',
    'families interleaved': '# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x="2"} 1\n',
    'falling buckets': '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    'no +Inf bucket': '# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n',
    '+Inf against _count': '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
    'a bad metric name': '# TYPE 1a gauge\n1a 1\n',
    'an unknown type': '# TYPE a meter\na 1\n',
  };
  for (const [why, text] of Object.entries(bad)) assert.throws(() => parsePrometheusText(text), undefined, why);
});

Parser.run();

const Reports = suite('metrics: what the hub makes of reports');

/** A clock the test moves by hand. */
function handClock(): Clock & { advance(ms: number): void } {
  let now = 0;
  return {
    now: () => now,
    wallNow: () => 1_800_000_000_000 + now,
    after: () => () => {},
    scheduler: asyncScheduler,
    advance: (ms) => void (now += ms),
  };
}

function report(startedAtMs: number, puts: number, latencyBucket: number): MetricsReport {
  const latency = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  latency[latencyBucket] = puts;
  return {
    startedAtMs,
    ops: { put: { count: puts, errors: {}, latency, sumMs: puts } },
    batches: 0,
    batchedWrites: 0,
    batchSizes: new Array<number>(13).fill(0),
    connections: 1,
    connectionsTotal: 1,
    watchers: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
}

Reports('p99 is read off the buckets as Prometheus reads it, between the bounds of the bucket it falls in', () => {
  const counts = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  assert.is(quantile(counts, 0.99), null, 'no request, no p99');
  counts[4] = 100; // (1, 2.5] ms
  assert.is(quantile(counts, 0.99), 2.49);
  counts[counts.length - 1] = 1000; // past the last bound
  assert.is(quantile(counts, 0.99), LATENCY_BUCKETS_MS.at(-1));
});

Reports('samples are rates per second, a restarted node counts from zero, and a silent one gets no sample and no load', () => {
  const clock = handClock();
  const reports = new NodeReports(clock);
  reports.take('n0', report(1, 0, 0));
  clock.advance(1000);
  reports.take('n0', report(1, 500, 4));
  assert.equal(reports.sample()['n0']?.rates, { put: 500 });
  clock.advance(1000);
  reports.take('n0', report(2, 40, 4)); // restarted: its counters begin again
  const sample = reports.sample()['n0'];
  assert.equal(sample?.rates, { put: 40 });
  assert.is(sample?.p99Ms, 2.49);
  clock.advance(1000);
  assert.equal(reports.sample(), {}, 'nothing heard since: no sample');
  assert.is(reports.history()['n0']?.length, 2);
  assert.equal(reports.load()['n0']?.rates, { put: 20 }, 'status: over its window, a node that restarted counts what came after (40 puts in 2 s)');
  clock.advance(1500);
  assert.equal(reports.load()['n0'], { heartbeatAgeMs: 2500, rates: {}, requests: 0, p99Ms: {}, p99AllMs: null, connections: 0, watchers: 0 }, 'silent for two samples: no load');
});

Reports('a heartbeat\'s metrics are checked whole: known ops and codes, counts, histograms of the fixed buckets', () => {
  const beat = (metrics: unknown) => parseHubFrame(JSON.stringify({ id: 1, op: 'heartbeat', name: 'n0', epoch: 0, seq: 0, viewEpoch: 0, metrics }));
  const good = report(1, 5, 2);
  const parsed = beat(good);
  assert.equal(parsed.ok && parsed.request.type === 'heartbeat' ? parsed.request.metrics : undefined, good);
  const wrong: Record<string, unknown> = {
    'an unknown op': { ...good, ops: { fly: good.ops.put } },
    'an unknown error code': { ...good, ops: { put: { ...good.ops.put, errors: { OOPS: 1 } } } },
    'a negative count': { ...good, batches: -1 },
    'a fraction': { ...good, connections: 1.5 },
    'too few buckets': { ...good, ops: { put: { ...good.ops.put, latency: [1, 2] } } },
    'a bucket that is no count': { ...good, batchSizes: [...good.batchSizes.slice(1), 'x'] },
    'no object': 7,
    'the prototype as an op': JSON.parse(`{"startedAtMs":1,"ops":{"__proto__":{}}}`),
  };
  for (const [why, metrics] of Object.entries(wrong)) {
    const refused = beat(metrics);
    assert.ok(!refused.ok && refused.error.code === 'BAD_REQUEST', why);
  }
});

Reports.run();

const Http = suite('metrics: the hub and nodes over HTTP');

Http.after(() => disposer.dispose());

Http('nodes count requests by op and outcome; the hub serves them with the view to Prometheus', async () => {
  const cluster = await start();
  const primary = cluster.primary.name;
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  for (let i = 0; i < 50; i += 1) await client.put(`k${i}`, i);
  for (let i = 0; i < 30; i += 1) await client.get(`k${i}`);
  await client.put('k0', 'late', { ifVersion: 999 }).then(
    () => assert.unreachable('a stale version conflicts'),
    () => {},
  );
  const raw = await RawClient.open(cluster.primary.url, disposer);
  raw.send('{"id": 1, "op": "fly"}');
  assert.is((await raw.next())['error']?.code, 'BAD_REQUEST');

  const families = await waitFor('the hub to serve the primary\'s counts', async () => {
    const scraped = await scrape(cluster.hubUrl);
    const puts = valueOf(scraped, 'pbkv_node_ops_total', 'pbkv_node_ops_total', { node: primary, op: 'put' });
    const frames = valueOf(scraped, 'pbkv_node_errors_total', 'pbkv_node_errors_total', { node: primary, op: 'frame', code: 'BAD_REQUEST' });
    return puts === 51 && frames === 1 ? scraped : undefined;
  });
  assert.is(valueOf(families, 'pbkv_node_ops_total', 'pbkv_node_ops_total', { node: primary, op: 'get' }), 30);
  assert.is(valueOf(families, 'pbkv_node_errors_total', 'pbkv_node_errors_total', { node: primary, op: 'put', code: 'CONFLICT' }), 1);
  assert.is(valueOf(families, 'pbkv_node_request_seconds', 'pbkv_node_request_seconds_count', { node: primary, op: 'put' }), 51, 'every put in the histogram');
  assert.is(families.get('pbkv_node_request_seconds')?.type, 'histogram');
  assert.ok(valueOf(families, 'pbkv_node_request_seconds', 'pbkv_node_request_seconds_sum', { node: primary, op: 'put' })! > 0);
  assert.ok(valueOf(families, 'pbkv_node_batched_writes_total', 'pbkv_node_batched_writes_total', { node: primary })! >= 50);
  assert.ok(valueOf(families, 'pbkv_node_received_bytes_total', 'pbkv_node_received_bytes_total', { node: primary })! > 50 * 20);
  assert.ok(valueOf(families, 'pbkv_node_connections_total', 'pbkv_node_connections_total', { node: primary })! >= 2);

  const epoch = valueOf(families, 'pbkv_view_epoch', 'pbkv_view_epoch', {});
  assert.ok(epoch !== undefined && epoch >= 1);
  for (const node of cluster.nodes) {
    assert.is(valueOf(families, 'pbkv_node_up', 'pbkv_node_up', { node: node.name }), 1, `${node.name} is up`);
    const role = node === cluster.primary ? 'primary' : 'replica';
    assert.is(valueOf(families, 'pbkv_node_role', 'pbkv_node_role', { node: node.name, role }), 1, `${node.name} is ${role}`);
    assert.ok(valueOf(families, 'pbkv_node_seq', 'pbkv_node_seq', { node: node.name }) !== undefined);
    assert.ok(valueOf(families, 'pbkv_node_lag', 'pbkv_node_lag', { node: node.name }) !== undefined);
  }

  const own = await scrape(cluster.primary.url);
  assert.ok(valueOf(own, 'process_resident_memory_bytes', 'process_resident_memory_bytes', {})! > 0, 'RSS');
  assert.ok(own.has('nodejs_eventloop_lag_seconds'), 'event-loop lag');
  assert.ok(own.has('nodejs_heap_size_used_bytes'), 'heap');
  assert.is(own.get('nodejs_gc_duration_seconds')?.type, 'histogram', 'GC');
  assert.is(valueOf(own, 'pbkv_node_ops_total', 'pbkv_node_ops_total', { node: primary, op: 'get' }), 30, 'its own counters');
});

Http('GET /status is the status op\'s JSON with each node\'s load; GET /events sends a snapshot, then a tick a second', async () => {
  const cluster = await start();
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  for (let i = 0; i < 20; i += 1) await client.put(`k${i}`, i);
  const hub = disposer.add(new HubClient(cluster.hubUrl), (h) => h.close());
  const viaOp = await hub.status();
  const { status, type, text } = await get(`${httpOf(cluster.hubUrl)}/status`);
  assert.is(status, 200);
  assert.is(type, 'application/json');
  const viaHttp = JSON.parse(text);
  assert.equal(viaHttp.names, viaOp.names);
  assert.equal(viaHttp.services, viaOp.services);
  assert.equal(Object.keys(viaHttp.view.members), Object.keys(viaOp.view!.members));
  assert.is(viaHttp.view.primary, cluster.primary.name);
  const primaryLoad = await waitFor('the primary\'s puts in status', async () => {
    const load = (await hub.status()).metrics?.[cluster.primary.name];
    return load?.rates.put ? load : undefined;
  });
  assert.ok(primaryLoad.heartbeatAgeMs >= 0 && primaryLoad.p99Ms.put! > 0);

  const stream = disposer.add(await follow(cluster.hubUrl), (s) => s.close());
  assert.is(stream.status, 200);
  await waitFor('a snapshot and a tick', () => stream.events.length >= 2);
  const [snapshot, tick] = stream.events;
  assert.is(snapshot!.event, 'snapshot');
  assert.is(snapshot!.data.status.view.primary, cluster.primary.name);
  assert.ok(Array.isArray(snapshot!.data.history[cluster.primary.name]), 'the history of each node');
  assert.is(tick!.event, 'tick');
  assert.type(tick!.data.samples, 'object');
  assert.type(tick!.data.status.metrics, 'object');
});

Http('read only and bounded: other paths 404, other methods 405, event streams past the limit 503; a node\'s page says WebSocket', async () => {
  const cluster = await start({ replicas: 1 });
  const base = httpOf(cluster.hubUrl);
  assert.is((await get(`${base}/nothing`)).status, 404);
  assert.is((await get(`${base}/status`, { method: 'POST', body: '{}' })).status, 405);
  const page = await get(`${base}/`);
  assert.is(page.status, 200);
  assert.is(page.type, 'text/html; charset=utf-8');
  assert.is((await get(httpOf(cluster.primary.url))).status, 426);

  const streams: Array<Awaited<ReturnType<typeof follow>>> = [];
  for (let i = 0; i < EVENT_STREAMS_MAX; i += 1) streams.push(disposer.add(await follow(cluster.hubUrl), (s) => s.close()));
  await waitFor('every stream\'s snapshot', () => streams.every((s) => s.events.length >= 1));
  const refused = await follow(cluster.hubUrl);
  assert.is(refused.status, 503, `stream ${EVENT_STREAMS_MAX + 1} is refused`);
  refused.close();
  streams[0]!.close();
  const again = await waitFor('a closed stream to make room', async () => {
    const next = await follow(cluster.hubUrl);
    if (next.status === 200) return next;
    next.close();
    return undefined;
  });
  disposer.add(again, (s) => s.close());
  await within('its snapshot', waitFor('the snapshot', () => again.events.length >= 1));
});

Http('a node run with metrics off reports nothing and says so on GET /metrics', async () => {
  const cluster = await start({ replicas: 1, nodeOptions: { metrics: false } });
  const hub = disposer.add(new HubClient(cluster.hubUrl), (h) => h.close());
  const client = disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close());
  await client.put('k', 1);
  await waitFor('a view with both nodes', async () => Object.keys((await hub.status()).view?.members ?? {}).length === 2);
  assert.equal((await hub.status()).metrics, {});
  assert.is((await get(`${httpOf(cluster.primary.url)}/metrics`)).status, 404);
});

Http.run();
