/**
 * A linearizability checker for the histories the simulator records, after Porcupine (the
 * Wing–Gong–Lowe search with a cache of (linearized set, register state), each key checked
 * on its own since a key-value store is linearizable iff every key is) and Knossos (ops whose
 * outcome the client never learned).
 *
 * Ops whose outcome is unknown are what makes a naive search explode: an outage leaves dozens
 * of them, each concurrent with everything after it, and every subset of them could have
 * taken effect. Two facts tame them (proved at `KeySearch`, which relies on both):
 * - an op of unknown outcome accepts any register state, so it can always go last, after
 *   every op with a known outcome, which is the same as never taking effect;
 * - there is always a linearization in which each unknown write that does not go last sits
 *   right before an op with a known outcome that needs it: a get that reads its value, or a
 *   del whose `found` only matches after it. So the search places unknown writes only as such
 *   pairs and otherwise leaves them out, and since unknown writes of the same kind and value
 *   are interchangeable, it tracks them as a count per kind instead of a set.
 *
 * Before searching, two cheap necessary conditions are checked: every read against the writes
 * it could have read from (`findDirectViolation`: stale reads, lost writes, values never
 * written), and the block that a put forms with the gets of its value (`findZoneViolation`:
 * a newer value read, then an older one). A failure found so is reported at once with the
 * ops that prove it, instead of after an exhaustive search.
 */
import { assert } from '../errors.js';

export type KvOp =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'del'; key: string }
  | { kind: 'get'; key: string };

/** What the client saw. 'ok' carries the result; 'unknown' = timed out, UNAVAILABLE, or the connection dropped: the op may have taken effect at any point after its call, or never. */
export type KvOutcome =
  | { status: 'ok'; value?: string | undefined /* get: the value read, undefined when not found */; found?: boolean /* del: whether the key existed */ }
  | { status: 'unknown' };

export interface HistoryEntry {
  client: number; // who issued it (for messages)
  id: number; // unique in the history (for messages)
  op: KvOp;
  callMs: number; // virtual time the request was sent
  returnMs: number | undefined; // time the reply arrived; undefined for 'unknown'
  outcome: KvOutcome;
}

export type CheckResult =
  | { ok: true; keys: number; ops: number }
  | { ok: false; key: string; explanation: string /* multi-line, readable: the ops of that key in call order with call/return times and outcomes, and the longest prefix that could be linearized and the op that could not follow */ }
  | { ok: 'undecided'; key: string; reason: string }; // the search hit its step budget

/** Search steps (list entries examined), over the whole history, before answering 'undecided'. */
export const linearizabilityStepsMaxDefault = 5_000_000;
/** A key with at most this many ops is listed whole in an explanation; a longer one is cut to the ops near the failure. */
const explanationOpsMax = 60;
/** How many of the last steps of the longest linearizable prefix an explanation shows. */
const explanationPrefixStepsMax = 20;
/** Steps for re-running a failed key's search without the cut that shortens prefixes, to explain it (see `KeySearch`). */
const explanationStepsMax = 200_000;

/**
 * Whether `history` is linearizable against a register per key (initially absent).
 *
 * Op a precedes op b in real time iff a.returnMs < b.callMs: ops whose times touch count
 * as concurrent, so a tie never produces a false alarm. An op with an 'unknown' outcome
 * never returned (returnMs is ignored) and its result is unconstrained. Keys are checked
 * in the order they first appear, first all with the cheap checks, then each with the
 * search; the first key that fails, or exhausts the step budget, is the answer. A failure
 * found by a cheap check is explained by the ops that prove it rather than by a prefix.
 * Deterministic: the same history gives the same result and explanation.
 */
export function checkLinearizable(history: readonly HistoryEntry[], options: { stepsMax?: number } = {}): CheckResult {
  const stepsMax = options.stepsMax ?? linearizabilityStepsMaxDefault;
  assert(Number.isSafeInteger(stepsMax) && stepsMax > 0, `stepsMax must be a positive integer, got ${stepsMax}`);
  const keys = splitByKey(history).map(([key, entries]) => buildKeyHistory(key, entries));
  // Direct violations first, over every key: they are cheap and their explanation is sharper.
  for (const keyHistory of keys) {
    const violation = findDirectViolation(keyHistory) ?? findZoneViolation(keyHistory);
    if (violation !== undefined) return { ok: false, key: keyHistory.key, explanation: explainViolation(keyHistory, violation) };
  }
  let stepsLeft = stepsMax;
  for (const keyHistory of keys) {
    const outcome = new KeySearch(keyHistory).run(stepsLeft);
    stepsLeft -= outcome.steps;
    if (outcome.kind === 'fail') {
      const full = new KeySearch(keyHistory, { blockWrites: false }).run(explanationStepsMax);
      assert(full.kind !== 'ok', `key ${JSON.stringify(keyHistory.key)}: the search without blocked writes disagrees`);
      return { ok: false, key: keyHistory.key, explanation: explainSearchFailure(keyHistory, full.kind === 'fail' ? full : outcome) };
    }
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

/** The register's value ids: 0 is the absent register, 1.. index `KeyHistory.values`. */
const ABSENT = 0;

interface KeyOp {
  readonly entry: HistoryEntry;
  /** Index in `KeyHistory.ops`. */
  readonly position: number;
  readonly known: boolean;
  /** +Infinity when the outcome is unknown: it may take effect at any later time. */
  readonly returnMs: number;
  /** put: the value written; get with a known outcome: the value read (ABSENT if not found); otherwise unused. */
  readonly valueId: number;
}

interface KeyHistory {
  readonly key: string;
  /** Every op of the key, in call order (history order among equal call times). */
  readonly ops: readonly KeyOp[];
  /** Value ids to values; index 0 (ABSENT) is unused. */
  readonly values: readonly string[];
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
  assert(Number.isFinite(entry.callMs), `entry #${entry.id}: callMs must be a finite number`);
  assert(typeof op.key === 'string', `entry #${entry.id}: the key must be a string`);
  assert(op.kind === 'put' || op.kind === 'del' || op.kind === 'get', `entry #${entry.id}: unknown op kind`);
  if (op.kind === 'put') assert(typeof op.value === 'string', `entry #${entry.id}: put value must be a string`);
  if (outcome.status === 'unknown') return;
  assert(outcome.status === 'ok', `entry #${entry.id}: outcome status must be 'ok' or 'unknown'`);
  const returnMs = entry.returnMs;
  assert(returnMs !== undefined && Number.isFinite(returnMs) && returnMs >= entry.callMs, `entry #${entry.id}: an 'ok' op needs returnMs >= callMs`);
  if (op.kind === 'del') assert(typeof outcome.found === 'boolean', `entry #${entry.id}: an 'ok' del needs found`);
  if (op.kind === 'get') assert(outcome.value === undefined || typeof outcome.value === 'string', `entry #${entry.id}: a get reads a string or undefined`);
}

function buildKeyHistory(key: string, entries: HistoryEntry[]): KeyHistory {
  const values = [''];
  const valueIds = new Map<string, number>();
  const intern = (value: string): number => {
    let id = valueIds.get(value);
    if (id === undefined) {
      id = values.length;
      values.push(value);
      valueIds.set(value, id);
    }
    return id;
  };
  const sorted = [...entries].sort((a, b) => a.callMs - b.callMs); // stable: history order breaks ties
  const ops = sorted.map((entry, position): KeyOp => {
    const known = entry.outcome.status === 'ok';
    let valueId = ABSENT;
    if (entry.op.kind === 'put') valueId = intern(entry.op.value);
    else if (entry.op.kind === 'get' && entry.outcome.status === 'ok' && entry.outcome.value !== undefined) valueId = intern(entry.outcome.value);
    return { entry, position, known, returnMs: known ? entry.returnMs! : Infinity, valueId };
  });
  return { key, ops, values };
}

// ---------------------------------------------------------------------------------------
// Direct violations: a read that no write it could have read from explains

interface Violation {
  readonly reader: KeyOp;
  readonly message: string;
  readonly related: readonly KeyOp[];
}

/**
 * The first read (in call order) whose result no write could explain; undefined if none.
 *
 * A read r (a get with a known result, or a del found:true) needs its source, the last write
 * before it, to leave the register as r saw it. A source s is shadowed when some write q with
 * a known outcome, leaving the register otherwise, satisfies s.returnMs < q.callMs and
 * q.returnMs < r.callMs: then q lies between s and r in every linearization, so s is not
 * r's last write. If every possible source is shadowed (or there is none), no linearization
 * exists. Shadowing gets harder as s.returnMs grows, so only the source that returned last
 * needs checking; an unknown source never returned and is never shadowed. A put of the value
 * a get reads cannot shadow that get's best source: called after the source returned and
 * before the get returned, it would itself be a source that returned later.
 * A del found:false is not checked here (it would be its own source); the search covers it.
 */
function findDirectViolation(keyHistory: KeyHistory): Violation | undefined {
  const { ops } = keyHistory;
  const putsByValue = new Map<number, KeyOp[]>();
  const puts: KeyOp[] = [];
  const dels: KeyOp[] = [];
  for (const op of ops) {
    if (op.entry.op.kind === 'put') {
      puts.push(op);
      let same = putsByValue.get(op.valueId);
      if (same === undefined) putsByValue.set(op.valueId, (same = []));
      same.push(op);
    } else if (op.entry.op.kind === 'del') dels.push(op);
  }
  const putSources = new Map<number, SourceIndex>();
  const anyPutSource = new SourceIndex(puts);
  const delSources = new SourceIndex(dels);
  const putShadows = new ShadowIndex(puts.filter((op) => op.known));
  const delShadows = new ShadowIndex(dels.filter((op) => op.known));
  for (const reader of ops) {
    if (!reader.known || reader.entry.op.kind === 'put') continue;
    const { outcome } = reader.entry;
    if (outcome.status !== 'ok') continue;
    if (reader.entry.op.kind === 'get' && reader.valueId !== ABSENT) {
      let sources = putSources.get(reader.valueId);
      if (sources === undefined) putSources.set(reader.valueId, (sources = new SourceIndex(putsByValue.get(reader.valueId) ?? [])));
      const source = sources.lastReturned(reader.returnMs);
      if (source === undefined) return neverWritten(keyHistory, reader, putsByValue.get(reader.valueId)?.[0]);
      const shadow = earlier(putShadows.firstReturned(source.returnMs), delShadows.firstReturned(source.returnMs));
      if (shadow !== undefined && shadow.returnMs < reader.entry.callMs) {
        return shadowed(reader, `every put of ${JSON.stringify(outcome.value)}`, source, shadow);
      }
    } else if (reader.entry.op.kind === 'get' || outcome.found === true) {
      const readsAbsent = reader.entry.op.kind === 'get';
      const source = readsAbsent ? delSources.lastReturned(reader.returnMs) : anyPutSource.lastReturned(reader.returnMs);
      if (source === undefined && !readsAbsent) return neverWritten(keyHistory, reader, undefined);
      const shadow = (readsAbsent ? putShadows : delShadows).firstReturned(source?.returnMs ?? -Infinity);
      if (shadow !== undefined && shadow.returnMs < reader.entry.callMs) {
        return shadowed(reader, readsAbsent ? 'the initial absent register and every del' : 'every put', source, shadow);
      }
    }
  }
  return undefined;
}

/** Writes by call time, answering: of those called by t, which returned last? */
class SourceIndex {
  private readonly callMs: number[];
  private readonly latest: KeyOp[] = [];

  constructor(writes: readonly KeyOp[] /* in call order */) {
    this.callMs = writes.map((op) => op.entry.callMs);
    for (const [index, op] of writes.entries()) {
      const previous = this.latest[index - 1];
      this.latest.push(previous !== undefined && previous.returnMs >= op.returnMs ? previous : op);
    }
  }

  lastReturned(calledByMs: number): KeyOp | undefined {
    return this.latest[upperBound(this.callMs, calledByMs) - 1];
  }
}

/** Writes with a known outcome by call time, answering: of those called after t, which returned first? */
class ShadowIndex {
  private readonly callMs: number[];
  private readonly earliest: KeyOp[];

  constructor(writes: readonly KeyOp[] /* in call order */) {
    this.callMs = writes.map((op) => op.entry.callMs);
    this.earliest = new Array<KeyOp>(writes.length);
    for (let index = writes.length - 1; index >= 0; index -= 1) {
      const next = this.earliest[index + 1];
      const op = writes[index]!;
      this.earliest[index] = next !== undefined && next.returnMs < op.returnMs ? next : op;
    }
  }

  firstReturned(calledAfterMs: number): KeyOp | undefined {
    return this.earliest[upperBound(this.callMs, calledAfterMs)];
  }
}

/** The number of leading elements of sorted `array` that are <= `value`. */
function upperBound(array: readonly number[], value: number): number {
  let low = 0;
  let high = array.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (array[middle]! <= value) low = middle + 1;
    else high = middle;
  }
  return low;
}

function earlier(a: KeyOp | undefined, b: KeyOp | undefined): KeyOp | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b.returnMs < a.returnMs ? b : a;
}

function neverWritten(keyHistory: KeyHistory, reader: KeyOp, firstPut: KeyOp | undefined): Violation {
  const what = reader.entry.op.kind === 'get' ? `read ${JSON.stringify(keyHistory.values[reader.valueId])}` : 'found the key';
  const put = firstPut === undefined ? '' : ` (the first, #${firstPut.entry.id}, was called at ${firstPut.entry.callMs}ms)`;
  const message = `#${reader.entry.id} ${what}, but no put ${firstPut === undefined && reader.entry.op.kind === 'get' ? 'ever wrote it' : `was called before #${reader.entry.id} returned at ${reader.returnMs}ms${put}`}.`;
  return { reader, message, related: firstPut === undefined ? [] : [firstPut] };
}

function shadowed(reader: KeyOp, sources: string, source: KeyOp | undefined, shadow: KeyOp): Violation {
  const what = reader.entry.op.kind === 'get' ? `read ${describeRead(reader.entry)}` : 'found the key';
  const last = source === undefined ? 'there was no del before it' : `the last to return, #${source.entry.id}, returned at ${source.returnMs}ms`;
  const message =
    `#${reader.entry.id} ${what}, but #${shadow.entry.id} (${describeOp(shadow.entry)}) overwrote ${sources} that could come before it: ` +
    `#${shadow.entry.id} was called at ${shadow.entry.callMs}ms, after they had returned (${last}), ` +
    `and returned at ${shadow.returnMs}ms, before #${reader.entry.id} was called at ${reader.entry.callMs}ms.`;
  return { reader, message, related: source === undefined ? [shadow] : [source, shadow] };
}

// ---------------------------------------------------------------------------------------
// Zones: a put and the gets that read its value form one block

interface Cluster {
  readonly valueId: number;
  readonly writer: KeyOp;
  /** The op of the cluster that returned first, and the one called last. */
  readonly firstReturned: KeyOp;
  readonly lastCalled: KeyOp;
}

/**
 * The zone check of Gibbons and Korach (and of Anderson et al., "What consistency does your
 * key-value store actually provide?"), for values written by exactly one put (of either
 * outcome) and read by some known get. In any linearization such a put and the gets of its
 * value form one block with nothing else inside: every get's last write is that put, and
 * while the register holds the value, any other op would either write or fail its check.
 * If op A of the block returned before op B of the block was called (a forward zone), then
 * A comes before B, so:
 * - a known op X outside the block with A.returnMs < X.callMs and X.returnMs < B.callMs
 *   comes after A and before B, inside the block: impossible;
 * - two blocks with forward zones (A1, B1), (A2, B2) where A1 precedes B2 and A2 precedes B1
 *   would each have to come before the other: impossible.
 */
function findZoneViolation(keyHistory: KeyHistory): Violation | undefined {
  const clusters = findClusters(keyHistory);
  const forward = clusters.filter((c) => c.firstReturned.returnMs < c.lastCalled.entry.callMs);
  forward.sort((a, b) => a.firstReturned.returnMs - b.firstReturned.returnMs || a.writer.position - b.writer.position);
  let widest: Cluster | undefined; // of the zones so far, the one whose B was called last
  for (const zone of forward) {
    if (widest !== undefined && zone.firstReturned.returnMs < widest.lastCalled.entry.callMs) return overlappingBlocks(keyHistory, widest, zone);
    if (widest === undefined || zone.lastCalled.entry.callMs > widest.lastCalled.entry.callMs) widest = zone;
  }
  // An op's block: the value, for the put and the gets of a clustered value; otherwise a label of its own.
  const clustered = new Set(clusters.map((cluster) => cluster.valueId));
  const blockOf = (op: KeyOp): number => (op.entry.op.kind !== 'del' && clustered.has(op.valueId) ? op.valueId : -1 - op.position);
  const inside = new OutsiderIndex(
    keyHistory.ops.filter((op) => op.known),
    blockOf,
  );
  for (const zone of forward) {
    const outsider = inside.firstReturned(zone.firstReturned.returnMs, zone.valueId);
    if (outsider !== undefined && outsider.returnMs < zone.lastCalled.entry.callMs) return opInsideBlock(keyHistory, zone, outsider);
  }
  return undefined;
}

function findClusters(keyHistory: KeyHistory): Cluster[] {
  const writers = new Map<number, KeyOp[]>();
  for (const op of keyHistory.ops) {
    if (op.entry.op.kind !== 'put') continue;
    const same = writers.get(op.valueId);
    if (same === undefined) writers.set(op.valueId, [op]);
    else same.push(op);
  }
  const clusters = new Map<number, { writer: KeyOp; firstReturned: KeyOp; lastCalled: KeyOp }>();
  for (const op of keyHistory.ops) {
    if (!op.known || op.entry.op.kind !== 'get' || op.valueId === ABSENT) continue;
    const sameWriters = writers.get(op.valueId);
    if (sameWriters === undefined || sameWriters.length !== 1) continue;
    const writer = sameWriters[0]!;
    const cluster = clusters.get(op.valueId) ?? { writer, firstReturned: writer, lastCalled: writer };
    if (op.returnMs < cluster.firstReturned.returnMs) cluster.firstReturned = op;
    if (op.entry.callMs > cluster.lastCalled.entry.callMs) cluster.lastCalled = op; // ops come in call order
    clusters.set(op.valueId, cluster);
  }
  return [...clusters].map(([valueId, cluster]) => ({ valueId, ...cluster }));
}

/** Known ops by call time, answering: of those called after t and not of block `label`, which returned first? */
class OutsiderIndex {
  private readonly callMs: number[];
  // Per suffix: the op that returned first, and the one that returned first among those of another block.
  private readonly first: (KeyOp | undefined)[];
  private readonly second: (KeyOp | undefined)[];
  private readonly labels = new Map<KeyOp, number>();

  constructor(ops: readonly KeyOp[] /* in call order */, label: (op: KeyOp) => number) {
    this.callMs = ops.map((op) => op.entry.callMs);
    this.first = new Array<KeyOp | undefined>(ops.length + 1);
    this.second = new Array<KeyOp | undefined>(ops.length + 1);
    let first: KeyOp | undefined;
    let second: KeyOp | undefined;
    for (let index = ops.length - 1; index >= 0; index -= 1) {
      const op = ops[index]!;
      this.labels.set(op, label(op));
      if (first === undefined || op.returnMs < first.returnMs) {
        if (first !== undefined && this.labels.get(first) !== this.labels.get(op)) second = first;
        first = op;
      } else if (this.labels.get(op) !== this.labels.get(first) && (second === undefined || op.returnMs < second.returnMs)) second = op;
      this.first[index] = first;
      this.second[index] = second;
    }
  }

  firstReturned(calledAfterMs: number, label: number): KeyOp | undefined {
    const index = upperBound(this.callMs, calledAfterMs);
    const first = this.first[index];
    return first !== undefined && this.labels.get(first) !== label ? first : this.second[index];
  }
}

function describeBlock(keyHistory: KeyHistory, cluster: Cluster): string {
  return `the put #${cluster.writer.entry.id} of ${JSON.stringify(keyHistory.values[cluster.valueId])} and the gets that read it`;
}

function opInsideBlock(keyHistory: KeyHistory, zone: Cluster, outsider: KeyOp): Violation {
  const { firstReturned: a, lastCalled: b } = zone;
  const message =
    `${describeBlock(keyHistory, zone)} must take effect as one block with nothing between, since no other put wrote that value; ` +
    `the block runs from #${a.entry.id}, which returned at ${a.returnMs}ms, to #${b.entry.id}, which was called at ${b.entry.callMs}ms, ` +
    `but #${outsider.entry.id} (${describeOp(outsider.entry)}${describeResult(outsider.entry)}) was called at ${outsider.entry.callMs}ms and returned at ${outsider.returnMs}ms, strictly between them.`;
  return { reader: outsider, message, related: [zone.writer, a, b] };
}

function overlappingBlocks(keyHistory: KeyHistory, first: Cluster, second: Cluster): Violation {
  const message =
    `${describeBlock(keyHistory, first)}, and ${describeBlock(keyHistory, second)}, must each take effect as one block with nothing between, ` +
    `but each block must come before the other: #${first.firstReturned.entry.id} returned at ${first.firstReturned.returnMs}ms, before #${second.lastCalled.entry.id} was called at ${second.lastCalled.entry.callMs}ms, ` +
    `and #${second.firstReturned.entry.id} returned at ${second.firstReturned.returnMs}ms, before #${first.lastCalled.entry.id} was called at ${first.lastCalled.entry.callMs}ms.`;
  return { reader: second.lastCalled, message, related: [first.writer, first.firstReturned, first.lastCalled, second.writer, second.firstReturned] };
}

// ---------------------------------------------------------------------------------------
// The search

const HEAD = 0; // the sentinel node before the first entry
const END = -1;
/** `run`'s cursor when a new configuration must look for a forced read first. */
const FRESH = -2;
/** `run`'s cursor when the configuration is a dead end without reaching a return entry. */
const DEAD_END = -3;
const KIND_PUT = 0;
const KIND_GET = 1;
const KIND_DEL_FOUND = 2;
const KIND_DEL_NOT_FOUND = 3;
/** Unknown writes are grouped by what they can do: dels, puts of values no known get reads, puts of one read value each. */
const GROUP_DELS = 0;
const GROUP_UNREAD_PUTS = 1;
const GROUP_FIRST_VALUE = 2;

interface Frame {
  readonly op: number; // index among the known ops
  /** 0: placed alone; g + 1: placed right after an unknown write of group g. */
  readonly alt: number;
  /** A read placed because it could go: if what follows fails, so does the configuration before it. */
  readonly forced: boolean;
  readonly unknownWrite: KeyOp | undefined;
  readonly stateBefore: number;
  readonly lowBefore: number;
  readonly parent: Frame | undefined;
}

type SearchOutcome =
  | { kind: 'ok'; steps: number }
  | { kind: 'undecided'; steps: number; deepestCount: number; knownCount: number }
  | { kind: 'fail'; steps: number; prefix: PrefixStep[]; stuck: KeyOp; knownCount: number };

/** One step of a linearization: a known op, and the unknown write placed right before it if any. */
interface PrefixStep {
  readonly op: KeyOp;
  readonly unknownWrite: KeyOp | undefined;
}

/**
 * The WGL search over the ops of one key with a known outcome: a list of their call and
 * return entries in time order; an op whose call entry comes before the first return entry
 * may be linearized next; on a dead end, undo the last choice and try the next. The visited
 * configurations (linearized ops, register, unknown writes used) are remembered: on this
 * path none can repeat, since each step linearizes one more op, so a visited one has failed,
 * and so has any configuration it subsumes (below).
 *
 * Unknown writes are not in the list. Why that loses nothing: take any linearization, and
 * while some unknown write x (not already after every known op) is not immediately followed,
 * unknown gets aside, by a known op that it lets through, move x to the very end. That keeps
 * the linearization valid: x has no return, so the real-time order allows it; x accepts any
 * state; and the ops after its old place are unaffected, because the next one is either a
 * write (which overwrites the register, and checks nothing unless it is a known del, and a
 * known del that is not let through by x finds the same presence without x) or a known get
 * that reads the same register without x. Each move grows the tail of unknown ops, so it
 * ends in a linearization where every unknown write not at the end directly precedes a
 * known op d that fails on the register before x and succeeds after it. So the search
 * tries an unknown write only as the pair (x, d) where d would fail alone; both must be
 * callable then, i.e. x called by the first return entry, like d.
 *
 * Which x: unknown dels are interchangeable, and so are unknown puts of the same value, and
 * so are unknown puts whose value no known get reads (no get can see their value, so only
 * their making the key present matters). Two of a group that are both callable now stay
 * callable on this path, so using the one called first loses nothing, and the used ones of a
 * group are always a prefix in call order: a count per group is the whole state. Having used
 * fewer is never worse: the unused ones are then a superset, each called no later than the
 * one it stands for. So a visited configuration subsumes any with the same linearized ops
 * and register that has used at least as many of each group. A del that
 * finds the key needs any put; a put from the unread group serves it at least as well as
 * one whose value some get still needs, so the other groups are tried only without it.
 * Unknown gets change nothing and accept anything: they are left out.
 *
 * Three more cuts keep wide concurrency tractable:
 * - A read that can go now goes now, without trying anything else first (a get of the value
 *   the register holds, a del not finding an absent key): it changes nothing and nothing
 *   remaining must precede it, so in any completion it can be moved to the front. If what
 *   follows it fails, the configuration before it fails too.
 * - When the register holds a value written by only one put and a get of that value remains,
 *   no write can come next: that get's last write must be that put. This cut ends prefixes
 *   that could have gone on, so a failure is explained by a search without it.
 * - A value that no remaining get reads is the same as any other such value to every op still
 *   to come (only its presence shows), so all of them are one register state, `dead`.
 */
class KeySearch {
  private readonly known: KeyOp[];
  private readonly kind: Uint8Array;
  private readonly arg: Int32Array; // put: value written; get: value read
  private readonly groups: { readonly ops: KeyOp[]; readonly callMs: number[] }[];
  private readonly groupOfValue: Int32Array;
  private readonly used: Int32Array;
  /** Known gets of each value not yet linearized. */
  private readonly readersLeft: Int32Array;
  /** 1 for a value written by exactly one put, of either outcome. */
  private readonly soleWriter: Uint8Array;
  /** The register state standing for every present value that no remaining get reads. */
  private readonly dead: number;
  // The doubly linked list of entries (dancing links): node 2i+1 calls known op i, 2i+2 returns it.
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly timeMs: Float64Array;
  private firstReturnNode = END; // END: not found since the list last changed
  private readonly linearized: Uint8Array;
  private linearizedCount = 0;
  /** The first known op (in call order) not linearized: all before it are. */
  private low = 0;
  /** Unknown writes used over all groups, so configurations that used none skip the vector compare. */
  private usedTotal = 0;
  private state = ABSENT;
  private top: Frame | undefined = undefined;
  /** Per (linearized ops, register): the unknown writes used by each visit, or `usedNone` if one used none. */
  private readonly visited = new Map<string, Int32Array[] | typeof usedNone>();
  private deepest: { count: number; top: Frame | undefined; stuck: number } = { count: -1, top: undefined, stuck: 0 };

  private readonly blockWrites: boolean;

  constructor(keyHistory: KeyHistory, options: { blockWrites: boolean } = { blockWrites: true }) {
    this.blockWrites = options.blockWrites;
    const { ops, values } = keyHistory;
    this.known = ops.filter((op) => op.known);
    const n = this.known.length;
    this.kind = new Uint8Array(n);
    this.arg = new Int32Array(n);
    this.readersLeft = new Int32Array(values.length + 1);
    this.soleWriter = new Uint8Array(values.length + 1);
    this.dead = values.length;
    const writers = new Int32Array(values.length);
    for (const op of ops) if (op.entry.op.kind === 'put') writers[op.valueId]! += 1;
    for (const [value, count] of writers.entries()) this.soleWriter[value] = count === 1 ? 1 : 0;
    for (const [index, op] of this.known.entries()) {
      const { entry } = op;
      this.kind[index] = entry.op.kind === 'put' ? KIND_PUT : entry.op.kind === 'get' ? KIND_GET : entry.outcome.status === 'ok' && entry.outcome.found ? KIND_DEL_FOUND : KIND_DEL_NOT_FOUND;
      this.arg[index] = op.valueId;
      if (entry.op.kind === 'get' && op.valueId !== ABSENT) this.readersLeft[op.valueId]! += 1;
    }
    this.groups = [
      { ops: [], callMs: [] },
      { ops: [], callMs: [] },
    ];
    this.groupOfValue = new Int32Array(values.length + 1).fill(-1);
    for (const op of ops) {
      if (op.known || op.entry.op.kind === 'get') continue;
      let group = op.entry.op.kind === 'del' ? GROUP_DELS : GROUP_UNREAD_PUTS;
      if (op.entry.op.kind === 'put' && this.readersLeft[op.valueId]! > 0) {
        if (this.groupOfValue[op.valueId] === -1) {
          this.groupOfValue[op.valueId] = this.groups.length;
          this.groups.push({ ops: [], callMs: [] });
        }
        group = this.groupOfValue[op.valueId]!;
      }
      this.groups[group]!.ops.push(op);
      this.groups[group]!.callMs.push(op.entry.callMs);
    }
    this.used = new Int32Array(this.groups.length);
    this.linearized = new Uint8Array(n + 1); // the extra 0 stops the scan in `advanceLow`
    ({ next: this.next, prev: this.prev, timeMs: this.timeMs } = buildEntryList(this.known));
  }

  run(stepsMax: number): SearchOutcome {
    const knownCount = this.known.length;
    let steps = 0;
    let node = FRESH;
    let altFrom = 0;
    while (this.next[HEAD] !== END) {
      if (steps >= stepsMax) return { kind: 'undecided', steps, deepestCount: Math.max(this.deepest.count, this.linearizedCount), knownCount };
      steps += 1;
      if (node === FRESH) {
        const read = this.forcedRead();
        if (read >= 0 && this.push(read, -1, true)) continue;
        node = read >= 0 || this.writesBlocked() ? DEAD_END : this.next[HEAD]!;
      } else if (node === DEAD_END || node % 2 === 0) {
        // A return entry: its op had to be linearized before anything called later.
        this.noteDeepest();
        const frame = this.backtrack();
        if (frame === undefined) {
          const { top, stuck } = this.deepest;
          return { kind: 'fail', steps, prefix: this.stepsOf(top), stuck: this.known[stuck]!, knownCount };
        }
        node = 2 * frame.op + 1;
        altFrom = frame.alt + 1;
      } else {
        node = this.attempt((node - 1) / 2, altFrom) ? FRESH : this.next[node]!;
        altFrom = 0;
      }
    }
    return { kind: 'ok', steps };
  }

  /** A callable read that the register satisfies and that leaves it as it is, or -1. */
  private forcedRead(): number {
    const state = this.state;
    for (let node = this.next[HEAD]!; node % 2 === 1; node = this.next[node]!) {
      const op = (node - 1) / 2;
      const kind = this.kind[op];
      if ((kind === KIND_GET && this.arg[op] === state) || (kind === KIND_DEL_NOT_FOUND && state === ABSENT)) return op;
    }
    return -1;
  }

  private writesBlocked(): boolean {
    return this.blockWrites && this.state !== ABSENT && this.state !== this.dead && this.soleWriter[this.state] === 1;
  }

  /** Undoes the last free choice, and the forced reads after it; undefined when there is none. */
  private backtrack(): Frame | undefined {
    let frame = this.top;
    while (frame !== undefined && frame.forced) {
      this.pop(frame);
      frame = this.top;
    }
    if (frame !== undefined) this.pop(frame);
    return frame;
  }

  /** Linearizes known op `op` next, alone or after an unknown write, trying the ways numbered altFrom on. */
  private attempt(op: number, altFrom: number): boolean {
    const arg = this.arg[op]!;
    const state = this.state;
    const kind = this.kind[op]!;
    // Reads that the register satisfies were forced already; everything else here writes.
    switch (kind) {
      case KIND_PUT:
        return altFrom === 0 && this.push(op, -1, false);
      case KIND_GET:
        return this.pushAfterUnknown(op, arg === ABSENT ? GROUP_DELS : this.groupOfValue[arg]!, altFrom);
      case KIND_DEL_NOT_FOUND:
        return this.pushAfterUnknown(op, GROUP_DELS, altFrom);
      case KIND_DEL_FOUND:
        if (state !== ABSENT) return altFrom === 0 && this.push(op, -1, false);
        if (this.callable(GROUP_UNREAD_PUTS)) return this.pushAfterUnknown(op, GROUP_UNREAD_PUTS, altFrom);
        for (let group = Math.max(GROUP_FIRST_VALUE, altFrom - 1); group < this.groups.length; group += 1) {
          if (this.pushAfterUnknown(op, group, altFrom)) return true;
        }
        return false;
      default:
        throw new Error(`assertion failed: op kind ${kind}`);
    }
  }

  private pushAfterUnknown(op: number, group: number, altFrom: number): boolean {
    return group >= 0 && altFrom <= group + 1 && this.callable(group) && this.push(op, group, false);
  }

  /** Whether group's next unused unknown write was called by the first return entry. */
  private callable(group: number): boolean {
    const { callMs } = this.groups[group]!;
    const used = this.used[group]!;
    return used < callMs.length && callMs[used]! <= this.timeMs[this.firstReturn()]!;
  }

  private firstReturn(): number {
    if (this.firstReturnNode === END) {
      let node = this.next[HEAD]!;
      while (node % 2 === 1) node = this.next[node]!;
      this.firstReturnNode = node;
    }
    return this.firstReturnNode;
  }

  /** Takes the step unless its configuration was visited before; group -1: no unknown write. */
  private push(op: number, group: number, forced: boolean): boolean {
    const lowBefore = this.low;
    const kind = this.kind[op];
    const arg = this.arg[op]!;
    this.linearized[op] = 1;
    this.linearizedCount += 1;
    this.advanceLow();
    if (group >= 0) this.use(group, 1);
    if (kind === KIND_GET && arg !== ABSENT) this.readersLeft[arg]! -= 1;
    // A del leaves the key absent (its arg is ABSENT too); a put or get, the value, or `dead` if no get remains for it.
    const stateAfter = arg === ABSENT ? ABSENT : this.readersLeft[arg]! > 0 ? arg : this.dead;
    if (!this.visit(this.configurationKey(stateAfter))) {
      this.linearized[op] = 0;
      this.linearizedCount -= 1;
      this.low = lowBefore;
      if (group >= 0) this.use(group, -1);
      if (kind === KIND_GET && arg !== ABSENT) this.readersLeft[arg]! += 1;
      return false;
    }
    const unknownWrite = group >= 0 ? this.groups[group]!.ops[this.used[group]! - 1] : undefined;
    this.top = { op, alt: group + 1, forced, unknownWrite, stateBefore: this.state, lowBefore, parent: this.top };
    this.state = stateAfter;
    this.lift(op);
    return true;
  }

  private pop(frame: Frame): void {
    const { op } = frame;
    this.unlift(op);
    this.linearized[op] = 0;
    this.linearizedCount -= 1;
    this.low = frame.lowBefore;
    this.state = frame.stateBefore;
    if (frame.alt > 0) this.use(frame.alt - 1, -1);
    if (this.kind[op] === KIND_GET && this.arg[op] !== ABSENT) this.readersLeft[this.arg[op]!]! += 1;
    this.top = frame.parent;
  }

  private advanceLow(): void {
    while (this.linearized[this.low] === 1) this.low += 1;
  }

  private use(group: number, delta: 1 | -1): void {
    this.used[group]! += delta;
    this.usedTotal += delta;
    assert(this.used[group]! >= 0 && this.used[group]! <= this.groups[group]!.ops.length, 'unknown writes used within their group');
  }

  /** Records the configuration; false if it was visited before or is subsumed by one that was. */
  private visit(key: string): boolean {
    const seen = this.visited.get(key);
    if (seen === usedNone) return false;
    if (seen !== undefined && seen.some((used) => usedNoMore(used, this.used))) return false;
    if (this.usedTotal === 0) this.visited.set(key, usedNone);
    else if (seen === undefined) this.visited.set(key, [this.used.slice()]);
    else seen.push(this.used.slice());
    return true;
  }

  /**
   * The visited-map key: register, and the linearized set as `low` plus
   * the offsets of the linearized ops above it. Those were all called before `low` returned,
   * so the key stays about as short as the concurrency, however long the history.
   */
  private configurationKey(state: number): string {
    let key = `${state}|${this.low}`;
    let above = this.linearizedCount - this.low;
    for (let op = this.low + 1; above > 0; op += 1) {
      if (this.linearized[op] === 1) {
        key += `,${op - this.low}`;
        above -= 1;
      }
    }
    return key;
  }

  /** Remembers the first dead end reached with the most ops linearized, for the explanation. */
  private noteDeepest(): void {
    if (this.linearizedCount <= this.deepest.count) return;
    this.deepest = { count: this.linearizedCount, top: this.top, stuck: (this.firstReturn() - 2) / 2 };
  }

  private stepsOf(top: Frame | undefined): PrefixStep[] {
    const steps: PrefixStep[] = [];
    for (let frame = top; frame !== undefined; frame = frame.parent) steps.push({ op: this.known[frame.op]!, unknownWrite: frame.unknownWrite });
    return steps.reverse();
  }

  private lift(op: number): void {
    this.unlink(2 * op + 1);
    this.unlink(2 * op + 2);
    this.firstReturnNode = END;
  }

  private unlift(op: number): void {
    this.relink(2 * op + 2);
    this.relink(2 * op + 1);
    this.firstReturnNode = END;
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

const usedNone = 'none';

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
  return [
    `key ${JSON.stringify(keyHistory.key)} is not linearizable: ${violation.message}`,
    `Ops of this key in call order (times in virtual ms):`,
    ...listOps(keyHistory, shown),
  ].join('\n');
}

function explainSearchFailure(keyHistory: KeyHistory, failure: Extract<SearchOutcome, { kind: 'fail' }>): string {
  const { prefix, stuck } = failure;
  const tail = prefix.slice(-explanationPrefixStepsMax);
  // Listed: from the earliest call among the prefix's last steps to the last op called before the stuck op returned.
  let to = stuck.position;
  while (to + 1 < keyHistory.ops.length && keyHistory.ops[to + 1]!.entry.callMs <= stuck.returnMs) to += 1;
  const from = Math.max(Math.min(stuck.position, ...tail.map((step) => step.op.position)), to - explanationOpsMax + 1);
  const shown = new Set<number>([stuck.position]);
  for (let position = from; position <= to; position += 1) shown.add(position);
  for (const step of tail) if (step.unknownWrite !== undefined) shown.add(step.unknownWrite.position);
  const lines = [
    `key ${JSON.stringify(keyHistory.key)} is not linearizable.`,
    `Ops of this key in call order (times in virtual ms):`,
    ...listOps(keyHistory, shown),
    `Longest linearizable prefix: ${prefix.length} of the ${failure.knownCount} ops with a known outcome, in linearization order:`,
  ];
  if (tail.length < prefix.length) lines.push(`  … ${prefix.length - tail.length} earlier steps …`);
  for (const { op, unknownWrite } of tail) {
    if (unknownWrite !== undefined) {
      const after = unknownWrite.entry.op.kind === 'put' ? unknownWrite.valueId : ABSENT;
      lines.push(`  #${unknownWrite.entry.id} ${describeOp(unknownWrite.entry)} (outcome unknown, taking effect here) → ${describeState(keyHistory, after)}`);
    }
    const after = op.entry.op.kind === 'del' ? ABSENT : op.valueId; // a get leaves what it read
    lines.push(`  #${op.entry.id} ${describeOp(op.entry)}${describeResult(op.entry)} → ${describeState(keyHistory, after)}`);
  }
  lines.push(
    `Then #${stuck.entry.id} (client ${stuck.entry.client}, ${describeOp(stuck.entry)}, called at ${stuck.entry.callMs}ms, returned at ${stuck.returnMs}ms) ` +
      `could not follow: ${describeMismatch(keyHistory, stuck, registerAfter(prefix))}. No other order of the ops concurrent with it gets further.`,
  );
  return lines.join('\n');
}

/** The register after a linearization prefix: the value of its last write. */
function registerAfter(prefix: readonly PrefixStep[]): number {
  let state = ABSENT;
  const apply = (op: KeyOp): void => {
    if (op.entry.op.kind === 'put') state = op.valueId;
    else if (op.entry.op.kind === 'del') state = ABSENT;
  };
  for (const { op, unknownWrite } of prefix) {
    if (unknownWrite !== undefined) apply(unknownWrite);
    apply(op);
  }
  return state;
}

function describeMismatch(keyHistory: KeyHistory, op: KeyOp, state: number): string {
  const held = describeState(keyHistory, state);
  const { entry } = op;
  if (entry.op.kind === 'get' && op.valueId !== state) return `it read ${describeRead(entry)} but the register held ${held}`;
  if (entry.op.kind === 'del' && entry.outcome.status === 'ok' && entry.outcome.found !== (state !== ABSENT)) {
    return entry.outcome.found ? `it found the key but the register was ${held}` : `it did not find the key but the register held ${held}`;
  }
  // The register would take it, but a get not yet placed must still read the value held, and only one put wrote that value.
  return `the register held ${held}, which a get still to come reads, and no other put wrote it, so no write can come first`;
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
    lines.push(`  #${entry.id} client ${entry.client}: ${describeOp(entry)}, called at ${entry.callMs}ms, ${returned}: ${describeOutcome(entry)}`);
  }
  if (skipped > 0) lines.push(`  … ${skipped} ops not shown …`);
  return lines;
}

function describeOp(entry: HistoryEntry): string {
  return entry.op.kind === 'put' ? `put ${JSON.stringify(entry.op.value)}` : entry.op.kind;
}

function describeOutcome(entry: HistoryEntry): string {
  if (entry.outcome.status === 'unknown') return 'unknown';
  if (entry.op.kind === 'get') return `ok, read ${describeRead(entry)}`;
  if (entry.op.kind === 'del') return entry.outcome.found ? 'ok, found' : 'ok, not found';
  return 'ok';
}

/** The result part of a prefix line: what a get read or whether a del found the key. */
function describeResult(entry: HistoryEntry): string {
  if (entry.outcome.status === 'unknown' || entry.op.kind === 'put') return '';
  if (entry.op.kind === 'get') return ` read ${describeRead(entry)}`;
  return entry.outcome.found ? ' found' : ' not found';
}

function describeRead(entry: HistoryEntry): string {
  const value = entry.outcome.status === 'ok' ? entry.outcome.value : undefined;
  return value === undefined ? 'absent' : JSON.stringify(value);
}

function describeState(keyHistory: KeyHistory, state: number): string {
  return state === ABSENT ? 'absent' : JSON.stringify(keyHistory.values[state]);
}
