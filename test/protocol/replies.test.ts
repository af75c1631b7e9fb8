/**
 * Replies are parsed at the boundary: a malformed reply from a node or the hub is an error
 * on its request, never a crash. A seeded fuzzer answers the hub client, the client and
 * the primary's replica link with broken replies.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { DirectoryHub } from '../../src/hub/hub.js';
import { HubClient } from '../../src/hub/hub-client.js';
import { KvError } from '../../src/errors.js';
import { KvNode } from '../../src/node/node.js';
import type { NodeTrace } from '../../src/node/trace.js';
import { parseReply } from '../../src/protocol/reply.js';
import { RpcChannel } from '../../src/protocol/rpc-channel.js';
import { realClock } from '../../src/transport/real-environment.js';
import { connect, listen } from '../../src/transport/ws-transport.js';
import { Disposer, waitFor } from '../helpers.js';

const disposer = new Disposer();
const Replies = suite('protocol: malformed replies');
Replies.after.each(() => disposer.dispose());

const SECRET = 'replies-test-secret';

Replies('parseReply: the shape of a reply, or an error for its request, or nothing', () => {
  assert.equal(parseReply('{"id":1,"ok":true,"seq":3}'), { id: 1, result: { id: 1, ok: true, seq: 3 } });
  const error = parseReply('{"id":2,"ok":false,"error":{"code":"NOT_PRIMARY","message":"m","primary":"ws://x"}}');
  assert.instance(error?.result, KvError);
  assert.equal([(error!.result as KvError).code, (error!.result as KvError).details], ['NOT_PRIMARY', { primary: 'ws://x' }]);
  for (const frame of ['{"id":3,"ok":false}', '{"id":3}', '{"id":3,"ok":"yes"}', '{"id":3,"ok":false,"error":"x"}', '{"id":3,"ok":false,"error":{"code":"NOPE","message":"m"}}', '{"id":3,"ok":false,"error":{"code":"INTERNAL"}}']) {
    const parsed = parseReply(frame);
    assert.is(parsed?.id, 3, frame);
    assert.instance(parsed?.result, KvError, frame);
    assert.is((parsed!.result as KvError).code, 'INTERNAL', frame);
    assert.match((parsed!.result as KvError).message, /malformed reply/, frame);
  }
  for (const frame of ['', 'null', '[1]', '{"ok":true}', '{"id":null,"ok":true}', '{"id":{},"ok":true}', '{"id":1,"ok":tru']) {
    assert.is(parseReply(frame), undefined, frame);
  }
});

/** A seeded source of broken replies to a request `{id, op}`. */
function malformedReplies(seed: number): (id: number, valid: Record<string, unknown>) => string {
  let state = seed >>> 0;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const junk: unknown[] = [null, -1, 1.5, 2 ** 60, '', 'x', [], {}, [1, 2], { a: 1 }, true, false];
  return (id, valid) => {
    const reply: Record<string, unknown> = { id, ok: true, ...valid };
    switch (Math.floor(next() * 7)) {
      case 0: delete reply[pick(Object.keys(reply).filter((k) => k !== 'id'))]; break;
      case 1: reply[pick(Object.keys(reply).filter((k) => k !== 'id'))] = pick(junk); break;
      case 2: return JSON.stringify({ id, ok: false, ...(next() < 0.5 ? {} : { error: pick(junk) }) });
      case 3: return JSON.stringify({ id, ok: false, error: { code: pick(['NOPE', 'ok', 7, null]), message: pick(junk) } });
      case 4: return JSON.stringify(reply).slice(0, Math.floor(next() * 20));
      case 5: return JSON.stringify([reply]);
      default: reply['id'] = pick([`${id}`, id + 1, null, -id]); break;
    }
    return JSON.stringify(reply);
  };
}

/** A server answering every request with what `answer` makes of it. */
async function fakeServer(answer: (request: Record<string, any>) => string | undefined): Promise<string> {
  const listener = await listen({
    host: '127.0.0.1', port: 0, maxPayload: 1 << 20, connectionsMax: 64,
    onConnection: (connection) => {
      connection.trust();
      connection.frames$.subscribe((text) => {
        const reply = answer(JSON.parse(text) as Record<string, any>);
        if (reply !== undefined) connection.send(reply);
      });
    },
  });
  disposer.add(listener, (l) => l.close());
  return listener.url;
}

Replies('the hub client and the client turn every malformed reply into a KvError on that request', async () => {
  const seed = Number(process.env['PBKV_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const broken = malformedReplies(seed);
  const nodeUrl = await fakeServer((request) => broken(request['id'], request['op'] === 'get' ? { found: true, value: 1 } : { found: true }));
  const hubUrl = await fakeServer((request) =>
    request['op'] === 'lookup' ? JSON.stringify({ id: request['id'], ok: true, node: 'n0', address: nodeUrl }) : broken(request['id'], { name: 'n0', address: nodeUrl, names: {}, services: {}, node: 'n0' }),
  );
  const hub = disposer.add(new HubClient(hubUrl, { requestTimeoutMs: 50 }), (c) => c.close());
  const client = disposer.add(new KvClient({ hubUrl, requestTimeoutMs: 50 }), (c) => c.close());
  const outcomes = new Map<string, number>();
  const calls: (() => Promise<unknown>)[] = [
    () => hub.resolve('n0'), () => hub.status(), () => client.get('k'), () => client.put('k', 1), () => client.del('k'),
  ];
  for (let i = 0; i < 150; i += 1) {
    const outcome = await calls[i % calls.length]!().then(
      () => 'ok',
      (error: unknown) => (error instanceof KvError ? error.code : `not a KvError: ${String(error)}`),
    );
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  for (const outcome of outcomes.keys()) assert.ok(['ok', 'INTERNAL', 'UNAVAILABLE'].includes(outcome), `seed ${seed}: ${outcome}`);
  assert.ok((outcomes.get('INTERNAL') ?? 0) > 25, `seed ${seed}: malformed replies are reported as such: ${JSON.stringify([...outcomes])}`);
});

Replies('a replica link answered with malformed replies reports them, retries, and crashes nothing', async () => {
  const seed = Number(process.env['PBKV_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const broken = malformedReplies(seed);
  let hellos = 0;
  const fakeReplica = await fakeServer((request) => {
    if (request['op'] === 'hello') hellos += 1;
    return request['op'] === 'hello' ? broken(request['id'], { epoch: 0, seq: 0 }) : broken(request['id'], { seq: 1 });
  });
  const hub = disposer.add(await new DirectoryHub({ secret: SECRET }).listen(), (h) => h.close());
  const impostor = disposer.add(new HubClient(hub.url, { name: 'n1', secret: SECRET }), (c) => c.close());
  await impostor.register('n1', fakeReplica);
  // The fake replica heartbeats like a node, so the hub puts it in the first view.
  const beating = setInterval(() => {
    impostor.heartbeat({ name: 'n1', epoch: 0, seq: 0, viewEpoch: 0, config: undefined, synced: undefined, caughtUp: undefined, behind: undefined, unreachable: undefined }, 1_000).catch(() => undefined);
  }, 100);
  disposer.add(beating, clearInterval);
  const primary = disposer.add(
    new KvNode({ name: 'n0', role: 'primary', replicas: ['n1'], hubUrl: hub.url, secret: SECRET, sync: 'memory', ackTimeoutMs: 200 }),
    (n) => n.close(),
  );
  const traces: NodeTrace[] = [];
  primary.trace$.subscribe((event) => traces.push(event));
  await primary.init();
  await primary.startServices();
  await waitFor('the link to retry through several malformed replies', () => hellos >= 6, 15_000);
  const rejected = traces.filter((t) => t.event === 'rejected' && /replica n1/.test(t.reason));
  assert.ok(rejected.length >= 3, `seed ${seed}: the link reports what it was answered`);
  // Whatever it was told, the primary serves nothing a replica did not confirm.
  assert.ok(['starting', 'serving', 'degraded'].includes(primary.health$.value.state), `seed ${seed}`);
});

Replies('an RPC channel holds at most pendingMax requests awaiting replies; closing fails them all', async () => {
  const silent = await fakeServer(() => undefined);
  const channel = new RpcChannel(await connect(silent, { maxPayload: 1024 }), realClock, 60_000, 2);
  disposer.add(channel, (c) => c.close());
  const waiting = [channel.request({ op: 'get', key: 'a' }), channel.request({ op: 'get', key: 'b' })];
  const refused = await channel.request({ op: 'get', key: 'c' }).then(() => 'answered', (e: KvError) => e);
  assert.instance(refused, KvError);
  assert.match((refused as KvError).message, /2 requests already await replies/);
  assert.is(channel.inFlight, 2);
  channel.close();
  for (const request of waiting) await request.then(() => assert.unreachable('nobody answers'), (e: KvError) => assert.is(e.code, 'UNAVAILABLE'));
});

Replies('a frame posted without an id costs no pending request; replies without an id go to onUnnumbered, in order', async () => {
  const server = await fakeServer((request) =>
    request['id'] === undefined ? JSON.stringify(request['n'] === 3 ? { id: null, ok: false, error: { code: 'FORBIDDEN', message: 'no' } } : { id: null, ok: true, seq: request['n'] }) : JSON.stringify({ id: request['id'], ok: true, numbered: true }),
  );
  const channel = new RpcChannel(await connect(server, { maxPayload: 1024 }), realClock, 60_000);
  disposer.add(channel, (c) => c.close());
  const unnumbered: unknown[] = [];
  channel.onUnnumbered = (result) => unnumbered.push(result instanceof KvError ? result.code : result['seq']);
  for (const n of [1, 2, 3]) assert.ok(channel.post(JSON.stringify({ op: 'append', n })));
  assert.is(channel.inFlight, 0, 'nothing pending, no timer');
  assert.equal(await channel.request({ op: 'lease' }), { id: 1, ok: true, numbered: true } as never, 'a numbered reply goes to its request (posts take no id)');
  await waitFor('the three answers', () => unnumbered.length === 3);
  assert.equal(unnumbered, [1, 2, 'FORBIDDEN']);
});

Replies.run();
