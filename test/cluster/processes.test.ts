import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { localClusterSpec } from '../../src/cluster/config.js';
import { defaultSecretFile, describeExit, spawnHub, spawnNode, type ChildHandle } from '../../src/cluster/processes.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { fileContents, readSqlite } from '../sqlite-files.js';

const disposer = new Disposer();
const Processes = suite('cluster: one process per node');

/** Resolves once the primary serves reads (it may first wait for its replicas to report). */
async function serving(client: KvClient): Promise<void> {
  await waitFor('the primary to serve', async () => {
    try {
      await client.get('probe');
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === 'UNAVAILABLE') return false;
      throw error;
    }
  }, 20_000);
}
Processes.after.each(() => disposer.dispose());

Processes('replicas started before the primary; one put traced across three processes; SIGTERM exits cleanly', async () => {
  const dataDir = await tempDir(disposer);
  const spec = localClusterSpec({ replicas: 2, dataDir, hubPort: 0, nodePortFirst: 0 });
  const lines: { name: string; event: Record<string, any> }[] = [];
  const onLine = (name: string, line: string) => {
    if (line.startsWith('{')) lines.push({ name, event: JSON.parse(line) });
  };
  const keep = (child: ChildHandle) => disposer.add(child, (c) => c.stop());
  const hub = keep(await spawnHub(spec));
  const [primary, ...replicas] = spec.nodes;
  const children: ChildHandle[] = [];
  for (const node of [...replicas, primary!]) children.push(keep(await spawnNode(node, spec, hub.url, { onLine, extraArgs: ['--trace'] })));

  const client = disposer.add(new KvClient({ hubUrl: hub.url }), (c) => c.close());
  await serving(client);
  await client.put('color', 'blue');
  assert.is(await client.get('color'), 'blue');

  const n0 = lines.filter((l) => l.name === 'n0').map((l) => l.event);
  const step = (event: string, field?: string, value?: unknown) =>
    n0.findIndex((e) => e.event === event && (field === undefined || e[field] === value));
  const request = step('request', 'key', 'color');
  const applied = step('applied');
  const forwarded = [step('forwarded', 'to', 'n1'), step('forwarded', 'to', 'n2')];
  const acks = [step('ack', 'from', 'n1'), step('ack', 'from', 'n2')];
  const reply = n0.findIndex((e, i) => i > request && e.event === 'reply');
  assert.ok(request >= 0 && applied > request, 'applied on the primary after the request');
  for (const f of forwarded) assert.ok(f > applied, 'forwarded after the local apply');
  acks.forEach((ack, i) => assert.ok(ack > forwarded[i]!, `n${i + 1} acked after it was forwarded to`));
  assert.ok(reply > Math.max(...acks), 'the reply comes after both acks');
  for (const name of ['n1', 'n2']) {
    assert.ok(lines.some((l) => l.name === name && l.event['event'] === 'applied' && l.event['role'] === 'replica'), `${name} applied`);
  }

  for (const child of children) {
    await child.stop();
    assert.is(await child.exited, 0, `${child.name} exits 0 on SIGTERM`);
  }
  for (const node of spec.nodes) assert.equal(await fileContents(node.dataFile!), { color: 'blue' }, node.name);
});

Processes('a replica killed with SIGKILL under load: puts in flight get UNAVAILABLE, the restarted replica catches up, files identical', async () => {
  const spec = localClusterSpec({ replicas: 2, dataDir: await tempDir(disposer), hubPort: 0, nodePortFirst: 0 });
  const hub = disposer.add(await spawnHub(spec), (c) => c.stop());
  const nodes = new Map<string, ChildHandle>();
  for (const node of spec.nodes) nodes.set(node.name, disposer.add(await spawnNode(node, spec, hub.url), (c) => c.stop()));
  const client = disposer.add(new KvClient({ hubUrl: hub.url, requestTimeoutMs: 30_000 }), (c) => c.close());
  await serving(client);

  const total = 3000;
  const inFlight = 16;
  const codes = new Map<string, number>();
  let next = 0;
  let acked = 0;
  let killed: Promise<void> | undefined;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      try {
        await client.put(`k${i % 200}`, i);
        acked += 1;
      } catch (error) {
        const code = (error as { code: string }).code;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      if (acked === 1000 && !killed) {
        killed = (async () => {
          nodes.get('n1')!.process.kill('SIGKILL');
          await nodes.get('n1')!.exited;
          nodes.set('n1', disposer.add(await spawnNode(spec.nodes[1]!, spec, hub.url), (c) => c.stop()));
        })();
      }
    }
  };
  await within('the load', Promise.all(Array.from({ length: inFlight }, worker)), 60_000);
  assert.ok(killed, 'n1 was killed during the load');
  await within('n1 to restart', killed!);
  assert.equal([...codes.keys()].filter((code) => code !== 'UNAVAILABLE'), [], `only UNAVAILABLE errors (${JSON.stringify([...codes])})`);
  await within('a write that reaches every replica', (async () => {
    for (;;) {
      try {
        return await client.put('final', 'yes');
      } catch (error) {
        assert.is((error as { code: string }).code, 'UNAVAILABLE');
      }
    }
  })(), 30_000);
  for (const child of [...nodes.values()].reverse()) await child.stop();
  const rows = await Promise.all(spec.nodes.map((node) => readSqlite(node.dataFile!, 'SELECT key, value FROM keyv ORDER BY key')));
  assert.is(rows[0]!.length, 201);
  assert.ok(JSON.stringify(rows[1]) === JSON.stringify(rows[0]) && JSON.stringify(rows[2]) === JSON.stringify(rows[0]), 'the three files hold the same rows');
  const seqs = await Promise.all(spec.nodes.map((node) => readSqlite(node.dataFile!, "SELECT value FROM pbkv_meta WHERE name = 'seq'")));
  assert.equal(seqs.map((r) => r[0]?.['value']), [seqs[0]![0]!['value'], seqs[0]![0]!['value'], seqs[0]![0]!['value']]);
});

Processes('a child whose parent is gone (its stdin closes) shuts down cleanly', async () => {
  const spec = localClusterSpec({ replicas: 0, dataDir: await tempDir(disposer), hubPort: 0, nodePortFirst: 0 });
  const hub = disposer.add(await spawnHub(spec), (c) => c.stop());
  const node = disposer.add(await spawnNode(spec.nodes[0]!, spec, hub.url), (c) => c.stop());
  for (const child of [node, hub]) {
    child.process.stdin!.end();
    assert.is(await within(`${child.name} to exit`, child.exited), 0);
  }
});

Processes('hub and nodes share one secret through a 0600 file: they serve a put, no command line holds the secret, a register without it is UNAUTHORIZED', async () => {
  const dir = await tempDir(disposer);
  const spec = localClusterSpec({ replicas: 2, dataDir: path.join(dir, 'data'), hubPort: 0, nodePortFirst: 0 });
  const secretFile = path.join(dir, 'keys', 'cluster.secret');
  const hub = disposer.add(await spawnHub(spec, { secretFile }), (c) => c.stop());
  const nodes: ChildHandle[] = [];
  for (const node of spec.nodes) nodes.push(disposer.add(await spawnNode(node, spec, hub.url, { secretFile }), (c) => c.stop()));
  const client = disposer.add(new KvClient({ hubUrl: hub.url }), (c) => c.close());
  await serving(client);
  await client.put('color', 'blue');
  assert.is(await client.get('color'), 'blue');

  const secret = (await readFile(secretFile, 'utf8')).trim();
  assert.match(secret, /^[0-9a-f]{64}$/, 'the first process created it');
  for (const child of [hub, ...nodes]) {
    assert.ok(child.process.spawnargs.includes(secretFile), `${child.name} was given the file`);
    assert.not.ok(child.process.spawnargs.some((arg) => arg.includes(secret)), `${child.name}'s argv does not hold the secret`);
    assert.match(child.command, `--secret-file ${secretFile}`);
  }
  const intruder = await RawClient.open(hub.url, disposer);
  const reply = await intruder.ask({ id: 1, op: 'register', name: 'n0', address: 'ws://127.0.0.1:9' });
  assert.is(reply['ok'], false);
  assert.is(reply['error']?.code, 'UNAUTHORIZED');
  assert.is((await client.status()).names['n0'], nodes[0]!.url, 'n0 still points at the real primary');
});

Processes('without a secret file given, a hub and nodes started from one spec share the one beside the data', async () => {
  const spec = localClusterSpec({ replicas: 1, dataDir: await tempDir(disposer), hubPort: 0, nodePortFirst: 0 });
  const hub = disposer.add(await spawnHub(spec), (c) => c.stop());
  for (const node of spec.nodes) disposer.add(await spawnNode(node, spec, hub.url), (c) => c.stop());
  const client = disposer.add(new KvClient({ hubUrl: hub.url }), (c) => c.close());
  await serving(client);
  await client.put('k', 1);
  assert.is(defaultSecretFile(spec), path.join(path.dirname(spec.nodes[0]!.dataFile!), 'cluster.secret'));
  assert.match(await readFile(defaultSecretFile(spec), 'utf8'), /^[0-9a-f]{64}\n$/);
});

Processes('a child that dies is described: how it ended and its last lines of output', async () => {
  const spec = localClusterSpec({ replicas: 0, dataDir: await tempDir(disposer), hubPort: 0, nodePortFirst: 0 });
  const hub = disposer.add(await spawnHub(spec), (c) => c.stop());
  const node = disposer.add(await spawnNode(spec.nodes[0]!, spec, hub.url), (c) => c.stop());
  node.process.kill('SIGKILL');
  assert.is(await within('n0 to die', node.exited), null);
  assert.is(describeExit(node), 'was killed by SIGKILL');
  assert.match(node.recentOutput().at(-1)!, /^\{"event":"ready","name":"n0"/);
  await hub.stop();
  assert.is(describeExit(hub), 'exited with code 0');
});

Processes.run();
