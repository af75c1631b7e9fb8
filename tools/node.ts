#!/usr/bin/env node
/**
 * Starts one pbkv node from flags:
 *   node dist/tools/node.js --name n0 --role primary --replicas n1,n2 --hub ws://127.0.0.1:7400 \
 *     --host 127.0.0.11 --port 7401 --data data/n0.sqlite [--sync normal] [--trace]
 *   node dist/tools/node.js --name n1 --role replica --primary n0 ...
 */
import { parseArgs } from 'node:util';
import { ACK_TIMEOUT_MS } from '../src/constants.js';
import { KvNode } from '../src/node/node.js';
import { SYNC_MODES, type SyncMode } from '../src/storage/store.js';
import { onShutdown } from './shutdown.js';

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    role: { type: 'string', default: 'primary' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    hub: { type: 'string', default: process.env['PBKV_HUB'] ?? 'ws://127.0.0.1:7400' },
    data: { type: 'string' },
    sync: { type: 'string', default: 'normal' },
    replicas: { type: 'string', default: '' },
    primary: { type: 'string' },
    secret: { type: 'string', default: process.env['PBKV_SECRET'] },
    'ack-timeout-ms': { type: 'string', default: String(ACK_TIMEOUT_MS) },
    trace: { type: 'boolean', default: false },
  },
});

function fail(message: string): never {
  console.error(`node: ${message}`);
  process.exit(2);
}

if (!values.name) fail('--name is required');
if (values.role !== 'primary' && values.role !== 'replica') fail('--role is primary or replica');
if (!SYNC_MODES.includes(values.sync as SyncMode)) fail(`--sync is one of ${SYNC_MODES.join(', ')}`);
if (values.role === 'replica' && !values.primary) fail('a replica needs --primary NAME');

const node = new KvNode({
  name: values.name,
  role: values.role,
  hubUrl: values.hub!,
  host: values.host!,
  port: Number(values.port),
  sync: values.sync as SyncMode,
  ackTimeoutMs: Number(values['ack-timeout-ms']),
  ...(values.data ? { dataFile: values.data } : {}),
  ...(values.role === 'primary'
    ? { replicas: values.replicas!.split(',').filter((name) => name !== '') }
    : { primary: values.primary! }),
  ...(values.secret ? { secret: values.secret } : {}),
});
if (values.trace) node.trace$.subscribe((event) => console.log(JSON.stringify(event)));
node.faults$.subscribe((event) => console.error(JSON.stringify(event)));
onShutdown(() => node.close());
try {
  await node.init();
  await node.startServices();
} catch (error) {
  console.error(`node ${values.name}: ${(error as Error).message}`);
  await node.close();
  process.exit(1);
}
console.log(JSON.stringify({ event: 'ready', name: node.name, role: node.role, url: node.url }));
