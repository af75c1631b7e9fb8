import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FAULT_PHASE_MS, runScenario } from '../../src/sim/scenario.js';
import { CLOCK_OFFSET_MAX_MS, SimWorld, WALL_CLOCK_START_MS } from '../../src/sim/world.js';
import { SimNetwork } from '../../src/sim/network.js';
import type { Connection } from '../../src/env/transport.js';

const Simulator = suite('sim: the cluster in a deterministic simulator');

/** Runs scenarios with an eye on rejections nothing handled (a failure of the seed). */
async function scenario(seed: number, faultPhaseMs?: number) {
  let stray: unknown;
  const onRejection = (error: unknown) => (stray ??= error);
  process.on('unhandledRejection', onRejection);
  try {
    const result = await runScenario({ seed, ...(faultPhaseMs !== undefined ? { faultPhaseMs } : {}) });
    await new Promise((resolve) => setImmediate(resolve));
    assert.is(stray, undefined, `seed ${seed}: unhandled rejection ${String(stray)}`);
    return result;
  } finally {
    process.off('unhandledRejection', onRejection);
  }
}

Simulator('seeds with every kind of fault keep every invariant, converge, and leave a linearizable history', async () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const result = await scenario(seed);
    assert.is(result.failure, undefined, `seed ${seed}: ${result.failure?.check}: ${result.failure?.message}\n${result.lastLines.join('\n')}`);
    assert.is(result.stats.linearizability, 'ok');
    assert.ok(result.stats.faults > 0, `seed ${seed} injected faults`);
    assert.ok(result.stats.acked > 0, `seed ${seed} acknowledged ${result.stats.acked} ops`);
    assert.ok(result.stats.conflicts > 0, `seed ${seed}: conditional writes met ${result.stats.conflicts} CONFLICTs`);
    assert.ok(result.stats.virtualMs >= FAULT_PHASE_MS, 'the fault phase ran its whole virtual time');
  }
});

Simulator('one seed gives the same trace, byte for byte; another seed gives another', async () => {
  const first = await scenario(42, 5_000);
  const again = await scenario(42, 5_000);
  const other = await scenario(43, 5_000);
  assert.is(again.traceHash, first.traceHash);
  assert.equal(again.stats, first.stats);
  assert.is.not(other.traceHash, first.traceHash);
});

Simulator('virtual time: a minute of an idle world passes at once, timers fire in order of time, then of scheduling', async () => {
  const world = new SimWorld(7);
  const fired: string[] = [];
  world.schedule(60_000, () => fired.push('late'));
  world.schedule(10, () => fired.push('b'));
  world.schedule(10, () => fired.push('c'));
  world.schedule(5, () => fired.push('a'));
  const cancel = world.schedule(20, () => fired.push('cancelled'));
  cancel();
  const started = performance.now();
  await world.run(120_000);
  assert.ok(performance.now() - started < 1_000, 'virtual time does not wait');
  assert.equal(fired, ['a', 'b', 'c', 'late']);
  assert.is(world.nowMs, 120_000);
});

Simulator('a crashed process runs no more code: its timers never fire, and a restart gets a new clock', async () => {
  const world = new SimWorld(1);
  const process = world.process('p', '127.0.1.5');
  const fired: string[] = [];
  process.clock.after(10, () => fired.push('old life'));
  process.crash();
  process.restart();
  process.clock.after(20, () => fired.push('new life'));
  await world.run(100);
  assert.equal(fired, ['new life']);
});

Simulator('wall clocks: each process generation is off the virtual time by its own seeded offset, in whole ms, drawn anew at a restart', async () => {
  const world = new SimWorld(11);
  const processes = Array.from({ length: 6 }, (_, index) => world.process(`p${index}`, `127.0.1.${20 + index}`));
  await world.run(1_234.5);
  for (const process of processes) {
    const wallMs = process.clock.wallNow();
    assert.ok(Number.isInteger(wallMs), 'a whole millisecond');
    assert.is(wallMs, Math.floor(WALL_CLOCK_START_MS + 1_234.5 + process.clockOffsetMs));
    assert.ok(Math.abs(process.clockOffsetMs) <= CLOCK_OFFSET_MAX_MS);
    assert.is(process.clock.now(), 1_234.5, 'the monotonic clock is the virtual time');
  }
  assert.ok(new Set(processes.map((process) => process.clockOffsetMs)).size > 1, 'offsets differ');
  const [first] = processes;
  const before = first!.clockOffsetMs;
  first!.crash();
  first!.restart();
  assert.equal(first!.clockOffsetsMs, [before, first!.clockOffsetMs], 'a restart draws a new offset and keeps the old ones');
});

/** Two processes with a listener on b and a connection from a. */
async function pair(world: SimWorld, network: SimNetwork) {
  const a = world.process('a', '127.0.1.2');
  const b = world.process('b', '127.0.1.3');
  let server: Connection | undefined;
  await network.transportFor(b).listen({ host: b.address, port: 1, maxPayload: 1 << 20, connectionsMax: 10, onConnection: (c) => (server = c) });
  let client: Connection | undefined;
  void network.transportFor(a).connect(`ws://${b.address}:1`, { maxPayload: 1 << 20 }).then((c) => (client = c));
  await world.run(world.nowMs + 100, () => client !== undefined && server !== undefined);
  assert.ok(client && server, 'connected');
  return { a, b, client, server };
}

Simulator('a connection delivers in order with the source address; a partition stalls it, healing delivers the rest', async () => {
  const world = new SimWorld(3);
  const network = new SimNetwork(world);
  const { a, b, client, server } = await pair(world, network);
  assert.is(server.remoteAddress, a.address);
  const received: string[] = [];
  server.frames$.subscribe((frame) => received.push(frame));
  for (let i = 0; i < 50; i += 1) client.send(String(i));
  await world.run(world.nowMs + 100);
  assert.equal(received, Array.from({ length: 50 }, (_, i) => String(i)));
  network.partition(a, b, false);
  client.send('stalled');
  await world.run(world.nowMs + 1_000);
  assert.is(received.length, 50, 'nothing crosses the partition');
  network.heal();
  await world.run(world.nowMs + 100);
  assert.is(received.at(-1), 'stalled', 'the stalled frame arrives once healed, not dropped');
});

Simulator('a partition that outlasts the keepalive breaks the connection; a crash resets it for the survivor', async () => {
  const world = new SimWorld(4);
  const network = new SimNetwork(world, { keepaliveGiveUpMs: 5_000 });
  const first = await pair(world, network);
  let closed = 0;
  first.client.frames$.subscribe({ complete: () => (closed += 1) });
  first.server.frames$.subscribe({ complete: () => (closed += 1) });
  network.partition(first.a, first.b, true);
  await world.run(world.nowMs + 4_000);
  assert.is(closed, 0, 'not yet given up');
  await world.run(world.nowMs + 2_000);
  assert.is(closed, 2, 'both ends closed');
  network.heal();

  const world2 = new SimWorld(5);
  const network2 = new SimNetwork(world2);
  const second = await pair(world2, network2);
  let serverClosed = false;
  let clientClosed = false;
  second.server.frames$.subscribe({ complete: () => (serverClosed = true) });
  second.client.frames$.subscribe({ complete: () => (clientClosed = true) });
  second.a.crash();
  network2.crashed(second.a);
  await world2.run(world2.nowMs + 100);
  assert.ok(serverClosed, 'the survivor hears the reset');
  assert.not.ok(clientClosed, 'the dead process hears nothing');
});

Simulator('partitions heal one by one; a close lets the frames already sent arrive first', async () => {
  const world = new SimWorld(8);
  const network = new SimNetwork(world);
  const { a, b, client, server } = await pair(world, network);
  const received: string[] = [];
  let serverClosed = false;
  server.frames$.subscribe({ next: (frame) => received.push(frame), complete: () => (serverClosed = true) });
  const healFirst = network.partition(a, b, false);
  const healSecond = network.partition(a, b, true);
  healFirst();
  client.send('x');
  await world.run(world.nowMs + 100);
  assert.equal(received, [], 'the second partition still holds');
  healSecond();
  for (let i = 0; i < 20; i += 1) client.send(String(i));
  client.close();
  assert.not.ok(client.send('after close'), 'nothing is sent after close()');
  await world.run(world.nowMs + 100);
  assert.equal(received, ['x', ...Array.from({ length: 20 }, (_, i) => String(i))]);
  assert.ok(serverClosed, 'the close arrived after the frames');
});

Simulator('connecting to nobody is refused; across a partition it times out', async () => {
  const world = new SimWorld(6);
  const network = new SimNetwork(world);
  const a = world.process('a', '127.0.1.2');
  const b = world.process('b', '127.0.1.3');
  const outcome = (url: string) => {
    const result: { error?: string; atMs?: number } = {};
    network.transportFor(a).connect(url, { maxPayload: 1024, timeoutMs: 3_000 }).then(
      () => (result.error = 'connected'),
      (error: Error) => Object.assign(result, { error: error.message, atMs: world.nowMs }),
    );
    return result;
  };
  const refused = outcome(`ws://${b.address}:1`);
  await world.run(100);
  assert.match(refused.error ?? '', /refused/);
  await network.transportFor(b).listen({ host: b.address, port: 1, maxPayload: 1024, connectionsMax: 10, onConnection: () => undefined });
  network.partition(b, a, false);
  const cut = outcome(`ws://${b.address}:1`);
  await world.run(world.nowMs + 5_000);
  assert.match(cut.error ?? '', /timed out/);
});

Simulator.run();
