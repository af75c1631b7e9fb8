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
import { CLIENT_RETRY_DEADLINE_MS, DEAD_AFTER_MS } from '../constants.js';
import { SimCluster, type SimNodeHandle } from './cluster.js';
import { catchUnhandled, checkDisks, checkReplies, isAtOrPast, WriteLedger } from './oracle.js';
import { checkLinearizable } from './linearizability.js';
import { startRogue } from './rogue.js';
import { Trace, Verdict, Violation } from './trace.js';
import { REQUEST_TIMEOUT_MS, Workload } from './workload.js';
import { SimWorld, type SimProcess } from './world.js';

export const FAULT_KINDS = ['replica-crash', 'replica-disk-loss', 'partition', 'hub-crash', 'primary-crash', 'primary-disk-loss', 'disk-full', 'reply-loss'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

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
/** While replies are being lost, the share of node-to-client frames whose connection is reset. */
const REPLY_LOSS_SHARE = 0.2;

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
  let faultsInjected = 0;

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
  const clientProcesses = workload.processes;

  // Lost replies: while the fault lasts, the network resets a node's connection to a client
  // just as a reply to it is on its way, now and then. The client retries what it asked on
  // a new connection; a write must not be applied twice (I7).
  let replyLossUntil = 0;
  const nodeProcesses = new Set(cluster.nodes.map((handle) => handle.process));
  cluster.network.sent$.subscribe((frame) => {
    if (world.nowMs >= replyLossUntil || !nodeProcesses.has(frame.from) || !clientProcesses.has(frame.to) || !random.chance(REPLY_LOSS_SHARE)) return;
    trace.log(`FAULT ${frame.from.name}'s reply ${frame.text.slice(0, 80)} to ${frame.to.name} is lost: the connection is reset`);
    world.schedule(0, () => cluster.network.reset(frame.connection));
  });

  startRogue(world, cluster, trace, fail, () => workload.running);

  // Faults, drawn from the seed, during the fault phase.
  const down = new Set<SimNodeHandle | 'hub'>();
  const faultEnd = world.nowMs + faultPhaseMs;
  const processes = (): SimProcess[] => [cluster.hubProcess, ...cluster.nodes.map((n) => n.process)];
  // Ground truth, not the hub's belief: another node is running, is trusted by the hub to
  // hold every acknowledged write, and does (its disk is at or past every acknowledged put).
  // A disk is lost only from a healthy cluster (nothing else down or cut off): the fault
  // model is one node lost at a time, and two at once within the dead-after time is two.
  // A node that restarted less than twice the dead-after time ago is not back yet: its
  // primary may have just reported it unreachable, and dropping it then losing the
  // primary's disk is two losses (seeds 651 and 6042 of one build: the hub, rightly, then
  // waited for the lost primary rather than promote a node outside the view).
  let partitionsActive = 0;
  const restartedAt = new Map<SimNodeHandle, number>();
  const isBack = (other: SimNodeHandle) => world.nowMs - (restartedAt.get(other) ?? -Infinity) > 2 * DEAD_AFTER_MS;
  const canLoseDisk = (handle: SimNodeHandle) =>
    down.size === 0 &&
    partitionsActive === 0 &&
    cluster.nodes.some(
      (other) =>
        other !== handle &&
        other.process.isAlive &&
        !down.has(other) &&
        isBack(other) &&
        cluster.hub?.views.trusted(other.name) === true &&
        isAtOrPast(other.disk.state, ledger.ackedMax),
    );
  const injectFault = () => {
    if (world.nowMs >= faultEnd) return;
    const kind = random.pick(faults);
    const lasting = random.int(100, 6_000);
    faultsInjected += 1;
    switch (kind) {
      case 'replica-crash':
      case 'replica-disk-loss':
      case 'primary-crash':
      case 'primary-disk-loss': {
        const handle = kind.startsWith('primary') ? cluster.primary : random.pick(cluster.replicas);
        if (down.has(handle)) break;
        const diskLost = kind.endsWith('disk-loss');
        // The fault model is one node lost at a time: a disk is lost only while another
        // node the hub could promote holds everything it holds.
        if (diskLost && !canLoseDisk(handle)) break;
        trace.log(`FAULT ${handle.name} crashes${diskLost ? ', its disk lost' : ''}; back in ${lasting} ms`);
        cluster.crash(handle, diskLost);
        down.add(handle);
        world.schedule(lasting, () => {
          if (!down.delete(handle)) return;
          trace.log(`FAULT ${handle.name} restarts`);
          cluster.restart(handle);
          restartedAt.set(handle, world.nowMs);
        });
        break;
      }
      case 'hub-crash':
        if (down.has('hub')) break;
        trace.log(`FAULT hub crashes; back in ${lasting} ms`);
        cluster.crashHub();
        down.add('hub');
        world.schedule(lasting, () => {
          if (!down.delete('hub')) return;
          trace.log('FAULT hub restarts');
          cluster.restartHub();
        });
        break;
      case 'partition': {
        const [a, b] = twoOf(processes(), random);
        const both = random.chance(0.5);
        // Some outlast the keepalive, so a stalled connection gives up.
        const partitionMs = random.chance(0.15) ? random.int(15_000, 30_000) : lasting;
        trace.log(`FAULT partition ${a.name} ${both ? '<->' : '->'} ${b.name}; healed in ${partitionMs} ms`);
        const heal = cluster.network.partition(a, b, both);
        partitionsActive += 1;
        world.schedule(partitionMs, () => {
          trace.log(`FAULT partition ${a.name} ${both ? '<->' : '->'} ${b.name} healed`);
          partitionsActive = Math.max(0, partitionsActive - 1);
          heal();
        });
        break;
      }
      case 'reply-loss':
        trace.log(`FAULT replies to clients are lost for ${lasting} ms`);
        replyLossUntil = Math.max(replyLossUntil, world.nowMs + lasting);
        break;
      case 'disk-full': {
        const disk = cluster.primary.disk;
        if (down.has(cluster.primary)) break;
        trace.log(`FAULT ${cluster.primary.name}'s disk is full for ${lasting} ms`);
        disk.failing = true;
        world.schedule(lasting, () => (disk.failing = false));
        break;
      }
    }
    world.schedule(random.int(300, 4_000), injectFault);
  };
  world.schedule(random.int(0, 1_000), injectFault);

  try {
    await world.run(faultEnd);

    // Healing: every fault lifted; the cluster must converge and take writes again.
    trace.log('HEAL every fault lifted');
    replyLossUntil = 0;
    cluster.network.heal();
    partitionsActive = 0;
    for (const handle of cluster.nodes) handle.disk.failing = false;
    for (const handle of [...down]) {
      down.delete(handle);
      if (handle === 'hub') cluster.restartHub();
      else cluster.restart(handle);
    }
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
      faults: faultsInjected,
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

function twoOf<T>(items: readonly T[], random: SimWorld['random']): [T, T] {
  const first = random.int(0, items.length - 1);
  let second = random.int(0, items.length - 2);
  if (second >= first) second += 1;
  return [items[first]!, items[second]!];
}
