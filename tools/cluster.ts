#!/usr/bin/env node
/**
 * `npm start`: a local cluster, one process each: the hub, the primary n0 and the
 * replicas n1, n2 (PROTOCOL.md, "Defaults of npm start"), data in ./data/. Ctrl-C stops
 * everything. Flags: --trace (print every node's trace events), --replicas N,
 * --data DIR, --sync full|normal|memory, --hub-port P, --port P (first node port).
 */
import { parseArgs } from 'node:util';
import { localClusterSpec } from '../src/cluster/config.js';
import { spawnHub, spawnNode, type ChildHandle } from '../src/cluster/processes.js';
import { DEFAULT_HUB_PORT, DEFAULT_NODE_PORT_FIRST } from '../src/constants.js';
import { SYNC_MODES, type SyncMode } from '../src/storage/store.js';
import { onShutdown } from './shutdown.js';

const { values } = parseArgs({
  options: {
    trace: { type: 'boolean', default: false },
    replicas: { type: 'string', default: '2' },
    data: { type: 'string', default: 'data' },
    sync: { type: 'string', default: 'normal' },
    'hub-port': { type: 'string', default: String(DEFAULT_HUB_PORT) },
    port: { type: 'string', default: String(DEFAULT_NODE_PORT_FIRST) },
  },
});
if (!SYNC_MODES.includes(values.sync as SyncMode)) {
  console.error(`cluster: --sync is one of ${SYNC_MODES.join(', ')}`);
  process.exit(2);
}

const spec = localClusterSpec({
  replicas: Number(values.replicas),
  dataDir: values.data!,
  sync: values.sync as SyncMode,
  hubPort: Number(values['hub-port']),
  nodePortFirst: Number(values.port),
});
const children: ChildHandle[] = [];
const stopAll = async () => {
  // Replicas first, then the primary, then the hub: nothing is left waiting for a peer.
  for (const child of [...children].reverse()) await child.stop();
};
onShutdown(stopAll);

const extraArgs = values.trace ? ['--trace'] : [];
const onLine = (name: string, line: string) => console.log(values.trace ? line : `[${name}] ${line}`);
try {
  const hub = await spawnHub(spec, { onLine, extraArgs });
  children.push(hub);
  for (const node of spec.nodes) children.push(await spawnNode(node, spec, hub.url, { onLine, extraArgs }));
} catch (error) {
  console.error(`cluster: ${(error as Error).message}`);
  await stopAll();
  process.exit(1);
}

const [hub, primary] = children;
const lines = [
  '',
  'pbkv local cluster is up',
  `  hub      ${hub!.url}`,
  ...spec.nodes.map((node, index) => `  ${node.name.padEnd(8)} ${children[index + 1]!.url}  ${node.role}  ${node.dataFile ?? '(memory)'}`),
  '',
  'Try it:',
  `  npx wscat -c ${primary!.url}        then type: put color blue   get color`,
  `  npm run pbkv -- put color blue      npm run pbkv -- get color`,
  '',
  'Ctrl-C stops the cluster.',
  '',
];
console.error(lines.join('\n'));
for (const child of children) {
  void child.exited.then((code) => {
    if (code !== 0 && code !== null) console.error(`cluster: ${child.name} exited with code ${code}`);
  });
}
