import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvError } from '../../src/errors.js';
import { SimWorld } from '../../src/sim/world.js';
import { Redialer, type Dialed } from '../../src/transport/redialer.js';

const Redial = suite('transport: one reconnect loop');

class FakeConnection implements Dialed {
  private drop!: () => void;
  readonly closed = new Promise<void>((resolve) => (this.drop = resolve));
  open = true;
  close(): void {
    this.open = false;
    this.drop();
  }
}

function setup(failFirst: number) {
  const world = new SimWorld(9);
  const process = world.process('p', '127.0.1.2');
  const dials: number[] = [];
  const errors: number[] = [];
  const connections: FakeConnection[] = [];
  const redialer = new Redialer<FakeConnection>(
    async () => {
      dials.push(world.nowMs);
      if (dials.length <= failFirst) throw new KvError('UNAVAILABLE', `refused ${dials.length}`);
      const connection = new FakeConnection();
      connections.push(connection);
      return connection;
    },
    { env: { clock: process.clock, random: world.random }, onError: (_error, failures) => errors.push(failures) },
  );
  return { world, redialer, dials, errors, connections };
}

Redial('callers asking at once share one dial; a dropped connection is dialed again on the next ask only', async () => {
  const { world, redialer, dials, connections } = setup(0);
  const [a, b] = await Promise.all([redialer.get(), redialer.get()]);
  assert.is(a, b);
  assert.is(dials.length, 1);
  connections[0]!.close();
  await world.run(10_000);
  assert.is(dials.length, 1, 'without keepUp nothing redials by itself');
  assert.is.not(await redialer.get(), a);
  assert.is(dials.length, 2);
});

Redial('kept up: failed dials are retried with growing, capped delays; a drop is redialed; close stops it all', async () => {
  const { world, redialer, dials, errors, connections } = setup(6);
  redialer.keepUp();
  await world.run(30_000, () => connections.length === 1);
  assert.is(dials.length, 7);
  assert.equal(errors, [1, 2, 3, 4, 5, 6]);
  const gaps = dials.slice(1).map((at, index) => at - dials[index]!);
  for (let i = 1; i < gaps.length; i += 1) assert.ok(gaps[i]! <= 1_000, `gap ${gaps[i]} is capped at RETRY_DELAY_MAX_MS`);
  assert.ok(gaps[4]! > gaps[0]!, `delays grow: ${gaps.map((g) => g.toFixed(1)).join(', ')}`);
  connections[0]!.close();
  await world.run(world.nowMs + 1_000, () => connections.length === 2);
  assert.is(connections.length, 2, 'the drop was redialed');
  redialer.close();
  await world.run(world.nowMs + 10_000);
  assert.not.ok(connections[1]!.open, 'close() closed the connection');
  assert.is(dials.length, 8, 'nothing dials after close()');
  await redialer.get().then(
    () => assert.unreachable('a closed redialer gives no connection'),
    (error: KvError) => assert.is(error.code, 'UNAVAILABLE'),
  );
});

Redial('drop() closes the connection there is, also one still being dialed, and never dials itself', async () => {
  const { world, redialer, dials, connections } = setup(0);
  redialer.drop();
  await world.run(1_000);
  assert.is(dials.length, 0, 'nothing to drop: nothing is dialed');
  const first = redialer.get();
  redialer.drop();
  await first;
  await world.run(world.nowMs + 1_000);
  assert.not.ok(connections[0]!.open, 'the dial in progress was closed once it was up');
  const second = await redialer.get();
  assert.is(dials.length, 2, 'the next get() dialed anew');
  redialer.drop();
  await second.closed;
  assert.not.ok(second.open);
  assert.is(dials.length, 2);
});

Redial.run();
