/**
 * A worker thread of `npm run sim -- --jobs N`: it runs the seeds its parent sends, one at
 * a time, and posts each one's result back. A seed's run depends on nothing but its seed
 * and options (a new world each time), so it gives the same result, trace hash included,
 * in any thread and after any other seed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { assert } from '../errors.js';
import { runScenario, type ScenarioOptions, type ScenarioResult } from './scenario.js';

/** What the parent hands every worker. */
export interface SeedWorkerData {
  options: Omit<ScenarioOptions, 'seed'>;
  /** Error.stackTraceLimit in the worker, as the parent has it. */
  stackTraceLimit: number;
}

/** A seed's result as the worker posts it, with the milliseconds it took. */
export interface SeedOutcome {
  seed: number;
  result: ScenarioResult;
  millis: number;
}

const port = parentPort;
assert(port, 'seed-worker runs in a worker thread');
const { options, stackTraceLimit } = workerData as SeedWorkerData;
Error.stackTraceLimit = stackTraceLimit;
port.on('message', (seed: number) => {
  const started = performance.now();
  void runScenario({ ...options, seed }).then((result) => port.postMessage({ seed, result, millis: performance.now() - started } satisfies SeedOutcome));
});
