/**
 * A rogue process at its own address: every 0.5-3 s it forges a hello as the primary and
 * an append at some node (both must be refused, I4), then sends a garbage frame and checks
 * the connection still answers (I5).
 */
import { ConnectionClosedError, KvError } from '../errors.js';
import { RpcChannel } from '../protocol/rpc-channel.js';
import { SIM_NODE_PORT, type SimCluster, type SimNodeHandle } from './cluster.js';
import type { Fail, Trace } from './trace.js';
import type { SimProcess, SimWorld } from './world.js';

const ROGUE_ADDRESS = '127.0.1.200';

/** Probes until `running` turns false. */
export function startRogue(world: SimWorld, cluster: SimCluster, trace: Trace, fail: Fail, running: () => boolean): void {
  const random = world.random;
  const rogue = world.process('rogue', ROGUE_ADDRESS);
  const round = () => {
    if (!running()) return;
    void probe(cluster, rogue, random.pick(cluster.nodes), fail, trace).then(() => rogue.clock.after(random.int(500, 3_000), round));
  };
  rogue.clock.after(random.int(100, 1_000), round);
}

async function probe(cluster: SimCluster, rogue: SimProcess, target: SimNodeHandle, fail: Fail, trace: Trace): Promise<void> {
  const env = cluster.env(rogue);
  let channel: RpcChannel;
  try {
    const connection = await env.transport.connect(`ws://${target.process.address}:${SIM_NODE_PORT}`, { maxPayload: 1 << 20, kind: 'peer' });
    channel = new RpcChannel(connection, env.clock, 2_000);
  } catch {
    return; // the target is down or cut off: nothing to probe this round
  }
  const expectRefused = async (fields: Record<string, unknown>, what: string) => {
    try {
      await channel.request(fields);
      fail('I4', `${target.name} accepted a forged ${what} from ${rogue.address}`);
    } catch (error) {
      if (!(error instanceof KvError)) fail('I5', `${target.name} answered a forged ${what} with ${String(error)}`);
    }
  };
  await expectRefused({ op: 'hello', from: cluster.primary.name, epoch: cluster.primary.node?.view?.epoch ?? 1 }, 'hello');
  await expectRefused({ op: 'append', epoch: 1_000, first: 1, ops: [['p', 'k0', 'rogue']] }, 'append');
  channel.connection.send('{"id":9,"op":');
  try {
    await channel.request({ op: 'help' });
  } catch (error) {
    // A connection that dropped with its node (a crash, a partition) is no fault of the
    // garbage; a node that stopped answering (a timeout) is.
    const dropped = error instanceof ConnectionClosedError;
    if (!dropped) fail('I5', `${target.name} stopped answering after a garbage frame: ${(error as Error).message}`);
  }
  trace.log(`rogue probed ${target.name}`);
  channel.close();
}
