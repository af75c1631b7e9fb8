/**
 * A linearizability checker for the histories the simulator records, after Porcupine (the
 * Wing–Gong–Lowe search with a cache of configurations, each key checked on its own since
 * a key-value store is linearizable iff every key is) and Knossos (ops whose outcome the
 * client never learned). The model each key is held to, versions, conditions, counters and
 * expiry included, is kv-model.ts.
 *
 * Versions make most of the order known: every acknowledged write names the seq it took,
 * seqs grow in the order writes take effect, and every read names the version it saw. So
 * the search places acknowledged writes in version order only, and a read of a version
 * only while that version is held; what is left to search is where the ops of unknown
 * outcome took effect (if at all), where the primary's expiry deletes did, and which reads
 * of "absent" saw a key expired rather than deleted.
 *
 * Before searching, cheap necessary conditions are checked (`findDirectViolation`): two
 * writes acknowledged at one version, a read of a version some other write took, a version
 * older than one an op that completed earlier saw, a value never written. A failure found
 * so is reported at once with the ops that prove it.
 */
import { assert } from '../errors.js';
import { applyStep, describeState, expire, INITIAL_STATE, stateKey, UNREAD_VALUE, type KeyState, type KvOp, type KvOutcome, type ModelOptions, type ModelStep, type Value } from './kv-model.js';

export type { KvOp, KvOutcome, Value } from './kv-model.js';

export interface HistoryEntry {
  client: number; // who issued it (for messages)
  id: number; // unique in the history (for messages)
  op: KvOp;
  callMs: number; // time the request was sent
  returnMs: number | undefined; // time the reply arrived; undefined for 'unknown'
  outcome: KvOutcome;
  /**
   * How far the wall clock the op was judged on (for expiry) may be off the history's time:
   * it read at least callMs + min and at most returnMs (or, for an unknown outcome, the
   * time it took effect) + max. Without it, { min: 0, max: 0 }.
   */
  clockOffsetMs?: { min: number; max: number };
}

export type CheckResult =
  | { ok: true; keys: number; ops: number }
  | { ok: false; key: string; explanation: string /* multi-line, readable: the ops of that key in call order with call/return times and outcomes, and the longest prefix that could be linearized and the op that could not follow */ }
  | { ok: 'undecided'; key: string; reason: string }; // the search hit its step budget

export interface CheckOptions {
  /** Search steps over the whole history before answering 'undecided'. */
  stepsMax?: number;
  /** Hold expiry to the stronger promise: a key once seen expired never reappears (kv-model.ts). */
  strict?: boolean;
}

/** Search steps (moves tried), over the whole history, before answering 'undecided'. */
export const linearizabilityStepsMaxDefault = 5_000_000;
/** A key with at most this many ops is listed whole in an explanation; a longer one is cut to the ops near the failure. */
const explanationOpsMax = 60;
/** How many of the last steps of the longest linearizable prefix an explanation shows. */
const explanationPrefixStepsMax = 20;

/**
 * Whether `history` is linearizable against the model of kv-model.ts, per key (initially
 * absent).
 *
 * Op a precedes op b in real time iff a.returnMs < b.callMs: ops whose times touch count
 * as concurrent, so a tie never produces a false alarm. Keys are checked in the order they
 * first appear, first all with the cheap checks, then each with the search; the first key
 * that fails, or exhausts the step budget, is the answer. Deterministic: the same history
 * gives the same result and explanation.
 */
export function checkLinearizable(history: readonly HistoryEntry[], options: CheckOptions = {}): CheckResult {
  const stepsMax = options.stepsMax ?? linearizabilityStepsMaxDefault;
  assert(Number.isSafeInteger(stepsMax) && stepsMax > 0, `stepsMax must be a positive integer, got ${stepsMax}`);
  const byKey = splitByKey(history);
  const versions = acknowledgedVersions(history);
  if (versions.duplicate !== undefined) {
    const [first, second] = versions.duplicate;
    return { ok: false, key: second.op.key, explanation: `two writes were acknowledged at version ${versionOf(second)}: #${first.id} (${describeOp(first)} on key ${JSON.stringify(first.op.key)}) and #${second.id} (${describeOp(second)} on key ${JSON.stringify(second.op.key)}).` };
  }
  const keys = byKey.map(([key, entries]) => buildKeyHistory(key, entries));
  for (const keyHistory of keys) {
    const violation = findDirectViolation(keyHistory, versions.writers);
    if (violation !== undefined) return { ok: false, key: keyHistory.key, explanation: explainViolation(keyHistory, violation) };
  }
  const model: ModelOptions = { strict: options.strict ?? false, claimed: new Set(versions.writers.keys()) };
  // An expiry delete is judged on some node's clock: as far ahead as any op's may be.
  const expiryOffsetMaxMs = Math.max(0, ...history.map((entry) => entry.clockOffsetMs?.max ?? 0));
  let stepsLeft = stepsMax;
  for (const keyHistory of keys) {
    const outcome = new KeySearch(keyHistory, model, expiryOffsetMaxMs).run(stepsLeft);
    stepsLeft -= outcome.steps;
    if (outcome.kind === 'fail') return { ok: false, key: keyHistory.key, explanation: explainSearchFailure(keyHistory, outcome) };
    if (outcome.kind === 'undecided') {
      const reason =
        `the search used the budget of ${stepsMax} steps (stepsMax) on key ${JSON.stringify(keyHistory.key)} before deciding; ` +
        `at best ${outcome.deepestCount} of its ${outcome.knownCount} ops with a known outcome were linearized`;
      return { ok: 'undecided', key: keyHistory.key, reason };
    }
  }
  return { ok: true, keys: keys.length, ops: history.length };
}

// ---------------------------------------------------------------------------------------
// The history of one key

interface KeyOp {
  readonly entry: HistoryEntry;
  /** Index in `KeyHistory.ops`. */
  readonly position: number;
  /** The outcome is ok or conflict. */
  readonly known: boolean;
  /** +Infinity when the outcome is unknown: it may take effect at any later time. */
  readonly returnMs: number;
  /** A known op that wrote: it took a seq, its version. */
  readonly writes: boolean;
  /** The version it wrote, or the version of the live key it saw; undefined if neither. */
  readonly seenVersion: number | undefined;
}

interface KeyHistory {
  readonly key: string;
  /** Every op of the key, in call order (history order among equal call times). */
  readonly ops: readonly KeyOp[];
}

function splitByKey(history: readonly HistoryEntry[]): [string, HistoryEntry[]][] {
  const byKey = new Map<string, HistoryEntry[]>();
  const ids = new Set<number>();
  for (const entry of history) {
    validateEntry(entry);
    assert(!ids.has(entry.id), `history entry id ${entry.id} is not unique`);
    ids.add(entry.id);
    let entries = byKey.get(entry.op.key);
    if (entries === undefined) byKey.set(entry.op.key, (entries = []));
    entries.push(entry);
  }
  return [...byKey];
}

/** A malformed entry is a bug in whatever recorded the history, not a linearizability failure. */
function validateEntry(entry: HistoryEntry): void {
  const { op, outcome } = entry;
  const where = `entry #${entry.id}`;
  assert(Number.isFinite(entry.callMs), `${where}: callMs must be a finite number`);
  assert(typeof op.key === 'string', `${where}: the key must be a string`);
  assert(op.kind === 'put' || op.kind === 'del' || op.kind === 'get' || op.kind === 'incr', `${where}: unknown op kind`);
  if (op.kind === 'put') {
    assert(typeof op.value === 'string' && op.value !== UNREAD_VALUE, `${where}: put value must be a string`);
    assert(op.ttlMs === undefined || op.expiresAt === undefined, `${where}: a put has ttlMs or expiresAt, not both`);
  }
  if (op.kind === 'incr') assert(Number.isFinite(op.by), `${where}: incr needs a finite by`);
  if (op.kind !== 'get' && op.ifVersion !== undefined) assert(Number.isSafeInteger(op.ifVersion) && op.ifVersion >= 0, `${where}: ifVersion is a version or 0`);
  if (entry.clockOffsetMs !== undefined) assert(entry.clockOffsetMs.min <= entry.clockOffsetMs.max, `${where}: clock offsets min <= max`);
  if (outcome.status === 'unknown') return;
  assert(outcome.status === 'ok' || outcome.status === 'conflict', `${where}: outcome status must be 'ok', 'conflict' or 'unknown'`);
  const returnMs = entry.returnMs;
  assert(returnMs !== undefined && Number.isFinite(returnMs) && returnMs >= entry.callMs, `${where}: a known outcome needs returnMs >= callMs`);
  if (outcome.status === 'conflict') {
    assert(op.kind !== 'get' && op.ifVersion !== undefined, `${where}: only a conditional write gets a CONFLICT`);
    assert(typeof outcome.found === 'boolean' && Number.isSafeInteger(outcome.version), `${where}: a CONFLICT carries found and version`);
    return;
  }
  const versioned = (version: number | undefined) => version !== undefined && Number.isSafeInteger(version) && version > 0;
  switch (op.kind) {
    case 'get':
      assert(typeof outcome.found === 'boolean', `${where}: an 'ok' get needs found`);
      if (outcome.found) assert((typeof outcome.value === 'string' || typeof outcome.value === 'number') && versioned(outcome.version), `${where}: a get that found the key needs its value and version`);
      break;
    case 'put':
      assert(versioned(outcome.version), `${where}: an 'ok' put needs its version`);
      break;
    case 'del':
      assert(typeof outcome.found === 'boolean' && versioned(outcome.version), `${where}: an 'ok' del needs found and its version`);
      break;
    case 'incr':
      assert(typeof outcome.value === 'number' && versioned(outcome.version), `${where}: an 'ok' incr needs its value and version`);
      break;
  }
}

/** The version an entry's outcome names: a write's own, or the live key's it saw. */
function versionOf(entry: HistoryEntry): number | undefined {
  const { outcome } = entry;
  if (outcome.status === 'unknown') return undefined;
  if (outcome.status === 'conflict') return outcome.found ? outcome.version : undefined;
  if (entry.op.kind === 'get') return outcome.found ? outcome.version : undefined;
  return outcome.version;
}

function isKnownWrite(entry: HistoryEntry): boolean {
  return entry.outcome.status === 'ok' && entry.op.kind !== 'get';
}

/** Every version acknowledged to a write, with its writer; the first two writes that share one. */
function acknowledgedVersions(history: readonly HistoryEntry[]): { writers: Map<number, HistoryEntry>; duplicate: [HistoryEntry, HistoryEntry] | undefined } {
  const writers = new Map<number, HistoryEntry>();
  for (const entry of history) {
    if (!isKnownWrite(entry)) continue;
    const version = versionOf(entry)!;
    const earlier = writers.get(version);
    if (earlier !== undefined) return { writers, duplicate: [earlier, entry] };
    writers.set(version, entry);
  }
  return { writers, duplicate: undefined };
}

function buildKeyHistory(key: string, entries: HistoryEntry[]): KeyHistory {
  const sorted = [...entries].sort((a, b) => a.callMs - b.callMs); // stable: history order breaks ties
  const ops = sorted.map((entry, position): KeyOp => {
    const known = entry.outcome.status !== 'unknown';
    return { entry, position, known, returnMs: known ? entry.returnMs! : Infinity, writes: isKnownWrite(entry), seenVersion: versionOf(entry) };
  });
  return { key, ops };
}

// ---------------------------------------------------------------------------------------
// Direct violations

interface Violation {
  readonly reader: KeyOp;
  readonly message: string;
  readonly related: readonly KeyOp[];
}

/**
 * The first op (in call order) whose outcome contradicts what other ops' outcomes say
 * without any search; undefined if none. Each is a necessary condition of the model:
 * - a live key read at version V is what the write acknowledged at V left (its value; not
 *   a del; not a write of another key);
 * - versions never go back: an op that writes or sees a live key sees at least the version
 *   an op that returned before it was called wrote or saw (a present key's version is the
 *   highest seq its writes took, and those only grow);
 * - a value read was written by a put of the key called before the read returned.
 */
function findDirectViolation(keyHistory: KeyHistory, writers: ReadonlyMap<number, HistoryEntry>): Violation | undefined {
  const { ops } = keyHistory;
  const byEntry = new Map(ops.map((op) => [op.entry, op]));
  const firstPutOf = new Map<string, KeyOp>();
  for (const op of ops) if (op.entry.op.kind === 'put' && !firstPutOf.has(op.entry.op.value)) firstPutOf.set(op.entry.op.value, op);
  // Known ops by return time, to sweep: the highest version seen among those returned before each call.
  const byReturn = ops.filter((op) => op.known && op.seenVersion !== undefined).sort((a, b) => a.returnMs - b.returnMs);
  let returned = 0;
  let newest: KeyOp | undefined;
  for (const op of ops) {
    while (returned < byReturn.length && byReturn[returned]!.returnMs < op.entry.callMs) {
      const candidate = byReturn[returned++]!;
      if (newest === undefined || candidate.seenVersion! > newest.seenVersion!) newest = candidate;
    }
    if (!op.known || op.seenVersion === undefined) continue;
    const violation = (op.writes ? undefined : readViolation(keyHistory.key, op, writers, byEntry, firstPutOf)) ?? versionWentBack(op, newest);
    if (violation !== undefined) return violation;
  }
  return undefined;
}

/** A read of a live key that no write explains: the version of another key's write or of a del, another value, a value never put. */
function readViolation(key: string, op: KeyOp, writers: ReadonlyMap<number, HistoryEntry>, byEntry: ReadonlyMap<HistoryEntry, KeyOp>, firstPutOf: ReadonlyMap<string, KeyOp>): Violation | undefined {
  const version = op.seenVersion!;
  const { entry } = op;
  const writer = writers.get(version);
  if (writer !== undefined && writer.op.key !== key) {
    return { reader: op, message: `#${entry.id} saw version ${version}, which #${writer.id} (${describeOp(writer)} on key ${JSON.stringify(writer.op.key)}) took.`, related: [] };
  }
  const written = writer === undefined ? undefined : byEntry.get(writer);
  if (written !== undefined && written.entry.op.kind === 'del') {
    return { reader: op, message: `#${entry.id} saw the key live at version ${version}, which #${written.entry.id}, a del, took.`, related: [written] };
  }
  const read = entry.op.kind === 'get' && entry.outcome.status === 'ok' ? entry.outcome.value : undefined;
  if (written !== undefined && read !== undefined && read !== valueWritten(written.entry)) {
    const message = `#${entry.id} read ${JSON.stringify(read)} at version ${version}, but #${written.entry.id} (${describeOp(written.entry)}) left ${JSON.stringify(valueWritten(written.entry))} at that version.`;
    return { reader: op, message, related: [written] };
  }
  if (typeof read !== 'string') return undefined;
  const put = firstPutOf.get(read);
  if (put !== undefined && put.entry.callMs <= op.returnMs) return undefined;
  const when = put === undefined ? 'ever wrote it' : `was called before #${entry.id} returned at ${op.returnMs}ms (the first, #${put.entry.id}, was called at ${put.entry.callMs}ms)`;
  return { reader: op, message: `#${entry.id} read ${JSON.stringify(read)}, but no put ${when}.`, related: put === undefined ? [] : [put] };
}

/** An op that saw or wrote an older version than `newest`, which returned before it was called (a write: not newer). */
function versionWentBack(op: KeyOp, newest: KeyOp | undefined): Violation | undefined {
  const version = op.seenVersion!;
  if (newest === undefined || version > newest.seenVersion! || (!op.writes && version === newest.seenVersion)) return undefined;
  const { entry } = op;
  const what = op.writes ? `was acknowledged at version ${version}` : `saw version ${version}`;
  const message =
    `#${entry.id} ${what}, but #${newest.entry.id} (${describeOp(newest.entry)}${describeResult(newest.entry)}), which returned at ${newest.returnMs}ms, ` +
    `before #${entry.id} was called at ${entry.callMs}ms, had ${newest.writes ? 'written' : 'seen'} version ${newest.seenVersion}: versions never go back.`;
  return { reader: op, message, related: [newest] };
}

/** What an acknowledged put or incr left: its value. */
function valueWritten(entry: HistoryEntry): Value | undefined {
  if (entry.op.kind === 'put') return entry.op.value;
  return entry.outcome.status === 'ok' ? entry.outcome.value : undefined;
}

// ---------------------------------------------------------------------------------------
// The search

const HEAD = 0; // the sentinel node before the first entry
const END = -1;

/** Unknown ops that behave alike, but for when they were called: used in call order. */
interface Group {
  /** In call order. */
  readonly ops: KeyOp[];
  /** The op as the model takes it (a put's value is UNREAD when no get reads it). */
  readonly op: KvOp;
  /** It writes the same whatever the key held before: no other unknown op right before it matters. */
  readonly overwrites: boolean;
  readonly offsetMinMs: number;
  readonly offsetMaxMs: number;
}

type Move =
  | { readonly kind: 'known'; readonly op: number; readonly state: KeyState }
  | { readonly kind: 'unknown'; readonly group: number; readonly state: KeyState }
  | { readonly kind: 'expire'; readonly state: KeyState };

interface Level {
  readonly moves: readonly Move[];
  index: number;
  /** The move taken from this level, and what it changed. */
  taken: { move: Move; stateBefore: KeyState; lastUnknownBefore: boolean; lowBefore: number; unknownOp: KeyOp | undefined } | undefined;
}

/** One step of a linearization, for explanations: an op (known, or unknown taking effect) or an expiry delete, and the state after it. */
interface PrefixStep {
  readonly op: KeyOp | undefined;
  readonly state: KeyState;
}

type SearchOutcome =
  | { kind: 'ok'; steps: number }
  | { kind: 'undecided'; steps: number; deepestCount: number; knownCount: number }
  | { kind: 'fail'; steps: number; prefix: PrefixStep[]; stuck: KeyOp; stuckState: KeyState; knownCount: number };

interface Visit {
  /** Unknown ops used per group; undefined when none were. */
  readonly used: Int32Array | undefined;
  readonly lastUnknown: boolean;
}

/**
 * The WGL search over the ops of one key with a known outcome: a list of their call and
 * return entries in time order; an op whose call entry comes before the first return entry
 * may be linearized next; on a dead end, undo the last choice and try the next. Visited
 * configurations (ops linearized, state, unknown ops used, whether the last step was one)
 * are remembered: a configuration seen before has failed, and so has one it subsumes.
 *
 * The moves at a configuration:
 * - a read (get, CONFLICT) that the state satisfies as it is, taken at once and alone: a
 *   read of the version held (no other state holds that version), or of "absent" while the
 *   key is absent. It changes nothing that a later op relies on (its judge time is its own),
 *   so in any completion it can be moved to the front;
 * - otherwise: the acknowledged write with the lowest version not yet linearized (writes
 *   take effect in version order, so no other); a read the state allows only by narrowing
 *   it (a read of "absent" while the key may have expired); the primary's expiry delete;
 *   an op of unknown outcome taking effect.
 *
 * Unknown ops are not in the list: one that never took effect, or took effect after every
 * known op, changes nothing checked. One that takes effect right after another unknown op
 * and writes the same whatever the key held (a put or del without ifVersion) makes that
 * other one moot, so it is only tried right after a known op. Unknown ops that differ only
 * in when they were called are a group (a put's value counts only if some get reads it),
 * used in call order: the one called first can do whatever a later one can, so the used ones
 * are a prefix and a count per group is the whole state of them. Having used fewer is never
 * worse, which is what lets a visited configuration subsume one that used more.
 */
class KeySearch {
  private readonly known: KeyOp[];
  private readonly steps: ModelStep[];
  /** Per known op: its rank among the known writes by version, or -1 for a read. */
  private readonly writeRank: Int32Array;
  /** Known writes linearized so far: those of rank below. */
  private nextRank = 0;
  private readonly groups: Group[] = [];
  private readonly used: Int32Array;
  private usedTotal = 0;
  // The doubly linked list of entries (dancing links): node 2i+1 calls known op i, 2i+2 returns it.
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly timeMs: Float64Array;
  private readonly linearized: Uint8Array;
  private linearizedCount = 0;
  /** The first known op (in call order) not linearized: all before it are. */
  private low = 0;
  private state: KeyState = INITIAL_STATE;
  /** Whether the last step was an unknown op or an expiry delete. */
  private lastUnknown = false;
  private readonly visited = new Map<string, Visit[]>();
  private deepest: { count: number; prefix: PrefixStep[]; stuck: number; state: KeyState } = { count: -1, prefix: [], stuck: 0, state: INITIAL_STATE };

  constructor(
    keyHistory: KeyHistory,
    private readonly model: ModelOptions,
    private readonly expiryOffsetMaxMs: number,
  ) {
    const { ops } = keyHistory;
    this.known = ops.filter((op) => op.known);
    this.steps = this.known.map((op) => {
      const { min, max } = op.entry.clockOffsetMs ?? { min: 0, max: 0 };
      return { op: op.entry.op, outcome: op.entry.outcome, judgedFromMs: op.entry.callMs + min, judgedToMs: op.returnMs + max };
    });
    this.writeRank = new Int32Array(this.known.length).fill(-1);
    const writes = this.known.map((op, index) => ({ op, index })).filter(({ op }) => op.writes);
    writes.sort((a, b) => a.op.seenVersion! - b.op.seenVersion!);
    writes.forEach(({ index }, rank) => (this.writeRank[index] = rank));
    this.buildGroups(ops);
    this.used = new Int32Array(this.groups.length);
    this.linearized = new Uint8Array(this.known.length + 1); // the extra 0 stops the scan in `advanceLow`
    ({ next: this.next, prev: this.prev, timeMs: this.timeMs } = buildEntryList(this.known));
  }

  private buildGroups(ops: readonly KeyOp[]): void {
    const read = new Set<Value>();
    for (const op of ops) if (op.entry.op.kind === 'get' && op.entry.outcome.status === 'ok' && op.entry.outcome.found) read.add(op.entry.outcome.value!);
    const byKind = new Map<string, Group>();
    for (const keyOp of ops) {
      const { op } = keyOp.entry;
      if (keyOp.known || op.kind === 'get') continue; // an unknown get changes nothing
      const asModel: KvOp = op.kind === 'put' && !read.has(op.value) ? { ...op, value: UNREAD_VALUE } : op;
      const { min, max } = keyOp.entry.clockOffsetMs ?? { min: 0, max: 0 };
      const kind = JSON.stringify([asModel, min, max]);
      let group = byKind.get(kind);
      if (group === undefined) {
        const overwrites = (op.kind === 'put' || op.kind === 'del') && op.ifVersion === undefined;
        group = { ops: [], op: asModel, overwrites, offsetMinMs: min, offsetMaxMs: max };
        byKind.set(kind, group);
        this.groups.push(group);
      }
      group.ops.push(keyOp);
    }
  }

  run(stepsMax: number): SearchOutcome {
    const knownCount = this.known.length;
    let steps = 0;
    const levels: Level[] = [this.level()];
    while (levels.length > 0) {
      if (this.linearizedCount === knownCount) return { kind: 'ok', steps };
      const level = levels.at(-1)!;
      if (level.taken !== undefined) this.undo(level);
      if (level.index >= level.moves.length) {
        // A dead end: the deepest is noted here rather than on the way down, where it costs a copy of the path per step.
        if (this.linearizedCount > this.deepest.count) this.noteDeepest(levels);
        levels.pop();
        continue;
      }
      if (steps >= stepsMax) return { kind: 'undecided', steps, deepestCount: Math.max(this.deepest.count, this.linearizedCount), knownCount };
      steps += 1;
      if (!this.take(level, level.moves[level.index++]!)) continue;
      levels.push(this.level());
    }
    const { prefix, stuck, state } = this.deepest;
    return { kind: 'fail', steps, prefix, stuck: this.known[stuck]!, stuckState: state, knownCount };
  }

  /** The moves at the configuration reached: a read that can go now alone, or every choice. */
  private level(): Level {
    if (this.linearizedCount === this.known.length) return { moves: [], index: 0, taken: undefined };
    const firstReturnMs = this.timeMs[this.firstReturn()]!;
    const candidates: number[] = [];
    for (let node = this.next[HEAD]!; node % 2 === 1; node = this.next[node]!) candidates.push((node - 1) / 2);
    for (const op of candidates) {
      const forced = this.forcedRead(op);
      if (forced !== undefined) return { moves: [{ kind: 'known', op, state: forced }], index: 0, taken: undefined };
    }
    const moves: Move[] = [];
    for (const op of candidates) {
      const rank = this.writeRank[op]!;
      if (rank >= 0 && rank !== this.nextRank) continue;
      for (const state of applyStep(this.state, this.steps[op]!, this.model)) moves.push({ kind: 'known', op, state });
    }
    const expired = expire(this.state, firstReturnMs + this.expiryOffsetMaxMs);
    if (expired !== undefined) moves.push({ kind: 'expire', state: expired });
    this.groups.forEach((group, index) => {
      const unknown = group.ops[this.used[index]!];
      if (unknown === undefined || unknown.entry.callMs > firstReturnMs || (this.lastUnknown && group.overwrites)) return;
      const step: ModelStep = { op: group.op, outcome: { status: 'unknown' }, judgedFromMs: unknown.entry.callMs + group.offsetMinMs, judgedToMs: firstReturnMs + group.offsetMaxMs };
      for (const state of applyStep(this.state, step, this.model)) moves.push({ kind: 'unknown', group: index, state });
    });
    return { moves, index: 0, taken: undefined };
  }

  /** The state after read `op` if it reads the state as it is (see the class comment), else undefined. */
  private forcedRead(op: number): KeyState | undefined {
    if (this.writeRank[op]! >= 0) return undefined;
    const { entry } = this.known[op]!;
    const { outcome } = entry;
    const seesLive = outcome.status === 'conflict' ? outcome.found : outcome.status === 'ok' && outcome.found === true;
    const state = this.state;
    const asHeld = seesLive ? state.present && state.versionKnown && state.version === this.known[op]!.seenVersion : !state.present;
    if (!asHeld) return undefined;
    const after = applyStep(state, this.steps[op]!, this.model);
    assert(after.length <= 1, 'a read of the state as held goes one way');
    return after[0];
  }

  /** Takes `move` from `level` unless its configuration was visited before. */
  private take(level: Level, move: Move): boolean {
    const taken = { move, stateBefore: this.state, lastUnknownBefore: this.lastUnknown, lowBefore: this.low, unknownOp: undefined as KeyOp | undefined };
    level.taken = taken;
    if (move.kind === 'known') {
      this.linearized[move.op] = 1;
      this.linearizedCount += 1;
      this.advanceLow();
      if (this.writeRank[move.op]! >= 0) this.nextRank += 1;
      this.lift(move.op);
    } else if (move.kind === 'unknown') {
      taken.unknownOp = this.groups[move.group]!.ops[this.used[move.group]!];
      this.used[move.group]! += 1;
      this.usedTotal += 1;
    }
    this.state = move.state;
    this.lastUnknown = move.kind !== 'known';
    if (this.visit()) return true;
    this.undo(level);
    return false;
  }

  private undo(level: Level): void {
    const { move, stateBefore, lastUnknownBefore, lowBefore } = level.taken!;
    level.taken = undefined;
    if (move.kind === 'known') {
      this.unlift(move.op);
      if (this.writeRank[move.op]! >= 0) this.nextRank -= 1;
      this.linearized[move.op] = 0;
      this.linearizedCount -= 1;
      this.low = lowBefore;
    } else if (move.kind === 'unknown') {
      this.used[move.group]! -= 1;
      this.usedTotal -= 1;
      assert(this.used[move.group]! >= 0, 'unknown ops used within their group');
    }
    this.state = stateBefore;
    this.lastUnknown = lastUnknownBefore;
  }

  private advanceLow(): void {
    while (this.linearized[this.low] === 1) this.low += 1;
  }

  /** Records the configuration; false if it was visited before or is subsumed by one that was. */
  private visit(): boolean {
    const key = this.configurationKey();
    const seen = this.visited.get(key);
    const subsumes = (visit: Visit) => (visit.used === undefined || usedNoMore(visit.used, this.used)) && (!visit.lastUnknown || this.lastUnknown);
    if (seen !== undefined && seen.some(subsumes)) return false;
    const visit: Visit = { used: this.usedTotal === 0 ? undefined : this.used.slice(), lastUnknown: this.lastUnknown };
    if (seen === undefined) this.visited.set(key, [visit]);
    else seen.push(visit);
    return true;
  }

  /**
   * The visited-map key: the state, and the linearized set as `low` plus the offsets of the
   * linearized ops above it. Those were all called before `low` returned, so the key stays
   * about as short as the concurrency, however long the history.
   */
  private configurationKey(): string {
    let key = `${stateKey(this.state)}#${this.low}`;
    let above = this.linearizedCount - this.low;
    for (let op = this.low + 1; above > 0; op += 1) {
      if (this.linearized[op] === 1) {
        key += `,${op - this.low}`;
        above -= 1;
      }
    }
    return key;
  }

  /** Remembers the first dead end reached with the most known ops linearized, for the explanation. */
  private noteDeepest(levels: readonly Level[]): void {
    const prefix: PrefixStep[] = [];
    for (const level of levels) {
      const taken = level.taken;
      if (taken === undefined) continue;
      const op = taken.move.kind === 'known' ? this.known[taken.move.op] : taken.unknownOp;
      prefix.push({ op, state: taken.move.state });
    }
    const stuck = this.linearizedCount < this.known.length ? (this.firstReturn() - 2) / 2 : 0;
    this.deepest = { count: this.linearizedCount, prefix, stuck, state: this.state };
  }

  /** The first return entry in the list: the known op that must be linearized before any op called after it returned. */
  private firstReturn(): number {
    let node = this.next[HEAD]!;
    while (node % 2 === 1) node = this.next[node]!;
    assert(node !== END, 'a known op is left, so a return entry is');
    return node;
  }

  private lift(op: number): void {
    this.unlink(2 * op + 1);
    this.unlink(2 * op + 2);
  }

  private unlift(op: number): void {
    this.relink(2 * op + 2);
    this.relink(2 * op + 1);
  }

  private unlink(node: number): void {
    const before = this.prev[node]!;
    const after = this.next[node]!;
    this.next[before] = after;
    if (after !== END) this.prev[after] = before;
  }

  /** Undoes `unlink(node)`; valid because nodes are relinked in the reverse order of unlinking. */
  private relink(node: number): void {
    const after = this.next[node]!;
    this.next[this.prev[node]!] = node;
    if (after !== END) this.prev[after] = node;
  }
}

function usedNoMore(a: Int32Array, b: Int32Array): boolean {
  for (let group = 0; group < a.length; group += 1) if (a[group]! > b[group]!) return false;
  return true;
}

/** The call and return entries of `known` in time order, a call before a return at the same time. */
function buildEntryList(known: readonly KeyOp[]): { next: Int32Array; prev: Int32Array; timeMs: Float64Array } {
  const nodeCount = 2 * known.length + 1;
  const timeMs = new Float64Array(nodeCount);
  const order: number[] = [];
  for (const [index, op] of known.entries()) {
    timeMs[2 * index + 1] = op.entry.callMs;
    timeMs[2 * index + 2] = op.returnMs;
    order.push(2 * index + 1, 2 * index + 2);
  }
  // Ties: calls first, so ops whose times touch are concurrent; then by node for determinism.
  order.sort((a, b) => timeMs[a]! - timeMs[b]! || (a % 2 === 0 ? 1 : 0) - (b % 2 === 0 ? 1 : 0) || a - b);
  const next = new Int32Array(nodeCount).fill(END);
  const prev = new Int32Array(nodeCount).fill(END);
  let last = HEAD;
  for (const node of order) {
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  return { next, prev, timeMs };
}

// ---------------------------------------------------------------------------------------
// Explanations

function explainViolation(keyHistory: KeyHistory, violation: Violation): string {
  const position = violation.reader.position;
  const shown = new Set<number>(violation.related.map((op) => op.position));
  for (let index = Math.max(0, position - 8); index <= Math.min(keyHistory.ops.length - 1, position + 2); index += 1) shown.add(index);
  return [`key ${JSON.stringify(keyHistory.key)} is not linearizable: ${violation.message}`, `Ops of this key in call order (times in virtual ms):`, ...listOps(keyHistory, shown)].join('\n');
}

function explainSearchFailure(keyHistory: KeyHistory, failure: Extract<SearchOutcome, { kind: 'fail' }>): string {
  const { prefix, stuck } = failure;
  const tail = prefix.slice(-explanationPrefixStepsMax);
  // Listed: from the earliest call among the prefix's last steps to the last op called before the stuck op returned.
  let to = stuck.position;
  while (to + 1 < keyHistory.ops.length && keyHistory.ops[to + 1]!.entry.callMs <= stuck.returnMs) to += 1;
  const positions = tail.flatMap((step) => (step.op === undefined ? [] : [step.op.position]));
  const from = Math.max(Math.min(stuck.position, ...positions), to - explanationOpsMax + 1);
  const shown = new Set<number>([stuck.position, ...positions]);
  for (let position = from; position <= to; position += 1) shown.add(position);
  const knownSteps = prefix.filter((step) => step.op?.known === true).length;
  const lines = [
    `key ${JSON.stringify(keyHistory.key)} is not linearizable.`,
    `Ops of this key in call order (times in virtual ms):`,
    ...listOps(keyHistory, shown),
    `Longest linearizable prefix: ${knownSteps} of the ${failure.knownCount} ops with a known outcome, in linearization order:`,
  ];
  if (tail.length < prefix.length) lines.push(`  … ${prefix.length - tail.length} earlier steps …`);
  for (const { op, state } of tail) {
    if (op === undefined) lines.push(`  the primary's expiry delete → ${describeState(state)}`);
    else if (!op.known) lines.push(`  #${op.entry.id} ${describeOp(op.entry)} (outcome unknown, taking effect here) → ${describeState(state)}`);
    else lines.push(`  #${op.entry.id} ${describeOp(op.entry)}${describeResult(op.entry)} → ${describeState(state)}`);
  }
  lines.push(
    `Then #${stuck.entry.id} (client ${stuck.entry.client}, ${describeOp(stuck.entry)}, called at ${stuck.entry.callMs}ms, returned at ${stuck.returnMs}ms, ${describeOutcome(stuck.entry)}) ` +
      `could not follow: the key held ${describeState(failure.stuckState)}. No other order of the ops concurrent with it gets further.`,
  );
  return lines.join('\n');
}

function listOps(keyHistory: KeyHistory, shown: ReadonlySet<number>): string[] {
  const all = keyHistory.ops.length <= explanationOpsMax;
  const lines: string[] = [];
  let skipped = 0;
  for (const op of keyHistory.ops) {
    if (!all && !shown.has(op.position)) {
      skipped += 1;
      continue;
    }
    if (skipped > 0) lines.push(`  … ${skipped} ops not shown …`);
    skipped = 0;
    const { entry } = op;
    const returned = op.known ? `returned at ${entry.returnMs}ms` : 'no reply';
    const offsets = entry.clockOffsetMs === undefined ? '' : ` (clock ${entry.clockOffsetMs.min}..${entry.clockOffsetMs.max}ms off)`;
    lines.push(`  #${entry.id} client ${entry.client}: ${describeOp(entry)}, called at ${entry.callMs}ms, ${returned}${offsets}: ${describeOutcome(entry)}`);
  }
  if (skipped > 0) lines.push(`  … ${skipped} ops not shown …`);
  return lines;
}

function describeOp(entry: HistoryEntry): string {
  const { op } = entry;
  const condition = op.kind !== 'get' && op.ifVersion !== undefined ? ` ifVersion ${op.ifVersion}` : '';
  switch (op.kind) {
    case 'get':
      return 'get';
    case 'put': {
      const expiry = op.ttlMs !== undefined ? ` ttl ${op.ttlMs}ms` : op.expiresAt !== undefined ? ` expiring at ${op.expiresAt}ms` : '';
      return `put ${JSON.stringify(op.value)}${condition}${expiry}`;
    }
    case 'del':
      return `del${condition}`;
    case 'incr':
      return `incr by ${op.by}${condition}${op.ttlMs !== undefined ? ` ttl ${op.ttlMs}ms` : ''}`;
  }
}

function describeOutcome(entry: HistoryEntry): string {
  const { outcome } = entry;
  if (outcome.status === 'unknown') return 'unknown';
  if (outcome.status === 'conflict') return `CONFLICT, ${outcome.found ? `found at version ${outcome.version}` : 'absent'}`;
  return `ok,${describeResult(entry)}`;
}

/** The result part of a line: what a get read, whether a del found the key, the version a write took. */
function describeResult(entry: HistoryEntry): string {
  const { outcome } = entry;
  if (outcome.status === 'unknown') return '';
  if (outcome.status === 'conflict') return ` CONFLICT ${outcome.found ? `@${outcome.version}` : 'absent'}`;
  switch (entry.op.kind) {
    case 'get':
      return outcome.found ? ` read ${JSON.stringify(outcome.value)}@${outcome.version}${outcome.expiresAt === undefined ? '' : ` expiring at ${outcome.expiresAt}ms`}` : ' read absent';
    case 'put':
      return ` @${outcome.version}`;
    case 'del':
      return ` ${outcome.found ? 'found' : 'not found'} @${outcome.version}`;
    case 'incr':
      return ` ${outcome.value}@${outcome.version}`;
  }
}
