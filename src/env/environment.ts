/**
 * What pbkv's node, hub and client take from the world, passed in rather than reached for:
 * the network (a Transport), time (a Clock, and the RxJS scheduler their `timeout` and
 * `timer` run on) and randomness. Real runs pass `realEnvironment`; the simulator passes a
 * seeded network, virtual time and a seeded generator, so one seed replays one run exactly.
 */
import { Subscription, type SchedulerAction, type SchedulerLike } from 'rxjs';
import type { Transport } from './transport.js';

/** Cancels what was scheduled; calling it again, or after it ran, does nothing. */
export type Cancel = () => void;

export interface Clock {
  /**
   * Monotonic milliseconds, only ever compared with other readings of the same clock:
   * durations, timeouts and leases. It never jumps when the wall clock is set.
   */
  now(): number;
  /**
   * Wall-clock time, Unix milliseconds: timestamps shown to people (and, later, expiry).
   * It may jump either way when the system time is set, so nothing is timed with it.
   */
  wallNow(): number;
  /** Runs `callback` once, `ms` from now. */
  after(ms: number, callback: () => void): Cancel;
  /** The same time, for RxJS operators (`timeout`, `timer`, `retry`'s delays). */
  readonly scheduler: SchedulerLike;
}

export interface Random {
  /** Uniform in [0, 1): backoff jitter. */
  fraction(): number;
  /** `bytes` random bytes as hex: challenges, which must be unpredictable in real runs. */
  hex(bytes: number): string;
}

export interface Environment {
  readonly transport: Transport;
  readonly clock: Clock;
  readonly random: Random;
}

/**
 * An RxJS scheduler over a Clock: every delayed action is one `clock.after`. Rescheduling
 * an action (what `timer` and `timeout` do for their next period) cancels its pending run.
 */
export function clockScheduler(clock: Pick<Clock, 'now' | 'after'>): SchedulerLike {
  return {
    now: () => clock.now(),
    schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay = 0, state?: T): Subscription {
      return new ClockAction<T>(clock, work).schedule(state, delay);
    },
  };
}

class ClockAction<T> extends Subscription implements SchedulerAction<T> {
  private cancel: Cancel | undefined;

  constructor(
    private readonly clock: Pick<Clock, 'after'>,
    private readonly work: (this: SchedulerAction<T>, state?: T) => void,
  ) {
    super(() => this.cancel?.());
  }

  schedule(state?: T, delay = 0): Subscription {
    if (this.closed) return this;
    this.cancel?.();
    this.cancel = this.clock.after(delay, () => {
      this.cancel = undefined;
      if (!this.closed) this.work.call(this, state);
    });
    return this;
  }
}
