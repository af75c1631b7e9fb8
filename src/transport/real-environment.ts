/** The real world: WebSockets, the process clock, and crypto-grade challenges. */
import { randomBytes } from 'node:crypto';
import { asyncScheduler } from 'rxjs';
import { wsTransport } from './ws-transport.js';
import type { Clock, Environment, Random } from '../env/environment.js';

export const realClock: Clock = {
  now: () => Date.now(),
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
