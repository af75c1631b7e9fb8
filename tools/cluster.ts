#!/usr/bin/env node
/**
 * `npm start`: a local cluster, one process each: the hub, the primary n0 and the
 * replicas n1, n2 (docs/PROTOCOL.md, "Defaults of npm start"), data in ./data/. Ctrl-C
 * stops everything. Every process proves one cluster secret, kept in DATA/cluster.secret.
 * It says the cluster is up only once it serves: the hub holds a view with every node in
 * it and that view's primary reports itself serving (it holds every replica's lease), so
 * a put typed right after the banner is answered, not told "no view yet".
 * A process that dies is reported (how it ended, its last lines, the command that starts
 * it again) and not restarted: a node that keeps crashing should be looked at, and a
 * restart loop would scroll the reason away.
 */
import { createServer } from 'node:net';
import path from 'node:path';
import { exhaustMap, firstValueFrom, first, of, tap, timeout, timer } from 'rxjs';
import { localClusterSpec, type ClusterSpec } from '../src/cluster/config.js';
import { describeExit, spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import { loadOrCreateSecret, SECRET_FILE_NAME } from '../src/cluster/secret.js';
import { DEFAULT_HUB_PORT, DEFAULT_NODE_PORT_FIRST } from '../src/constants.js';
import { HubClient, type HubStatus } from '../src/hub/hub-client.js';
import { SYNC_MODES, type SyncMode } from '../src/storage/store.js';
import { failWith, readFlags, type Fail } from '../src/cli/flags.js';
import { onShutdown } from '../src/cli/shutdown.js';

const USAGE = `usage: npm start -- [options]   (or: node dist/tools/cluster.js [options])
  --replicas N     replicas besides the primary n0 (default 2)
  --data DIR       where the SQLite files and ${SECRET_FILE_NAME} are kept (default data)
  --sync MODE      ${SYNC_MODES.join(', ')} (default normal)
  --hub-port P     the hub's port (default ${DEFAULT_HUB_PORT}; 0: any free port)
  --port P         the first node's port, the others follow (default ${DEFAULT_NODE_PORT_FIRST}; 0: any free ports)
  --min-replicas N replicas a write needs to be acknowledged (default 1; 0: the primary alone may)
  --trace          print every node's trace events as JSON lines
  -h, --help       this text`;

const fail: Fail = failWith('cluster', USAGE);

/** More replicas than a laptop runs well; also keeps each on its own 127.0.0.x address. */
const REPLICAS_MAX = 50;
/**
 * How long the processes, once started, may take to serve before the banner is printed
 * anyway, saying what is missing. A first view takes at most DEAD_AFTER_MS (1.5 s) after
 * the primary proposes it, then a lease from every replica: well under a second more.
 */
const SERVING_DEADLINE_MS = 30_000;
/** How often the hub's status is asked meanwhile (an answer still on its way skips a turn). */
const STATUS_POLL_MS = 100;
/** How long one status request may take. */
const STATUS_TIMEOUT_MS = 2_000;

function integerFlag(flag: string, text: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > max) fail(`--${flag} must be an integer from 0 to ${max}, not "${text}"`);
  return value;
}

const values = readFlags(fail, USAGE, {
  trace: { type: 'boolean', default: false },
  replicas: { type: 'string', default: '2' },
  data: { type: 'string', default: 'data' },
  sync: { type: 'string', default: 'normal' },
  'hub-port': { type: 'string', default: String(DEFAULT_HUB_PORT) },
  port: { type: 'string', default: String(DEFAULT_NODE_PORT_FIRST) },
  'min-replicas': { type: 'string' },
});
if (!SYNC_MODES.includes(values.sync as SyncMode)) fail(`--sync is one of ${SYNC_MODES.join(', ')}`);
let spec: ClusterSpec;
try {
  spec = localClusterSpec({
    replicas: integerFlag('replicas', values.replicas, REPLICAS_MAX),
    dataDir: values.data,
    sync: values.sync as SyncMode,
    hubPort: integerFlag('hub-port', values['hub-port'], 65_535),
    nodePortFirst: integerFlag('port', values.port, 65_535),
  });
} catch (error) {
  fail((error as Error).message);
}
// The primary proposes the floor with the first view; the hub keeps it from then on.
const minReplicasArgs = values['min-replicas'] === undefined ? [] : ['--min-replicas', String(integerFlag('min-replicas', values['min-replicas'], spec.nodes.length - 1))];

// Checked before anything starts, so a second `npm start` says why in one line instead of
// leaving a half-started cluster and a child's error to read.
for (const [host, port] of [[spec.hubHost, spec.hubPort] as const, ...spec.nodes.map((node) => [node.host, node.port] as const)]) {
  const problem = await listenProblem(host, port);
  if (problem !== undefined) fail(problem, 1);
}

const secretFile = path.join(values.data, SECRET_FILE_NAME);
try {
  await loadOrCreateSecret(secretFile);
} catch (error) {
  fail((error as Error).message, 1);
}

const children: ChildHandle[] = [];
let stopping = false;
const stopAll = async () => {
  stopping = true;
  // Replicas first, then the primary, then the hub: nothing is left waiting for a peer.
  for (const child of [...children].reverse()) await child.stop();
};
onShutdown(stopAll);

const spawnOptions = {
  secretFile,
  extraArgs: values.trace ? ['--trace'] : [],
  onLine: (name: string, line: string) => console.log(values.trace ? line : `[${name}] ${line}`),
};
try {
  const hub = await spawnHub(spec, spawnOptions);
  children.push(hub);
  for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url, node.role === 'primary' ? { ...spawnOptions, extraArgs: [...spawnOptions.extraArgs, ...minReplicasArgs] } : spawnOptions));
} catch (error) {
  console.error(`cluster: ${(error as Error).message}`);
  await stopAll();
  process.exit(1);
}
for (const child of children) void child.exited.then(() => reportExit(child));

console.error('cluster: waiting for the first view and for its primary to serve...');
const { status, waitingFor } = await untilServing(children[0]!.url);
if (waitingFor !== undefined) {
  console.error(`cluster: not serving after ${SERVING_DEADLINE_MS / 1000} s: waiting for ${waitingFor}; the processes keep running (npx pbkv status shows more)`);
}

const [hub] = children;
const view = status?.view;
const primaryName = view?.primary ?? spec.nodes.find((node) => node.role === 'primary')!.name;
const primaryUrl = children.find((child) => child.name === primaryName)!.url;
const hubFlag = hub!.url === `ws://127.0.0.1:${DEFAULT_HUB_PORT}` ? '' : ` --hub ${hub!.url}`;
const lines = [
  '',
  waitingFor === undefined ? 'pbkv local cluster is up' : 'pbkv local cluster is running, but not serving yet (above)',
  `  hub      ${hub!.url}  pid ${hub!.process.pid}`,
  ...spec.nodes.map((node, index) => {
    const child = children[index + 1]!;
    return `  ${node.name.padEnd(8)} ${child.url}  ${roleIn(status, node.name)}  ${node.dataFile ?? '(memory)'}  pid ${child.process.pid}`;
  }),
  `  secret   ${secretFile} (every process above proves it)`,
  '',
  `Watch it:  ${hub!.url.replace(/^ws:/, 'http:')}/   (the live status page; Prometheus: /metrics)`,
  '',
  'Try it:',
  `  npx wscat -c ${primaryUrl}        then type: put color blue   get color`,
  `  npx pbkv${hubFlag} put color blue      npx pbkv${hubFlag} get color`,
  '',
  'Ctrl-C stops the cluster.',
  '',
];
console.error(lines.join('\n'));

/**
 * Asks the hub's status until the cluster serves (see `missing`), or the deadline
 * passes: the last status seen, and what was still missing then (undefined once serving).
 */
async function untilServing(hubUrl: string): Promise<{ status: HubStatus | undefined; waitingFor: string | undefined }> {
  const hubClient = new HubClient(hubUrl, { requestTimeoutMs: STATUS_TIMEOUT_MS });
  let last: { status: HubStatus | undefined; waitingFor: string | undefined } = { status: undefined, waitingFor: 'an answer from the hub' };
  try {
    await firstValueFrom(
      timer(0, STATUS_POLL_MS).pipe(
        exhaustMap(() =>
          hubClient.status().then(
            (seen) => ({ status: seen, waitingFor: missing(seen) }),
            (error: unknown) => ({ status: last.status, waitingFor: `an answer from the hub (${(error as Error).message})` }),
          ),
        ),
        tap((seen) => (last = seen)),
        first((seen) => seen.waitingFor === undefined),
        timeout({ first: SERVING_DEADLINE_MS, with: () => of(undefined) }),
      ),
    );
  } finally {
    await hubClient.close();
  }
  return last;
}

/**
 * What the cluster still lacks before a put is served, or undefined: a view, every node
 * in it (one that heartbeated late joins once the primary has caught it up), and the
 * primary serving (it reports so once it holds every replica's lease).
 */
function missing(seen: HubStatus): string | undefined {
  const { view } = seen;
  if (!view) return 'the first view';
  const outside = spec.nodes.map((node) => node.name).filter((name) => name !== view.primary && !view.replicas.includes(name));
  if (outside.length > 0) return `${outside.join(', ')} to join the view (epoch ${view.epoch})`;
  const health = seen.nodes[view.primary];
  if (health?.state === 'serving') return undefined;
  return `the primary ${view.primary} to serve (${health === undefined ? 'no report yet' : health.state}${health?.reason === undefined ? '' : `: ${health.reason}`})`;
}

/** A node's role in the view the hub holds; the role its flags name while there is none. */
function roleIn(seen: HubStatus | undefined, name: string): string {
  const view = seen?.view;
  if (!view) return `${spec.nodes.find((node) => node.name === name)!.role} (no view yet)`;
  if (view.primary === name) return 'primary';
  if (view.replicas.includes(name)) return 'replica';
  return view.members[name]?.state ?? 'outside the view';
}

/** Says at once that a process died, why, and how to start it again; the rest keep running. */
function reportExit(child: ChildHandle): void {
  if (stopping) return;
  const output = child.recentOutput();
  console.error(
    [
      '',
      `cluster: ${child.name} ${describeExit(child)}; the others keep running. Its last output:`,
      ...(output.length === 0 ? ['  (none)'] : output.map((line) => `  | ${line}`)),
      `To start ${child.name} again by hand (it will not stop with this cluster's Ctrl-C):`,
      `  ${child.command}`,
      '',
    ].join('\n'),
  );
  if (children.every((c) => c.process.exitCode !== null || c.process.signalCode !== null)) {
    console.error('cluster: every process has exited');
    process.exit(1);
  }
}

/** Why HOST:PORT cannot be listened on (in use, no such address), or undefined. */
function listenProblem(host: string, port: number): Promise<string | undefined> {
  if (port === 0) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') resolve(`port ${port} is in use${host === spec.hubHost ? '' : ` on ${host}`}: is a pbkv cluster already running?`);
      else resolve(`cannot listen on ${host}:${port}: ${error.message}`);
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}
