/**
 * The phases of a scenario, in order: start, faults, healing, the final reads. Each runs
 * the world to its own end and fails the run where the cluster falls short of it.
 */
import { CLIENT_RETRY_DEADLINE_MS } from '../constants.js';
import type { SimCluster } from './cluster.js';
import { CONVERGE_POLL_MS, primaryServes, storesEqualSoon } from './convergence.js';
import type { FaultInjector } from './faults.js';
import { startRogue } from './rogue.js';
import type { Fail, Trace } from './trace.js';
import { REQUEST_TIMEOUT_MS, type SimClient, type Workload } from './workload.js';
import type { SimWorld } from './world.js';

const START_DEADLINE_MS = 30_000;
/** A request is retried for CLIENT_RETRY_DEADLINE_MS while no primary answers it, each try up to its timeout. */
const ANSWER_DEADLINE_MS = CLIENT_RETRY_DEADLINE_MS + REQUEST_TIMEOUT_MS * 2;
const FINAL_PUT_TRIES = 60;
const FINAL_PUT_RETRY_MS = 500;
/** For the final put to reach a node that was still catching up. */
const FINAL_CONVERGE_MS = 10_000;
const CHECKER_ADDRESS = '127.0.1.250';

/** What the phases share: the pieces of one run. */
export interface Run {
  world: SimWorld;
  cluster: SimCluster;
  trace: Trace;
  fail: Fail;
  /** Keys of string values, and the counters. */
  keys: readonly string[];
  counters: readonly string[];
  workload: Workload;
  injector: FaultInjector;
}

/** Every node registered, then services; the primary serves once replicas report. */
export async function startPhase({ world, cluster, trace, fail }: Run): Promise<void> {
  trace.log(`seed ${world.seed}: start`);
  void cluster.startAll();
  if (!(await world.run(START_DEADLINE_MS, () => primaryServes(cluster)))) fail('start', 'the primary did not serve within 30 s');
}

/** The clients, the rogue, and faults drawn from the seed, for `faultPhaseMs`. */
export async function faultPhase({ world, cluster, trace, fail, workload, injector }: Run, faultPhaseMs: number): Promise<void> {
  workload.start();
  injector.loseReplies(workload.processes);
  startRogue(world, cluster, trace, fail, () => workload.running);
  const endMs = world.nowMs + faultPhaseMs;
  injector.start(endMs);
  await world.run(endMs);
}

/**
 * Every fault lifted: the primary serves again while the clients go on; then they stop,
 * every request they have in flight is answered (or times out), and every replica must
 * come to hold what the primary holds.
 */
export async function healingPhase({ world, cluster, trace, fail, workload, injector }: Run, healDeadlineMs: number): Promise<void> {
  trace.log('HEAL every fault lifted');
  injector.liftAll();
  const deadlineMs = world.nowMs + healDeadlineMs;
  if (!(await world.run(deadlineMs, () => primaryServes(cluster)))) {
    fail('convergence', `the primary is not serving ${healDeadlineMs} ms after healing: ${cluster.primary.node?.health.state ?? 'down'}: ${cluster.primary.node?.health.reason ?? ''}`);
  }
  workload.stop();
  await world.run(world.nowMs + ANSWER_DEADLINE_MS, () => workload.inFlight === 0);
  if (workload.inFlight > 0) fail('I5', `${workload.inFlight} requests still unanswered ${ANSWER_DEADLINE_MS} ms after the clients stopped`);
  const unequal = await storesEqualSoon(world, cluster, () => world.nowMs < deadlineMs);
  if (unequal !== undefined) fail('convergence', `not converged ${healDeadlineMs} ms after healing: ${unequal}`);
}

/**
 * A fresh client writes once more and reads every key: the end of the history, which the
 * linearizability check then holds every earlier acknowledged write to.
 */
export async function finalPhase(run: Run): Promise<void> {
  const { world, cluster, fail, keys, counters, workload } = run;
  const client = workload.newClient('checker', CHECKER_ADDRESS);
  await finalPut(run, client);
  for (const key of [...keys, ...counters]) await workload.runToEnd(client, { kind: 'get', key });
  // The last put reached the view's replicas; a node still catching up gets it shortly.
  await world.run(world.nowMs + 1_000, () => workload.inFlight === 0);
  const unequal = await storesEqualSoon(world, cluster, (polls) => polls < FINAL_CONVERGE_MS / CONVERGE_POLL_MS);
  if (unequal !== undefined) fail('convergence', `${FINAL_CONVERGE_MS / 1_000} s after the final writes: ${unequal}`);
}

/**
 * Tried until acknowledged, for a while: a hub that restarted may not know the primary yet
 * (a primary whose hub connection died behind a partition hears of it only through its
 * keepalive: up to KEEPALIVE_INTERVAL_MS after the partition heals).
 */
async function finalPut({ world, fail, keys, workload }: Run, client: SimClient): Promise<void> {
  const key = world.random.pick(keys);
  for (let attempt = 1; attempt <= FINAL_PUT_TRIES; attempt += 1) {
    if (await workload.runToEnd(client, { kind: 'put', key, value: `after-healing-${attempt}` })) return;
    await world.run(world.nowMs + FINAL_PUT_RETRY_MS);
  }
  fail('convergence', `no put was acknowledged in ${FINAL_PUT_TRIES} tries, ${FINAL_PUT_RETRY_MS} ms apart, after healing`);
}
