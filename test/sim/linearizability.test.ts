import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkLinearizable, type CheckResult, type HistoryEntry, type KvOutcome } from '../../src/sim/linearizability.js';

// Hand-made histories: [callMs, returnMs] for a known outcome, [callMs] for an unknown one.
type Times = [number, number] | [number];

function entry(op: HistoryEntry['op'], times: Times, outcome: KvOutcome): Omit<HistoryEntry, 'id'> {
  return { client: 0, op, callMs: times[0], returnMs: times[1], outcome: times.length === 2 ? outcome : { status: 'unknown' } };
}
const put = (key: string, value: string, times: Times) => entry({ kind: 'put', key, value }, times, { status: 'ok' });
const get = (key: string, value: string | undefined, times: Times) => entry({ kind: 'get', key }, times, { status: 'ok', value });
const del = (key: string, found: boolean, times: Times) => entry({ kind: 'del', key }, times, { status: 'ok', found });

/** Numbers the entries 1.. in the order given; the client is the entry's number too. */
function history(...entries: Omit<HistoryEntry, 'id'>[]): HistoryEntry[] {
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
  const result = checkLinearizable(
    history(put('k', 'a', [0, 1]), get('k', 'a', [2, 3]), put('j', 'x', [2, 3]), del('k', true, [4, 5]), get('k', undefined, [6, 7]), get('j', 'x', [8, 9])),
  );
  assert.equal(result, { ok: true, keys: 2, ops: 6 });
});

Passes('an empty history passes', () => {
  assert.equal(checkLinearizable([]), { ok: true, keys: 0, ops: 0 });
});

Passes('two overlapping puts may take effect in either order: a later get may read either', () => {
  for (const value of ['a', 'b']) {
    assertPasses(checkLinearizable(history(put('k', 'a', [0, 10]), put('k', 'b', [5, 15]), get('k', value, [20, 30]))));
  }
});

Passes('gets concurrent with two overlapping puts may read the two values in opposite orders', () => {
  const h = history(put('k', 'a', [0, 100]), put('k', 'b', [0, 100]), get('k', 'b', [10, 20]), get('k', 'a', [30, 40]), get('k', 'a', [110, 120]));
  assertPasses(checkLinearizable(h));
});

Passes('ops whose times touch are concurrent: a get called when a put returns may read the value before it', () => {
  assertPasses(checkLinearizable(history(put('k', 'a', [0, 10]), put('k', 'b', [10, 20]), get('k', 'a', [20, 30]))));
});

Passes('an unknown put may take effect long after its call: a get long after still reads the older value, a later one reads the unknown put', () => {
  const h = history(put('k', 'a', [0, 1]), put('k', 'u', [2]), get('k', 'a', [100, 101]), get('k', 'u', [200, 201]), put('k', 'c', [300, 301]), get('k', 'c', [400, 401]));
  assertPasses(checkLinearizable(h));
});

Passes('an unknown put that nothing read may never have taken effect', () => {
  assertPasses(checkLinearizable(history(put('k', 'a', [0, 1]), put('k', 'lost', [2]), get('k', 'a', [10, 11]), get('k', 'a', [20, 21]))));
  assertPasses(checkLinearizable(history(put('k', 'lost', [0]), get('k', undefined, [10, 11]))));
});

Passes('an unknown get constrains nothing', () => {
  assertPasses(checkLinearizable(history(put('k', 'a', [0, 1]), entry({ kind: 'get', key: 'k' }, [2], { status: 'ok', value: 'never' }), get('k', 'a', [5, 6]))));
});

Passes('del reports found exactly when the key holds a value', () => {
  const h = history(del('k', false, [0, 1]), put('k', 'a', [2, 3]), del('k', true, [4, 5]), del('k', false, [6, 7]), put('k', 'b', [8, 9]), del('k', true, [10, 11]));
  assertPasses(checkLinearizable(h));
});

Passes('a get of a key never written reads absent', () => {
  assertPasses(checkLinearizable(history(get('k', undefined, [0, 1]), get('k', undefined, [5, 6]), put('j', 'x', [0, 1]))));
});

Passes('an unknown put explains a del that found the key; an unknown del explains a later read of absent', () => {
  assertPasses(checkLinearizable(history(put('k', 'u', [0]), del('k', true, [10, 11]))));
  assertPasses(checkLinearizable(history(put('k', 'a', [0, 1]), entry({ kind: 'del', key: 'k' }, [2], { status: 'unknown' }), get('k', undefined, [10, 11]))));
});

Passes('unknown puts of a value some get reads can serve a del that found the key', () => {
  // "r" is read after the del, so only the second unknown put of "r" can serve the del's found:true.
  const h = history(put('k', 'r', [0]), put('k', 'r', [1]), del('k', true, [10, 11]), get('k', 'r', [20, 21]));
  assertPasses(checkLinearizable(h));
});

Passes('values need not be unique: a repeated value is read from whichever put can explain it', () => {
  assertPasses(checkLinearizable(history(put('k', 'x', [0, 1]), put('k', 'y', [2, 3]), put('k', 'x', [4]), get('k', 'x', [10, 11]))));
  assertPasses(checkLinearizable(history(put('k', 'x', [0, 1]), put('k', 'y', [2, 3]), put('k', 'x', [4, 5]), get('k', 'x', [10, 11]), get('k', 'x', [12, 13]))));
});

Passes('a burst of unknown puts and dels, each concurrent with everything after it, is decided quickly', () => {
  const entries: Omit<HistoryEntry, 'id'>[] = [put('k', 'start', [0, 1])];
  for (let index = 0; index < 60; index += 1) {
    entries.push(index % 3 === 2 ? entry({ kind: 'del', key: 'k' }, [10 + index], { status: 'unknown' }) : put('k', `u${index}`, [10 + index]));
  }
  // Afterwards the reads need several of them, interleaved with known writes.
  entries.push(get('k', 'u4', [200, 201]), del('k', true, [210, 211]), del('k', true, [220, 221]), get('k', undefined, [230, 231]), put('k', 'after', [240, 241]));
  entries.push(get('k', undefined, [250, 251]), get('k', 'u57', [260, 261]), get('k', 'u57', [270, 271]));
  const result = checkLinearizable(history(...entries), { stepsMax: 100_000 });
  assertPasses(result);
});

Passes.run();

const Fails = suite('linearizability: histories that are not linearizable fail with an explanation');

Fails('a stale read after a completed put fails', () => {
  const explanation = assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), put('k', 'b', [2, 3]), get('k', 'a', [4, 5]))));
  assert.match(explanation, /#3 read "a", but #2 \(put "b"\) overwrote every put of "a"/);
});

Fails('a read of a value never written fails', () => {
  const explanation = assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), get('k', 'ghost', [4, 5]))));
  assert.match(explanation, /#2 read "ghost", but no put ever wrote it/);
});

Fails('a value read, then an older value read by a later get that does not overlap it, fails', () => {
  // The two puts overlap, so no write lies between them in real time: the blocks of put and gets show it.
  const h = history(put('k', 'a', [0, 10]), put('k', 'b', [0, 10]), get('k', 'b', [20, 30]), get('k', 'a', [40, 50]));
  const explanation = assertFails(checkLinearizable(h));
  assert.match(explanation, /#1 of "a" and the gets that read it, and the put #2 of "b" and the gets that read it, must each take effect as one block/);
  assert.match(explanation, /#1 returned at 10ms, before #3 was called at 20ms, and #2 returned at 10ms, before #4 was called at 40ms/);
  // And the same when the older value was written strictly before.
  assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), put('k', 'b', [2, 3]), get('k', 'b', [4, 5]), get('k', 'a', [6, 7]))));
});

Fails('a get that falls strictly between a put and a later get of its value, and reads another value, fails', () => {
  const h = history(put('k', 'a', [0, 10]), put('k', 'b', [0, 20]), get('k', 'b', [12, 14]), get('k', 'a', [30, 40]));
  const explanation = assertFails(checkLinearizable(h));
  assert.match(explanation, /the block runs from #1, which returned at 10ms, to #4, which was called at 30ms, but #3 \(get read "b"\) was called at 12ms and returned at 14ms, strictly between them/);
});

Fails('a lost acknowledged put fails: a later get sees the key absent, or an older value', () => {
  let explanation = assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), get('k', undefined, [2, 3]))));
  assert.match(explanation, /#2 read absent, but #1 \(put "a"\) overwrote the initial absent register and every del/);
  explanation = assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), del('k', true, [2, 3]), put('k', 'b', [4, 5]), get('k', undefined, [6, 7]))));
  assert.match(explanation, /#4 read absent, but #3 \(put "b"\)/);
  assertFails(checkLinearizable(history(put('k', 'old', [0, 1]), put('k', 'new', [2, 3]), get('k', 'old', [4, 5]))));
});

Fails('del found:true on a key never written fails, and so does del found:false on a key holding a value', () => {
  const explanation = assertFails(checkLinearizable(history(get('k', undefined, [0, 1]), del('k', true, [2, 3]))));
  assert.match(explanation, /#2 found the key, but no put was called before #2 returned at 3ms/);
  const search = assertFails(checkLinearizable(history(put('k', 'a', [0, 1]), del('k', false, [2, 3]))));
  assert.match(search, /could not follow: it did not find the key but the register held "a"/);
});

Fails('a read of an unknown put\'s value before that put was called fails', () => {
  const explanation = assertFails(checkLinearizable(history(get('k', 'u', [0, 5]), put('k', 'u', [10]))));
  assert.match(explanation, /#1 read "u", but no put was called before #1 returned at 5ms \(the first, #2, was called at 10ms\)/);
});

Fails('the failing key is named, and other keys do not hide it', () => {
  const h = history(put('ok', 'a', [0, 1]), get('ok', 'a', [2, 3]), put('bad', 'x', [0, 1]), get('bad', 'y', [2, 3]));
  assertFails(checkLinearizable(h), 'bad');
});

/**
 * Rejected only by the search: the del found the key, so the unknown put "u" or the put "a"
 * came before it; "a" must be read afterwards, so "u" came first; then nothing deletes "a"
 * before the last get, which read absent.
 */
const searchOnly = () =>
  history(put('k', 'a', [0, 10]), del('k', true, [0, 10]), put('k', 'u', [1]), get('k', 'a', [20, 30]), get('k', undefined, [40, 50]));

Fails('the explanation lists the ops of the key in call order with times and outcomes, then the longest prefix and the op that could not follow', () => {
  const explanation = assertFails(checkLinearizable(searchOnly()));
  const expected = [
    'key "k" is not linearizable.',
    'Ops of this key in call order (times in virtual ms):',
    '  #1 client 1: put "a", called at 0ms, returned at 10ms: ok',
    '  #2 client 2: del, called at 0ms, returned at 10ms: ok, found',
    '  #3 client 3: put "u", called at 1ms, no reply: unknown',
    '  #4 client 4: get, called at 20ms, returned at 30ms: ok, read "a"',
    '  #5 client 5: get, called at 40ms, returned at 50ms: ok, read absent',
    'Longest linearizable prefix: 3 of the 4 ops with a known outcome, in linearization order:',
    '  #3 put "u" (outcome unknown, taking effect here) → "u"',
    '  #2 del found → absent',
    '  #1 put "a" → "a"',
    '  #4 get read "a" → "a"',
    'Then #5 (client 5, get, called at 40ms, returned at 50ms) could not follow: it read absent but the register held "a". No other order of the ops concurrent with it gets further.',
  ].join('\n');
  assert.is(explanation, expected);
});

Fails('the search answers undecided when it runs out of steps', () => {
  const result = checkLinearizable(searchOnly(), { stepsMax: 3 });
  assert.is(result.ok, 'undecided');
  assert.match(result.ok === 'undecided' ? result.reason : '', /budget of 3 steps \(stepsMax\) on key "k"/);
});

Fails('a malformed entry is a programming error, not a verdict', () => {
  assert.throws(() => checkLinearizable(history({ ...get('k', undefined, [0, 1]), returnMs: undefined })), /an 'ok' op needs returnMs/);
  assert.throws(() => checkLinearizable([...history(put('k', 'a', [0, 1])), ...history(put('k', 'b', [0, 1]))]), /id 1 is not unique/);
});

Fails.run();

// ---------------------------------------------------------------------------------------
// Randomized histories, linearizable by construction

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
  keysCount: number;
  clientsCount: number;
  /** How far a call may come before, and a return after, the op's linearization point. */
  windowMs: number;
  outagesCount: number;
  /** Consecutive ops whose outcome is unknown in each outage. */
  outageOpsCount: number;
  /** Outside outages, the chance that an op's outcome is unknown. */
  unknownRate: number;
}

/**
 * A history from a sequential run: op i takes effect at an increasing time and is called up
 * to windowMs before and returns up to windowMs after it. An op of unknown outcome took
 * effect or not at random. Values are unique.
 */
function generate(seed: number, options: GenerateOptions): HistoryEntry[] {
  const random = prng(seed);
  const below = (n: number): number => Math.floor(random() * n);
  const register = new Map<string, string>();
  const outageStarts = Array.from({ length: options.outagesCount }, () => below(options.opsCount));
  const result: HistoryEntry[] = [];
  let effectMs = 0;
  for (let index = 0; index < options.opsCount; index += 1) {
    effectMs += 1 + below(3);
    const key = `k${below(options.keysCount)}`;
    const inOutage = outageStarts.some((start) => index >= start && index < start + options.outageOpsCount);
    const unknown = inOutage || random() < options.unknownRate;
    const applied = !unknown || random() < 0.5;
    const roll = random();
    let op: HistoryEntry['op'];
    let outcome: KvOutcome;
    if (roll < 0.4) {
      op = { kind: 'put', key, value: `v${index}` };
      if (applied) register.set(key, op.value);
      outcome = { status: 'ok' };
    } else if (roll < 0.55) {
      op = { kind: 'del', key };
      outcome = { status: 'ok', found: register.has(key) };
      if (applied) register.delete(key);
    } else {
      op = { kind: 'get', key };
      outcome = { status: 'ok', value: register.get(key) };
    }
    const callMs = effectMs - below(options.windowMs + 1);
    const returnMs = effectMs + below(options.windowMs + 1);
    result.push({ client: below(options.clientsCount), id: index, op, callMs, returnMs: unknown ? undefined : returnMs, outcome: unknown ? { status: 'unknown' } : outcome });
  }
  return result;
}

const precedes = (a: HistoryEntry, b: HistoryEntry): boolean => a.returnMs !== undefined && a.returnMs < b.callMs;
const isKnownPut = (e: HistoryEntry): boolean => e.op.kind === 'put' && e.outcome.status === 'ok';

/**
 * A get made to read a stale value: the value of a known put p, where known put q came after
 * p and before the get. With unique values, p is the only writer, and q lies between.
 */
function mutateStale(h: HistoryEntry[]): HistoryEntry[] | undefined {
  for (let g = h.length - 1; g >= 0; g -= 1) {
    const target = h[g]!;
    if (target.op.kind !== 'get' || target.outcome.status !== 'ok') continue;
    let q: HistoryEntry | undefined; // the last to be called of the known puts before the get
    for (const e of h) if (isKnownPut(e) && e.op.key === target.op.key && precedes(e, target) && (q === undefined || e.callMs > q.callMs)) q = e;
    const p = q && h.find((e) => isKnownPut(e) && e.op.key === target.op.key && precedes(e, q));
    if (p === undefined || p.op.kind !== 'put') continue;
    return h.map((e) => (e === target ? { ...e, outcome: { status: 'ok', value: p.op.kind === 'put' ? p.op.value : '' } } : e));
  }
  return undefined;
}

/**
 * A get g2 made to read an older value after an earlier get g1 read a newer one: g1 (before g2)
 * read put q's value, and known put p, overlapping q, returned before g1 was called. Then
 * p precedes g1, so p precedes q, which g1 read; g2 cannot see p's value again.
 */
function mutateNewThenOld(h: HistoryEntry[]): HistoryEntry[] | undefined {
  for (const g1 of h) {
    if (g1.op.kind !== 'get' || g1.outcome.status !== 'ok' || g1.outcome.value === undefined) continue;
    const value = g1.outcome.value;
    const q = h.find((e) => e.op.kind === 'put' && e.op.value === value);
    if (q === undefined || q.outcome.status !== 'ok') continue;
    const p = h.find((e) => isKnownPut(e) && e.op.key === g1.op.key && e !== q && !precedes(e, q) && !precedes(q, e) && precedes(e, g1));
    const g2 = h.find((e) => e.op.kind === 'get' && e.outcome.status === 'ok' && e.op.key === g1.op.key && precedes(g1, e));
    if (p === undefined || g2 === undefined || p.op.kind !== 'put') continue;
    const old = p.op.value;
    return h.map((e) => (e === g2 ? { ...e, outcome: { status: 'ok', value: old } } : e));
  }
  return undefined;
}

const Random = suite('linearizability: randomized histories from a sequential run');

const small: GenerateOptions = { opsCount: 300, keysCount: 3, clientsCount: 6, windowMs: 25, outagesCount: 2, outageOpsCount: 20, unknownRate: 0.02 };

Random('histories from a sequential run, with overlapping calls and outages of unknown outcomes, pass', () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const h = generate(seed, small);
    const result = checkLinearizable(h, { stepsMax: 1_000_000 });
    assert.equal(result, { ok: true, keys: 3, ops: 300 }, `seed ${seed}: ${JSON.stringify(result)}`);
  }
});

Random('one get made to read a stale value, or an older value than a previous read, makes the history fail', () => {
  for (let seed = 1; seed <= 40; seed += 1) {
    const h = generate(seed, small);
    for (const [name, mutated] of [['stale', mutateStale(h)], ['new then old', mutateNewThenOld(h)]] as const) {
      assert.ok(mutated !== undefined, `seed ${seed}: no ${name} mutation found`);
      const result = checkLinearizable(mutated!, { stepsMax: 1_000_000 });
      assert.is(result.ok, false, `seed ${seed} ${name}: ${JSON.stringify(result)}`);
      const again = checkLinearizable(mutated!, { stepsMax: 1_000_000 });
      assert.equal(again, result, `seed ${seed} ${name}: deterministic`);
    }
  }
});

/** Linearizable by definition: some order of all the ops, respecting real time, that the register accepts, unknown ops optional. */
function bruteForce(h: readonly HistoryEntry[]): boolean {
  const done = new Array<boolean>(h.length).fill(false);
  const search = (register: string | undefined): boolean => {
    const remaining = h.filter((_, index) => !done[index]);
    if (remaining.every((e) => e.outcome.status === 'unknown')) return true;
    for (const [index, e] of h.entries()) {
      if (done[index] || remaining.some((r) => precedes(r, e))) continue;
      const { outcome } = e;
      let after = register;
      if (e.op.kind === 'put') after = e.op.value;
      else if (e.op.kind === 'del') {
        if (outcome.status === 'ok' && outcome.found !== (register !== undefined)) continue;
        after = undefined;
      } else if (outcome.status === 'ok' && outcome.value !== register) continue;
      done[index] = true;
      const found = search(after);
      done[index] = false;
      if (found) return true;
    }
    return false;
  };
  return search(undefined);
}

function tinyHistory(random: () => number): HistoryEntry[] {
  const below = (n: number): number => Math.floor(random() * n);
  const values = ['a', 'b', 'c'];
  return Array.from({ length: 1 + below(7) }, (_, index): HistoryEntry => {
    const callMs = below(12);
    const unknown = random() < 0.3;
    const returnMs = unknown ? undefined : callMs + below(6);
    const roll = random();
    const value = values[below(values.length)]!;
    if (roll < 0.4) return { client: index, id: index, op: { kind: 'put', key: 'k', value }, callMs, returnMs, outcome: unknown ? { status: 'unknown' } : { status: 'ok' } };
    if (roll < 0.6) return { client: index, id: index, op: { kind: 'del', key: 'k' }, callMs, returnMs, outcome: unknown ? { status: 'unknown' } : { status: 'ok', found: random() < 0.5 } };
    const read = random() < 0.3 ? undefined : value;
    return { client: index, id: index, op: { kind: 'get', key: 'k' }, callMs, returnMs, outcome: unknown ? { status: 'unknown' } : { status: 'ok', value: read } };
  });
}

Random('on thousands of tiny histories, with repeated values, the verdict is the one a brute-force search gives', () => {
  const random = prng(7);
  let linearizable = 0;
  let searched = 0;
  for (let round = 0; round < 5_000; round += 1) {
    const h = tinyHistory(random);
    const expected = bruteForce(h);
    const result = checkLinearizable(h);
    assert.is(result.ok, expected, `round ${round}: ${JSON.stringify(h)}`);
    if (expected) linearizable += 1;
    if (result.ok === false && result.explanation.includes('Longest linearizable prefix')) searched += 1;
  }
  assert.ok(linearizable > 1_000 && linearizable < 4_000, `${linearizable} of 5000 were linearizable: both verdicts are exercised`);
  const direct = 5_000 - linearizable - searched;
  assert.ok(searched > 100 && direct > 100, `failures found by the search: ${searched}, by the checks before it: ${direct}; both are exercised`);
});

const large: GenerateOptions = { opsCount: 20_000, keysCount: 8, clientsCount: 16, windowMs: 60, outagesCount: 8, outageOpsCount: 50, unknownRate: 0.005 };

Random('a history of 20,000 ops over 8 keys with hundreds of unknown outcomes is decided', () => {
  const h = generate(2026, large);
  const unknownCount = h.filter((e) => e.outcome.status === 'unknown').length;
  assert.ok(unknownCount >= 300, `${unknownCount} unknown ops`);
  const startedMs = performance.now();
  const result = checkLinearizable(h);
  const passMs = performance.now() - startedMs;
  assert.equal(result, { ok: true, keys: 8, ops: 20_000 });
  const mutated = mutateNewThenOld(h)!;
  const failStartedMs = performance.now();
  const failed = checkLinearizable(mutated);
  const failMs = performance.now() - failStartedMs;
  assert.is(failed.ok, false, JSON.stringify(failed).slice(0, 500));
  console.log(`  20,000 ops, 8 keys, ${unknownCount} unknown: linearizable decided in ${passMs.toFixed(0)}ms; with one get mutated, failure found in ${failMs.toFixed(0)}ms`);
});

Random.run();
