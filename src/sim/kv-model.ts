/**
 * The model a key's history is held to (PROTOCOL.md, "Versions, conditional writes,
 * counters, expiry, listing"): the state of one key, and what each op does to it and may
 * answer. The linearizability check (linearizability.ts) searches for an order of a key's
 * ops that this model accepts.
 *
 * The state is (value, version, expiry) when present, plus the highest seq a write of the
 * key has taken so far (`seqFloor`): writes take seqs in the order they take effect, so
 * each write's version is above every earlier one's. What the model cannot know it keeps
 * as a range and narrows as ops observe it:
 * - the version of a write whose reply was lost (its least possible value until an op
 *   reads it);
 * - the expiry of a put with `ttlMs`, judged on the primary's wall clock (`expires`);
 * - the wall time each op was judged at: some time from its call to its return (or, for
 *   an op whose outcome is unknown, to when it took effect), read on the clock of the
 *   node that judged it, which may be off the history's time by the op's clock offsets.
 * Each op's judge time is its own unknown: two primaries' clocks disagree, so the model
 * does not order them (a new primary's clock may be behind the old one's).
 *
 * Expiry: a key is live while its judge time is before its expiry; an expired key is
 * absent to every read, condition and incr, and stays stored until the primary's expiry
 * delete (`expire`), a write that may take effect at any point once some primary's clock
 * has reached the expiry. The design replicates a watermark with those deletes, so a new
 * primary never judges below a delete it holds; before the delete, a primary whose clock
 * is behind may see the key live again. `strict` models the stronger promise that a key
 * once seen expired never reappears, to tell whether a history needed that gap.
 */
import { assert } from '../errors.js';

export type Value = string | number;

/** What a client sent. Times (`expiresAt`) are in the history's time, as call and return are. */
export type KvOp =
  | { kind: 'get'; key: string }
  | { kind: 'put'; key: string; value: string; ifVersion?: number; ttlMs?: number; expiresAt?: number }
  | { kind: 'del'; key: string; ifVersion?: number }
  | { kind: 'incr'; key: string; by: number; ifVersion?: number; ttlMs?: number };

/**
 * What the client saw. 'ok' carries the reply's fields: a get's `found` (and `value`,
 * `version`, `expiresAt` when found), a put's `version`, a del's `found` and `version`, an
 * incr's `value` and `version`. 'conflict': an `ifVersion` that did not hold, with the key's
 * `found` and `version`; nothing was written. 'unknown': timed out, UNAVAILABLE, or the
 * connection dropped: the op may have taken effect at any point after its call, or never.
 */
export type KvOutcome =
  | { status: 'ok'; found?: boolean; value?: Value; version?: number; expiresAt?: number }
  | { status: 'conflict'; found: boolean; version: number }
  | { status: 'unknown' };

/** A range of times (inclusive): what the model knows of a wall time. */
export interface TimeRange {
  readonly lo: number;
  readonly hi: number;
}

export interface KeyState {
  readonly present: boolean;
  /** When present. */
  readonly value: Value;
  /** When present: the version, or while `versionKnown` is false the least it can be. */
  readonly version: number;
  readonly versionKnown: boolean;
  /** When present and expiring: the range its expiry time lies in. */
  readonly expires: TimeRange | undefined;
  /** Strict model only: some op saw this value expired, so none may see it live again. */
  readonly expiredSeen: boolean;
  /** The highest seq a write of this key took so far (or the least it can be). */
  readonly seqFloor: number;
}

/**
 * The value of a put whose value no get reads: such values show only as presence and
 * version, so the search takes all of them as this one (no op writes it).
 */
export const UNREAD_VALUE = '\u0000unread';

export const INITIAL_STATE: KeyState = { present: false, value: '', version: 0, versionKnown: true, expires: undefined, expiredSeen: false, seqFloor: 0 };

export interface ModelOptions {
  /** The stronger promise: a key seen expired is never live again (see the file comment). */
  strict: boolean;
  /** Versions acknowledged to known writes, of any key: no other write took them. */
  claimed: ReadonlySet<number>;
}

/** One op as the model takes it: what was sent, what came back, and when it was judged. */
export interface ModelStep {
  readonly op: KvOp;
  readonly outcome: KvOutcome;
  /** The wall time the op was judged at lies in [judgedFromMs, judgedToMs]. */
  readonly judgedFromMs: number;
  readonly judgedToMs: number;
}

/** How an op sees the key: live (its value and version count) or absent (version 0). */
interface View {
  live: boolean;
  /** The state, narrowed by what seeing it so requires. */
  state: KeyState;
}

/**
 * The states after `step`, each one way it can go; none if its outcome cannot follow
 * `state`. An op of unknown outcome yields only the ways it changes the state when it
 * takes effect (one that conflicts changes nothing, which the search gets by leaving it out).
 */
export function applyStep(state: KeyState, step: ModelStep, options: ModelOptions): KeyState[] {
  const results: KeyState[] = [];
  for (const view of viewsOf(state, step, options)) {
    const after = afterView(view, step, options);
    if (after !== undefined) results.push(after);
  }
  return results;
}

/** The primary's expiry delete of the value held, if some primary's clock may have reached its expiry by `latestMs`. */
export function expire(state: KeyState, latestMs: number): KeyState | undefined {
  if (!state.present || state.expires === undefined || state.expires.lo > latestMs) return undefined;
  return absentAfterWrite(state, state.seqFloor + 1);
}

function viewsOf(state: KeyState, step: ModelStep, options: ModelOptions): View[] {
  if (!state.present) return [{ live: false, state }];
  const { expires } = state;
  if (expires === undefined) return [{ live: true, state }];
  const views: View[] = [];
  // Live: judged before the expiry, so the expiry is after the earliest judge time.
  if (expires.hi > step.judgedFromMs && !(options.strict && state.expiredSeen)) {
    views.push({ live: true, state: withExpires(state, { lo: Math.max(expires.lo, step.judgedFromMs), hi: expires.hi }) });
  }
  // Expired: judged at or after the expiry, so the expiry is at or before the latest judge time.
  if (expires.lo <= step.judgedToMs) {
    const narrowed = withExpires(state, { lo: expires.lo, hi: Math.min(expires.hi, step.judgedToMs) });
    views.push({ live: false, state: options.strict ? { ...narrowed, expiredSeen: true } : narrowed });
  }
  return views;
}

function afterView(view: View, step: ModelStep, options: ModelOptions): KeyState | undefined {
  const { op, outcome } = step;
  if (outcome.status === 'conflict') return conflicted(view, op, outcome, options);
  const known = outcome.status === 'ok';
  switch (op.kind) {
    case 'get': {
      if (!known) return undefined; // a read of unknown outcome changes nothing
      if (!view.live) return outcome.found === false ? view.state : undefined;
      if (outcome.found !== true || outcome.value !== view.state.value) return undefined;
      const read = withVersion(view.state, outcome.version!, options);
      return read === undefined ? undefined : withExpiryRead(read, outcome.expiresAt);
    }
    case 'put': {
      const held = conditionHeld(view, op.ifVersion, options);
      if (held === undefined) return undefined;
      const expires = expiryOfWrite(op, step);
      if (expires === null) return undefined;
      return presentAfterWrite(held, op.value, expires, known ? outcome.version! : undefined);
    }
    case 'del': {
      const held = conditionHeld(view, op.ifVersion, options);
      if (held === undefined) return undefined;
      if (!known) {
        // Deleting what is already gone only takes a seq; only an expired value's removal shows.
        return held.present ? absentAfterWrite(held, held.seqFloor + 1) : undefined;
      }
      if (outcome.found !== view.live || outcome.version! <= held.seqFloor) return undefined;
      return absentAfterWrite(held, outcome.version!);
    }
    case 'incr': {
      const held = conditionHeld(view, op.ifVersion, options);
      if (held === undefined) return undefined;
      const before = view.live ? held.value : 0;
      if (typeof before !== 'number') return undefined; // BAD_REQUEST: nothing written
      const value = before + op.by;
      if (known && outcome.value !== value) return undefined;
      // An incr without an expiry keeps a live key's; one with an expiry sets it.
      const expires = op.ttlMs === undefined ? (view.live ? held.expires : undefined) : ttlRange(op.ttlMs, step);
      return presentAfterWrite(held, value, expires, known ? outcome.version! : undefined);
    }
  }
}

/** A CONFLICT: the op saw the key as the error says, and its condition did not hold. */
function conflicted(view: View, op: KvOp, outcome: Extract<KvOutcome, { status: 'conflict' }>, options: ModelOptions): KeyState | undefined {
  if (op.kind === 'get' || op.ifVersion === undefined) return undefined;
  if (outcome.found !== view.live) return undefined;
  if (!view.live) return outcome.version === 0 && op.ifVersion !== 0 ? view.state : undefined;
  if (outcome.version === op.ifVersion) return undefined;
  return withVersion(view.state, outcome.version, options);
}

/** The state once `ifVersion` held (0: the key is absent or expired), or undefined. */
function conditionHeld(view: View, ifVersion: number | undefined, options: ModelOptions): KeyState | undefined {
  if (ifVersion === undefined) return view.state;
  if (!view.live) return ifVersion === 0 ? view.state : undefined;
  return ifVersion === 0 ? undefined : withVersion(view.state, ifVersion, options);
}

/** A live state whose version is `version`: as it is, or with an unknown version learned. */
function withVersion(state: KeyState, version: number, options: ModelOptions): KeyState | undefined {
  if (state.versionKnown) return state.version === version ? state : undefined;
  if (version < state.version || options.claimed.has(version)) return undefined;
  return { ...state, version, versionKnown: true, seqFloor: Math.max(state.seqFloor, version) };
}

/** A get that reports the expiry (or none): the state's expiry must allow it. */
function withExpiryRead(state: KeyState, expiresAt: number | undefined): KeyState | undefined {
  const { expires } = state;
  if (expiresAt === undefined) return expires === undefined ? state : undefined;
  if (expires === undefined || expiresAt < expires.lo || expiresAt > expires.hi) return undefined;
  return withExpires(state, { lo: expiresAt, hi: expiresAt });
}

/** A put's expiry: a range, none, or null when an `expiresAt` was not in the future where it was judged. */
function expiryOfWrite(op: Extract<KvOp, { kind: 'put' }>, step: ModelStep): TimeRange | undefined | null {
  if (op.ttlMs !== undefined) return ttlRange(op.ttlMs, step);
  if (op.expiresAt === undefined) return undefined;
  // The primary refuses an expiresAt at or before its time: it judged before it.
  return op.expiresAt > step.judgedFromMs ? { lo: op.expiresAt, hi: op.expiresAt } : null;
}

function ttlRange(ttlMs: number, step: ModelStep): TimeRange {
  return { lo: step.judgedFromMs + ttlMs, hi: step.judgedToMs + ttlMs };
}

/** A write's new version: the one acknowledged (above every earlier one), or for an unknown outcome the next it can be. */
function presentAfterWrite(state: KeyState, value: Value, expires: TimeRange | undefined, version: number | undefined): KeyState | undefined {
  if (version !== undefined && version <= state.seqFloor) return undefined;
  const seq = version ?? state.seqFloor + 1;
  return { present: true, value, version: seq, versionKnown: version !== undefined, expires, expiredSeen: false, seqFloor: seq };
}

function absentAfterWrite(state: KeyState, seq: number): KeyState {
  assert(seq > state.seqFloor, `a write's seq ${seq} is above ${state.seqFloor}`);
  return { ...INITIAL_STATE, seqFloor: seq };
}

function withExpires(state: KeyState, expires: TimeRange): KeyState {
  return { ...state, expires };
}

/** The state as one string: equal strings, equal states (the search's memo). */
export function stateKey(state: KeyState): string {
  const expires = state.expires === undefined ? '' : `${state.expires.lo},${state.expires.hi}`;
  const present = state.present ? `${JSON.stringify(state.value)}@${state.version}${state.versionKnown ? '' : '?'}~${expires}${state.expiredSeen ? '!' : ''}` : '-';
  return `${present}|${state.seqFloor}`;
}

/** The state for people: `absent`, or `"v"@12`, with what is known of its expiry. */
export function describeState(state: KeyState): string {
  if (!state.present) return 'absent';
  const version = state.versionKnown ? `@${state.version}` : `@${state.version}+ (version not yet read)`;
  const { expires } = state;
  const expiry = expires === undefined ? '' : expires.lo === expires.hi ? `, expiring at ${expires.lo}ms` : `, expiring between ${expires.lo}ms and ${expires.hi}ms`;
  const value = state.value === UNREAD_VALUE ? '(a value no get read)' : JSON.stringify(state.value);
  return `${value}${version}${expiry}${state.expiredSeen ? ', seen expired' : ''}`;
}
