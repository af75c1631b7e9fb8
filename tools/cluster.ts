#!/usr/bin/env node
/**
 * `npm start`: a local cluster, one process each: the hub, the primary n0 and the
 * replicas n1, n2 (PROTOCOL.md, "Defaults of npm start"), data in ./data/. Ctrl-C stops
 * everything. Every process proves one cluster secret, kept in DATA/cluster.secret.
 * A process that dies is reported (how it ended, its last lines, the command that starts
 * it again) and not restarted: a node that keeps crashing should be looked at, and a
 * restart loop would scroll the reason away.
 */
import { createServer } from 'node:net';
import path from 'node:path';
import { localClusterSpec, type ClusterSpec } from '../src/cluster/config.js';
import { describeExit, spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import { loadOrCreateSecret, SECRET_FILE_NAME } from '../src/cluster/secret.js';
import { DEFAULT_HUB_PORT, DEFAULT_NODE_PORT_FIRST } from '../src/constants.js';
import { SYNC_MODES, type SyncMode } from '../src/storage/store.js';
import { failWith, readFlags, type Fail } from '../src/cli/flags.js';
import { onShutdown } from '../src/cli/shutdown.js';

const USAGE = `usage: npm start -- [options]   (or: node dist/tools/cluster.js [options])
  --replicas N     replicas besides the primary n0 (default 2)
  --data DIR       where the SQLite files and ${SECRET_FILE_NAME} are kept (default data)
  --sync MODE      ${SYNC_MODES.join(', ')} (default normal)
  --hub-port P     the hub's port (default ${DEFAULT_HUB_PORT}; 0: any free port)
  --port P         the first node's port, the others follow (default ${DEFAULT_NODE_PORT_FIRST}; 0: any free ports)
  --trace          print every node's trace events as JSON lines
  -h, --help       this text`;

const fail: Fail = failWith('cluster', USAGE);

/** More replicas than a laptop runs well; also keeps each on its own 127.0.0.x address. */
const REPLICAS_MAX = 50;

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
  for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url, spawnOptions));
} catch (error) {
  console.error(`cluster: ${(error as Error).message}`);
  await stopAll();
  process.exit(1);
}
for (const child of children) void child.exited.then(() => reportExit(child));

const [hub, primary] = children;
const hubFlag = hub!.url === `ws://127.0.0.1:${DEFAULT_HUB_PORT}` ? '' : ` --hub ${hub!.url}`;
const lines = [
  '',
  'pbkv local cluster is up',
  `  hub      ${hub!.url}  pid ${hub!.process.pid}`,
  ...spec.nodes.map((node, index) => {
    const child = children[index + 1]!;
    return `  ${node.name.padEnd(8)} ${child.url}  ${node.role}  ${node.dataFile ?? '(memory)'}  pid ${child.process.pid}`;
  }),
  `  secret   ${secretFile} (every process above proves it)`,
  '',
  'Try it:',
  `  npx wscat -c ${primary!.url}        then type: put color blue   get color`,
  `  npx pbkv${hubFlag} put color blue      npx pbkv${hubFlag} get color`,
  '',
  'Ctrl-C stops the cluster.',
  '',
];
console.error(lines.join('\n'));

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
