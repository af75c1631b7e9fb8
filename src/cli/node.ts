#!/usr/bin/env node
/**
 * Starts one pbkv node from flags:
 *   npm run -s node -- --name n0 --role primary --replicas n1,n2 --hub ws://127.0.0.1:7400 \
 *     --host 127.0.0.11 --port 7401 --data data/n0.sqlite [--sync normal] [--trace]
 *   npm run -s node -- --name n1 --role replica --primary n0 ...
 * Secure by default: without a secret given, the one in cluster.secret beside --data is
 * used (generated there, mode 0600, if absent).
 */
import path from 'node:path';
import {
  chooseSecret,
  insecureWarning,
  SECRET_FILE_NAME,
  SECRET_FLAGS,
  secretFlagsUsage,
  secretFlagsProblem,
  type SecretChoice,
} from '../cluster/secret.js';
import { ACK_TIMEOUT_MS, DEFAULT_HUB_PORT } from '../constants.js';
import { processMetrics } from '../metrics/exposition.js';
import { KvNode } from '../node/node.js';
import { SYNC_MODES, type SyncMode } from '../storage/store.js';
import { failWith, readFlags, type Fail } from './flags.js';
import { onShutdown } from './shutdown.js';

const USAGE = `usage: npm run -s node -- --name NAME [options]
  --name NAME            the node's name (peers and the hub know it by this); required
  --role ROLE            primary or replica (default primary)
  --replicas A,B         primary: its replicas' names
  --primary NAME         replica: the primary's name; required for a replica
  --host HOST            address to listen on; the primary also connects from it (default 127.0.0.1)
  --port PORT            port to listen on, 0 for any free one (default 0)
  --hub URL              the directory hub (env PBKV_HUB; default ws://127.0.0.1:${DEFAULT_HUB_PORT})
  --data FILE            the node's SQLite file; required unless --sync memory
  --sync MODE            ${SYNC_MODES.join(', ')} (default normal)
${secretFlagsUsage(25, `${SECRET_FILE_NAME} beside --data`)}
  --ack-timeout-ms MS    how long a put waits for every replica (default ${ACK_TIMEOUT_MS})
  --min-replicas N       primary: a write is acknowledged only while the view holds N replicas
                         (default 1 with --replicas, else 0; 0 trades durability for availability)
  --no-metrics           count and report nothing (no heartbeat metrics, no GET /metrics)
  --trace                print trace events as JSON lines
  -h, --help             this text`;

const fail: Fail = failWith('node', USAGE);

const values = readFlags(fail, USAGE, {
  name: { type: 'string' },
  role: { type: 'string', default: 'primary' },
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '0' },
  hub: { type: 'string', default: process.env['PBKV_HUB'] ?? `ws://127.0.0.1:${DEFAULT_HUB_PORT}` },
  data: { type: 'string' },
  sync: { type: 'string', default: 'normal' },
  replicas: { type: 'string', default: '' },
  primary: { type: 'string' },
  ...SECRET_FLAGS,
  'ack-timeout-ms': { type: 'string', default: String(ACK_TIMEOUT_MS) },
  'min-replicas': { type: 'string' },
  trace: { type: 'boolean', default: false },
  metrics: { type: 'boolean', default: true },
});
if (!values.name) fail('--name is required');
if (values.role !== 'primary' && values.role !== 'replica') fail('--role is primary or replica');
if (!SYNC_MODES.includes(values.sync as SyncMode)) fail(`--sync is one of ${SYNC_MODES.join(', ')}`);
if (values.role === 'replica' && !values.primary) fail('a replica needs --primary NAME');
if (!values.data && values.sync !== 'memory') fail('--data FILE is required unless --sync memory');
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) fail(`--port must be a port number, not "${values.port}"`);
const ackTimeoutMs = Number(values['ack-timeout-ms']);
if (!Number.isInteger(ackTimeoutMs) || ackTimeoutMs <= 0) fail(`--ack-timeout-ms must be a positive integer, not "${values['ack-timeout-ms']}"`);
const replicaNames = values.replicas!.split(',').filter((replica) => replica !== '');
const minReplicasFlag = values['min-replicas'];
const minReplicas = minReplicasFlag === undefined ? undefined : Number(minReplicasFlag);
if (minReplicas !== undefined && values.role !== 'primary') fail('--min-replicas is for the primary: it proposes the first view');
if (minReplicas !== undefined && (!Number.isInteger(minReplicas) || minReplicas < 0 || minReplicas > replicaNames.length)) {
  fail(`--min-replicas must be an integer from 0 to the ${replicaNames.length} --replicas, not "${minReplicasFlag}"`);
}
const secretProblem = secretFlagsProblem(values);
if (secretProblem !== undefined) fail(secretProblem);

const name = values.name;
let choice: SecretChoice;
try {
  const defaultSecretFile = path.join(values.data ? path.dirname(values.data) : 'data', SECRET_FILE_NAME);
  choice = await chooseSecret(values, defaultSecretFile);
} catch (error) {
  fail((error as Error).message, 1);
}
if ('insecure' in choice) console.error(insecureWarning(`node ${name}`));

const node = new KvNode({
  name,
  role: values.role,
  hubUrl: values.hub!,
  host: values.host!,
  port,
  sync: values.sync as SyncMode,
  ackTimeoutMs,
  ...(values.data ? { dataFile: values.data } : {}),
  ...(values.role === 'primary' ? { replicas: replicaNames, ...(minReplicas !== undefined ? { minReplicas } : {}) } : { primary: values.primary! }),
  metrics: values.metrics!,
  ...choice,
});
// The process's own metrics (GC, event-loop lag) count from the start, not from the first scrape.
if (values.metrics) processMetrics();
if (values.trace) node.trace$.subscribe((event) => console.log(JSON.stringify(event)));
node.faults$.subscribe((event) => console.error(JSON.stringify(event)));
onShutdown(() => node.close());
try {
  await node.init();
  await node.startServices();
} catch (error) {
  await node.close();
  fail(startFailure(error), 1);
}
console.log(JSON.stringify({ event: 'ready', name: node.name, role: node.role, url: node.url }));

/** One line for a person: an address in use is the common case (a node already running). */
function startFailure(error: unknown): string {
  const address = `${values.host}:${port}`;
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'EADDRINUSE' || /EADDRINUSE/.test(message)) {
    return `${name}: port ${port} is in use on ${values.host}: is a pbkv node already running there?`;
  }
  if (code === 'EADDRNOTAVAIL' || /EADDRNOTAVAIL/.test(message)) return `${name}: cannot listen on ${address}: no such local address`;
  return `${name}: ${message}`;
}
