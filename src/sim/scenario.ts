/**
 * One simulated run: a cluster, clients doing pipelined gets, puts, dels (conditional,
 * expiring) and incrs over a few keys and counters, faults drawn from the seed, then a healing phase that must converge. Checked as it
 * runs and at the end:
 *   I1  a write is acknowledged only once every replica of the view had applied it
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
 *
 * The pieces, each in its own file: the phases (phases.ts), the clients and their history
 * (workload.ts), the fault injector (faults.ts), the rogue (rogue.ts), the checks
 * (oracle.ts, convergence.ts, linearizability.ts), the trace and verdict (trace.ts).
 */
import { SimCluster } from './cluster.js';
import { FAULT_KINDS, FaultInjector, type FaultKind } from './faults.js';
import type { HistoryEntry } from './linearizability.js';
import { catchUnhandled, checkDisks, checkReplies, judgeHistory, WriteLedger, type HistoryVerdict, type LinearizabilityVerdict, type StrictExpiryVerdict } from './oracle.js';
import { faultPhase, finalPhase, healingPhase, startPhase, type Run } from './phases.js';
import { thrown, Trace, Verdict, Violation } from './trace.js';
import { SimWatcher } from './watchers.js';
import { Workload } from './workload.js';
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
  /** How far each process's wall clock may be off, either way (world.ts). */
  clockOffsetMaxMs?: number;
  /** Fail a seed whose history needs a key seen expired to be live again (the design allows it until the expiry delete). */
  strictExpiry?: boolean;
}

export interface ScenarioResult {
  seed: number;
  /** The broken check and what broke it (and where, for an exception whose stack was taken), or undefined. */
  failure: { check: string; message: string; where: string | undefined } | undefined;
  /** sha256 of the whole trace: the same seed must give the same hash. */
  traceHash: string;
  lastLines: string[];
  stats: { ops: number; acked: number; unknown: number; conflicts: number; faults: number; events: number; virtualMs: number; linearizability: LinearizabilityVerdict; strictExpiry: StrictExpiryVerdict };
  /** When the history needed a key seen expired to be live again: the strict check's explanation. */
  reappeared: string | undefined;
}

/** Long enough for a partition to outlast the keepalive (2 x KEEPALIVE_INTERVAL_MS). */
export const FAULT_PHASE_MS = 30_000;
const HEAL_DEADLINE_MS = 60_000;

export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const world = new SimWorld(options.seed, options.clockOffsetMaxMs);
  const trace = new Trace(world, options.traceLinesKept ?? 60);
  const verdict = new Verdict(world, trace);
  const { fail } = verdict;
  const ledger = new WriteLedger();
  const watcher = checkDisks(ledger, trace, fail);
  const releaseUnhandled = catchUnhandled(fail);
  const cluster = new SimCluster(world, { replicas: 2, secret: world.random.hex(16), watcher, log: (line) => trace.log(line), verbose: options.verbose ?? false });
  checkReplies(cluster, ledger, fail);
  const keys = Array.from({ length: options.keys ?? 6 }, (_, index) => `k${index}`);
  const counters = ['n0', 'n1'];
  const run: Run = {
    world,
    cluster,
    trace,
    fail,
    keys,
    counters,
    workload: new Workload(world, cluster, trace, fail, { keys, counters, writers: options.clients ?? 3, pipelineDepth: options.pipelineDepth ?? 3 }),
    injector: new FaultInjector(world, cluster, ledger, trace, options.faults ?? FAULT_KINDS),
  };

  const changeWatcher = new SimWatcher(world, cluster, trace);
  try {
    await startPhase(run);
    changeWatcher.start();
    await faultPhase(run, options.faultPhaseMs ?? FAULT_PHASE_MS);
    await healingPhase(run, options.healDeadlineMs ?? HEAL_DEADLINE_MS);
    await finalPhase(run);
  } catch (error) {
    // A broken check stops the world by throwing its Violation; anything else is a fault.
    if (!(error instanceof Violation)) {
      const { said, where } = thrown(error);
      fail('I5', `the simulation threw: ${said}`, where);
    }
  }
  // Rejections are reported after the turn they happened in: one more turn before leaving.
  await new Promise((resolve) => setImmediate(resolve));
  releaseUnhandled();

  const history = run.workload.history();
  changeWatcher.stop();
  if (!verdict.violation) changeWatcher.check(history, fail);
  const judged = judgeHistory(history, verdict, trace, { strictExpiry: options.strictExpiry ?? false });
  return result(run, verdict, history, judged);
}

function result({ world, trace, injector }: Run, verdict: Verdict, history: readonly HistoryEntry[], judged: HistoryVerdict): ScenarioResult {
  return {
    seed: world.seed,
    failure: verdict.violation ? { check: verdict.violation.check, message: verdict.violation.message, where: verdict.violation.where } : undefined,
    traceHash: trace.digest(),
    lastLines: trace.last(),
    stats: {
      ops: history.length,
      acked: history.filter((entry) => entry.outcome.status === 'ok').length,
      unknown: history.filter((entry) => entry.outcome.status === 'unknown').length,
      conflicts: history.filter((entry) => entry.outcome.status === 'conflict').length,
      faults: injector.drawn,
      events: world.events,
      virtualMs: Math.round(world.nowMs),
      linearizability: judged.linearizability,
      strictExpiry: judged.strictExpiry,
    },
    reappeared: judged.reappeared,
  };
}
