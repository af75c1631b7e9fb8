import { timer, type Observable } from 'rxjs';
import { RETRY_DELAY_FIRST_MS, RETRY_DELAY_MAX_MS } from './constants.js';

/** Exponential backoff with full jitter: the delay before retry number `attempt` (1-based). */
export function backoffDelayMs(attempt: number, firstMs = RETRY_DELAY_FIRST_MS, maxMs = RETRY_DELAY_MAX_MS): number {
  const ceiling = Math.min(maxMs, firstMs * 2 ** Math.min(attempt - 1, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** For rxjs `retry({ delay })`. */
export function backoff(_error: unknown, attempt: number): Observable<0> {
  return timer(backoffDelayMs(attempt));
}
