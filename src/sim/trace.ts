/**
 * What a run writes down: every line of what happened, hashed so that a replay can be told
 * identical, and the first check it broke.
 */
import { createHash } from 'node:crypto';
import type { SimWorld } from './world.js';

/** A broken check. The world throws it out of its run, so the run stops where it broke. */
export class Violation extends Error {
  constructor(
    readonly check: string,
    message: string,
    /** Where an exception was thrown: reported, but not traced (see Verdict.fail). */
    readonly where?: string,
  ) {
    super(message);
  }
}

/** Every line of what happened, hashed; the last ones kept to print. */
export class Trace {
  private readonly hash = createHash('sha256');
  readonly lines: string[] = [];

  constructor(
    private readonly world: SimWorld,
    private readonly kept: number,
  ) {}

  log(line: string): void {
    const text = `${this.world.nowMs.toFixed(3).padStart(10)} ${line}`;
    this.hash.update(text).update('\n');
    this.lines.push(text);
    if (this.lines.length > this.kept * 2) this.lines.splice(0, this.lines.length - this.kept);
  }

  digest(): string {
    return this.hash.digest('hex');
  }

  last(): string[] {
    return this.lines.slice(-this.kept);
  }
}

/**
 * The run's verdict: the first broken check. Only the first counts, because what breaks
 * after it may only follow from it.
 */
export class Verdict {
  private first: Violation | undefined;

  constructor(
    private readonly world: SimWorld,
    private readonly trace: Trace,
  ) {}

  get violation(): Violation | undefined {
    return this.first;
  }

  /**
   * Logged, and the world stops at its next step. An arrow, to be handed to callbacks.
   * `where` (a stack) is kept out of the trace: a run with stack traces turned off
   * (stackTraceLimit) hashes the same as one with them.
   */
  readonly fail = (check: string, message: string, where?: string): void => {
    if (this.first) return;
    this.first = new Violation(check, message, where);
    this.trace.log(`VIOLATION ${check}: ${message}`);
    this.world.fail(this.first);
  };

  /**
   * A check judged once the world has stopped (the history's linearizability). Not logged:
   * the trace, and so its hash, is the run itself, and the run is over.
   */
  judged(check: string, message: string): void {
    this.first ??= new Violation(check, message);
  }
}

export type Fail = Verdict['fail'];

/** An exception's first line for the trace, and where it was thrown (its stack frames, if any were taken) for the report. */
export function thrown(error: unknown): { said: string; where: string | undefined } {
  if (!(error instanceof Error)) return { said: String(error), where: undefined };
  const frames = error.stack?.split('\n').filter((line) => line.trimStart().startsWith('at ')) ?? [];
  return { said: String(error), where: frames.length > 0 ? frames.join('\n') : undefined };
}
