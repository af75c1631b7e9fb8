/**
 * What healing must reach: the primary of the hub's view serving, and every node's disk
 * holding what the primary's does.
 */
import type { SimCluster } from './cluster.js';
import type { SimWorld } from './world.js';

export const CONVERGE_POLL_MS = 250;

/** The node the hub's view names primary holds that view and serves. */
export function primaryServes(cluster: SimCluster): boolean {
  const view = cluster.hub?.views.view;
  const primary = view && cluster.nodes.find((handle) => handle.name === view.primary);
  return primary?.node?.view?.epoch === view?.epoch && primary?.node?.health.state === 'serving';
}

/** Undefined when every node's disk holds what the primary's does; else how they differ. */
export async function storesEqual(cluster: SimCluster): Promise<string | undefined> {
  const primaryHandle = cluster.primary;
  const primary = primaryHandle.disk;
  const expected = await primary.contents();
  for (const replica of cluster.replicas) {
    const { state } = replica.disk;
    if (state.seq !== primary.state.seq) return `${replica.name} is at seq ${state.seq}, the primary ${primaryHandle.name} at ${primary.state.seq}`;
    if ((await replica.disk.contents()) !== expected) return `${replica.name} holds other data than the primary ${primaryHandle.name} at seq ${state.seq}`;
  }
  return undefined;
}

/**
 * Runs the world a poll at a time until the stores are equal, for as long as
 * `mayPollAgain(pollsSoFar)` holds. Undefined once equal; else how they still differ.
 */
export async function storesEqualSoon(world: SimWorld, cluster: SimCluster, mayPollAgain: (polls: number) => boolean): Promise<string | undefined> {
  let unequal = await storesEqual(cluster);
  for (let polls = 0; unequal !== undefined && mayPollAgain(polls); polls += 1) {
    await world.run(world.nowMs + CONVERGE_POLL_MS);
    unequal = await storesEqual(cluster);
  }
  return unequal;
}

