import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { localClusterSpec } from '../../src/cluster/config.js';
import { spawnHub } from '../../src/cluster/processes.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const TOOLS = {
  cluster: path.join(REPO, 'dist/tools/cluster.js'),
  hub: path.join(REPO, 'dist/src/cli/hub.js'),
  node: path.join(REPO, 'dist/src/cli/node.js'),
  pbkv: path.join(REPO, 'dist/src/cli/pbkv.js'),
};
const disposer = new Disposer();

/** A tool run as its own process in the repository, as a person runs it; its output collected. */
class Tool {
  stdout = '';
  stderr = '';
  readonly closed: Promise<number | null>;
  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => (this.stdout += text));
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (this.stderr += text));
    this.closed = new Promise((resolve) => child.once('close', resolve));
  }

  /** `argv` is the command line after `node`; `exec` runs it through sh (a printed command). */
  static start(argv: string[], options: { shell?: boolean } = {}): Tool {
    // Color settings of the calling shell would make node warn on stderr; a PBKV_SECRET of
    // the caller must not stand in for the file the tools are meant to use.
    const { FORCE_COLOR: _force, NO_COLOR: _no, PBKV_SECRET: _secret, PBKV_HUB: _hub, ...env } = process.env;
    const child = options.shell
      ? spawn('sh', ['-c', `exec ${argv.join(' ')}`], { cwd: REPO, env, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(process.execPath, argv, { cwd: REPO, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const tool = new Tool(child);
    disposer.add(tool, (t) => t.stop());
    return tool;
  }

  /** Runs to the end: exit code and output. */
  static async run(argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const tool = Tool.start(argv);
    const code = await within(`node ${argv.join(' ')}`, tool.closed, 20_000);
    return { code, stdout: tool.stdout, stderr: tool.stderr };
  }

  /** Waits until stdout or stderr matches `pattern`; returns the match. */
  output(stream: 'stdout' | 'stderr', pattern: RegExp, deadlineMs = 20_000): Promise<RegExpExecArray> {
    return waitFor(`${pattern} in ${stream}:\n${this.stdout}\n${this.stderr}`, () => pattern.exec(this[stream]), deadlineMs);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await within('a tool to stop', this.closed, 15_000);
  }
}

/** Holds a port on `host` the way another program would. */
async function occupy(host: string, port = 0): Promise<number> {
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, resolve);
  });
  disposer.add(server, (s) => new Promise((resolve) => s.close(resolve)));
  return (server.address() as { port: number }).port;
}

/** Puts once the cluster takes writes: UNAVAILABLE until every replica is back (or reported). */
async function putWhenServing(client: KvClient, key: string, value: string): Promise<void> {
  await waitFor(`a put of ${key} to succeed`, async () => {
    try {
      await client.put(key, value);
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === 'UNAVAILABLE') return false;
      throw error;
    }
  }, 20_000);
}

function noStackTrace(text: string): void {
  assert.not.match(text, /\n\s+at /, `no stack trace in:\n${text}`);
}

const Tools = suite('tools: npm start, hub.js, node.js and pbkv as a person meets them');
Tools.after.each(() => disposer.dispose());

Tools('--help prints the usage and exits 0; an unknown flag prints it and exits 2; on every tool', async () => {
  const usage = { cluster: /^usage: npm start -- \[options\]/, hub: /^usage: npm run -s hub --/, node: /^usage: npm run -s node --/, pbkv: /^usage: pbkv/ };
  for (const [tool, pattern] of Object.entries(usage)) {
    const script = TOOLS[tool as keyof typeof TOOLS];
    const help = await Tool.run([script, '--help']);
    assert.is(help.code, 0, `${tool} --help`);
    assert.match(help.stdout, pattern);
    assert.is(help.stderr, '');
    const unknown = await Tool.run([script, '--frobnicate']);
    assert.is(unknown.code, 2, `${tool} --frobnicate`);
    assert.is(unknown.stdout, '');
    assert.match(unknown.stderr, /--frobnicate/);
    assert.match(unknown.stderr, new RegExp(pattern.source.replace('^', '\n')));
    noStackTrace(unknown.stderr);
  }
});

Tools('npm start reports a node that dies at once: name, signal, last output and a restart command that works', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = Tool.start([TOOLS.cluster, '--data', dataDir, '--replicas', '1', '--hub-port', '0', '--port', '0']);
  const banner = await cluster.output('stderr', /hub +(\S+) +pid \d+\n.*\n +n1 +(\S+) +replica .* pid (\d+)\n/);
  const [, hubUrl, , n1Pid] = banner;
  const secretFile = path.join(dataDir, 'cluster.secret');
  const secret = (await readFile(secretFile, 'utf8')).trim();

  process.kill(Number(n1Pid), 'SIGKILL');
  const report = await cluster.output('stderr', /cluster: n1 was killed by SIGKILL.*\n((?: {2}\|.*\n)+)To start n1 again by hand.*\n {2}(.*)\n/);
  const [, lastOutput, command] = report;
  assert.match(lastOutput!, /\| \{"event":"ready","name":"n1"/, 'its last output, ready line included');
  assert.match(command!, /^\S*node (--\S+ )+dist\/src\/cli\/node\.js --name n1 --role replica /, 'the pinned runtime and its flags, not whatever node a shell finds');
  assert.match(command!, `--secret-file ${secretFile}`);
  assert.not.match(command!, secret, 'the secret itself is not printed');
  assert.is(cluster.child.exitCode, null, 'the cluster keeps running; nothing was restarted');

  const restarted = Tool.start([command!], { shell: true });
  await restarted.output('stdout', /"event":"ready","name":"n1"/);
  const client = disposer.add(new KvClient({ hubUrl: hubUrl! }), (c) => c.close());
  await putWhenServing(client, 'after', 'restart');

  await cluster.stop();
  assert.is(await cluster.closed, 0, 'Ctrl-C (SIGTERM) still stops the cluster cleanly');
  assert.not.match(cluster.stderr, /cluster: (hub|n0) /, 'the clean stop is not reported as deaths');
});

Tools('npm start says the cluster is up only once it serves: a put sent right after the banner is answered ok', async () => {
  const dataDir = await tempDir(disposer);
  const cluster = Tool.start([TOOLS.cluster, '--data', dataDir, '--hub-port', '0', '--port', '0']);
  const [, primaryUrl] = await cluster.output('stderr', /pbkv local cluster is up[^]*npx wscat -c (\S+)/);
  const client = await RawClient.open(primaryUrl!, disposer);
  assert.equal(await client.ask({ id: 1, op: 'put', key: 'color', value: 'blue' }), { id: 1, ok: true, version: 1 });
  assert.equal(await client.ask({ id: 2, op: 'get', key: 'color' }), { id: 2, ok: true, found: true, value: 'blue', version: 1 });
  assert.match(cluster.stderr, /^cluster: waiting for the first view[^\n]*\n[^]*pbkv local cluster is up/m, 'until then it says what it waits for');
});

Tools('a second npm start on a port in use says so in one line and exits 1, starting nothing', async () => {
  const dataDir = await tempDir(disposer);
  const first = Tool.start([TOOLS.cluster, '--data', dataDir, '--replicas', '0', '--hub-port', '0', '--port', '0']);
  const [, hubPort] = await first.output('stderr', /hub +ws:\/\/127\.0\.0\.1:(\d+)/);
  const second = await Tool.run([TOOLS.cluster, '--data', await tempDir(disposer), '--hub-port', hubPort!, '--port', '0']);
  assert.equal(second, { code: 1, stdout: '', stderr: `cluster: port ${hubPort} is in use: is a pbkv cluster already running?\n` });

  // A node's port, on the address that node would use.
  const spec = localClusterSpec({ replicas: 0, dataDir, hubPort: 0, nodePortFirst: 0 });
  const nodePort = await occupy(spec.nodes[0]!.host);
  const third = await Tool.run([TOOLS.cluster, '--data', await tempDir(disposer), '--replicas', '0', '--hub-port', '0', '--port', String(nodePort)]);
  assert.is(third.code, 1);
  assert.match(third.stderr, new RegExp(`^cluster: port ${nodePort} is in use( on ${spec.nodes[0]!.host.replaceAll('.', '\\.')})?: is a pbkv cluster already running\\?\\n$`));
  assert.is(first.child.exitCode, null, 'the first cluster is untouched');
});

Tools('hub.js and node.js on a port in use print one line, no stack trace, and exit 1', async () => {
  const dir = await tempDir(disposer);
  const secretFile = path.join(dir, 'cluster.secret');
  const port = await occupy('127.0.0.1');
  const hub = await Tool.run([TOOLS.hub, '--port', String(port), '--secret-file', secretFile]);
  assert.equal(hub, { code: 1, stdout: '', stderr: `hub: port ${port} is in use on 127.0.0.1: is a pbkv hub already running?\n` });

  const spec = localClusterSpec({ replicas: 0, dataDir: dir, hubPort: 0, nodePortFirst: 0 });
  const running = disposer.add(await spawnHub(spec, { secretFile }), (c) => c.stop());
  const args = ['--name', 'n0', '--host', '127.0.0.1', '--port', String(port), '--hub', running.url, '--sync', 'memory', '--secret-file', secretFile];
  const node = await Tool.run([TOOLS.node, ...args]);
  assert.is(node.code, 1);
  assert.is(node.stdout, '');
  assert.is(node.stderr, `node: n0: port ${port} is in use on 127.0.0.1: is a pbkv node already running there?\n`);
});

Tools('without a secret the tools use the 0600 file beside the data; --insecure warns in one line that writes can be forged', async () => {
  const dir = await tempDir(disposer);
  const spec = localClusterSpec({ replicas: 0, dataDir: dir, hubPort: 0, nodePortFirst: 0 });
  const hub = disposer.add(await spawnHub(spec, { secretFile: path.join(dir, 'cluster.secret') }), (c) => c.stop());
  // node.js given only --data: its secret file is found beside it, so it may register.
  const node = Tool.start([TOOLS.node, '--name', 'n0', '--replicas', '', '--hub', hub.url, '--data', path.join(dir, 'n0.sqlite')]);
  await node.output('stdout', /"event":"ready"/);
  const client = disposer.add(new KvClient({ hubUrl: hub.url }), (c) => c.close());
  await putWhenServing(client, 'k', 'v');

  const insecure = Tool.start([TOOLS.hub, '--port', '0', '--insecure']);
  const [, url] = await insecure.output('stdout', /"url":"([^"]+)"/);
  assert.is(insecure.stderr, 'hub: WARNING: --insecure: no cluster secret, so any local process can register names at the hub and forge writes to replicas\n');
  const anyone = await RawClient.open(url!, disposer);
  assert.equal(await anyone.ask({ id: 1, op: 'register', name: 'n9', address: 'ws://127.0.0.1:9' }), { id: 1, ok: true });

  const both = await Tool.run([TOOLS.hub, '--port', '0', '--insecure', '--secret', 's']);
  assert.is(both.code, 2);
  assert.match(both.stderr, /^hub: --secret and --insecure exclude each other\n/);
});

Tools.run();
