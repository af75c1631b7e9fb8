/** Seeded frames for fuzzing a node: valid requests, and every way a frame can be wrong. */
import type { Frame } from './helpers.js';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function generator(next: () => number) {
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const keys: string[] = [];
  const awkward = ['"', '\\', '\n', '\u0000', 'é', '🦀', '\u2028', "'", ',', ']', '}', ':', ' ', '__proto__', 'keyv:', '{'];
  const text = (max: number) => Array.from({ length: 1 + int(max) }, () => (next() < 0.3 ? pick(awkward) : String.fromCharCode(97 + int(26)))).join('');
  const key = () => {
    if (keys.length > 0 && next() < 0.5) return pick(keys);
    const made = next() < 0.1 ? pick(['__proto__', 'constructor', 'keyv:x', 'x']) : text(12);
    keys.push(made);
    return made;
  };
  const value = (depth: number): unknown => {
    const kind = int(depth > 3 ? 5 : 7);
    switch (kind) {
      case 0: return text(20);
      case 1: return pick([0, -0, 1, -1, 1.5, 1e308, -1e-308, 2 ** 53 + 1, 123456789]);
      case 2: return next() < 0.5;
      case 3: return '';
      case 4: return pick(['1', 'true', 'null', ':base64:AA', ':x']);
      case 5: return Array.from({ length: int(4) }, () => (next() < 0.1 ? null : value(depth + 1)));
      default: return Object.fromEntries(Array.from({ length: int(4) }, () => [next() < 0.2 ? '__proto__' : text(6), value(depth + 1)]));
    }
  };
  let id = 0;
  /** A frame, and whether it is a valid request (which must succeed). */
  return (): { frame: string; valid: boolean } => {
    id += 1;
    const roll = next();
    if (roll < 0.45) {
      const op = pick(['put', 'put', 'get', 'del']);
      const request: Frame = { id, op, key: key() };
      if (op === 'put') request['value'] = value(0);
      return { frame: JSON.stringify(request), valid: true };
    }
    const base = JSON.stringify({ id, op: pick(['put', 'get', 'del']), key: key(), value: value(0) });
    if (roll < 0.6) return { frame: base.slice(0, int(base.length)), valid: false };
    if (roll < 0.7) {
      const at = int(base.length);
      return { frame: base.slice(0, at) + pick(awkward) + base.slice(at + (next() < 0.5 ? 1 : 0)), valid: false };
    }
    if (roll < 0.8) {
      const wrong = pick([1, [], {}, true, null, '', 'k'.repeat(2000)]);
      return { frame: JSON.stringify({ id: pick([id, { id }, [id], true, 'x'.repeat(300)]), op: pick(['put', 'get', 'del', 'PUT', 'drop', '', 7]), key: wrong, value: wrong }), valid: false };
    }
    if (roll < 0.87) return { frame: `${pick(['put', 'get', 'del', 'help', 'hello', 'append', 'frob'])} ${text(10)} ${text(10)}`, valid: false };
    if (roll < 0.94) {
      const peer = pick([
        { op: 'append', epoch: int(5), first: int(5), ops: [['p', key(), value(0)]] },
        { op: 'hello', from: pick(['n0', 'n1', text(5)]), epoch: int(5) },
        { op: 'auth', proof: text(64) },
      ]);
      return { frame: JSON.stringify({ id, ...peer }), valid: false };
    }
    const depth = pick([100, 512, 513, 5000]);
    return { frame: `{"id":${id},"op":"put","key":"deep","value":${'['.repeat(depth)}${']'.repeat(depth)}}`, valid: depth <= 512 };
  };
}
