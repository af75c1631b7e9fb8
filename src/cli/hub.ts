#!/usr/bin/env node
/**
 * Starts the directory hub: npm run -s hub -- [--host H] [--port P] [--data FILE] [--secret-file PATH]
 * The view (who is primary, who must acknowledge) is kept in --data across restarts.
 * Secure by default: without a secret given, the one in data/cluster.secret is used
 * (generated there, mode 0600, if absent).
 */
import { mkdir } from 'node:fs/promises';
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
import { DEFAULT_HUB_PORT } from '../constants.js';
import { DirectoryHub } from '../hub/hub.js';
import type { SqliteViewStore } from '../hub/sqlite-view-store.js';
import { failWith, readFlags, type Fail } from './flags.js';
import { onShutdown } from './shutdown.js';

const DEFAULT_SECRET_FILE = path.join('data', SECRET_FILE_NAME);
const DEFAULT_VIEW_FILE = path.join('data', 'hub.sqlite');

const USAGE = `usage: npm run -s hub -- [options]
  --host HOST         address to listen on (default 127.0.0.1)
  --port PORT         port to listen on, 0 for any free one (default ${DEFAULT_HUB_PORT})
  --data FILE         where the view is kept across restarts (default ${DEFAULT_VIEW_FILE})
  --memory            keep the view in memory only (a restart forgets it: tests only)
${secretFlagsUsage(22, DEFAULT_SECRET_FILE)}
  --trace             print every registration as a JSON line
  -h, --help          this text`;

const fail: Fail = failWith('hub', USAGE);

const values = readFlags(fail, USAGE, {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: String(DEFAULT_HUB_PORT) },
  data: { type: 'string', default: DEFAULT_VIEW_FILE },
  memory: { type: 'boolean', default: false },
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

let viewStore: SqliteViewStore | undefined;
if (!values.memory) {
  try {
    await mkdir(path.dirname(values.data), { recursive: true });
    // Loaded only here: on a Node without node:sqlite, --memory still runs and the rest says why.
    const { SqliteViewStore } = await import('../hub/sqlite-view-store.js').catch((error: { code?: string }) => {
      if (error.code !== 'ERR_UNKNOWN_BUILTIN_MODULE') throw error;
      throw new Error(`this Node (${process.version}) has no node:sqlite for the hub's view file: it needs Node 24 (in the pbkv repository: npm start, npm run hub), or --memory`);
    });
    viewStore = new SqliteViewStore(values.data);
  } catch (error) {
    fail((error as Error).message, 1);
  }
}
const hub = new DirectoryHub({ host: values.host, port, ...choice, ...(viewStore ? { viewStore } : {}) });
if (values.trace) hub.events$.subscribe((event) => console.log(JSON.stringify({ node: 'hub', at: Date.now(), ...event })));
onShutdown(async () => {
  await hub.close();
  viewStore?.close();
});
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
