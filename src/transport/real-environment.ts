/** The real world: WebSockets, the process's clocks, and crypto-grade challenges. */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { asyncScheduler } from 'rxjs';
import { wsTransport } from './ws-transport.js';
import type { Clock, Environment, Random } from '../env/environment.js';

export const realClock: Clock = {
  // Monotonic, and near the wall time at the process's start, so readings still look like timestamps.
  now: () => performance.timeOrigin + performance.now(),
  wallNow: () => Date.now(),
  after(ms, callback) {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
  scheduler: asyncScheduler,
};

export const realRandom: Random = {
  fraction: () => Math.random(),
  hex: (bytes) => randomBytes(bytes).toString('hex'),
};

export const realEnvironment: Environment = { transport: wsTransport, clock: realClock, random: realRandom };
