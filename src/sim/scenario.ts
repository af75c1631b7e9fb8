/**
 * One simulated run: a cluster, clients doing pipelined get/put/del over a few keys,
 * faults drawn from the seed, then a healing phase that must converge. Checked as it
 * runs and at the end:
 *   I1  a put is acknowledged only once every replica of the view had applied it
 *       (checked on the reply frame as the primary sends it);
 *   I2  replicas apply the primary's writes, in its order, at its seqs, nothing else
 *       (so a batch that failed on the primary, I3, or a forged one, I4, is caught too);
 *   I4  a rogue process forging hellos and appends is refused;
 *   I5  garbage gets an error and the connection keeps serving; nothing throws or hangs;
 *   I7  once a primary of a view has answered a client, no node of an older view does;
 *       and no write is applied twice: no disk's history holds one request tag twice
 *       (clients retry tagged writes whose replies were lost, TestAtMostOnce);
 *   after healing: the primary serves, every store equals the primary's, a fresh put is
 *   acknowledged, and the whole client history (final reads of every key included) is
 *   linearizable, so no acknowledged write was lost across any failover (I6).
 * The same seed gives the same run: the trace's hash says so.
 */
import { CLIENT_RETRY_DEADLINE_MS } from '../constants.js';
import { SimCluster } from './cluster.js';
import { catchUnhandled, checkDisks, checkReplies, WriteLedger } from './oracle.js';
import { checkLinearizable } from './linearizability.js';
import { FAULT_KINDS, FaultInjector, type FaultKind } from './faults.js';
import { startRogue } from './rogue.js';
import { Trace, Verdict, Violation } from './trace.js';
import { REQUEST_TIMEOUT_MS, Workload } from './workload.js';
import { SimWorld } from './world.js';

export { FAULT_KINDS, type FaultKind } from './faults.js';

export interface ScenarioOptions {
  seed: number;
  faults?: readonly FaultKind[];
  faultPhaseMs?: number;
  healDeadlineMs?: number;
  clients?: number;
  keys?: number;
  /** Requests each client keeps in flight. */
  pipelineDepth?: number;
  /** Lines of trace kept for the report of a failure. */
  traceLinesKept?: number;
  /** Trace the nodes' peers, views and refusals too. */
  verbose?: boolean;
}

export interface ScenarioResult {
  seed: number;
  /** The broken check and what broke it, or undefined. */
  failure: { check: string; message: string } | undefined;
  /** sha256 of the whole trace: the same seed must give the same hash. */
  traceHash: string;
  lastLines: string[];
  stats: { ops: number; acked: number; unknown: number; faults: number; events: number; virtualMs: number; linearizability: 'ok' | 'undecided' | 'failed' };
}

/** Long enough for a partition to outlast the keepalive (2 x KEEPALIVE_INTERVAL_MS). */
export const FAULT_PHASE_MS = 30_000;
const CONVERGE_POLL_MS = 250;
const FINAL_PUT_TRIES = 60;

export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const world = new SimWorld(options.seed);
  const random = world.random;
  const trace = new Trace(world, options.traceLinesKept ?? 60);
  const faults = options.faults ?? FAULT_KINDS;
  const faultPhaseMs = options.faultPhaseMs ?? FAULT_PHASE_MS;
  const keys = Array.from({ length: options.keys ?? 6 }, (_, index) => `k${index}`);
  const verdict = new Verdict(world, trace);
  const fail = verdict.fail;

  const ledger = new WriteLedger();
  const watcher = checkDisks(ledger, trace, fail);
  const releaseUnhandled = catchUnhandled(fail);

  const secret = random.hex(16);
  const cluster = new SimCluster(world, { replicas: 2, secret, watcher, log: (line) => trace.log(line), verbose: options.verbose ?? false });

  checkReplies(cluster, ledger, fail);

  // Start: every node registered, then services; the primary serves once replicas report.
  trace.log(`seed ${options.seed}: start`);
  void cluster.startAll();
  const serving = () => {
    const view = cluster.hub?.views.view;
    const primary = view && cluster.nodes.find((handle) => handle.name === view.primary);
    return primary?.node?.view$.value?.epoch === view?.epoch && primary?.node?.health.state === 'serving';
  };
  if (!(await world.run(30_000, serving))) fail('start', 'the primary did not serve within 30 s');

  const workload = new Workload(world, cluster, trace, fail, { keys, writers: options.clients ?? 3, pipelineDepth: options.pipelineDepth ?? 3 });
  workload.start();

  const injector = new FaultInjector(world, cluster, ledger, trace, faults);
  injector.loseReplies(workload.processes);

  startRogue(world, cluster, trace, fail, () => workload.running);

  const faultEnd = world.nowMs + faultPhaseMs;
  injector.start(faultEnd);

  try {
    await world.run(faultEnd);

    // Healing: every fault lifted; the cluster must converge and take writes again.
    trace.log('HEAL every fault lifted');
    injector.liftAll();
    // The primary serves again while the clients go on; then they stop, every request they
    // have in flight is answered (or times out), and every replica must hold what it holds.
    const healDeadlineMs = options.healDeadlineMs ?? 60_000;
    const healDeadline = world.nowMs + healDeadlineMs;
    if (!(await world.run(healDeadline, serving))) {
      fail('convergence', `the primary is not serving ${healDeadlineMs} ms after healing: ${cluster.primary.node?.health.state ?? 'down'}: ${cluster.primary.node?.health.reason ?? ''}`);
    }
    workload.stop();
    // A request is retried for CLIENT_RETRY_DEADLINE_MS while no primary answers it, each try up to its timeout.
    const answerMs = CLIENT_RETRY_DEADLINE_MS + REQUEST_TIMEOUT_MS * 2;
    await world.run(world.nowMs + answerMs, () => workload.inFlight === 0);
    if (workload.inFlight > 0) fail('I5', `${workload.inFlight} requests still unanswered ${answerMs} ms after the clients stopped`);
    let unequal = await storesEqual(cluster);
    while (unequal !== undefined && world.nowMs < healDeadline) {
      await world.run(world.nowMs + CONVERGE_POLL_MS);
      unequal = await storesEqual(cluster);
    }
    if (unequal !== undefined) fail('convergence', `not converged ${healDeadlineMs} ms after healing: ${unequal}`);

    // A fresh client writes once more and reads every key: the end of the history.
    const checker = world.process('checker', '127.0.1.250');
    const client = cluster.client(checker, REQUEST_TIMEOUT_MS);
    // Tried until acknowledged, for a while: a hub that restarted may not know the primary
    // yet (a primary whose hub connection died behind a partition hears of it only through
    // its keepalive: up to KEEPALIVE_INTERVAL_MS after the partition heals).
    const finalKey = random.pick(keys);
    let written = false;
    for (let attempt = 1; attempt <= FINAL_PUT_TRIES && !written; attempt += 1) {
      written = await workload.runToEnd(client, workload.clientCount, { kind: 'put', key: finalKey, value: `after-healing-${attempt}` });
      if (!written) await world.run(world.nowMs + 500);
    }
    if (!written) fail('convergence', `no put was acknowledged in ${FINAL_PUT_TRIES} tries, 500 ms apart, after healing`);
    for (const key of keys) await workload.runToEnd(client, workload.clientCount, { kind: 'get', key });
    // The last put reached the view's replicas; a node still catching up gets it shortly.
    await world.run(world.nowMs + 1_000, () => workload.inFlight === 0);
    let unequalAtEnd = await storesEqual(cluster);
    for (let polls = 0; unequalAtEnd !== undefined && polls < 40; polls += 1) {
      await world.run(world.nowMs + CONVERGE_POLL_MS);
      unequalAtEnd = await storesEqual(cluster);
    }
    if (unequalAtEnd !== undefined) fail('convergence', `10 s after the final writes: ${unequalAtEnd}`);
  } catch (error) {
    if (!(error instanceof Violation)) {
      fail('I5', `the simulation threw: ${(error as Error).stack ?? String(error)}`);
    }
  }

  // Rejections are reported after the turn they happened in: one more turn before leaving.
  await new Promise((resolve) => setImmediate(resolve));
  releaseUnhandled();

  let linearizability: ScenarioResult['stats']['linearizability'] = 'failed';
  if (!verdict.violation) {
    const result = checkLinearizable(workload.history);
    if (result.ok === true) linearizability = 'ok';
    else if (result.ok === 'undecided') {
      linearizability = 'undecided';
      trace.log(`linearizability undecided on ${result.key}: ${result.reason}`);
    } else {
      verdict.judged('linearizability', `the history of key ${result.key} is not linearizable:\n${result.explanation}`);
    }
  }

  return {
    seed: options.seed,
    failure: verdict.violation ? { check: verdict.violation.check, message: verdict.violation.message } : undefined,
    traceHash: trace.digest(),
    lastLines: trace.last(),
    stats: {
      ops: workload.history.length,
      acked: workload.history.filter((entry) => entry.outcome.status === 'ok').length,
      unknown: workload.history.filter((entry) => entry.outcome.status === 'unknown').length,
      faults: injector.drawn,
      events: world.events,
      virtualMs: Math.round(world.nowMs),
      linearizability,
    },
  };
}

/** Undefined when every node's disk holds what the primary's does; else how they differ. */
async function storesEqual(cluster: SimCluster): Promise<string | undefined> {
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

