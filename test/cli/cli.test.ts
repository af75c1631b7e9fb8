import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { startInProcessCluster, type InProcessCluster } from '../../src/cluster/in-process.js';
import { KvNode } from '../../src/node/node.js';
import type { Json } from '../../src/protocol/messages.js';
import { WebSocketServer } from 'ws';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { Disposer, proposeAlone, tempDir, waitFor, within, type Frame } from '../helpers.js';
import { storedValue } from '../stores.js';

const CLI = fileURLToPath(new URL('../../src/cli/pbkv.js', import.meta.url));
const PACKAGE_JSON = new URL('../../../package.json', import.meta.url);
const disposer = new Disposer();

interface Run { code: number; stdout: string; stderr: string }

/** Runs `pbkv ARGS` as its own process, as a person at a shell would, with `stdin` piped in. */
async function pbkv(args: string[], env: NodeJS.ProcessEnv = {}, stdin: string | Buffer = ''): Promise<Run> {
  // Color settings of the calling shell would make node warn on stderr.
  const { FORCE_COLOR: _force, NO_COLOR: _no, PBKV_HUB: _hub, ...inherited } = process.env;
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...inherited, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  disposer.add(child, (c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdin.end(stdin);
  const code = await within(`pbkv ${args.join(' ')}`, new Promise<number | null>((resolve) => child.once('close', resolve)), 20_000);
  return { code: code ?? -1, stdout, stderr };
}

async function cluster(replicas = 1): Promise<InProcessCluster> {
  return disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), replicas }), (c) => c.close());
}

const Cli = suite('cli: pbkv end to end');
Cli.after.each(() => disposer.dispose());

Cli('put, get, del and status against a running cluster', async () => {
  const running = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer) }), (c) => c.close());
  const hub = ['--hub', running.hubUrl];
  assert.equal(await pbkv([...hub, 'put', 'color', 'light blue']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'get', 'color']), { code: 0, stdout: 'light blue\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'put', 'n', '{"a":[1,2]}', '--json']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.equal(await pbkv(['get', 'n'], { PBKV_HUB: running.hubUrl }), { code: 0, stdout: '{"a":[1,2]}\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'put', 'one', '1']), { code: 0, stdout: 'OK\n', stderr: '' });
  assert.is(storedValue(running.replicas[1]!.storage, 'one'), '1', 'without --json a value is a string');
  assert.equal(await pbkv([...hub, 'del', 'color']), { code: 0, stdout: 'deleted\n', stderr: '' });
  const missing = await pbkv([...hub, 'get', 'color']);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /not found/);
  const status = await pbkv([...hub, 'status']);
  assert.is(status.code, 0);
  assert.match(status.stdout, /service kv -> n0/);
  assert.match(status.stdout, /n2\s+ws:\/\//);
  assert.match(status.stdout, /view\s+1: primary n0, replicas n1, n2; a write needs 1 replica\n/, 'the view and its floor');
  assert.not.match(status.stdout, /^writes/m, 'writes are taken');
  assert.match(status.stdout, /n0\s+ws:\/\/\S+\s+primary\s+in view\s+seq \d+\s+\d+ req\/s(\s+p99 [\d.]+ ms)?\s+serving\n/, "each node's role, state, seq, load and health as it reported it");
  assert.match(status.stdout, /n1\s+ws:\/\/\S+\s+replica\s+in view\s+seq \d+/);
});

/** A node's load column in `pbkv status`: requests per second, and their p99 once it served any. */
const LOAD = String.raw`\d[\d,]* req/s(\s+p99 [\d.]+ ms)?`;

/** `pbkv status` once `accept` holds for its output. */
async function statusWhere(hubUrl: string, what: string, accept: (stdout: string) => boolean): Promise<string> {
  let last = '';
  try {
    return await waitFor(what, async () => {
      last = (await pbkv(['--hub', hubUrl, 'status'])).stdout;
      return accept(last) ? last : undefined;
    }, 20_000);
  } catch (error) {
    throw new Error(`${(error as Error).message}; the last status:\n${last}`);
  }
}

Cli('status reads right after a primary\'s restart and its replicas\' deaths: one current line per node, and writes refused below the floor', async () => {
  const running = await cluster(2);
  const [n0, n1, n2] = running.nodes as [KvNode, KvNode, KvNode];
  const client = disposer.add(new KvClient({ hubUrl: running.hubUrl }), (c) => c.close());
  await client.put('before', 1);

  // The primary stops and comes back: a replica took over meanwhile, and n0 rejoins as a
  // replica. Its line must say so, not what its new process said before it had a view.
  await n0.close();
  await waitFor('a replica to take over', async () => (await client.status()).view?.primary !== 'n0', 10_000);
  const again = disposer.add(new KvNode({ ...n0.options, port: 0 }), (node) => node.close());
  await again.init();
  await again.startServices();
  const rejoined = await statusWhere(running.hubUrl, 'n0 back in the view', (out) => /^node\s+n0\s.*\breplica\s+in view\s+seq \d+\s+\d+ req\/s(\s+p99 [\d.]+ ms)?\s+serving$/m.test(out));
  assert.not.match(rejoined, /starting/, 'no line says starting once every node serves');
  const primary = (await client.status()).view!.primary;
  assert.match(rejoined, new RegExp(`^node\\s+${primary}\\s.*\\bprimary\\s+in view\\s+seq \\d+\\s+${LOAD}\\s+serving$`, 'm'));

  // Both replicas of the new view stop: the primary holds the view alone, below the floor.
  const replicas = [again, n1, n2].filter((node) => node.name !== primary);
  await Promise.all(replicas.map((node) => node.close()));
  const alone = await statusWhere(running.hubUrl, 'a view without replicas', (out) => /replicas \(none\)/.test(out));
  assert.match(alone, /^writes\s+REFUSED: view \d+ has 0 replicas and a write needs at least 1 to be acknowledged \(min replicas\); writes resume when a replica rejoins$/m);
  // The primary says so itself (at its next report): degraded, with the view line's reason.
  const primaryLine = new RegExp(`^node\\s+${primary}\\s.*\\bprimary\\s+in view\\s+seq \\d+\\s+${LOAD}\\s+degraded: view \\d+ has 0 replicas and a write needs at least 1 to be acknowledged`, 'm');
  await statusWhere(running.hubUrl, 'the primary to report it refuses writes', (out) => primaryLine.test(out));
  // A stopped replica may leave the view (its primary reports it unreachable) before the
  // hub has missed its heartbeats for DEAD_AFTER_MS: until then it is `catching up`.
  const dead = await statusWhere(running.hubUrl, 'both stopped replicas dead', (out) => replicas.every((node) => new RegExp(`^node\\s+${node.name}\\s.*\\sdead\\s`, 'm').test(out)));
  for (const node of replicas) {
    const line = dead.split('\n').find((text) => text.startsWith(`node    ${node.name} `)) ?? '';
    assert.match(line, /\s-\s+dead\s+seq \d+\s+no heartbeat for \d+\.\d s$/, `${node.name}: dead, and for how long`);
    assert.not.match(line, /serving|starting|degraded/, `${node.name}: what it said while alive is not shown as current`);
  }
});

Cli('status shows each node\'s requests per second and p99; --watch redraws it once a second until Ctrl-C', async () => {
  const running = await cluster();
  const client = disposer.add(new KvClient({ hubUrl: running.hubUrl }), (c) => c.close());
  for (let i = 0; i < 200; i += 1) await client.put(`k${i}`, i);
  const loaded = await statusWhere(running.hubUrl, 'the primary\'s load', (out) => /^node\s+n0\s.*\bseq \d+\s+[1-9][\d,]* req\/s\s+p99 [\d.]+ ms\s+serving$/m.test(out));
  assert.match(loaded, /^node\s+n1\s.*\breplica\s+in view\s+seq \d+\s+0 req\/s\s+serving$/m, 'a replica serves no client');
  const watched = await pbkvUntil(['--hub', running.hubUrl, 'status', '--watch'], 12);
  assert.is(watched.code, 0, 'Ctrl-C ends it');
  const draws = watched.stdout.match(/^pbkv status, every 1 s \(Ctrl-C stops\)/gm) ?? [];
  assert.ok(draws.length >= 2, `redrawn: ${watched.stdout}`);
  assert.is(watched.stdout.match(/^view\s+\d+: primary n0/gm)?.length, draws.length, 'the whole table each time');
  const misuse = await pbkv(['get', 'k', '--watch']);
  assert.is(misuse.code, 2);
  assert.match(misuse.stderr, /--watch is for status, not get/);
});

Cli('help status describes what status prints', async () => {
  const help = await pbkv(['help', 'status']);
  assert.is(help.code, 0);
  for (const said of [/durability floor/, /writes are refused and why/, /one line per node/, /primary,\s+replica, or candidate/, /in view, catching up, dead/, /behind the primary/, /how long it has been silent/, /--json/, /requests per second and their p99/, /--watch/]) {
    assert.match(help.stdout, said);
  }
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
  const running = await cluster(0);
  const tooLarge = await pbkv(['--hub', running.hubUrl, 'put', 'x'.repeat(1025), 'v']);
  assert.is(tooLarge.code, 1);
  assert.match(tooLarge.stderr, /TOO_LARGE/);
});

const OK = { code: 0, stdout: 'OK\n', stderr: '' };

Cli('values that start with - are values: only known options are options, and -- ends them', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  // Each put has its own key: they run side by side.
  const puts: [string[], string, Json][] = [
    [['put', 't', '-5'], 't', '-5'],
    [['put', 'w', '--weird'], 'w', '--weird'],
    [['put', 'n', '-5', '--json'], 'n', -5],
    [['put', 'j', '--', '--json'], 'j', '--json'],
    [['put', '-k', 'v'], '-k', 'v'],
  ];
  const runs = await Promise.all(puts.map(([args]) => pbkv([...hub, ...args])));
  for (const [index, [args, key, value]] of puts.entries()) {
    assert.equal(runs[index], OK, args.join(' '));
    assert.equal(storedValue(running.replicas[0]!.storage, key), value, args.join(' '));
  }
  assert.equal(await pbkv([...hub, 'get', '-k']), { code: 0, stdout: 'v\n', stderr: '' }, 'a key may start with - too');
  assert.equal(await pbkv(['get', 't', `--hub=${running.hubUrl}`]), { code: 0, stdout: '-5\n', stderr: '' }, 'options may come last');
});

Cli('not found: get and del exit 1 and say (not found) on stderr', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const notFound = { code: 1, stdout: '', stderr: '(not found)\n' };
  assert.equal(await Promise.all([pbkv([...hub, 'get', 'absent']), pbkv([...hub, 'del', 'absent'])]), [notFound, notFound]);
  assert.equal(await pbkv([...hub, 'put', 'present', 'x']), OK);
  assert.equal(await pbkv([...hub, 'del', 'present']), { code: 0, stdout: 'deleted\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'del', 'present']), notFound, 'a second del finds nothing');
});

Cli('get --json prints the value as JSON so its type shows: "42" and 42 differ', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const puts = [['put', 'text', '42'], ['put', 'number', '42', '--json'], ['put', 'quote', 'say "hi"\nbye']];
  assert.equal(await Promise.all(puts.map((args) => pbkv([...hub, ...args]))), [OK, OK, OK]);
  const gets: [string[], string][] = [
    [['get', 'text', '--json'], '"42"\n'],
    [['get', 'number', '--json'], '42\n'],
    [['get', 'text'], '42\n'],
    [['get', 'number'], '42\n'],
    [['get', '--json', 'quote'], '"say \\"hi\\"\\nbye"\n'],
    [['get', 'quote'], 'say "hi"\nbye\n'],
  ];
  const runs = await Promise.all(gets.map(([args]) => pbkv([...hub, ...args])));
  gets.forEach(([args, stdout], index) => assert.equal(runs[index], { code: 0, stdout, stderr: '' }, args.join(' ')));
  const status = await pbkv([...hub, 'status', '--json']);
  assert.is(status.code, 0);
  assert.is(JSON.parse(status.stdout).services.kv, 'n0');
});

Cli('put KEY - and put KEY --stdin store all of stdin less one trailing newline; with --json it is parsed', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const puts: [string[], string | Buffer, Json][] = [
    [['put', 'a', '-'], 'line one\nline two\n', 'line one\nline two'],
    [['put', 'b', '--stdin'], 'kept\n\n', 'kept\n'],
    [['--stdin', 'put', 'c'], '  -spaces and dashes-  ', '  -spaces and dashes-  '],
    [['put', 'd', '-'], 'windows\r\n', 'windows'],
    [['put', 'e', '-', '--json'], '{"list": [1, "1"]}\n', { list: [1, '1'] }],
    [['put', 'f', '-'], '', ''],
  ];
  const runs = await Promise.all(puts.map(([args, stdin]) => pbkv([...hub, ...args], {}, stdin)));
  for (const [index, [args, , value]] of puts.entries()) {
    assert.equal(runs[index], OK, args.join(' '));
    const key = args.filter((arg) => !arg.startsWith('-'))[1]!;
    assert.equal(storedValue(running.replicas[0]!.storage, key), value, args.join(' '));
  }

  const refused: [string[], string | Buffer, RegExp][] = [
    [['put', 'x', 'v', '--stdin'], 'x', /^pbkv: --stdin and VALUE: give one of them\n/],
    [['put', 'x', '-', '--json'], '{nope', /^pbkv: --json: "\{nope" is not valid JSON\n/],
    [['put', 'x', '-'], Buffer.from([0x61, 0xff, 0xfe]), /^pbkv: stdin is not UTF-8 text/],
  ];
  const refusals = await Promise.all(refused.map(([args, stdin]) => pbkv([...hub, ...args], {}, stdin)));
  refused.forEach(([args, , message], index) => {
    assert.is(refusals[index]!.code, 2, args.join(' '));
    assert.match(refusals[index]!.stderr, message);
  });
  assert.is(storedValue(running.replicas[0]!.storage, 'x'), undefined, 'nothing was stored, not even with replacement characters');
});

Cli('--version prints the package version; help and help COMMAND print usage and exit 0', async () => {
  const { version } = JSON.parse(await readFile(PACKAGE_JSON, 'utf8')) as { version: string };
  // None of these reach a hub: they run side by side.
  const [longVersion, shortVersion, versionCommand, help, longHelp, shortHelp, helpPut, putHelp, helpGet, unknown] = await Promise.all(
    [['--version'], ['-v'], ['version'], ['help'], ['--help'], ['-h'], ['help', 'put'], ['put', '--help'], ['help', 'get'], ['help', 'frobnicate']].map((args) => pbkv(args)),
  );
  for (const run of [longVersion, shortVersion, versionCommand]) assert.equal(run, { code: 0, stdout: `pbkv ${version}\n`, stderr: '' });
  for (const run of [help!, longHelp!, shortHelp!]) {
    assert.is(run.code, 0);
    assert.is(run.stderr, '');
    assert.match(run.stdout, /^usage: pbkv \[options\] COMMAND/);
    for (const command of ['put', 'get', 'del', 'incr', 'list', 'status', 'help']) assert.match(run.stdout, `  ${command} `);
    assert.match(run.stdout, /Exit codes: 0 done, 1 .*, 2 bad usage, 3 a condition \(--if-version\) did not hold/s);
  }
  for (const run of [helpPut!, putHelp!]) {
    assert.is(run.code, 0);
    assert.match(run.stdout, /^usage: pbkv put KEY VALUE \[--json\]\n {7}pbkv put KEY - \[--json\]/);
    assert.match(run.stdout, /--stdin/);
  }
  assert.match(helpGet!.stdout, /^usage: pbkv get KEY \[--json\]/);
  assert.is(unknown!.code, 2);
  assert.match(unknown!.stderr, /unknown command "frobnicate"/);
});

Cli('bad usage exits 2 with the usage: an unknown option, a missing or extra argument, no command', async () => {
  const runs = await Promise.all(
    [['--bogus', 'get', 'k'], ['put', 'k'], ['get', 'a', 'b'], [], ['get', 'k', '--hub'], ['--timeout-ms', 'soon', 'get', 'k'], ['del', 'k', '--json']].map((args) => pbkv(args)),
  );
  const expected = [
    /^pbkv: unknown option --bogus\nusage: pbkv/,
    /^pbkv: put takes 2 arguments, not 1\nusage: pbkv put KEY VALUE/,
    /^pbkv: get takes one argument, not 2\nusage: pbkv get KEY/,
    /^pbkv: no command given\nusage: pbkv/,
    /^pbkv: --hub needs a value\nusage: pbkv get KEY/,
    /^pbkv: --timeout-ms must be a positive number of milliseconds, not "soon"\nusage: pbkv/,
    /^pbkv: --json is for put, get, list, watch and status, not del\nusage: pbkv del KEY/,
  ];
  runs.forEach((run, index) => {
    assert.is(run.code, 2, String(expected[index]));
    assert.is(run.stdout, '');
    assert.match(run.stderr, expected[index]!);
    assert.not.match(run.stderr, /\n\s+at /, 'no stack trace');
  });
});

Cli('--if-version: a condition that does not hold exits 3 with CONFLICT and the version the key is at; nothing is written', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const taken = await pbkv([...hub, 'put', 'lock', 'ann', '--if-version', '0', '--with-version']);
  assert.is(taken.code, 0, taken.stderr);
  const { version } = JSON.parse(taken.stdout) as { version: number };
  assert.ok(Number.isSafeInteger(version) && version > 0, taken.stdout);
  const again = await pbkv([...hub, 'put', 'lock', 'bob', '--if-version=0']);
  assert.equal(again, { code: 3, stdout: '', stderr: `pbkv: CONFLICT: lock is at version ${version}, not 0\n` });
  const [staleDel, staleIncr] = await Promise.all([pbkv([...hub, 'del', 'lock', '--if-version', String(version + 1)]), pbkv([...hub, 'incr', 'lock', '--if-version', '7'])]);
  assert.is(staleDel.code, 3, staleDel.stderr);
  assert.is(staleIncr.code, 3, staleIncr.stderr);
  assert.is(storedValue(running.replicas[0]!.storage, 'lock'), 'ann');
  assert.equal(await pbkv([...hub, 'get', 'lock', '--with-version']), { code: 0, stdout: `{"value":"ann","version":${version}}\n`, stderr: '' });
  assert.equal(await pbkv([...hub, 'del', 'lock', '--if-version', String(version)]), { code: 0, stdout: 'deleted\n', stderr: '' });
  assert.is(storedValue(running.replicas[0]!.storage, 'lock'), undefined);
});

Cli('incr prints the new value: BY defaults to 1, may be negative or a fraction; a value that is not a number fails', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  assert.equal(await pbkv([...hub, 'incr', 'hits']), { code: 0, stdout: '1\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'incr', 'hits', '5']), { code: 0, stdout: '6\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'incr', 'hits', '-2.5']), { code: 0, stdout: '3.5\n', stderr: '' });
  const counted = await pbkv([...hub, 'incr', 'hits', '--with-version']);
  assert.match(counted.stdout, /^\{"value":4.5,"version":\d+\}\n$/);
  assert.equal(await pbkv([...hub, 'get', 'hits', '--json']), { code: 0, stdout: '4.5\n', stderr: '' }, 'a number any client reads');
  assert.equal(await pbkv([...hub, 'put', 'name', 'ann']), OK);
  const notNumber = await pbkv([...hub, 'incr', 'name']);
  assert.is(notNumber.code, 1);
  assert.match(notNumber.stderr, /^pbkv: BAD_REQUEST: /);
  const usage = await Promise.all([pbkv([...hub, 'incr', 'hits', 'five']), pbkv([...hub, 'incr', 'hits', '0x10']), pbkv([...hub, 'incr']), pbkv([...hub, 'incr', 'a', '1', '2'])]);
  assert.equal(usage.map((run) => run.code), [2, 2, 2, 2]);
  assert.match(usage[0]!.stderr, /^pbkv: BY must be a number, not "five"\nusage: pbkv incr KEY \[BY\]/);
  assert.match(usage[2]!.stderr, /^pbkv: incr takes KEY and an optional BY, not 0 arguments/);
  assert.is(storedValue(running.replicas[0]!.storage, 'hits'), 4.5);
});

Cli('list prints the keys with a prefix one a line, through every page; --json prints each entry as a JSON line', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const client = disposer.add(new KvClient({ hubUrl: running.hubUrl }), (c) => c.close());
  // More keys than a page holds (100), so the listing follows `after`.
  const keys = Array.from({ length: 130 }, (_, index) => `user:${String(index).padStart(3, '0')}`);
  await Promise.all(keys.map((key, index) => client.put(key, { n: index })));
  await Promise.all([client.put('users', 'not under user:'), client.put('a', 1, { ttlMs: 60_000 })]);
  const listed = await pbkv([...hub, 'list', 'user:']);
  assert.equal(listed, { code: 0, stdout: `${keys.join('\n')}\n`, stderr: '' });
  const json = await pbkv([...hub, 'list', 'user:1', '--json']);
  assert.is(json.code, 0, json.stderr);
  const lines = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as { key: string; value: Json; version: number });
  assert.equal(lines.map((line) => line.key), keys.filter((key) => key.startsWith('user:1')));
  assert.equal(Object.keys(lines[0]!), ['key', 'value', 'version']);
  assert.equal(lines[0]!.value, { n: 100 });
  const all = await pbkv([...hub, 'list', '--json']);
  const first = JSON.parse(all.stdout.split('\n')[0]!) as { key: string; expiresAt?: number };
  assert.is(first.key, 'a');
  assert.ok(typeof first.expiresAt === 'number' && first.expiresAt > Date.now(), 'a key that expires says when');
  assert.is(all.stdout.trimEnd().split('\n').length, 132);
  assert.equal(await pbkv([...hub, 'list', 'nobody:']), { code: 0, stdout: '', stderr: '' });
});

Cli('--ttl: put and incr keys expire; a put without it clears the expiry; --ttl and --if-version only where they apply', async () => {
  const running = await cluster();
  const hub = ['--hub', running.hubUrl];
  const before = Date.now();
  // Long enough for the next pbkv process to start and read it on a loaded machine.
  assert.equal(await pbkv([...hub, 'put', 'session', 's1', '--ttl', '3000']), OK);
  const shown = await pbkv([...hub, 'get', 'session', '--with-version']);
  const { expiresAt } = JSON.parse(shown.stdout) as { expiresAt?: number };
  assert.ok(expiresAt !== undefined && expiresAt >= before + 3000 && expiresAt <= Date.now() + 3000, shown.stdout);
  assert.equal(await pbkv([...hub, 'incr', 'visits', '--ttl', '60000']), { code: 0, stdout: '1\n', stderr: '' });
  assert.equal(await pbkv([...hub, 'put', 'kept', 'v', '--ttl', '60000']), OK);
  assert.equal(await pbkv([...hub, 'put', 'kept', 'v']), OK);
  const client = disposer.add(new KvClient({ hubUrl: running.hubUrl }), (c) => c.close());
  assert.ok((await client.getEntry('visits'))?.expiresAt !== undefined);
  assert.is((await client.getEntry('kept'))?.expiresAt, undefined);
  await waitFor('the session to expire', async () => (await client.get('session')) === undefined, 10_000);
  assert.equal(await pbkv([...hub, 'get', 'session']), { code: 1, stdout: '', stderr: '(not found)\n' });

  const refused = await Promise.all(
    [['del', 'k', '--ttl', '5'], ['get', 'k', '--if-version', '1'], ['put', 'k', 'v', '--ttl', '0'], ['put', 'k', 'v', '--if-version', '-1'], ['list', 'a', 'b'], ['status', '--with-version']].map((args) => pbkv([...hub, ...args])),
  );
  const expected = [
    /^pbkv: --ttl is for put and incr, not del\nusage: pbkv del KEY/,
    /^pbkv: --if-version is for put, del and incr, not get\n/,
    /^pbkv: --ttl must be a positive whole number of milliseconds, not "0"\n/,
    /^pbkv: --if-version must be a version: a whole number, 0 for an absent key, not "-1"\n/,
    /^pbkv: list takes one argument, not 2\n/,
    /^pbkv: --with-version is for get, put, del and incr, not status\n/,
  ];
  refused.forEach((run, index) => {
    assert.is(run.code, 2, String(expected[index]));
    assert.match(run.stderr, expected[index]!);
  });
});

Cli('help names exit code 3 and the new options, and each new command has its usage', async () => {
  const [help, incr, list, put] = await Promise.all([['help'], ['help', 'incr'], ['help', 'list'], ['help', 'put']].map((args) => pbkv(args)));
  assert.match(help!.stdout, /--if-version V\s+put, del, incr: only if KEY is at version V/);
  assert.match(help!.stdout, /--ttl MS\s+put, incr: KEY expires/);
  assert.match(incr!.stdout, /^usage: pbkv incr KEY \[BY\]/);
  assert.match(list!.stdout, /^usage: pbkv list \[PREFIX\] \[--json\]/);
  assert.match(put!.stdout, /pbkv exits 3 \(CONFLICT\)/);
});

/**
 * A hub whose `kv` is a node that answers a watch with three events (the real node's
 * watch is built elsewhere), keeping every request it reads.
 */
async function fakeWatchedCluster(): Promise<{ hubUrl: string; requests: Frame[] }> {
  const server = disposer.add(new WebSocketServer({ host: '127.0.0.1', port: 0 }), (s) => new Promise((resolve) => s.close(resolve)));
  await new Promise((resolve) => server.once('listening', resolve));
  const requests: Frame[] = [];
  server.on('connection', (socket) => {
    socket.on('error', () => {});
    socket.on('message', (data) => {
      const request = JSON.parse(data.toString()) as Frame;
      requests.push(request);
      const reply = (frame: Frame) => socket.send(JSON.stringify({ id: request['id'], ...frame }));
      if (request['op'] === 'unwatch') reply({ ok: true });
      if (request['op'] !== 'watch') return;
      // Without fromVersion a watch sends only what follows its reply's version.
      reply({ ok: true, watching: true, version: request['fromVersion'] === undefined ? 18 : 23 });
      reply({ event: 'put', key: 'user:1', value: { name: 'ann' }, version: 19 });
      reply({ event: 'del', key: 'user:3', version: 21 });
      reply({ event: 'clear', prefix: 'user:', keys: ['user:1', 'user:18'], version: 23 });
    });
  });
  const secret = 'cli-watch-secret';
  const hub = disposer.add(await new DirectoryHub({ port: 0, secret }).listen(), (h) => h.close());
  const registrar = disposer.add(new HubClient(hub.url, { name: 'fake', secret }), (c) => c.close());
  await registrar.register('fake', `ws://127.0.0.1:${(server.address() as { port: number }).port}`);
  await proposeAlone(registrar, 'fake');
  return { hubUrl: hub.url, requests };
}

/** Runs `pbkv ARGS` until it has printed `lines` lines, then Ctrl-C (SIGINT). */
async function pbkvUntil(args: string[], lines: number): Promise<Run> {
  const { FORCE_COLOR: _force, NO_COLOR: _no, PBKV_HUB: _hub, ...env } = process.env;
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  disposer.add(child, (c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
  await waitFor(`${lines} lines of pbkv ${args.join(' ')} (stderr: ${stderr})`, () => stdout.split('\n').length > lines || child.exitCode !== null);
  child.kill('SIGINT');
  const code = await within('pbkv to exit on SIGINT', closed);
  return { code: code ?? -1, stdout, stderr };
}

Cli('watch prints a line per change until Ctrl-C, then ends the watch with unwatch; --json prints JSON lines; --from is sent', async () => {
  const { hubUrl, requests } = await fakeWatchedCluster();
  const lines = await pbkvUntil(['--hub', hubUrl, 'watch', 'user:', '--from', '18'], 3);
  assert.equal(lines, { code: 0, stdout: 'put user:1 {"name":"ann"} @19\ndel user:3 @21\nclear user: 2 keys @23\n', stderr: '' });
  const watch = requests.find((r) => r['op'] === 'watch')!;
  assert.equal([watch['prefix'], watch['fromVersion']], ['user:', 18]);
  assert.is(requests.find((r) => r['op'] === 'unwatch')?.['watch'], watch['id'], 'Ctrl-C sends unwatch');
  const json = await pbkvUntil(['--hub', hubUrl, 'watch', '--json'], 3);
  assert.is(json.code, 0);
  assert.equal(json.stdout.trim().split('\n').map((line) => JSON.parse(line)), [
    { type: 'put', key: 'user:1', value: { name: 'ann' }, version: 19 },
    { type: 'del', key: 'user:3', version: 21 },
    { type: 'clear', prefix: 'user:', keys: ['user:1', 'user:18'], version: 23 },
  ]);
  assert.equal(requests.filter((r) => r['op'] === 'watch').map((r) => [r['prefix'], r['fromVersion']]), [['user:', 18], ['', undefined]]);
});

Cli('help watch documents the line format; --from is for watch only', async () => {
  const [help, watch, misuse] = await Promise.all([['help'], ['help', 'watch'], ['get', 'k', '--from', '3']].map((args) => pbkv(args)));
  assert.match(help!.stdout, /^ {2}watch \[PREFIX\] +print each change/m);
  assert.match(watch!.stdout, /^usage: pbkv watch \[PREFIX\] \[--from V\] \[--json\]/);
  for (const line of ['put user:1 {"name":"ann"} @19', 'del user:3 @21', 'clear user: 2 keys @23']) assert.ok(watch!.stdout.includes(line), line);
  assert.is(misuse!.code, 2);
  assert.match(misuse!.stderr, /^pbkv: --from is for watch, not get/);
});

Cli.run();
