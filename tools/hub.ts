#!/usr/bin/env node
/**
 * Starts the directory hub: node dist/tools/hub.js [--host H] [--port P] [--secret-file PATH]
 * Secure by default: without a secret given, the one in data/cluster.secret is used
 * (generated there, mode 0600, if absent).
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
} from '../src/cluster/secret.js';
import { DEFAULT_HUB_PORT } from '../src/constants.js';
import { DirectoryHub } from '../src/hub/hub.js';
import { failWith, readFlags, type Fail } from './flags.js';
import { onShutdown } from './shutdown.js';

const DEFAULT_SECRET_FILE = path.join('data', SECRET_FILE_NAME);

const USAGE = `usage: node dist/tools/hub.js [options]
  --host HOST         address to listen on (default 127.0.0.1)
  --port PORT         port to listen on, 0 for any free one (default ${DEFAULT_HUB_PORT})
${secretFlagsUsage(22, DEFAULT_SECRET_FILE)}
  --trace             print every registration as a JSON line
  -h, --help          this text`;

const fail: Fail = failWith('hub', USAGE);

const values = readFlags(fail, USAGE, {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: String(DEFAULT_HUB_PORT) },
  ...SECRET_FLAGS,
  trace: { type: 'boolean', default: false },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) fail(`--port must be a port number, not "${values.port}"`);

const secretProblem = secretFlagsProblem(values);
if (secretProblem !== undefined) fail(secretProblem);
let choice: SecretChoice;
try {
  choice = await chooseSecret(values, DEFAULT_SECRET_FILE);
} catch (error) {
  fail((error as Error).message, 1);
}
if ('insecure' in choice) console.error(insecureWarning('hub'));

const hub = new DirectoryHub({ host: values.host, port, ...choice });
if (values.trace) hub.events$.subscribe((event) => console.log(JSON.stringify({ node: 'hub', at: Date.now(), ...event })));
onShutdown(() => hub.close());
try {
  await hub.listen();
} catch (error) {
  await hub.close();
  fail(listenFailure(error, `${values.host}:${port}`), 1);
}
console.log(JSON.stringify({ event: 'ready', name: 'hub', url: hub.url }));

function listenFailure(error: unknown, address: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return `port ${port} is in use on ${values.host}: is a pbkv hub already running?`;
  if (code === 'EADDRNOTAVAIL') return `cannot listen on ${address}: no such local address`;
  return `cannot listen on ${address}: ${(error as Error).message}`;
}
