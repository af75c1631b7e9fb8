/**
 * The simulator's world: virtual time, one queue of events, and one seeded generator.
 * Everything a simulated process does happens in an event (a timer firing, a frame
 * arriving); between two events every promise continuation runs to completion, so one
 * seed always gives the same order of everything. Time jumps from event to event: an
 * idle minute costs nothing.
 *
 * A process is a name, an address and a generation. Its clock only fires while the
 * generation that scheduled a timer is alive: a crash ends the generation, so the code of
 * a dead process never runs again, and a restart starts a new one.
 *
 * Every generation's wall clock (`wallNow`, what expiry is judged on) is off from every
 * other's by a seeded offset of up to `clockOffsetMaxMs` either way, drawn anew at each
 * restart: a new primary's wall clock may be behind the old one's. Its monotonic clock
 * (`now`, what leases and timeouts use) is the virtual time itself: clocks differ, but
 * run at one rate.
 */
import { assert } from '../errors.js';
import { clockScheduler, type Cancel, type Clock, type Random } from '../env/environment.js';

/** Wall clocks start here (Unix ms, 2026-01-01), so a wall time is never near 0. */
export const WALL_CLOCK_START_MS = Date.UTC(2026, 0, 1);
/** How far a process's wall clock may be off the virtual time, either way, unless told otherwise. */
export const CLOCK_OFFSET_MAX_MS = 500;

interface Event {
  atMs: number;
  order: number;
  /**
   * Undefined once cancelled: a cancelled timer (most are: every request's timeout) waits
   * in the queue until its time, but what it would have run, and all that holds on to, is
   * garbage at once rather than promoted to the old generation.
   */
  run: (() => void) | undefined;
}

/** sfc32 seeded through splitmix32: small, fast, and good enough for a test bed. */
export class SeededRandom implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let state = seed >>> 0;
    const next = () => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i += 1) this.uint32();
  }

  uint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) >>> 0;
    return t;
  }

  fraction(): number {
    return this.uint32() / 2 ** 32;
  }

  /** An integer in [low, high]. */
  int(low: number, high: number): number {
    return low + Math.floor(this.fraction() * (high - low + 1));
  }

  chance(probability: number): boolean {
    return this.fraction() < probability;
  }

  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, 'pick from a non-empty list');
    return items[this.int(0, items.length - 1)]!;
  }

  hex(bytes: number): string {
    let text = '';
    for (let i = 0; i < bytes; i += 1) text += this.int(0, 255).toString(16).padStart(2, '0');
    return text;
  }
}

/** A min-heap of events by time, then by the order they were scheduled in. */
class EventQueue {
  private readonly heap: Event[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): Event | undefined {
    return this.heap[0];
  }

  /** Sifts the new event up from the end: the parents it goes before move down into the hole. */
  push(event: Event): void {
    const heap = this.heap;
    let index = heap.length;
    heap.push(event);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const above = heap[parent]!;
      if (!before(event, above)) break;
      heap[index] = above;
      index = parent;
    }
    heap[index] = event;
  }

  /** Takes the first event; the last one sifts down from the top, the earlier child moving up into the hole. */
  pop(): Event | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    const length = heap.length;
    if (length === 0 || last === undefined) return top;
    let index = 0;
    for (;;) {
      const left = index * 2 + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && before(heap[right]!, heap[left]!) ? right : left;
      const below = heap[child]!;
      if (!before(below, last)) break;
      heap[index] = below;
      index = child;
    }
    heap[index] = last;
    return top;
  }
}

function before(a: Event, b: Event): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

/**
 * Events run in batches of this many immediates per turn of Node's event loop. Node runs
 * every promise continuation between two immediates, so each event still sees the last
 * one's settle; a turn per event cost more than the events themselves.
 */
const EVENTS_PER_TURN = 256;

/** Why a run of events stopped: `done` held, nothing is due before its end, or a check broke. */
type Stop = 'done' | 'idle' | 'failed';

export class SimProcess {
  private generationNumber = 0;
  private alive = true;
  clock: Clock;
  /** The wall-clock offset of each generation so far, the current one last. */
  private readonly offsetsMs: number[] = [];

  constructor(
    private readonly world: SimWorld,
    readonly name: string,
    readonly address: string,
  ) {
    this.clock = this.newClock();
  }

  /** How far this generation's wall clock is ahead of the virtual time (behind if negative). */
  get clockOffsetMs(): number {
    return this.offsetsMs.at(-1)!;
  }

  /** The offsets of every generation so far. */
  get clockOffsetsMs(): readonly number[] {
    return this.offsetsMs;
  }

  get isAlive(): boolean {
    return this.alive;
  }

  get generation(): number {
    return this.generationNumber;
  }

  /** The process dies: none of its timers fires again. */
  crash(): void {
    this.alive = false;
    this.generationNumber += 1;
  }

  /** A new life: a fresh clock (the old one stays dead). */
  restart(): void {
    assert(!this.alive, `${this.name} is running`);
    this.alive = true;
    this.clock = this.newClock();
  }

  private newClock(): Clock {
    const generation = this.generationNumber;
    const world = this.world;
    const offsetMs = world.random.int(-world.clockOffsetMaxMs, world.clockOffsetMaxMs);
    this.offsetsMs.push(offsetMs);
    const base = {
      now: () => world.nowMs,
      after: (ms: number, callback: () => void): Cancel =>
        world.schedule(ms, () => {
          if (this.alive && this.generationNumber === generation) callback();
        }),
    };
    // Whole milliseconds, as Date.now() gives: the wire carries expiry times as integers.
    const wallNow = () => Math.floor(WALL_CLOCK_START_MS + world.nowMs + offsetMs);
    return { ...base, wallNow, scheduler: clockScheduler(base) };
  }
}

export class SimWorld {
  readonly random: SeededRandom;
  private readonly queue = new EventQueue();
  private order = 0;
  private now = 0;
  private eventsRun = 0;
  /** Thrown by an event's code: the simulation stops and reports it. */
  private failure: unknown;

  constructor(
    readonly seed: number,
    /** How far each process's wall clock may be off the virtual time, either way. */
    readonly clockOffsetMaxMs = CLOCK_OFFSET_MAX_MS,
  ) {
    this.random = new SeededRandom(seed);
  }

  get nowMs(): number {
    return this.now;
  }

  get events(): number {
    return this.eventsRun;
  }

  schedule(delayMs: number, run: () => void): Cancel {
    // Tested before the message is built: every timer and every frame is scheduled here.
    if (!Number.isFinite(delayMs)) assert(false, `a delay is a finite number (${delayMs})`);
    const event: Event = { atMs: this.now + Math.max(0, delayMs), order: this.order++, run };
    this.queue.push(event);
    return () => {
      event.run = undefined;
    };
  }

  process(name: string, address: string): SimProcess {
    return new SimProcess(this, name, address);
  }

  /** Records an exception thrown where nothing catches it (an event, an unhandled rejection). */
  fail(error: unknown): void {
    this.failure ??= error;
  }

  /** Runs events until `untilMs` of virtual time, or until `done` holds after an event. */
  async run(untilMs: number, done?: () => boolean): Promise<boolean> {
    const stop = await this.runEvents(untilMs, done);
    if (this.failure !== undefined) throw this.failure;
    if (stop === 'done') return true;
    this.now = Math.max(this.now, untilMs);
    return done?.() ?? false;
  }

  /**
   * Each event in an immediate of its own, EVENTS_PER_TURN to a turn of the event loop:
   * between two immediates Node runs every promise continuation queued so far (no real
   * I/O is pending in a simulation), so all of an event's continuations settle before the
   * next event, as they would with a turn per event.
   */
  private runEvents(untilMs: number, done: (() => boolean) | undefined): Promise<Stop> {
    return new Promise((resolve, reject) => {
      let stopped = false;
      const step = () => {
        if (stopped) return;
        try {
          const stop = this.step(untilMs, done);
          if (stop === undefined) return;
          stopped = true;
          resolve(stop);
        } catch (error) {
          stopped = true;
          reject(error);
        }
      };
      const turn = () => {
        for (let i = 0; i < EVENTS_PER_TURN; i += 1) setImmediate(step);
        setImmediate(() => {
          if (!stopped) turn();
        });
      };
      turn();
    });
  }

  /** Runs the next event due; says why not when there is none to run. */
  private step(untilMs: number, done: (() => boolean) | undefined): Stop | undefined {
    if (this.failure !== undefined) return 'failed';
    if (done?.()) return 'done';
    let next = this.queue.peek();
    while (next !== undefined && next.run === undefined && next.atMs <= untilMs) {
      this.queue.pop();
      next = this.queue.peek();
    }
    if (next?.run === undefined || next.atMs > untilMs) return 'idle';
    const { run } = next;
    this.queue.pop();
    this.now = next.atMs;
    this.eventsRun += 1;
    try {
      run();
    } catch (error) {
      this.fail(error);
    }
    return undefined;
  }
}
