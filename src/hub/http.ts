/**
 * The hub over plain HTTP, for people and monitoring: read only, so open without the
 * secret (nothing here changes anything).
 *   GET /         the status page (page.ts), which follows GET /events
 *   GET /status   the `status` op's JSON
 *   GET /metrics  Prometheus text: the view, and every node's last report
 *   GET /events   Server-Sent Events: a `snapshot` (status and five minutes of samples),
 *                 then a `tick` each second (status and that second's samples)
 * The page's pushes are built once a second for all readers, on the hub: nodes never
 * see a reader.
 */
import { Registry } from 'prom-client';
import { EVENT_STREAMS_MAX, EVENT_STREAM_BUFFER_BYTES_MAX } from '../constants.js';
import type { HttpRequest, HttpResponse, HttpStream } from '../env/transport.js';
import { gauge, PROMETHEUS_CONTENT_TYPE, registerReportMetrics } from '../metrics/exposition.js';
import type { View } from '../protocol/messages.js';
import { STATUS_PAGE_HTML } from './page.js';
import type { NodeReports, Sample } from './reports.js';
import type { MemberStatus } from './views.js';

/** What the HTTP side reads of the hub. */
export interface HubState {
  status(): Record<string, unknown>;
  view(): View | undefined;
  members(): Record<string, MemberStatus>;
  readonly reports: NodeReports;
  wallNow(): number;
}

const ROLES = ['primary', 'replica', 'none'] as const;

export class HubHttp {
  private readonly registry = new Registry();
  private readonly streams = new Set<HttpStream>();

  constructor(private readonly hub: HubState) {
    this.registerViewMetrics();
    registerReportMetrics(this.registry, () => [...hub.reports.reports()].map(([name, { report }]) => [name, report]));
  }

  handle(request: HttpRequest, response: HttpResponse): void {
    if (request.method !== 'GET' && request.method !== 'HEAD') return response.reply(405, 'text/plain', 'read only: GET /, /status, /metrics, /events\n');
    switch (request.path) {
      case '/':
        return response.reply(200, 'text/html; charset=utf-8', STATUS_PAGE_HTML);
      case '/status':
        return response.reply(200, 'application/json', JSON.stringify(this.hub.status()));
      case '/metrics':
        this.registry.metrics().then(
          (text) => response.reply(200, PROMETHEUS_CONTENT_TYPE, text),
          (error: unknown) => response.reply(500, 'text/plain', `metrics failed: ${(error as Error).message}\n`),
        );
        return;
      case '/events':
        return this.follow(response);
      default:
        return response.reply(404, 'text/plain', 'not found: try GET /, /status, /metrics or /events\n');
    }
  }

  /** A second closed (its samples), or the view changed (no samples): the status of now goes to every reader. */
  tick(samples: Record<string, Sample>): void {
    if (this.streams.size === 0) return;
    this.broadcast(event('tick', { at: this.hub.wallNow(), status: this.hub.status(), samples }));
  }

  /** Ends every event stream (the hub is closing). */
  close(): void {
    for (const stream of this.streams) stream.end();
    this.streams.clear();
  }

  private follow(response: HttpResponse): void {
    if (this.streams.size >= EVENT_STREAMS_MAX) {
      return response.reply(503, 'text/plain', `the hub serves ${EVENT_STREAMS_MAX} event streams at once; try again later\n`);
    }
    const stream = response.stream('text/event-stream');
    this.streams.add(stream);
    stream.onClose(() => this.streams.delete(stream));
    stream.write(event('snapshot', { at: this.hub.wallNow(), status: this.hub.status(), history: this.hub.reports.history() }));
  }

  /** One text for all readers; one too far behind is dropped (its EventSource reconnects and starts over). */
  private broadcast(text: string): void {
    for (const stream of this.streams) {
      if (stream.bufferedBytes > EVENT_STREAM_BUFFER_BYTES_MAX) {
        this.streams.delete(stream);
        stream.end();
      } else stream.write(text);
    }
  }

  private registerViewMetrics(): void {
    const { registry, hub } = this;
    const members = () => Object.entries(hub.members());
    const roleOf = (name: string, view: View | undefined) => (view?.primary === name ? 'primary' : view?.replicas.includes(name) ? 'replica' : 'none');
    gauge(registry, 'pbkv_view_epoch', 'The epoch of the current view (0: none yet).', [], (set) => set({}, hub.view()?.epoch ?? 0));
    gauge(registry, 'pbkv_view_min_replicas', "The view's durability floor.", [], (set) => set({}, hub.view()?.minReplicas ?? 0));
    gauge(registry, 'pbkv_node_up', 'Whether the hub heard the node within DEAD_AFTER_MS.', ['node'], (set) => {
      for (const [node, member] of members()) set({ node }, member.state === 'dead' ? 0 : 1);
    });
    gauge(registry, 'pbkv_node_role', "The node's role in the view (1 for the one it has).", ['node', 'role'], (set) => {
      const view = hub.view();
      for (const [node] of members()) for (const role of ROLES) set({ node, role }, roleOf(node, view) === role ? 1 : 0);
    });
    gauge(registry, 'pbkv_node_seq', "The seq of the last write in the node's store.", ['node'], (set) => {
      for (const [node, member] of members()) set({ node }, member.seq);
    });
    gauge(registry, 'pbkv_node_lag', 'Writes the node is behind the primary.', ['node'], (set) => {
      for (const [node, member] of members()) set({ node }, member.lag);
    });
    gauge(registry, 'pbkv_node_heartbeat_age_seconds', 'Since the hub last heard the node.', ['node'], (set) => {
      for (const [node, member] of members()) set({ node }, member.heardMsAgo / 1000);
    });
  }
}

function event(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}
