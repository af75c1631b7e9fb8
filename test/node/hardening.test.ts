/**
 * The findings of the hardening issue, each as the attack or fault that found it, over
 * real sockets and real SQLite files: no restart, no input and no local process may lose
 * or forge a write.
 */
import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from '../../src/cluster/in-process.js';
import { KvClient } from '../../src/client/client.js';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient, type HubStatus } from '../../src/hub/hub-client.js';
import { KvNode } from '../../src/node/node.js';
import { openStore } from '../../src/storage/open-store.js';
import { Disposer, RawClient, tempDir, waitFor, within } from '../helpers.js';
import { fileContents, readSqlite } from '../sqlite-files.js';
import { FailingStore, GatedStore, storedCount, storedValue } from '../stores.js';

const disposer = new Disposer();

interface Started extends InProcessCluster {
  faults: { node: string; message: string }[];
  client(): KvClient;
}

async function start(options: Partial<InProcessClusterOptions> = {}): Promise<Started> {
  const dataDir = options.dataDir ?? (await tempDir(disposer));
  const faults: { node: string; message: string }[] = [];
  const cluster = await startInProcessCluster({
    dataDir,
    onNode: (node) => node.faults$.subscribe((event) => event.event === 'fault' && faults.push(event)),
    ...options,
  });
  disposer.add(cluster, (c) => c.close());
  return { ...cluster, faults, client: () => disposer.add(new KvClient({ hubUrl: cluster.hubUrl }), (c) => c.close()) };
}

/** A node started again from the options of one that was closed (its file, its name). */
async function restart(node: KvNode, overrides: Partial<KvNode['options']> = {}, faults?: Started['faults']): Promise<KvNode> {
  const again = disposer.add(new KvNode({ ...node.options, port: 0, ...overrides }), (n) => n.close());
  again.faults$.subscribe((event) => event.event === 'fault' && faults?.push(event));
  await again.init();
  await again.startServices();
  return again;
}

async function removeSqlite(file: string): Promise<void> {
  for (const suffix of ['', '-wal', '-shm']) await rm(file + suffix, { force: true });
}

/** Every row of a file as hex, so two files can be compared byte for byte. */
const hexRows = (file: string) => readSqlite(file, 'SELECT hex(key) AS key, hex(value) AS value FROM keyv ORDER BY key');
const metaRows = (file: string) => readSqlite(file, 'SELECT name, value FROM pbkv_meta ORDER BY name');

async function putMany(client: KvClient, from: number, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) => client.put(`k${from + i}`, from + i)));
}

const Hardening = suite('node: hardening (no restart, input or local process loses or forges a write)');
Hardening.after.each(() =>
  disposer.dispose().catch((error: unknown) => {
    console.error(`disposing what the test started failed: ${(error as Error).stack ?? String(error)}`);
    throw error;
  }));

/** The view at the hub once `accept` holds for it. */
async function viewWhere(client: KvClient, what: string, accept: (view: NonNullable<HubStatus['view']>) => boolean) {
  return waitFor(what, async () => {
    const { view } = await client.status();
    return view && accept(view) ? view : undefined;
  }, 15_000);
}

Hardening('a primary restarted on an empty data file is replaced by a replica holding everything; it rejoins through a snapshot and rolls no one back', async () => {
  const cluster = await start({ nodeOptions: { ackTimeoutMs: 1_000 } });
  const client = cluster.client();
  await putMany(client, 0, 300);
  await cluster.primary.close();
  await removeSqlite(cluster.specs[0]!.dataFile!);

  const emptied = await restart(cluster.primary, {}, cluster.faults);
  // The hub saw n0 come back behind where it stood: a replica takes over.
  const view = await viewWhere(client, 'a replica to take over from the emptied n0', (candidate) => candidate.primary !== 'n0');
  assert.match(view.changes.at(-1)!.why, /n0 (came back behind where it stood|missed heartbeats)/);
  // Every acknowledged write is still served, by the new primary.
  for (const i of [0, 150, 299]) assert.is(await client.get(`k${i}`), i);
  // n0 rejoins as a replica, caught up by a snapshot of the new primary's store.
  await viewWhere(client, 'n0 to rejoin the view', (candidate) => candidate.replicas.includes('n0'));
  assert.is(await storedCount(emptied.storage), 300);
  assert.is(storedValue(emptied.storage, 'k299'), 299);
  // It never answers a client: it is a replica now.
  const raw = await RawClient.open(emptied.url, disposer);
  assert.is((await raw.ask({ id: 1, op: 'get', key: 'k1' }))['error']?.code, 'NOT_PRIMARY');
  for (const spec of cluster.specs.slice(1)) assert.is((await fileContents(spec.dataFile!))['k299'], 299);
});

Hardening('a primary restarted on an older copy of its file is replaced; the writes made after the copy survive', async () => {
  const cluster = await start({ nodeOptions: { ackTimeoutMs: 1_000 } });
  const primaryFile = cluster.specs[0]!.dataFile!;
  const backup = `${primaryFile}.backup`;
  const client = cluster.client();
  await putMany(client, 0, 100);
  await cluster.primary.close();
  await copyFile(primaryFile, backup);

  // A clean restart on its own file serves again.
  const again = await restart(cluster.primary);
  assert.equal(await again.settled(10_000), { state: 'serving' });
  await putMany(client, 100, 100);
  await again.close();

  await removeSqlite(primaryFile);
  await copyFile(backup, primaryFile);
  const older = await restart(cluster.primary);
  await viewWhere(client, 'a replica to take over from n0 on its older file', (candidate) => candidate.primary !== 'n0');
  for (const i of [0, 150, 199]) assert.is(await client.get(`k${i}`), i, `k${i} survives`);
  await viewWhere(client, 'n0 to rejoin the view', (candidate) => candidate.replicas.includes('n0'));
  assert.is(await storedCount(older.storage), 200, 'n0 caught up: the writes it lacked are back');
  for (const spec of cluster.specs.slice(1)) {
    assert.is(Object.keys(await fileContents(spec.dataFile!)).length, 200, `${spec.name} keeps all 200 acknowledged keys`);
  }
});

Hardening('a value that cannot round-trip through JSON is BAD_REQUEST and replication goes on', async () => {
  const cluster = await start();
  const raw = await RawClient.open(cluster.primary.url, disposer);
  const refused = [
    '{"id":1,"op":"put","key":"inf","value":1e400}',
    '{"id":2,"op":"put","key":"inf","value":-1e400}',
    '{"id":3,"op":"put","key":"inf","value":{"deep":[1,[2,1e999]]}}',
    '{"id":4,"op":"put","key":"s","value":"lone \\ud800 surrogate"}',
    '{"id":5,"op":"put","key":"s","value":{"k\\udc00":1}}',
    '{"id":6,"op":"put","key":"u\\ud800","value":1}',
    '{"id":7,"op":"get","key":"u\\ud800"}',
    '{"id":8,"op":"del","key":"\\udfff"}',
  ];
  for (const frame of refused) {
    const reply = await raw.ask(frame);
    assert.is(reply['error']?.code, 'BAD_REQUEST', frame);
  }
  assert.is((await raw.ask({ id: 9, op: 'put', key: 'inf', value: 1e300 }))['ok'], true);
  assert.is((await raw.ask({ id: 10, op: 'put', key: 's\ufffd', value: 'replacement character is fine' }))['ok'], true);
  const files = await Promise.all(cluster.specs.map((spec) => fileContents(spec.dataFile!)));
  for (const contents of files) assert.equal(contents, { inf: 1e300, 's\ufffd': 'replacement character is fine' });
});

Hardening('a batch a replica cannot apply is reported with its seqs and reason: log, hub status, client error', async () => {
  const dataDir = await tempDir(disposer);
  const failing = new FailingStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  failing.failing = false;
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 500 }, perNode: { n1: { store: failing } } });
  const client = cluster.client();
  await client.put('before', 1);
  failing.failing = true;
  const error = await client.put('stuck', 2).then(
    () => assert.unreachable('n1 cannot apply it') as never,
    (e: { code: string; message: string }) => e,
  );
  assert.is(error.code, 'UNAVAILABLE');
  // What a client sees: which replica, which seqs, and the replica's own reason.
  assert.match(error.message, /replica n1 did not acknowledge within 500 ms \(replica n1 refused seqs 2-2: INTERNAL: .*disk full \(injected\)\)/);
  const degraded = await waitFor('the hub to show n0 degraded', async () => (await client.status()).nodes['n0']);
  assert.is(degraded.state, 'degraded');
  assert.match(degraded.reason ?? '', /replica n1 refused seqs 2-2/);
  assert.ok(cluster.faults.some((f) => f.node === 'n0' && /replica n1 refused seqs 2-2/.test(f.message)), 'in the primary\'s log');
  assert.ok(cluster.faults.some((f) => f.node === 'n1' && /refused seqs 2-2 from the primary/.test(f.message)), 'in the replica\'s log');

  // Once the replica can write again the batch lands, and the cluster says it is well.
  failing.failing = false;
  await waitFor('the stuck write to reach n1', () => storedValue(failing, 'stuck') === 2);
  await client.put('after', 3);
  await waitFor('the hub to show n0 serving', async () => (await client.status()).nodes['n0']?.state === 'serving');
  const expected = { after: 3, before: 1, stuck: 2 };
  assert.equal(await fileContents(cluster.specs[0]!.dataFile!), expected);
  assert.equal(await fileContents(path.join(dataDir, 'n1-own.sqlite')), expected);
  assert.equal(await fileContents(cluster.specs[2]!.dataFile!), expected);
});

/** A seeded generator of well-formed strings over every kind of code point. */
function randomStrings(seed: number, count: number): string[] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const ranges: [number, number][] = [
    [0x00, 0x1f], [0x20, 0x7e], [0x7f, 0xff], [0x100, 0x7ff], [0x800, 0xd7ff], [0xe000, 0xfffd], [0xfffe, 0xffff], [0x10000, 0x10ffff],
  ];
  const strings = new Set<string>();
  while (strings.size < count) {
    const length = 1 + Math.floor(next() * 12);
    let text = '';
    for (let i = 0; i < length; i += 1) {
      const [low, high] = ranges[Math.floor(next() * ranges.length)]!;
      text += String.fromCodePoint(low + Math.floor(next() * (high - low + 1)));
    }
    strings.add(text);
  }
  return [...strings];
}

Hardening('property: any well-formed key round-trips byte for byte through batch write, read, snapshot and restore', async () => {
  const seed = Number(process.env['PBKV_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const cluster = await start({ nodeOptions: { ackTimeoutMs: 2_000 } });
  const client = cluster.client();
  const keys = randomStrings(seed, 400);
  await Promise.all(keys.map((key) => client.put(key, { key })));
  for (const key of keys) assert.equal(await client.get(key), { key }, `seed ${seed}: ${JSON.stringify(key)}`);
  // n2 loses its file: it comes back through a snapshot and its restore.
  const n2 = cluster.nodes[2]!;
  await n2.close();
  await removeSqlite(cluster.specs[2]!.dataFile!);
  const back = await restart(n2);
  await client.put('after-restore', 1);
  assert.is(storedValue(back.storage, 'after-restore'), 1);
  const [primary, ...replicas] = await Promise.all(cluster.specs.map((spec) => hexRows(spec.dataFile!)));
  assert.is(primary!.length, keys.length + 1);
  for (const [index, rows] of replicas.entries()) assert.equal(rows, primary, `seed ${seed}: n${index + 1} holds the primary's bytes`);
  const expected = new Set(keys.map((key) => Buffer.from(key, 'utf8').toString('hex').toUpperCase()));
  for (const row of primary!) {
    if (row['key'] !== Buffer.from('after-restore').toString('hex').toUpperCase()) {
      assert.ok(expected.has(row['key'] as string), `seed ${seed}: the file holds each key's UTF-8 bytes`);
    }
  }
});

Hardening('a get never returns a write that is not on every replica: not after an UNAVAILABLE put, not while one replicates', async () => {
  const dataDir = await tempDir(disposer);
  const held = new GatedStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  const cluster = await start({ dataDir, nodeOptions: { ackTimeoutMs: 300 }, perNode: { n1: { store: held } } });
  const client = cluster.client();
  await client.put('k', 'v1');
  held.closeGate();
  await client.put('k', 'v2').then(() => assert.unreachable('n1 holds the batch'), (e: { code: string }) => assert.is(e.code, 'UNAVAILABLE'));
  // v2 is on n0 and n2 only: a failover to n1 would lose it, so no read may return it.
  const read = await client.get('k').then((value) => ({ value }), (e: { code: string; message: string }) => e);
  assert.is((read as { code?: string }).code, 'UNAVAILABLE', `the get answered ${JSON.stringify(read)}`);
  const other = await client.get('untouched').then((value) => value ?? 'absent');
  assert.is(other, 'absent', 'other keys are served meanwhile');
  held.openGate();
  await waitFor('v2 on every replica, then readable', () => client.get('k').then((value) => value === 'v2', () => false));
});

Hardening('a flood of client requests at a replica is answered NOT_PRIMARY without a hub request each', async () => {
  const cluster = await start();
  const resolves = { count: 0 };
  const resolve = HubClient.prototype.resolve;
  HubClient.prototype.resolve = function (this: HubClient, name: string) {
    resolves.count += 1;
    return resolve.call(this, name);
  };
  try {
    const raw = await RawClient.open(cluster.replicas[0]!.url, disposer);
    for (let i = 0; i < 2_000; i += 1) raw.send({ id: i, op: 'get', key: `k${i}` });
    for (let i = 0; i < 2_000; i += 1) {
      const reply = await raw.next();
      assert.is(reply['error']?.code, 'NOT_PRIMARY');
      assert.is(reply['error'].primary, cluster.primary.url);
    }
  } finally {
    HubClient.prototype.resolve = resolve;
  }
  assert.ok(resolves.count <= 5, `${resolves.count} hub resolves for 2,000 requests`);
});

Hardening('close() while init() is opening the store releases the file and the port', async () => {
  const dataDir = await tempDir(disposer);
  const hub = disposer.add(await new DirectoryHub({ secret: 's' }).listen(), (h) => h.close());
  const options = { name: 'n0', role: 'primary' as const, replicas: [], hubUrl: hub.url, secret: 's', dataFile: path.join(dataDir, 'n0.sqlite') };
  const node = new KvNode(options);
  const init = node.init();
  await node.close();
  await init.then(() => assert.unreachable('closed while starting'), (e: { code: string }) => assert.is(e.code, 'UNAVAILABLE'));
  // The file is free again in this process (two stores on one file are refused).
  const again = disposer.add(new KvNode(options), (n) => n.close());
  await again.init();
  await again.startServices();
  assert.equal(await again.settled(10_000), { state: 'serving' });
});

Hardening('a live name at the hub is never taken over by another address', async () => {
  const cluster = await start({ replicas: 1 });
  const { secret } = cluster;
  const impostor = new KvNode({ name: 'n0', role: 'primary', replicas: [], hubUrl: cluster.hubUrl, secret, host: '127.0.0.99', sync: 'memory' });
  disposer.add(impostor, (n) => n.close());
  const faults: string[] = [];
  impostor.faults$.subscribe((event) => event.event === 'fault' && faults.push(event.message));
  const init = impostor.init();
  // It keeps asking (and says why in its log) while the real n0 holds the name.
  await waitFor('the impostor to be refused', () => faults.some((m) => /"n0" is registered at .* by a live connection/.test(m)));
  assert.is((await cluster.client().status()).names['n0'], cluster.primary.url);
  // Once the real n0 is gone, the name may move.
  await cluster.primary.close();
  await within('the name to move', init);
  assert.is((await cluster.client().status()).names['n0'], impostor.url);
});

Hardening('registering without the cluster secret is refused; lookups stay open', async () => {
  const cluster = await start({ replicas: 1 });
  const raw = await RawClient.open(cluster.hubUrl, disposer);
  const refused = await raw.ask({ id: 1, op: 'register', name: 'n0', address: 'ws://127.0.0.99:1' });
  assert.is(refused['error'].code, 'UNAUTHORIZED');
  // No message names the primary but the hub's view: there is no service to register.
  const service = await raw.ask({ id: 2, op: 'register-service', service: 'kv', name: 'n1' });
  assert.is(service['error'].code, 'BAD_REQUEST');
  assert.equal(await raw.ask({ id: 3, op: 'lookup', service: 'kv' }), { id: 3, ok: true, node: 'n0', address: cluster.primary.url });
  assert.throws(() => new KvNode({ name: 'x', role: 'primary', replicas: [], hubUrl: cluster.hubUrl }), /needs the cluster secret/);
  assert.throws(() => new DirectoryHub({}), /needs the cluster secret/);
});

Hardening('clients holding every connection slot of every node cannot starve replication', async () => {
  const cluster = await start({ nodeOptions: { connectionsMax: 6, ackTimeoutMs: 2_000 } });
  const client = cluster.client(); // one client slot of n0
  await client.put('before', 1);
  for (const node of cluster.nodes) {
    const held = node === cluster.primary ? 5 : 6;
    await Promise.all(Array.from({ length: held }, () => RawClient.open(node.url, disposer)));
    const extra = await RawClient.open(node.url, disposer);
    assert.is(await extra.closed(), 1013, `${node.name}'s client slots are full`);
  }
  // The primary restarts: its links need slots on full replicas.
  await cluster.primary.close();
  const again = await restart(cluster.primary, { port: Number(new URL(cluster.primary.url).port) });
  assert.equal(await again.settled(10_000), { state: 'serving' });
  const raw = await waitFor('a client slot on the restarted primary', async () => {
    const candidate = await RawClient.open(again.url, disposer);
    return candidate;
  });
  for (let i = 0; i < 20; i += 1) assert.is((await raw.ask({ id: i, op: 'put', key: `during${i}`, value: i }))['ok'], true, `put ${i}`);
  for (const spec of cluster.specs) assert.is((await fileContents(spec.dataFile!))['during19'], 19);
});

Hardening('connections that claim to be peers but never prove the secret cannot hold the peer slots', async () => {
  const cluster = await start({ replicas: 1, nodeOptions: { peerConnectionsMax: 4, peerAuthTimeoutMs: 60_000, ackTimeoutMs: 2_000 } });
  const replica = cluster.replicas[0]!;
  const squatters = await Promise.all(Array.from({ length: 4 }, () => RawClient.open(`${replica.url}/pbkv/peer`, disposer)));
  await cluster.primary.close();
  const again = await restart(cluster.primary);
  assert.equal(await again.settled(10_000), { state: 'serving' });
  const client = cluster.client();
  await waitFor('a put through the restarted primary', () => client.put('k', 'v').then(() => true, () => false));
  assert.is(storedValue(replica.storage, 'k'), 'v');
  assert.ok((await Promise.all(squatters.map((s) => s.closed(0).catch(() => 0)))).some((code) => code === 4001), 'a squatter made room');
});

Hardening('a node started while the hub is down listens, keeps trying, and serves once the hub is up', async () => {
  const dataDir = await tempDir(disposer);
  const probe = await new DirectoryHub({ insecure: true }).listen();
  const hubUrl = probe.url;
  await probe.close();
  const secret = 'hub-down-secret';
  const node = disposer.add(
    new KvNode({ name: 'n0', role: 'primary', replicas: [], hubUrl, secret, dataFile: path.join(dataDir, 'n0.sqlite') }),
    (n) => n.close(),
  );
  const faults: string[] = [];
  node.faults$.subscribe((event) => event.event === 'fault' && faults.push(event.message));
  const started = node.init().then(() => node.startServices());
  await waitFor('the node to retry the hub', () => faults.some((m) => /hub ws:.*retrying/.test(m)));
  const hub = disposer.add(await new DirectoryHub({ port: Number(new URL(hubUrl).port), secret }).listen(), (h) => h.close());
  await within('the node to register and start', started, 15_000);
  const client = disposer.add(new KvClient({ hubUrl: hub.url }), (c) => c.close());
  await client.put('k', 'v');
  assert.is(await client.get('k'), 'v');
});

Hardening('while the hub is down, a dropped replication link is re-established from what the nodes know', async () => {
  const dataDir = await tempDir(disposer);
  const failing = new FailingStore(await openStore('normal', path.join(dataDir, 'n1-own.sqlite')));
  failing.failing = false;
  const cluster = await start({ dataDir, replicas: 1, nodeOptions: { ackTimeoutMs: 500 }, perNode: { n1: { store: failing } } });
  const client = cluster.client();
  await client.put('before', 1);
  await cluster.hub.close();
  // n1 refuses a batch: the primary drops the link and must connect again, with no hub to ask.
  failing.failing = true;
  await client.put('during', 2).then(() => assert.unreachable('n1 refuses'), (e: { code: string }) => assert.is(e.code, 'UNAVAILABLE'));
  failing.failing = false;
  await waitFor('a put acknowledged with the hub down', () => client.put('after', 3).then(() => true, () => false), 15_000);
  assert.is(storedValue(failing, 'after'), 3);
  assert.is(storedValue(failing, 'during'), 2);
});

Hardening.run();
