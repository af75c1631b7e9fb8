import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { applyStep, expire, INITIAL_STATE, type KeyState, type ModelOptions } from '../../src/sim/kv-model.js';
import { checkLinearizable, type CheckResult, type HistoryEntry, type KvOp, type KvOutcome, type Value } from '../../src/sim/linearizability.js';

// ---------------------------------------------------------------------------------------
// Hand-made histories on key "k": [callMs, returnMs] for a known outcome, [callMs] for an unknown one.

type Times = [number, number] | [number];
type Entry = Omit<HistoryEntry, 'id' | 'client'>;
type WriteOptions = { ifVersion?: number; ttlMs?: number; expiresAt?: number };

function entry(op: KvOp, times: Times, outcome: KvOutcome): Entry {
  return { op, callMs: times[0], returnMs: times[1], outcome: times.length === 2 ? outcome : { status: 'unknown' } };
}
const put = (value: string, version: number, times: Times, options: WriteOptions = {}) => entry({ kind: 'put', key: 'k', value, ...options }, times, { status: 'ok', version });
const del = (found: boolean, version: number, times: Times, options: WriteOptions = {}) => entry({ kind: 'del', key: 'k', ...options }, times, { status: 'ok', found, version });
const incr = (by: number, value: number, version: number, times: Times, options: WriteOptions = {}) => entry({ kind: 'incr', key: 'k', by, ...options }, times, { status: 'ok', value, version });
/** A get that read `value` at `version` (expiring at `expiresAt`), or absent. */
const get = (read: [Value, number, number?] | 'absent', times: Times) =>
  entry({ kind: 'get', key: 'k' }, times, read === 'absent' ? { status: 'ok', found: false } : { status: 'ok', found: true, value: read[0], version: read[1], ...(read[2] === undefined ? {} : { expiresAt: read[2] }) });
/** A conditional put answered CONFLICT with the key's found and version. */
const putConflict = (value: string, ifVersion: number, found: boolean, version: number, times: [number, number]) =>
  entry({ kind: 'put', key: 'k', value, ifVersion }, times, { status: 'conflict', found, version });
const on = (key: string, e: Entry): Entry => ({ ...e, op: { ...e.op, key } });
const clock = (min: number, max: number, e: Entry): Entry => ({ ...e, clockOffsetMs: { min, max } });

/** Numbers the entries 1.. in the order given; the client is the entry's number too. */
function history(...entries: Entry[]): HistoryEntry[] {
  return entries.map((e, index) => ({ ...e, id: index + 1, client: index + 1 }));
}

function assertPasses(result: CheckResult): void {
  assert.ok(result.ok === true, result.ok === false ? result.explanation : result.ok === 'undecided' ? result.reason : '');
}

function assertFails(result: CheckResult, key = 'k'): string {
  assert.ok(result.ok === false, `expected a failure, got ${JSON.stringify(result)}`);
  assert.is(result.ok === false && result.key, key);
  return result.ok === false ? result.explanation : '';
}

const Passes = suite('linearizability: histories that are linearizable pass');

Passes('a sequential history of puts, gets and dels passes, and the result counts keys and ops', () => {
  const result = checkLinearizable(history(put('a', 1, [0, 1]), get(['a', 1], [2, 3]), on('j', put('x', 2, [2, 3])), del(true, 3, [4, 5]), get('absent', [6, 7]), on('j', get(['x', 2], [8, 9]))));
  assert.equal(result, { ok: true, keys: 2, ops: 6 });
});

Passes('an empty history passes', () => {
  assert.equal(checkLinearizable([]), { ok: true, keys: 0, ops: 0 });
});

Passes('two overlapping puts take effect in the order of their versions: a later get reads the higher one', () => {
  assertPasses(checkLinearizable(history(put('a', 2, [0, 10]), put('b', 1, [5, 15]), get(['a', 2], [20, 30]))));
  assertPasses(checkLinearizable(history(put('a', 1, [0, 10]), put('b', 2, [5, 15]), get(['b', 2], [20, 30]))));
});

Passes('versions need not be consecutive: other keys take seqs in between', () => {
  assertPasses(checkLinearizable(history(put('a', 3, [0, 1]), put('b', 17, [2, 3]), get(['b', 17], [4, 5]), del(true, 40, [6, 7]))));
});

Passes('an unknown put may take effect long after its call, and its version is learned from the get that reads it', () => {
  const h = history(put('a', 1, [0, 1]), put('u', 0, [2]), get(['a', 1], [100, 101]), get(['u', 5], [200, 201]), put('c', 6, [300, 301]), get(['c', 6], [400, 401]));
  assertPasses(checkLinearizable(h));
});

Passes('an unknown op that nothing saw may never have taken effect; an unknown get constrains nothing', () => {
  assertPasses(checkLinearizable(history(put('a', 1, [0, 1]), put('lost', 0, [2]), get(['a', 1], [10, 11]), get(['a', 1], [20, 21]))));
  assertPasses(checkLinearizable(history(put('a', 1, [0, 1]), entry({ kind: 'get', key: 'k' }, [2], { status: 'unknown' }), get(['a', 1], [5, 6]))));
});

Passes('del reports found exactly when the key is live, and takes a version either way', () => {
  assertPasses(checkLinearizable(history(del(false, 1, [0, 1]), put('a', 2, [2, 3]), del(true, 3, [4, 5]), del(false, 4, [6, 7]), get('absent', [8, 9]))));
});

Passes('a conditional put holds at the version it names and conflicts otherwise, reporting the version held', () => {
  const h = history(
    put('a', 1, [0, 1], { ifVersion: 0 }),
    put('b', 2, [2, 3], { ifVersion: 1 }),
    putConflict('c', 1, true, 2, [4, 5]),
    putConflict('d', 0, true, 2, [6, 7]),
    del(true, 3, [8, 9], { ifVersion: 2 }),
    putConflict('e', 2, false, 0, [10, 11]),
    put('f', 4, [12, 13], { ifVersion: 0 }),
  );
  assertPasses(checkLinearizable(h));
});

Passes('a CONFLICT concurrent with the write it names may see the key before or after it', () => {
  assertPasses(checkLinearizable(history(put('a', 1, [0, 1]), put('b', 2, [2, 10]), putConflict('c', 7, true, 1, [3, 4]), putConflict('d', 7, true, 2, [5, 6]))));
});

Passes('incr counts from 0 on an absent key, and an unknown incr explains a jump', () => {
  assertPasses(checkLinearizable(history(incr(1, 1, 1, [0, 1]), incr(2, 3, 2, [2, 3]), get([3, 2], [4, 5]))));
  const h = history(incr(1, 1, 1, [0, 1]), entry({ kind: 'incr', key: 'k', by: 1 }, [2], { status: 'unknown' }), incr(1, 3, 5, [10, 11]), get([3, 5], [12, 13]));
  assertPasses(checkLinearizable(h));
});

Passes('an expiring put is live before its expiry and absent from it on; a get reports the expiry', () => {
  // ttl 100, judged in [0, 1]: the expiry lies in [100, 101].
  const h = history(put('a', 1, [0, 1], { ttlMs: 100 }), get(['a', 1, 100.5], [50, 51]), get('absent', [200, 201]), put('b', 2, [300, 301]), get(['b', 2], [400, 401]));
  assertPasses(checkLinearizable(h));
  assertPasses(checkLinearizable(history(put('a', 1, [0, 1], { expiresAt: 100 }), get('absent', [99, 101]))));
});

Passes('a conditional put of ifVersion 0 holds on an expired key; so does an incr count from 0', () => {
  assertPasses(checkLinearizable(history(put('a', 1, [0, 1], { ttlMs: 10 }), put('b', 2, [50, 51], { ifVersion: 0 }), get(['b', 2], [60, 61]))));
  assertPasses(checkLinearizable(history(incr(5, 5, 1, [0, 1], { ttlMs: 10 }), incr(1, 1, 2, [50, 51]), get([1, 2], [60, 61]))));
});

Passes('an incr without ttl keeps a live key\'s expiry', () => {
  assertPasses(checkLinearizable(history(incr(1, 1, 1, [0, 1], { ttlMs: 100 }), incr(1, 2, 2, [10, 11]), get('absent', [200, 201]))));
});

Passes('a clock behind lets a read see a key live after a read on a clock ahead saw it expired, before the expiry delete (the design)', () => {
  // Expiry in [100, 101]. The first get's clock is 50 ahead: it judged at 120 or later. The second's is 50 behind.
  const h = history(put('a', 1, [0, 1], { ttlMs: 100 }), clock(50, 50, get('absent', [70, 71])), clock(-50, -50, get(['a', 1, 100.5], [130, 131])));
  assertPasses(checkLinearizable(h));
  const strict = checkLinearizable(h, { strict: true });
  assert.match(assertFails(strict), /could not follow/);
});

Passes('a read on a clock behind sees a key absent once the expiry delete took effect', () => {
  // Judged at 80 or 81, before the expiry: only the primary's delete, on a clock ahead, explains it.
  const h = history(clock(-50, 50, put('a', 1, [0, 1], { ttlMs: 100 })), clock(-50, -50, get('absent', [130, 131])));
  assertPasses(checkLinearizable(h));
});

Passes.run();

const Fails = suite('linearizability: histories that are not linearizable fail with an explanation');

Fails('a stale read after a completed put fails', () => {
  const explanation = assertFails(checkLinearizable(history(put('a', 1, [0, 1]), put('b', 2, [2, 3]), get(['a', 1], [4, 5]))));
  assert.match(explanation, /#3 saw version 1, but #2 \(put "b" @2\), which returned at 3ms, before #3 was called at 4ms, had written version 2: versions never go back/);
});

Fails('a read of a value never written fails, and so does a value other than the write at that version left', () => {
  assert.match(assertFails(checkLinearizable(history(put('a', 1, [0, 1]), get(['ghost', 1], [4, 5])))), /#2 read "ghost" at version 1, but #1 \(put "a"\) left "a" at that version/);
  assert.match(assertFails(checkLinearizable(history(put('a', 1, [0, 1]), get(['ghost', 7], [4, 5])))), /#2 read "ghost", but no put ever wrote it/);
});

Fails('a version another key\'s write took, or a del\'s, cannot be read as live', () => {
  assert.match(assertFails(checkLinearizable(history(on('j', put('x', 1, [0, 1])), get(['x', 1], [2, 3])))), /#2 saw version 1, which #1 \(put "x" on key "j"\) took/);
  assert.match(assertFails(checkLinearizable(history(put('a', 1, [0, 1]), del(true, 2, [2, 3]), get(['a', 2], [4, 5])))), /#3 saw the key live at version 2, which #2, a del, took/);
});

Fails('two writes acknowledged at one version fail', () => {
  const result = checkLinearizable(history(put('a', 1, [0, 1]), on('j', put('b', 1, [2, 3]))));
  assert.ok(result.ok === false && /two writes were acknowledged at version 1: #1 .* and #2/.test(result.explanation), JSON.stringify(result));
});

Fails('writes whose versions go back in real time fail', () => {
  assert.match(assertFails(checkLinearizable(history(put('a', 5, [0, 1]), put('b', 3, [2, 3])))), /#2 was acknowledged at version 3, but #1 .* had written version 5/);
});

Fails('a lost acknowledged put fails: a later get sees the key absent', () => {
  const explanation = assertFails(checkLinearizable(history(put('a', 1, [0, 1]), get('absent', [2, 3]))));
  assert.match(explanation, /Then #2 \(client 2, get, called at 2ms, returned at 3ms, ok, read absent\) could not follow: the key held "a"@1/);
});

Fails('a del that found an absent key, or did not find a live one, fails', () => {
  assertFails(checkLinearizable(history(get('absent', [0, 1]), del(true, 1, [2, 3]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), del(false, 2, [2, 3]))));
});

Fails('a conditional put acknowledged at a version the key was not at fails; so does a CONFLICT that misreports', () => {
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), put('b', 2, [2, 3]), put('c', 3, [4, 5], { ifVersion: 1 }))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), put('b', 2, [2, 3], { ifVersion: 0 }))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), putConflict('c', 0, false, 0, [2, 3]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), putConflict('c', 1, true, 1, [2, 3]))));
});

Fails('an incr whose value does not add up fails', () => {
  const explanation = assertFails(checkLinearizable(history(incr(1, 1, 1, [0, 1]), incr(1, 3, 2, [2, 3]))));
  assert.match(explanation, /Then #2 \(client 2, incr by 1, called at 2ms, returned at 3ms, ok, 3@2\) could not follow: the key held 1@1/);
});

Fails('a key read live after its expiry, or absent before it, fails (one clock)', () => {
  assertFails(checkLinearizable(history(put('a', 1, [0, 1], { ttlMs: 100 }), get(['a', 1], [150, 151]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1], { ttlMs: 100 }), get('absent', [50, 51]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1], { expiresAt: 100 }), get(['a', 1, 100], [100, 101]))));
});

Fails('a key the expiry delete took is not live again on any clock', () => {
  // The second get judged before the expiry, so it saw the delete; the third cannot see the key again.
  const h = history(put('a', 1, [0, 1], { ttlMs: 100 }), clock(-50, -50, get('absent', [130, 131])), clock(-50, -50, get(['a', 1, 100.5], [140, 141])));
  assertFails(checkLinearizable(h));
});

Fails('a get that reports an expiry other than the put\'s fails, and so does one that reports none', () => {
  assertFails(checkLinearizable(history(put('a', 1, [0, 1], { ttlMs: 100 }), get(['a', 1, 150], [10, 11]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1], { ttlMs: 100 }), get(['a', 1], [10, 11]))));
  assertFails(checkLinearizable(history(put('a', 1, [0, 1]), get(['a', 1, 150], [10, 11]))));
});

/**
 * Rejected only by the search: the del found the key, so the unknown put "u" or the put "a"
 * came before it; "a" is read afterwards at its version, so "u" came first; then nothing
 * deletes "a" before the last get, which read absent.
 */
const searchOnly = () => history(put('a', 3, [0, 10]), del(true, 2, [0, 10]), put('u', 0, [1]), get(['a', 3], [20, 30]), get('absent', [40, 50]));

Fails('the explanation lists the ops of the key in call order with times and outcomes, then the longest prefix and the op that could not follow', () => {
  const explanation = assertFails(checkLinearizable(searchOnly()));
  const expected = [
    'key "k" is not linearizable.',
    'Ops of this key in call order (times in virtual ms):',
    '  #1 client 1: put "a", called at 0ms, returned at 10ms: ok, @3',
    '  #2 client 2: del, called at 0ms, returned at 10ms: ok, found @2',
    '  #3 client 3: put "u", called at 1ms, no reply: unknown',
    '  #4 client 4: get, called at 20ms, returned at 30ms: ok, read "a"@3',
    '  #5 client 5: get, called at 40ms, returned at 50ms: ok, read absent',
    'Longest linearizable prefix: 3 of the 4 ops with a known outcome, in linearization order:',
    '  #3 put "u" (outcome unknown, taking effect here) → (a value no get read)@1+ (version not yet read)',
    '  #2 del found @2 → absent',
    '  #1 put "a" @3 → "a"@3',
    '  #4 get read "a"@3 → "a"@3',
    'Then #5 (client 5, get, called at 40ms, returned at 50ms, ok, read absent) could not follow: the key held "a"@3. No other order of the ops concurrent with it gets further.',
  ].join('\n');
  assert.is(explanation, expected);
});

Fails('the search answers undecided when it runs out of steps', () => {
  const result = checkLinearizable(searchOnly(), { stepsMax: 3 });
  assert.is(result.ok, 'undecided');
  assert.match(result.ok === 'undecided' ? result.reason : '', /budget of 3 steps \(stepsMax\) on key "k"/);
});

Fails('the failing key is named, and other keys do not hide it', () => {
  const h = history(on('ok', put('a', 1, [0, 1])), on('ok', get(['a', 1], [2, 3])), on('bad', put('x', 2, [0, 1])), on('bad', get('absent', [2, 3])));
  assertFails(checkLinearizable(h), 'bad');
});

Fails('a malformed entry is a programming error, not a verdict', () => {
  assert.throws(() => checkLinearizable(history({ ...get('absent', [0, 1]), returnMs: undefined })), /a known outcome needs returnMs/);
  assert.throws(() => checkLinearizable([...history(put('a', 1, [0, 1])), ...history(put('b', 2, [0, 1]))]), /id 1 is not unique/);
  assert.throws(() => checkLinearizable(history(entry({ kind: 'put', key: 'k', value: 'a' }, [0, 1], { status: 'ok' }))), /an 'ok' put needs its version/);
});

Fails.run();

// ---------------------------------------------------------------------------------------
// Randomized histories from a reference server

/** mulberry32: a small seeded PRNG, so every run sees the same histories. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface GenerateOptions {
  opsCount: number;
  /** Keys of string values (put, del, get) and counters (incr, del, get). */
  keys: readonly string[];
  counters: readonly string[];
  clientsCount: number;
  /** How far a call may come before, and a return after, the op's point. */
  windowMs: number;
  /** Time between two ops' points: 1 to this. */
  gapMs: number;
  outagesCount: number;
  /** Consecutive ops whose outcome is unknown in each outage. */
  outageOpsCount: number;
  /** Outside outages, the chance that an op's outcome is unknown. */
  unknownRate: number;
  /** Each op is judged on a clock off by up to this, either way. */
  skewMs: number;
  ttlsMs: readonly number[];
  /** Put values: unique, or drawn from this list. */
  values?: readonly string[];
}

interface Stored {
  value: Value;
  version: number;
  expiresAt: number | undefined;
}

/**
 * A reference server, written from PROTOCOL.md apart from the model: one seq for every key,
 * expiry judged at a wall time given with each op, and an expiry delete run now and then.
 */
class ReferenceServer {
  private seq = 0;
  readonly data = new Map<string, Stored>();

  live(key: string, nowMs: number): Stored | undefined {
    const stored = this.data.get(key);
    return stored !== undefined && (stored.expiresAt === undefined || stored.expiresAt > nowMs) ? stored : undefined;
  }

  /** The reply, or undefined for a request refused before anything (an expiresAt in the past, an incr of a string). */
  exec(op: KvOp, nowMs: number): Exclude<KvOutcome, { status: 'unknown' }> | undefined {
    const live = this.live(op.key, nowMs);
    if (op.kind === 'get') return live === undefined ? { status: 'ok', found: false } : { status: 'ok', found: true, value: live.value, version: live.version, ...(live.expiresAt === undefined ? {} : { expiresAt: live.expiresAt }) };
    if (op.ifVersion !== undefined && op.ifVersion !== (live?.version ?? 0)) return { status: 'conflict', found: live !== undefined, version: live?.version ?? 0 };
    switch (op.kind) {
      case 'put': {
        if (op.expiresAt !== undefined && op.expiresAt <= nowMs) return undefined;
        const expiresAt = op.ttlMs !== undefined ? nowMs + op.ttlMs : op.expiresAt;
        this.data.set(op.key, { value: op.value, version: ++this.seq, expiresAt });
        return { status: 'ok', version: this.seq };
      }
      case 'del':
        this.data.delete(op.key);
        return { status: 'ok', found: live !== undefined, version: ++this.seq };
      case 'incr': {
        const before = live?.value ?? 0;
        if (typeof before !== 'number') return undefined;
        const expiresAt = op.ttlMs !== undefined ? nowMs + op.ttlMs : live?.expiresAt;
        this.data.set(op.key, { value: before + op.by, version: ++this.seq, expiresAt });
        return { status: 'ok', value: before + op.by, version: this.seq };
      }
    }
  }

  /** The primary's expiry round, judged at `nowMs`. */
  expireDue(nowMs: number): void {
    for (const [key, stored] of this.data) {
      if (stored.expiresAt !== undefined && stored.expiresAt <= nowMs) {
        this.data.delete(key);
        this.seq += 1;
      }
    }
  }
}

/**
 * A history from a sequential run of the reference server: op i takes effect at a rising
 * point, judged on a clock off by up to skewMs, and is called up to windowMs before and
 * returns up to windowMs after its point. An op of unknown outcome took effect or not at
 * random. Conditions name the version held, an older one, or 0.
 */
function generate(seed: number, options: GenerateOptions): HistoryEntry[] {
  const random = prng(seed);
  const below = (n: number): number => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)]!;
  const server = new ReferenceServer();
  const seen = new Map<string, number[]>();
  const outageStarts = Array.from({ length: options.outagesCount }, () => below(options.opsCount));
  const skew = () => (random() * 2 - 1) * options.skewMs;
  const result: HistoryEntry[] = [];
  let pointMs = 0;
  for (let index = 0; index < options.opsCount; index += 1) {
    pointMs += 1 + below(options.gapMs);
    if (random() < 0.2) server.expireDue(pointMs - 0.5 + skew());
    const counter = options.keys.length === 0 || (options.counters.length > 0 && random() < 0.3);
    const key = counter ? pick(options.counters) : pick(options.keys);
    const judgedMs = pointMs + skew();
    const versions = seen.get(key) ?? [0];
    const condition = () => (random() < 0.5 ? {} : { ifVersion: random() < 0.6 ? (server.live(key, judgedMs)?.version ?? 0) : pick(versions) });
    const expiry = () => (random() < 0.3 ? (random() < 0.5 ? { ttlMs: pick(options.ttlsMs) } : { expiresAt: Math.round(pointMs + pick(options.ttlsMs)) }) : {});
    const roll = random();
    let op: KvOp;
    if (roll < 0.4) op = { kind: 'get', key };
    else if (roll < 0.55) op = { kind: 'del', key, ...condition() };
    else if (counter) op = { kind: 'incr', key, by: pick([1, 2]), ...condition(), ...(random() < 0.15 ? { ttlMs: pick(options.ttlsMs) } : {}) };
    else op = { kind: 'put', key, value: options.values ? pick(options.values) : `v${index}`, ...condition(), ...expiry() };
    const inOutage = outageStarts.some((start) => index >= start && index < start + options.outageOpsCount);
    const unknown = inOutage || random() < options.unknownRate;
    const applied = !unknown || random() < 0.5;
    const outcome = applied ? server.exec(op, judgedMs) : { status: 'ok' as const };
    if (outcome === undefined) continue; // refused: no history entry
    if (outcome.status === 'ok' && outcome.version !== undefined) seen.set(key, [...versions, outcome.version]);
    const callMs = pointMs - below(options.windowMs + 1);
    const returnMs = pointMs + below(options.windowMs + 1);
    const clockOffsetMs = { min: -options.skewMs, max: options.skewMs };
    result.push({ client: below(options.clientsCount), id: index, op, callMs, returnMs: unknown ? undefined : returnMs, outcome: unknown ? { status: 'unknown' } : outcome, clockOffsetMs });
  }
  return result;
}

const precedes = (a: HistoryEntry, b: HistoryEntry): boolean => a.returnMs !== undefined && a.returnMs < b.callMs;
const readsLive = (e: HistoryEntry): boolean => e.op.kind === 'get' && e.outcome.status === 'ok' && e.outcome.found === true;

/** A get made to read what an acknowledged write left, though a later acknowledged write of the key returned before the get was called. */
function mutateStale(h: HistoryEntry[]): HistoryEntry[] | undefined {
  for (let g = h.length - 1; g >= 0; g -= 1) {
    const target = h[g]!;
    if (target.op.kind !== 'get' || target.outcome.status !== 'ok') continue;
    const writes = h.filter((e) => e.op.key === target.op.key && e.op.kind === 'put' && e.op.ttlMs === undefined && e.op.expiresAt === undefined && e.outcome.status === 'ok' && precedes(e, target));
    if (writes.length < 2) continue;
    const old = writes[0]!;
    if (old.op.kind !== 'put' || old.outcome.status !== 'ok') continue;
    return h.map((e) => (e === target ? { ...e, outcome: { status: 'ok', found: true, value: old.op.kind === 'put' ? old.op.value : '', version: old.outcome.status === 'ok' ? old.outcome.version! : 0 } } : e));
  }
  return undefined;
}

/**
 * A get made to read absent between two ops that saw one version of a value that never
 * expires (its put, or a get), which no op between them in real time could delete without
 * changing the version: only the search sees it, since an absent read names no version.
 */
function mutateGap(h: HistoryEntry[]): HistoryEntry[] | undefined {
  const lasting = (e: HistoryEntry): number | undefined => {
    if (e.outcome.status !== 'ok') return undefined;
    if (readsLive(e) && e.outcome.expiresAt === undefined) return e.outcome.version;
    if (e.op.kind === 'put' && e.op.ttlMs === undefined && e.op.expiresAt === undefined) return e.outcome.version;
    return undefined;
  };
  for (const first of h) {
    const version = lasting(first);
    if (version === undefined) continue;
    for (const last of h) {
      if (!readsLive(last) || last.op.key !== first.op.key || last.outcome.status !== 'ok' || last.outcome.version !== version || !precedes(first, last)) continue;
      const middle = h.find((m) => precedes(first, m) && precedes(m, last) && m.op.key === last.op.key && m.op.kind === 'get' && m.outcome.status === 'ok');
      if (middle !== undefined) return h.map((e) => (e === middle ? { ...e, outcome: { status: 'ok', found: false } } : e));
    }
  }
  return undefined;
}

const Random = suite('linearizability: randomized histories from a reference server');

const small: GenerateOptions = { opsCount: 300, keys: ['k0', 'k1', 'k2'], counters: ['n0'], clientsCount: 6, windowMs: 8, gapMs: 3, outagesCount: 2, outageOpsCount: 20, unknownRate: 0.02, skewMs: 20, ttlsMs: [30, 80, 200] };

Random('histories of a reference server, with conditions, counters, expiry, skewed clocks and outages of unknown outcomes, pass', () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const h = generate(seed, small);
    const result = checkLinearizable(h, { stepsMax: 1_000_000 });
    assert.ok(result.ok === true, `seed ${seed}: ${JSON.stringify(result).slice(0, 3000)}`);
  }
});

Random('one get made to read a stale version, or absent between two reads of one version, makes the history fail', () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const h = generate(seed, small);
    for (const [name, mutated] of [['stale', mutateStale(h)], ['gap', mutateGap(h)]] as const) {
      assert.ok(mutated !== undefined, `seed ${seed}: no ${name} mutation found`);
      const result = checkLinearizable(mutated!, { stepsMax: 1_000_000 });
      assert.is(result.ok, false, `seed ${seed} ${name}: ${JSON.stringify(result)}`);
      assert.equal(checkLinearizable(mutated!, { stepsMax: 1_000_000 }), result, `seed ${seed} ${name}: deterministic`);
    }
  }
});

/** Linearizable by definition: some order of the ops, respecting real time, that the model accepts, unknown ops optional, expiry deletes anywhere. */
function bruteForce(h: readonly HistoryEntry[], strict: boolean): boolean {
  const claimed = new Set<number>();
  for (const e of h) if (e.op.kind !== 'get' && e.outcome.status === 'ok') claimed.add(e.outcome.version!);
  const model: ModelOptions = { strict, claimed };
  const expiryMaxMs = Math.max(0, ...h.map((e) => e.clockOffsetMs?.max ?? 0));
  const done = new Array<boolean>(h.length).fill(false);
  const search = (state: KeyState): boolean => {
    const pending = h.filter((e, index) => !done[index] && e.outcome.status !== 'unknown');
    if (pending.length === 0) return true;
    const firstReturnMs = Math.min(...pending.map((e) => e.returnMs!));
    const deleted = expire(state, firstReturnMs + expiryMaxMs);
    if (deleted !== undefined && search(deleted)) return true;
    for (const [index, e] of h.entries()) {
      if (done[index] || e.callMs > firstReturnMs) continue;
      const { min, max } = e.clockOffsetMs ?? { min: 0, max: 0 };
      const toMs = e.outcome.status === 'unknown' ? firstReturnMs : e.returnMs!;
      for (const after of applyStep(state, { op: e.op, outcome: e.outcome, judgedFromMs: e.callMs + min, judgedToMs: toMs + max }, model)) {
        done[index] = true;
        const found = search(after);
        done[index] = false;
        if (found) return true;
      }
    }
    return false;
  };
  return search(INITIAL_STATE);
}

/** A few ops of one key from the reference server, then, half the time, one outcome or time changed at random. */
function tinyHistory(seed: number): HistoryEntry[] {
  const random = prng(seed);
  const below = (n: number): number => Math.floor(random() * n);
  const counter = random() < 0.3;
  const options: GenerateOptions = {
    opsCount: 1 + below(6),
    keys: counter ? [] : ['k'],
    counters: counter ? ['k'] : [],
    clientsCount: 3,
    windowMs: 3,
    gapMs: 2,
    outagesCount: 0,
    outageOpsCount: 0,
    unknownRate: 0.3,
    skewMs: below(3),
    ttlsMs: [2, 4, 7],
    values: ['a', 'b', 'c'],
  };
  const h = generate(seed * 7919, options);
  if (h.length === 0 || random() < 0.25) return h;
  return mutateOne(mutateOne(h, random, counter), random, counter, 0.3);
}

/** `h` with one outcome or time changed at random (with probability `chance`). */
function mutateOne(h: HistoryEntry[], random: () => number, counter: boolean, chance = 1): HistoryEntry[] {
  const below = (n: number): number => Math.floor(random() * n);
  if (random() >= chance) return h;
  const index = below(h.length);
  const e = h[index]!;
  let changed: HistoryEntry = e;
  const roll = random();
  if (roll < 0.25) changed = { ...e, callMs: e.callMs + below(5) - 2 };
  else if (e.outcome.status === 'ok') {
    const { outcome } = e;
    if (roll < 0.45 && outcome.version !== undefined) changed = { ...e, outcome: { ...outcome, version: Math.max(1, outcome.version + (random() < 0.5 ? 1 : -1)) } };
    else if (roll < 0.65 && outcome.found !== undefined && e.op.kind !== 'get') changed = { ...e, outcome: { ...outcome, found: !outcome.found } };
    else if (roll < 0.75 && typeof outcome.value === 'number') changed = { ...e, outcome: { ...outcome, value: outcome.value + 1 } };
    else if (e.op.kind === 'get') changed = { ...e, outcome: random() < 0.5 || !outcome.found ? { status: 'ok', found: true, value: counter ? below(4) : 'abc'[below(3)]!, version: 1 + below(5) } : { status: 'ok', found: false } };
  }
  if (changed.returnMs !== undefined && changed.returnMs < changed.callMs) return h;
  return h.map((x, i) => (i === index ? changed : x));
}

Random('on thousands of tiny histories, with every op, skewed clocks and expiry, the verdict is the one a brute-force search gives', () => {
  let linearizable = 0;
  let strictOnly = 0;
  for (let round = 0; round < 6_000; round += 1) {
    const h = tinyHistory(round + 1);
    const expected = bruteForce(h, false);
    const result = checkLinearizable(h);
    assert.is(result.ok, expected, `round ${round}: ${JSON.stringify(h)}\n${result.ok === false ? result.explanation : ''}`);
    const expectedStrict = bruteForce(h, true);
    assert.is(checkLinearizable(h, { strict: true }).ok, expectedStrict, `round ${round} (strict): ${JSON.stringify(h)}`);
    if (expected) linearizable += 1;
    if (expected && !expectedStrict) strictOnly += 1;
  }
  assert.ok(linearizable > 1_500 && linearizable < 5_000, `${linearizable} of 6000 were linearizable: both verdicts are exercised`);
  assert.ok(strictOnly > 0, `${strictOnly} histories needed a key seen expired to reappear`);
});

Random('unchanged tiny histories of the reference server always pass, with their clocks skewed either way', () => {
  for (let round = 0; round < 3_000; round += 1) {
    const h = generate(round + 1, { opsCount: 8, keys: ['k'], counters: ['n'], clientsCount: 3, windowMs: 3, gapMs: 2, outagesCount: 1, outageOpsCount: 3, unknownRate: 0.2, skewMs: 3, ttlsMs: [2, 4, 7], values: ['a', 'b'] });
    assertPasses(checkLinearizable(h));
  }
});

const large: GenerateOptions = { opsCount: 20_000, keys: ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'], counters: ['n0', 'n1'], clientsCount: 16, windowMs: 60, gapMs: 3, outagesCount: 8, outageOpsCount: 50, unknownRate: 0.005, skewMs: 100, ttlsMs: [300, 1000, 2500] };

Random('a history of 20,000 ops over 8 keys with hundreds of unknown outcomes is decided', () => {
  const h = generate(2026, large);
  const unknownCount = h.filter((e) => e.outcome.status === 'unknown').length;
  assert.ok(unknownCount >= 300, `${unknownCount} unknown ops`);
  const startedMs = performance.now();
  const result = checkLinearizable(h);
  const passMs = performance.now() - startedMs;
  assert.equal(result, { ok: true, keys: 8, ops: h.length });
  const mutated = mutateGap(h)!;
  const failStartedMs = performance.now();
  const failed = checkLinearizable(mutated);
  const failMs = performance.now() - failStartedMs;
  assert.is(failed.ok, false, JSON.stringify(failed).slice(0, 500));
  console.log(`  ${h.length} ops, 8 keys, ${unknownCount} unknown: linearizable decided in ${passMs.toFixed(0)}ms; with one get changed, failure found in ${failMs.toFixed(0)}ms`);
});

Random.run();
