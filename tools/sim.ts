#!/usr/bin/env node
/**
 * The deterministic simulator: npm run sim -- --seed S | --seeds N [--from S]
 * Each seed is one scenario (src/sim/scenario.ts): the real hub, nodes and clients over a
 * simulated network in virtual time, faults drawn from the seed, a healing phase, and the
 * invariant and linearizability checks. A failing seed prints its broken check and the
 * last lines of its trace; run it again with --seed to replay it exactly.
 */
import { Worker } from 'node:worker_threads';
import { FAULT_KINDS, FAULT_PHASE_MS, runScenario, type FaultKind, type ScenarioOptions, type ScenarioResult } from '../src/sim/scenario.js';
import type { SeedOutcome, SeedWorkerData } from '../src/sim/seed-worker.js';
import { failWith, readFlags, type Fail } from '../src/cli/flags.js';
import { CLOCK_OFFSET_MAX_MS } from '../src/sim/world.js';

const USAGE = `usage: npm run sim -- [options]
  --seed S            run the one scenario of seed S and print its trace hash
  --seeds N           run N scenarios, seeds --from, --from + 1, ... (default 1 from 1)
  --from S            the first seed of --seeds (default 1)
  --jobs N            run N seeds at once, each in a worker thread of its own
                      (default 1: one core); results print in seed order, and a
                      seed's run and trace hash are the same in any thread
  --faults LIST       fault kinds to draw from, comma-separated (default all:
                      ${FAULT_KINDS.join(',')})
  --fault-phase-ms T  virtual time of the fault phase (default ${FAULT_PHASE_MS})
  --clock-offset-ms T each process's wall clock is off by up to T ms either way
                      (default ${CLOCK_OFFSET_MAX_MS})
  --trace             print the last trace lines of every seed, not only of failures
  --hashes            print every seed's whole trace hash and figures (to compare two builds)
  --keep-going        run every seed even after a failure
  --stacks            take stack traces in a run of --seeds too (a replay with --seed
                      takes them; without them the code under test runs faster, and
                      the trace and its hash are the same either way)
  --strict-expiry     fail a seed whose history needs a key seen expired to be live
                      again (the design allows it until the expiry delete; by default
                      such a seed is only reported)
  -h, --help          this text`;

const fail: Fail = failWith('sim', USAGE);
const values = readFlags(fail, USAGE, {
  seed: { type: 'string' },
  seeds: { type: 'string' },
  from: { type: 'string', default: '1' },
  jobs: { type: 'string', default: '1' },
  faults: { type: 'string', default: FAULT_KINDS.join(',') },
  'fault-phase-ms': { type: 'string', default: String(FAULT_PHASE_MS) },
  'clock-offset-ms': { type: 'string', default: String(CLOCK_OFFSET_MAX_MS) },
  trace: { type: 'boolean', default: false },
  hashes: { type: 'boolean', default: false },
  'keep-going': { type: 'boolean', default: false },
  stacks: { type: 'boolean', default: false },
  'strict-expiry': { type: 'boolean', default: false },
});

const integer = (flag: string, text: string | undefined, low: number): number => {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < low) fail(`--${flag} must be an integer of at least ${low}, not "${text}"`);
  return value;
};
const faults = values.faults.split(',').filter(Boolean) as FaultKind[];
for (const kind of faults) if (!FAULT_KINDS.includes(kind)) fail(`unknown fault kind "${kind}"`);
if (values.seed !== undefined && values.seeds !== undefined) fail('give --seed or --seeds, not both');
const first = values.seed !== undefined ? integer('seed', values.seed, 0) : integer('from', values.from, 0);
const count = values.seeds !== undefined ? integer('seeds', values.seeds, 1) : 1;
const faultPhaseMs = integer('fault-phase-ms', values['fault-phase-ms'], 0);
const clockOffsetMaxMs = integer('clock-offset-ms', values['clock-offset-ms'], 0);
const jobs = integer('jobs', values.jobs, 1);
const options: Omit<ScenarioOptions, 'seed'> = { faults, faultPhaseMs, clockOffsetMaxMs, strictExpiry: values['strict-expiry'] };
// The code under test throws a KvError for every CONFLICT and closed connection, and V8
// walks the stack for each: 5% of a run. Only the report of an exception reads a stack.
const stacks = values.stacks || values.seed !== undefined;
if (!stacks) Error.stackTraceLimit = 0;

function report(result: ScenarioResult, millis: number): void {
  const { stats } = result;
  const line = `seed ${result.seed}: ${result.failure ? `FAILED ${result.failure.check}` : 'ok'} · ${stats.ops} ops (${stats.acked} ok, ${stats.conflicts} conflicts, ${stats.unknown} unknown), ${stats.faults} faults, linearizability ${stats.linearizability}, ${stats.events} events, ${(stats.virtualMs / 1000).toFixed(1)} s virtual in ${millis.toFixed(0)} ms · trace ${result.traceHash.slice(0, 16)}`;
  console.log(line);
  if (result.failure || values.trace) {
    console.log(result.lastLines.map((text) => `    ${text}`).join('\n'));
  }
  if (result.failure) {
    console.log(`  ${result.failure.check}: ${result.failure.message}`);
    if (result.failure.where !== undefined) console.log(result.failure.where);
    else if (!stacks && result.failure.check === 'I5') console.log('  (no stack trace in a run of --seeds: the replay takes them)');
    console.log(`  replay: npm run sim -- --seed ${result.seed}`);
  }
}

/** Each seed's result in seed order, run here one after another. */
async function* inThisThread(seeds: readonly number[]): AsyncGenerator<SeedOutcome> {
  for (const seed of seeds) {
    const seedStarted = performance.now();
    const result = await runScenario({ ...options, seed });
    yield { seed, result, millis: performance.now() - seedStarted };
  }
}

/**
 * Each seed's result in seed order, run in `jobs` worker threads: a worker is handed the
 * next seed as it posts a result. Leaving the loop early (a failure) ends the workers.
 */
async function* inWorkers(seeds: readonly number[]): AsyncGenerator<SeedOutcome> {
  const workerData: SeedWorkerData = { options, stackTraceLimit: Error.stackTraceLimit };
  const arrived = new Map<number, SeedOutcome>();
  let handedOut = 0;
  let broken: Error | undefined;
  let wake: () => void = () => {};
  const workers = Array.from({ length: Math.min(jobs, seeds.length) }, () => new Worker(new URL('../src/sim/seed-worker.js', import.meta.url), { workerData }));
  const handOut = (worker: Worker) => {
    if (handedOut < seeds.length) worker.postMessage(seeds[handedOut++]);
  };
  for (const worker of workers) {
    worker.on('message', (outcome: SeedOutcome) => {
      arrived.set(outcome.seed, outcome);
      handOut(worker);
      wake();
    });
    worker.on('error', (error) => {
      broken ??= error;
      wake();
    });
    worker.on('exit', (code) => {
      broken ??= new Error(`a worker thread exited (code ${code}) with seeds left to run`);
      wake();
    });
    handOut(worker);
  }
  try {
    for (const seed of seeds) {
      for (;;) {
        const outcome = arrived.get(seed);
        if (outcome) {
          arrived.delete(seed);
          yield outcome;
          break;
        }
        if (broken) throw broken;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    }
  } finally {
    for (const worker of workers) worker.removeAllListeners('exit');
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

let passed = 0;
let failed = 0;
let undecided = 0;
const reappeared: number[] = [];
const started = performance.now();
const seeds = Array.from({ length: count }, (_, index) => first + index);
for await (const { seed, result, millis } of jobs > 1 && count > 1 ? inWorkers(seeds) : inThisThread(seeds)) {
  if (result.failure) failed += 1;
  else passed += 1;
  if (result.stats.linearizability === 'undecided') undecided += 1;
  if (result.stats.strictExpiry === 'reappeared') {
    reappeared.push(seed);
    if (!result.failure) console.log(`seed ${seed}: ok, but a key seen expired was live again (the design allows it until the expiry delete; --strict-expiry fails it)${values.trace || count === 1 ? `:\n${result.reappeared}` : ''}`);
  }
  if (count === 1 || result.failure || values.trace) report(result, millis);
  if (values.hashes) console.log(`seed ${seed} trace ${result.traceHash} ${JSON.stringify(result.stats)}`);
  if (result.failure && !values['keep-going']) break;
}
const seconds = (performance.now() - started) / 1000;
console.log(`${passed + failed} seeds in ${seconds.toFixed(1)} s${jobs > 1 && count > 1 ? ` (${Math.min(jobs, count)} worker threads)` : ''}: ${((passed + failed) / seconds).toFixed(2)} seeds/s; ${undecided} with linearizability undecided; ${reappeared.length} where a key seen expired was live again${reappeared.length > 0 ? ` (${reappeared.slice(0, 20).join(', ')})` : ''}`);
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
