import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Disposer } from '../helpers.js';
import { nodeRuntimes, REPO_ROOT, run } from './runs.js';

const CLIENT_ENTRY = new URL('../../src/index.js', import.meta.url).href;
const SERVER_ENTRY = new URL('../../src/server.js', import.meta.url).href;
const KEYV_ENTRY = new URL('../../src/keyv.js', import.meta.url).href;
const CLIENT_EXPORTS = ['CompactedError', 'ConflictError', 'ERROR_CODES', 'HubClient', 'KV_SERVICE', 'KvClient', 'KvError', 'limits'];
const KEYV_EXPORTS = ['KeyvPbkv', 'NAMESPACE_SEPARATOR', 'createKeyv', 'jsonProblem'];
const disposer = new Disposer();

/** Modules that belong to the servers: none of them may load with the client. */
const SERVER_MODULE = /\/dist\/src\/(node|storage|cluster|sim|cli)\/|\/dist\/src\/hub\/(?!hub-client\.js)|^node:(sqlite|worker_threads)$/;

const Entries = suite('package: the client entry and the server entry');
Entries.after.each(() => disposer.dispose());

/** What importing `entry` loads, in a child process, so that what this test process has loaded does not count. */
async function loadedBy(entry: string): Promise<{ exports: string[]; loaded: string[] }> {
  const script = `
    import { registerHooks } from 'node:module';
    const loaded = [];
    registerHooks({ resolve(specifier, context, next) { const found = next(specifier, context); loaded.push(found.url); return found; } });
    const entry = await import(${JSON.stringify(entry)});
    console.log(JSON.stringify({ exports: Object.keys(entry).sort(), loaded }));`;
  const child = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, deadlineMs: 20_000 }, disposer);
  assert.is(child.stderr, '');
  assert.is(child.code, 0);
  return JSON.parse(child.stdout) as { exports: string[]; loaded: string[] };
}

Entries('importing the client entry loads no server module', async () => {
  const { exports, loaded } = await loadedBy(CLIENT_ENTRY);
  assert.ok(loaded.some((url) => url.endsWith('/dist/src/client/client.js')), `the hook saw the client load: ${loaded.join(' ')}`);
  assert.ok(loaded.includes('ws') || loaded.some((url) => url.includes('/node_modules/ws/')), 'and its socket library');
  assert.equal(loaded.filter((url) => SERVER_MODULE.test(url)), [], 'no server module');
  assert.equal(exports, CLIENT_EXPORTS);
});

Entries('importing pbkv/keyv loads the client and keyv, and no server module', async () => {
  const { exports, loaded } = await loadedBy(KEYV_ENTRY);
  assert.ok(loaded.some((url) => url.endsWith('/dist/src/client/client.js')), `the hook saw the client load: ${loaded.join(' ')}`);
  assert.ok(loaded.some((url) => url.includes('/node_modules/keyv/')), 'and keyv, its peer');
  assert.equal(loaded.filter((url) => SERVER_MODULE.test(url)), [], 'no server module');
  assert.equal(exports, KEYV_EXPORTS);
});

Entries('the client entry loads on every Node found, with or without node:sqlite', async () => {
  const runtimes = await nodeRuntimes(disposer);
  if (!runtimes.some((runtime) => !runtime.hasSqlite)) console.log(`  (no Node without node:sqlite found here: ${runtimes.map((r) => r.version).join(', ')})`);
  for (const runtime of runtimes) {
    const script = `import(${JSON.stringify(CLIENT_ENTRY)}).then((entry) => console.log(Object.keys(entry).sort().join(' ')))`;
    const child = await run(runtime.path, ['-e', script], { cwd: REPO_ROOT, deadlineMs: 20_000 }, disposer);
    assert.equal({ code: child.code, stdout: child.stdout, stderr: child.stderr }, { code: 0, stdout: `${CLIENT_EXPORTS.join(' ')}\n`, stderr: '' }, runtime.version);
  }
});

Entries('the server entry exports the nodes, the hub and whole clusters', async () => {
  const server = (await import(SERVER_ENTRY)) as Record<string, unknown>;
  assert.equal(Object.keys(server).sort(), ['DirectoryHub', 'KvNode', 'checkClusterSpec', 'localClusterSpec', 'startInProcessCluster']);
  for (const name of ['DirectoryHub', 'KvNode', 'startInProcessCluster']) assert.type(server[name], 'function', name);
});

Entries.run();
