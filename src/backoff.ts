import { timer, type Observable } from 'rxjs';
import { RETRY_DELAY_FIRST_MS, RETRY_DELAY_MAX_MS } from './constants.js';
import type { Environment } from './env/environment.js';

/** Exponential backoff with jitter: a random delay between half and all of a ceiling that doubles from firstMs to maxMs, before retry number `attempt` (1-based). */
export function backoffDelayMs(attempt: number, fraction: number, firstMs = RETRY_DELAY_FIRST_MS, maxMs = RETRY_DELAY_MAX_MS): number {
  const ceiling = Math.min(maxMs, firstMs * 2 ** Math.min(attempt - 1, 16));
  return ceiling / 2 + fraction * (ceiling / 2);
}

/** For rxjs `retry({ delay })`: the backoff on the environment's clock and randomness. */
export function backoff(env: Pick<Environment, 'clock' | 'random'>): (error: unknown, attempt: number) => Observable<0> {
  return (_error, attempt) => timer(backoffDelayMs(attempt, env.random.fraction()), env.clock.scheduler);
}
