import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { Disposer, tempDir } from '../helpers.js';

const CLI = fileURLToPath(new URL('../../src/cli/pbkv.js', import.meta.url));
const disposer = new Disposer();

interface Run { code: number; stdout: string; stderr: string }

/** Runs `pbkv ARGS` as its own process, as a person at a shell would. */
function pbkv(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  // Color settings of the calling shell would make node warn on stderr.
  const { FORCE_COLOR: _force, NO_COLOR: _no, ...inherited } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...inherited, ...env }, timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

const Cli = suite('cli: pbkv end to end');
Cli.after.each(() => disposer.dispose());

Cli('put, get, del and status against a running cluster', async () => {
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer) }), (c) => c.close());
  const hub = ['--hub', cluster.hubUrl];
  assert.equal(await pbkv([...hub, 'put', 'color', 'light blue']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'get', 'color']), { code: 0, stdout: 'light blue\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'put', 'n', '{"a":[1,2]}', '--json']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.equal(await pbkv(['get', 'n'], { PBKV_HUB: cluster.hubUrl }), { code: 0, stdout: '{"a":[1,2]}\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'put', 'one', '1']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.is(await cluster.replicas[1]!.storage.get('one'), '1', 'without --json a value is a string');
  assert.equal(await pbkv([...hub, 'del', 'color']), { code: 0, stdout: 'deleted\n', stderr: '' });
  const missing = await pbkv([...hub, 'get', 'color']);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /not found/);
  const status = await pbkv([...hub, 'status']);
  assert.is(status.code, 0);
  assert.match(status.stdout, /service kv -> n0/);
  assert.match(status.stdout, /n2\s+ws:\/\//);
});

Cli('errors: a clear message and a non-zero exit code', async () => {
  const usage = await pbkv(['frobnicate']);
  assert.is(usage.code, 2);
  assert.match(usage.stderr, /usage: pbkv/);
  const badJson = await pbkv(['--hub', 'ws://127.0.0.1:1', 'put', 'k', '{nope', '--json']);
  assert.is(badJson.code, 2);
  assert.match(badJson.stderr, /not valid JSON/);
  // Port 1 on loopback: nothing listens there.
  const down = await pbkv(['--hub', 'ws://127.0.0.1:1', 'get', 'k']);
  assert.is(down.code, 1);
  assert.match(down.stderr, /UNAVAILABLE/);
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), replicas: 0 }), (c) => c.close());
  const tooLarge = await pbkv(['--hub', cluster.hubUrl, 'put', 'x'.repeat(1025), 'v']);
  assert.is(tooLarge.code, 1);
  assert.match(tooLarge.stderr, /TOO_LARGE/);
});

Cli.run();
