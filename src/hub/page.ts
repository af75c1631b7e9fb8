/**
 * The hub's status page (`GET /`): one self-contained HTML document, its CSS and script
 * inline and no URL outside the hub (nothing outside the cluster is reachable where pbkv
 * runs). It follows `GET /events` (Server-Sent Events, docs/PROTOCOL.md "The hub over
 * HTTP"): a `snapshot` on every (re)connection, then a `tick` a second; it reloads nothing
 * and changes nothing, so it needs no secret.
 *
 * The script is written below as typed functions and put into the page with
 * `Function.prototype.toString`, so tsc checks the page's code like the rest of pbkv. The
 * price: a page function may use only its arguments, the DOM, `PAGE` and the other
 * functions listed in PAGE_FUNCTIONS (a name missing from the list is a ReferenceError in
 * the browser, which the browser test reports as a page error).
 *
 * Every string that comes from the cluster (node names, addresses, reasons) reaches the
 * DOM as text (`textContent`, `append` of a string, `setAttribute`), never as HTML.
 */

import { createHash } from 'node:crypto';
import { METRICS_HISTORY_SAMPLES, METRICS_SAMPLE_INTERVAL_MS, METRICS_STATUS_WINDOW_SAMPLES } from '../constants.js';
import type { HubStatus } from './hub-client.js';
import type { Sample } from './reports.js';

/** The events of GET /events (http.ts): the hub's status with each node's samples. */
interface SnapshotEvent {
  at: number;
  status: HubStatus;
  history: Record<string, Sample[]>;
}

interface TickEvent {
  at: number;
  status: HubStatus;
  samples: Record<string, Sample>;
}

type Connection = 'connecting' | 'live' | 'stalled' | 'retrying';

/** What the page knows: the last status and each node's samples of the chart's window. */
interface PageState {
  status: HubStatus | undefined;
  /** The hub's wall clock at the last event: the charts' "now" (the browser's clock may be off). */
  atMs: number;
  /** When the last event arrived (performance.now()): ages go on growing between events. */
  receivedMs: number;
  history: Map<string, Sample[]>;
  connection: Connection;
}

interface ChartSpec {
  id: string;
  title: string;
  value(sample: Sample): number | null;
  format(value: number): string;
  /** The smallest top of the y axis, so an idle cluster does not draw noise full height. */
  floor: number;
}

/** The page's limits and timings; the browser gets the same object as JSON. */
const PAGE = {
  eventsPath: '/events',
  /** The charts' window: the history the hub keeps (five minutes of one-second samples). */
  windowMs: METRICS_HISTORY_SAMPLES * METRICS_SAMPLE_INTERVAL_MS,
  samplesPerNodeMax: METRICS_HISTORY_SAMPLES,
  /** Two samples further apart than this are a gap in the line (the node did not report). */
  sampleGapMs: 2.5 * METRICS_SAMPLE_INTERVAL_MS,
  /** Without an event for this long, the stream is called stalled (a tick is due every second). */
  stalledAfterMs: 3_500,
  /** How often ages ("heartbeat 1.2 s ago", "no update for 5 s") are redrawn between events. */
  clockRefreshMs: 500,
  /** When the browser gives up on the stream (an answer that is not an event stream), this loop retries. */
  retryFirstMs: 1_000,
  retryMaxMs: 10_000,
  changesShownMax: 8,
  /** A chart's height follows its width, within these. */
  chartHeightRatio: 0.5,
  chartHeightPxMin: 140,
  chartHeightPxMax: 220,
  /** Okabe-Ito: told apart with any colour vision; each line is named in its legend too. */
  nodeColours: ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#000000'],
};

const STYLE = `
:root {
  --fg: #1b1f24; --muted: #5b6570; --line: #d8dde3; --bg: #f5f7f9; --card: #ffffff;
  --ok: #17733a; --ok-bg: #e3f4e8; --bad: #b3261e; --bad-bg: #fdecea; --warn: #8a5a00; --warn-bg: #fff4d6;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif;
  color: var(--fg); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 12px; padding: 10px 20px; background: #1b1f24; color: #fff; }
header h1 { font-size: 17px; margin: 0; font-weight: 600; }
header .hub { color: #b8c0c8; font-size: 13px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#connection { margin-left: auto; display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px; border-radius: 999px; font-size: 13px; font-weight: 600; white-space: nowrap; }
#connection::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
#connection[data-state="live"] { background: var(--ok-bg); color: var(--ok); }
#connection[data-state="connecting"], #connection[data-state="stalled"] { background: var(--warn-bg); color: var(--warn); }
#connection[data-state="retrying"] { background: var(--bad-bg); color: var(--bad); }
main { max-width: 1400px; margin: 0 auto; padding: 14px 20px 24px; display: grid; gap: 14px; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); }
body.stale main { opacity: 0.6; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
section h2 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); margin: 0 0 8px; font-weight: 600; }
#view-section, #charts-section { grid-column: 1 / -1; }
#view { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: baseline; margin: 0; }
#view div { display: flex; flex-direction: column; }
#view dt { font-size: 12px; color: var(--muted); }
#view dd { margin: 0; font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
#writes[data-refused="true"] { color: var(--bad); }
#writes[data-refused="false"] { color: var(--ok); }
#writes-why { flex-basis: 100%; margin: 0; padding: 8px 10px; border-radius: 6px; background: var(--bad-bg); color: var(--bad); font-weight: 600; }
#writes-why[hidden] { display: none; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th { text-align: left; font-size: 12px; font-weight: 600; color: var(--muted); padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 7px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th.num, td.num { text-align: right; white-space: nowrap; }
td[data-field="role"] { white-space: nowrap; }
tbody tr:last-child td { border-bottom: 0; }
td .sub { display: block; font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
td[data-field="name"] .sub { white-space: nowrap; }
.name { font-weight: 600; display: inline-flex; align-items: center; gap: 6px; }
.swatch { width: 10px; height: 10px; border-radius: 2px; flex: none; display: inline-block; }
.role-primary { font-weight: 700; }
tr[data-state="dead"] td { background: var(--bad-bg); }
tr[data-state="dead"] td:first-child { box-shadow: inset 4px 0 0 var(--bad); }
tr[data-state="dead"] [data-field="state"], tr[data-state="dead"] [data-field="heartbeat"] { color: var(--bad); font-weight: 700; }
tr[data-state="catching up"] [data-field="state"], tr[data-health="degraded"] [data-field="state"] { color: var(--warn); font-weight: 600; }
#changes { list-style: none; margin: 0; padding: 0; }
#changes li { padding: 6px 0; border-bottom: 1px solid var(--line); }
#changes li:last-child { border-bottom: 0; }
#changes .what { font-weight: 600; }
#changes .what, #changes .why, #changes .when { display: block; overflow-wrap: anywhere; }
#changes .when { color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
#charts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 14px; }
.chart { margin: 0; }
.chart h3 { font-size: 13px; margin: 0 0 4px; font-weight: 600; }
.chart svg { display: block; width: 100%; overflow: visible; }
.chart svg text { font-size: 11px; fill: var(--muted); font-variant-numeric: tabular-nums; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .series { fill: none; stroke-width: 1.8; stroke-linejoin: round; stroke-linecap: round; }
.legend { list-style: none; margin: 4px 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: 2px 14px; font-size: 12px; font-variant-numeric: tabular-nums; }
.legend li { display: inline-flex; align-items: center; gap: 5px; }
@media (max-width: 900px) {
  main { grid-template-columns: minmax(0, 1fr); padding: 10px; gap: 10px; }
  #charts { grid-template-columns: minmax(0, 1fr); }
}
@media (max-width: 640px) {
  header { padding: 8px 10px; flex-wrap: wrap; }
  header .hub { display: none; }
  #view { gap: 6px 20px; }
  #view dd { font-size: 17px; }
  section { padding: 10px; }
  /* The table becomes one card per node: a grid of labelled cells, three to a row. */
  #nodes thead { display: none; }
  #nodes, #nodes tbody { display: block; }
  #nodes tr { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); border: 1px solid var(--line); border-radius: 8px; margin-bottom: 8px; overflow: hidden; }
  #nodes td { border: 0; padding: 4px 10px; text-align: left; white-space: normal; }
  #nodes td::before { content: attr(data-label); display: block; font-size: 11px; color: var(--muted); font-weight: 400; }
  #nodes td[data-field="name"] { grid-column: span 2; }
  #nodes td[data-field="name"]::before, #nodes td[data-field="role"]::before { content: none; }
  #nodes td[data-field="role"] { text-align: right; }
  #nodes td[data-field="name"], #nodes td[data-field="role"] { border-bottom: 1px solid var(--line); padding: 6px 10px; }
  tr[data-state="dead"] td:first-child { box-shadow: none; }
  tr[data-state="dead"] { border-color: var(--bad); border-left: 5px solid var(--bad); }
}
`;

const STATUS_WINDOW_S = (METRICS_STATUS_WINDOW_SAMPLES * METRICS_SAMPLE_INTERVAL_MS) / 1000;

const BODY = `
<header>
  <h1>pbkv</h1>
  <span class="hub" id="hub"></span>
  <span id="connection" data-state="connecting" role="status">connecting</span>
</header>
<main>
  <section id="view-section" aria-labelledby="view-title">
    <h2 id="view-title">View</h2>
    <dl id="view">
      <div><dt>epoch</dt><dd id="epoch">–</dd></div>
      <div><dt>primary</dt><dd id="primary">–</dd></div>
      <div><dt>replicas</dt><dd id="replicas">–</dd></div>
      <div><dt>durability floor</dt><dd id="floor">–</dd></div>
      <div><dt>writes</dt><dd id="writes">–</dd></div>
      <p id="writes-why" hidden></p>
    </dl>
  </section>
  <section aria-labelledby="nodes-title">
    <h2 id="nodes-title">Nodes</h2>
    <table id="nodes">
      <thead><tr>
        <th>node</th><th>role</th><th>state</th><th class="num">seq</th><th class="num">lag</th>
        <th class="num" title="requests per second over the last ${STATUS_WINDOW_S} s">req/s</th>
        <th class="num" title="99th percentile latency of all requests over the last ${STATUS_WINDOW_S} s">p99</th>
        <th class="num" title="since the hub last heard the node">heartbeat</th>
      </tr></thead>
      <tbody id="node-rows"></tbody>
    </table>
    <p class="empty" id="nodes-empty">waiting for the hub…</p>
  </section>
  <section aria-labelledby="changes-title">
    <h2 id="changes-title">View changes</h2>
    <ol id="changes"></ol>
  </section>
  <section id="charts-section" aria-labelledby="charts-title">
    <h2 id="charts-title">Last five minutes, per node</h2>
    <div id="charts"></div>
  </section>
</main>
`;

// ---- The page's script (runs in the browser) ----

function startStatusPage(): void {
  const page: PageState = { status: undefined, atMs: 0, receivedMs: 0, history: new Map(), connection: 'connecting' };
  byId('hub').textContent = location.host;
  const received = (atMs: number, status: HubStatus) => {
    page.status = status;
    page.atMs = atMs;
    page.receivedMs = performance.now();
    page.connection = 'live';
  };
  connectEvents({
    snapshot(event) {
      received(event.at, event.status);
      page.history = new Map(Object.entries(event.history).map(([name, samples]) => [name, samples.slice(-PAGE.samplesPerNodeMax)]));
      render(page);
    },
    tick(event) {
      received(event.at, event.status);
      addSamples(page, event.samples);
      render(page);
    },
    connection(connection) {
      page.connection = connection;
      renderConnection(page);
    },
  });
  setInterval(() => {
    renderConnection(page);
    renderHeartbeats(page);
  }, PAGE.clockRefreshMs);
  window.addEventListener('resize', () => renderCharts(page));
}

interface EventHandlers {
  snapshot(event: SnapshotEvent): void;
  tick(event: TickEvent): void;
  connection(connection: Connection): void;
}

/** Follows /events; the browser reconnects by itself, and this loop when the browser gives up. */
function connectEvents(handlers: EventHandlers): void {
  let retryMs = PAGE.retryFirstMs;
  const open = () => {
    const source = new EventSource(PAGE.eventsPath);
    source.addEventListener('open', () => {
      retryMs = PAGE.retryFirstMs;
    });
    source.addEventListener('snapshot', (event: MessageEvent<string>) => handlers.snapshot(JSON.parse(event.data) as SnapshotEvent));
    source.addEventListener('tick', (event: MessageEvent<string>) => handlers.tick(JSON.parse(event.data) as TickEvent));
    source.addEventListener('error', () => {
      handlers.connection('retrying');
      if (source.readyState !== EventSource.CLOSED) return;
      setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, PAGE.retryMaxMs);
    });
  };
  open();
}

/** Appends a tick's samples and drops what fell out of the window. */
function addSamples(page: PageState, samples: Record<string, Sample>): void {
  for (const [name, sample] of Object.entries(samples)) {
    const kept = page.history.get(name) ?? [];
    kept.push(sample);
    page.history.set(name, kept);
  }
  for (const [name, kept] of page.history) {
    const from = page.atMs - PAGE.windowMs;
    const firstKept = kept.findIndex((sample) => sample.t >= from);
    const trimmed = (firstKept < 0 ? [] : kept.slice(firstKept)).slice(-PAGE.samplesPerNodeMax);
    if (trimmed.length === 0) page.history.delete(name);
    else page.history.set(name, trimmed);
  }
}

function render(page: PageState): void {
  renderConnection(page);
  renderView(page);
  renderNodes(page);
  renderChanges(page);
  renderCharts(page);
}

function renderConnection(page: PageState): void {
  const silentMs = performance.now() - page.receivedMs;
  if (page.connection === 'live' && silentMs > PAGE.stalledAfterMs) page.connection = 'stalled';
  const text = {
    connecting: 'connecting…',
    live: 'live',
    stalled: `no update for ${formatAge(silentMs)}`,
    retrying: 'disconnected, retrying',
  }[page.connection];
  const mark = byId('connection');
  mark.dataset['state'] = page.connection;
  mark.textContent = text;
  document.body.classList.toggle('stale', page.status !== undefined && page.connection !== 'live');
}

function renderView(page: PageState): void {
  const view = page.status?.view;
  document.title = view ? `pbkv · epoch ${view.epoch} · primary ${view.primary}` : 'pbkv status';
  setText('epoch', view ? String(view.epoch) : 'no view yet');
  setText('primary', view ? view.primary : '–');
  setText('replicas', view ? (view.replicas.length > 0 ? view.replicas.join(', ') : 'none') : '–');
  setText('floor', view ? `${view.minReplicas} ${view.minReplicas === 1 ? 'replica' : 'replicas'}` : '–');
  const writes = byId('writes');
  const why = byId('writes-why');
  if (!view) {
    writes.textContent = '–';
    delete writes.dataset['refused'];
    why.hidden = true;
    return;
  }
  const refused = view.writesRefused !== undefined;
  writes.textContent = refused ? 'REFUSED' : 'taken';
  writes.dataset['refused'] = String(refused);
  why.hidden = !refused;
  why.textContent = refused ? `writes refused: ${view.writesRefused}` : '';
}

/** One row of the nodes table, as the status tells it. */
interface NodeFacts {
  name: string;
  address: string | undefined;
  role: string;
  /** in view, catching up, dead; or the node's own report when there is no view. */
  state: string;
  health: string | undefined;
  reason: string | undefined;
  seq: number | undefined;
  lag: number | undefined;
  requestsPerSecond: number | undefined;
  p99Ms: number | null | undefined;
  /** Since the hub last heard the node, at the time of the last event. */
  heardMsAgo: number | undefined;
}

function nodeNames(page: PageState): string[] {
  const status = page.status;
  const names = new Set<string>(page.history.keys());
  if (status) {
    for (const name of Object.keys(status.nodes)) names.add(name);
    for (const name of Object.keys(status.view?.members ?? {})) names.add(name);
    for (const name of Object.keys(status.metrics ?? {})) names.add(name);
  }
  return [...names].sort();
}

function nodeFacts(status: HubStatus, name: string): NodeFacts {
  const view = status.view;
  const member = view?.members[name];
  const health = status.nodes[name];
  const metrics = status.metrics?.[name];
  const dead = member?.state === 'dead';
  const role = !view ? '–' : name === view.primary ? 'primary' : view.replicas.includes(name) ? 'replica' : 'not in view';
  return {
    name,
    address: status.names[name],
    role,
    state: member?.state ?? health?.state ?? 'unknown',
    health: health?.state,
    reason: health?.reason,
    seq: member?.seq,
    lag: member?.lag,
    // A dead node's last report is old news: no rate rather than a frozen one.
    requestsPerSecond: dead ? undefined : metrics?.requests,
    p99Ms: dead ? undefined : metrics?.p99AllMs,
    heardMsAgo: member?.heardMsAgo ?? metrics?.heartbeatAgeMs,
  };
}

const NODE_FIELDS = [
  ['name', 'node'],
  ['role', 'role'],
  ['state', 'state'],
  ['seq', 'seq'],
  ['lag', 'lag'],
  ['requests', 'req/s'],
  ['p99', 'p99'],
  ['heartbeat', 'heartbeat'],
] as const;

function renderNodes(page: PageState): void {
  const status = page.status;
  const rows = byId('node-rows');
  const names = status ? nodeNames(page) : [];
  byId('nodes-empty').hidden = names.length > 0;
  const rowOf = new Map<string, HTMLTableRowElement>();
  for (const row of rows.querySelectorAll<HTMLTableRowElement>('tr[data-node]')) rowOf.set(row.dataset['node'] ?? '', row);
  for (const [name, row] of rowOf) if (!names.includes(name)) row.remove();
  names.forEach((name, index) => {
    const row = rowOf.get(name) ?? newNodeRow(name);
    if (rows.children[index] !== row) rows.insertBefore(row, rows.children[index] ?? null);
    fillNodeRow(row, nodeFacts(status!, name), nodeColour(index));
  });
  renderHeartbeats(page);
}

function newNodeRow(name: string): HTMLTableRowElement {
  const row = el('tr', { 'data-node': name });
  for (const [field, label] of NODE_FIELDS) {
    const numeric = field !== 'name' && field !== 'role' && field !== 'state';
    row.append(el('td', { 'data-field': field, 'data-label': label, ...(numeric ? { class: 'num' } : {}) }));
  }
  return row;
}

function fillNodeRow(row: HTMLTableRowElement, facts: NodeFacts, colour: string): void {
  row.dataset['state'] = facts.state;
  row.dataset['role'] = facts.role;
  if (facts.health) row.dataset['health'] = facts.health;
  else delete row.dataset['health'];
  const cell = (field: string) => row.querySelector<HTMLTableCellElement>(`td[data-field="${field}"]`)!;

  const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
  swatch.style.background = colour;
  cell('name').replaceChildren(el('span', { class: 'name' }, swatch, facts.name), ...(facts.address ? [el('span', { class: 'sub' }, facts.address)] : []));

  const role = cell('role');
  role.textContent = facts.role;
  role.className = facts.role === 'primary' ? 'role-primary' : '';

  // The member's state says where it stands in the view; the node's own report adds why it does not serve.
  const ownReport = facts.health && facts.health !== 'serving' && facts.health !== facts.state ? facts.health : undefined;
  const details = [ownReport, facts.reason].filter((part): part is string => part !== undefined && part !== '').join(': ');
  cell('state').replaceChildren(facts.state === 'dead' ? '✕ dead' : facts.state, ...(details ? [el('span', { class: 'sub' }, details)] : []));

  setNumber(cell('seq'), facts.seq, formatCount);
  setNumber(cell('lag'), facts.lag, formatCount);
  setNumber(cell('requests'), facts.requestsPerSecond, formatRate);
  setNumber(cell('p99'), facts.p99Ms ?? undefined, formatMs);
}

/** Heartbeat ages, grown by the time since the last event (they keep counting while the stream is down). */
function renderHeartbeats(page: PageState): void {
  const status = page.status;
  if (!status) return;
  const sinceEventMs = performance.now() - page.receivedMs;
  for (const row of byId('node-rows').querySelectorAll<HTMLTableRowElement>('tr[data-node]')) {
    const facts = nodeFacts(status, row.dataset['node'] ?? '');
    const cell = row.querySelector<HTMLTableCellElement>('td[data-field="heartbeat"]')!;
    if (facts.heardMsAgo === undefined) {
      setNumber(cell, undefined, formatAge);
      continue;
    }
    const ageMs = facts.heardMsAgo + sinceEventMs;
    cell.dataset['value'] = String(Math.round(ageMs));
    cell.textContent = facts.state === 'dead' ? `none for ${formatAge(ageMs)}` : `${formatAge(ageMs)} ago`;
  }
}

function renderChanges(page: PageState): void {
  const list = byId('changes');
  const changes = [...(page.status?.view?.changes ?? [])].reverse().slice(0, PAGE.changesShownMax);
  if (changes.length === 0) {
    list.replaceChildren(el('li', { class: 'empty' }, 'none yet'));
    return;
  }
  list.replaceChildren(...changes.map((change) => {
    const replicas = change.replicas.length > 0 ? change.replicas.join(', ') : 'none';
    return el('li', { 'data-epoch': String(change.epoch) },
      el('span', { class: 'what' }, `epoch ${change.epoch}: primary ${change.primary}, replicas ${replicas}`),
      el('span', { class: 'why' }, change.why),
      el('span', { class: 'when' }, `${formatClock(change.atMs)}, ${formatAge(Math.max(0, page.atMs - change.atMs))} ago`));
  }));
}

function chartSpecs(): ChartSpec[] {
  return [
    { id: 'put', title: 'puts/s', value: (sample) => sample.rates['put'] ?? 0, format: formatRate, floor: 10 },
    { id: 'get', title: 'gets/s', value: (sample) => sample.rates['get'] ?? 0, format: formatRate, floor: 10 },
    { id: 'p99', title: 'p99 latency, all requests (ms)', value: (sample) => sample.p99Ms, format: formatMs, floor: 1 },
  ];
}

function renderCharts(page: PageState): void {
  const box = byId('charts');
  if (!page.status) return;
  const names = nodeNames(page);
  for (const spec of chartSpecs()) {
    let chart = box.querySelector<HTMLElement>(`#chart-${spec.id}`);
    if (!chart) {
      chart = el('figure', { class: 'chart', id: `chart-${spec.id}` }, el('h3', {}, spec.title), svgEl('svg', { role: 'img', 'aria-label': spec.title }), el('ul', { class: 'legend' }));
      box.append(chart);
    }
    drawChart(chart, spec, page, names);
  }
}

/** One chart: a line per node over the window, the y axis from 0 to a round number. */
function drawChart(chart: HTMLElement, spec: ChartSpec, page: PageState, names: string[]): void {
  const svg = chart.querySelector('svg')!;
  const widthPx = Math.max(200, Math.floor(svg.getBoundingClientRect().width) || 300);
  const heightPx = Math.round(Math.min(PAGE.chartHeightPxMax, Math.max(PAGE.chartHeightPxMin, widthPx * PAGE.chartHeightRatio)));
  const pad = { left: 44, right: 6, top: 8, bottom: 20 };
  const plotW = widthPx - pad.left - pad.right;
  const plotH = heightPx - pad.top - pad.bottom;
  const fromMs = page.atMs - PAGE.windowMs;
  let top = spec.floor;
  for (const samples of page.history.values()) {
    for (const sample of samples) top = Math.max(top, spec.value(sample) ?? 0);
  }
  top = niceCeiling(top);
  const x = (t: number) => pad.left + ((t - fromMs) / PAGE.windowMs) * plotW;
  const y = (value: number) => pad.top + plotH - (value / top) * plotH;

  const parts: SVGElement[] = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    parts.push(svgEl('line', { class: 'grid', x1: pad.left, x2: pad.left + plotW, y1: y(value), y2: y(value) }));
    parts.push(svgText(spec.format(value), { x: pad.left - 6, y: y(value) + 4, 'text-anchor': 'end' }));
  }
  const windowMinutes = Math.round(PAGE.windowMs / 60_000);
  for (let minutesAgo = windowMinutes; minutesAgo >= 0; minutesAgo--) {
    const label = minutesAgo === 0 ? 'now' : `−${minutesAgo}m`;
    const anchor = minutesAgo === windowMinutes ? 'start' : minutesAgo === 0 ? 'end' : 'middle';
    parts.push(svgText(label, { x: x(page.atMs - minutesAgo * 60_000), y: heightPx - 4, 'text-anchor': anchor }));
  }
  const legend: HTMLElement[] = [];
  names.forEach((name, index) => {
    const samples = page.history.get(name) ?? [];
    const colour = nodeColour(index);
    const d = linePath(samples.filter((sample) => sample.t >= fromMs), spec, x, y);
    if (d) parts.push(svgEl('path', { class: 'series', d, stroke: colour, 'data-node': name }));
    const last = samples[samples.length - 1];
    const current = last && page.atMs - last.t <= PAGE.sampleGapMs ? spec.value(last) : null;
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.background = colour;
    legend.push(el('li', { 'data-node': name, 'data-value': current === null ? '' : String(current) }, swatch, `${name} ${current === null ? '–' : spec.format(current)}`));
  });
  svg.setAttribute('width', String(widthPx));
  svg.setAttribute('height', String(heightPx));
  svg.setAttribute('viewBox', `0 0 ${widthPx} ${heightPx}`);
  svg.replaceChildren(...parts);
  chart.querySelector('.legend')!.replaceChildren(...legend);
}

/** An SVG path through the samples, lifting the pen over gaps and seconds without a value. */
function linePath(samples: Sample[], spec: ChartSpec, x: (t: number) => number, y: (value: number) => number): string {
  let d = '';
  let previousMs: number | undefined;
  for (const sample of samples) {
    const value = spec.value(sample);
    if (value === null) {
      previousMs = undefined;
      continue;
    }
    const joined = previousMs !== undefined && sample.t - previousMs <= PAGE.sampleGapMs;
    // `h0` after a move: a second alone between gaps still shows, as a dot (round caps).
    d += `${joined ? 'L' : 'M'}${x(sample.t).toFixed(1)},${y(value).toFixed(1)}${joined ? '' : 'h0'}`;
    previousMs = sample.t;
  }
  return d;
}

// ---- small helpers of the page ----

function byId(id: string): HTMLElement {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element;
}

function setText(id: string, text: string): void {
  byId(id).textContent = text;
}

/** A numeric cell: its text for people, its raw value in data-value for tests and scripts. */
function setNumber(cell: HTMLElement, value: number | undefined, format: (value: number) => string): void {
  cell.dataset['value'] = value === undefined ? '' : String(value);
  cell.textContent = value === undefined ? '–' : format(value);
}

/** An element with attributes and children; strings become text nodes, never markup. */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Record<string, string>, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

function svgEl(tag: string, attributes: Record<string, string | number>): SVGElement {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag) as SVGElement;
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

function svgText(text: string, attributes: Record<string, string | number>): SVGElement {
  const element = svgEl('text', attributes);
  element.textContent = text;
  return element;
}

function nodeColour(index: number): string {
  return PAGE.nodeColours[index % PAGE.nodeColours.length]!;
}

/** 1, 2, 5 times a power of ten, at or above `value`. */
function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((multiple) => multiple * power >= value) ?? 10;
  return step * power;
}

function formatCount(value: number): string {
  return value.toLocaleString('en-US');
}

function formatRate(value: number): string {
  if (value === 0) return '0';
  if (value < 10) return value.toFixed(1);
  if (value < 10_000) return Math.round(value).toLocaleString('en-US');
  return `${(value / 1000).toFixed(value < 100_000 ? 1 : 0)}k`;
}

function formatMs(value: number): string {
  // A no-break space between number and unit: a narrow cell wraps before the number, not inside it.
  if (value === 0) return '0\u00a0ms';
  if (value < 1) return `${value.toFixed(2)}\u00a0ms`;
  if (value < 10) return `${value.toFixed(1)}\u00a0ms`;
  if (value < 1000) return `${Math.round(value)}\u00a0ms`;
  return `${(value / 1000).toFixed(1)}\u00a0s`;
}

function formatAge(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)}\u00a0s`;
  if (seconds < 90) return `${Math.round(seconds)}\u00a0s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)}\u00a0min`;
  return `${(seconds / 3600).toFixed(1)}\u00a0h`;
}

/** HH:MM:SS in the browser's time zone. */
function formatClock(atMs: number): string {
  const at = new Date(atMs);
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((part) => String(part).padStart(2, '0')).join(':');
}

/** Every function the page's script uses, put into the page as their source text. */
const PAGE_FUNCTIONS: readonly ((...args: never[]) => unknown)[] = [
  startStatusPage, connectEvents, addSamples, render, renderConnection, renderView, nodeNames, nodeFacts,
  renderNodes, newNodeRow, fillNodeRow, renderHeartbeats, renderChanges, chartSpecs, renderCharts, drawChart,
  linePath, byId, setText, setNumber, el, svgEl, svgText, nodeColour, niceCeiling, formatCount, formatRate,
  formatMs, formatAge, formatClock,
];

const SCRIPT = [
  '"use strict";',
  `const PAGE = ${JSON.stringify(PAGE)};`,
  `const NODE_FIELDS = ${JSON.stringify(NODE_FIELDS)};`,
  ...PAGE_FUNCTIONS.map((fn) => fn.toString()),
  'startStatusPage();',
].join('\n').replaceAll('</', '<\\/');

/**
 * The browser enforces what the page promises: no request but to the hub (the event
 * stream), and no script or style but these two, pinned by their hashes, so text that
 * slipped into the DOM as markup still could not run. A violation is a console error,
 * which the browser test fails on.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `script-src '${sha256(SCRIPT)}'`,
  `style-src '${sha256(STYLE)}'`,
  "connect-src 'self'",
  'img-src data:',
].join('; ');

function sha256(text: string): string {
  return `sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}`;
}

/** `GET /` on the hub's port. */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}">
<title>pbkv status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`;
