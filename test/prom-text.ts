/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for tests: it throws on
 * the first line that a scraper could read otherwise than meant. Checked: the line grammar
 * (HELP, TYPE, comments, samples with label sets, escapes, values, optional timestamps),
 * names and label names, one TYPE per family given before its samples, samples grouped by
 * family, no series twice, and a histogram's buckets: `le` on each, counts never falling
 * as `le` rises, a `+Inf` bucket equal to `_count`, and a `_sum`.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string | undefined;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition does not end with a newline');
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const typed = new Set<string>();
  const closed = new Set<string>();
  let current: Family | undefined;
  text.split('\n').forEach((line, index) => {
    const where = `line ${index + 1} "${line.slice(0, 120)}"`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const comment = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!comment) return; // an ordinary comment
      const [, kind, name, rest] = comment as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      const family = families.get(name) ?? { name, type: 'untyped', help: undefined, samples: [] };
      if (family.samples.length > 0) throw new Error(`${where}: ${kind} after the family's samples`);
      if (kind === 'HELP') {
        if (family.help !== undefined) throw new Error(`${where}: a second HELP`);
        unescape(rest, false, where);
        family.help = rest;
      } else {
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type`);
        if (typed.has(name)) throw new Error(`${where}: a second TYPE`);
        typed.add(name);
        family.type = rest;
      }
      if (closed.has(name)) throw new Error(`${where}: the family ${name} appears twice`);
      if (current && current.name !== name) closed.add(current.name);
      families.set(name, family);
      current = family;
      return;
    }
    const sample = parseSample(line, where);
    const family = familyOf(sample.name, families);
    if (!family) throw new Error(`${where}: a sample of no declared family`);
    if (closed.has(family.name) || (current && current.name !== family.name)) {
      throw new Error(`${where}: samples of ${family.name} are not grouped together`);
    }
    const series = `${sample.name}{${Object.entries(sample.labels).sort().map(([k, v]) => `${k}=${v}`).join(',')}}`;
    if (seen.has(series)) throw new Error(`${where}: the series ${series} twice`);
    seen.add(series);
    family.samples.push(sample);
  });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/** The family a sample belongs to: its own name, or a histogram's or summary's with a suffix. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const own = families.get(name);
  if (own && own.type !== 'histogram' && own.type !== 'summary') return own;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = families.get(name.slice(0, -suffix.length));
    if (base?.type === 'histogram' || (base?.type === 'summary' && suffix !== '_bucket')) return base;
  }
  if (own?.type === 'summary') return own;
  return undefined;
}

function parseSample(line: string, where: string): Sample {
  const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? ([^ ]+)( -?\d+)?$/.exec(line);
  if (!match) throw new Error(`${where}: not a sample line`);
  const [, name, labelText, valueText] = match as unknown as [string, string, string | undefined, string];
  return { name, labels: labelText ? parseLabels(labelText.slice(1, -1), where) : {}, value: parseValue(valueText, where) };
}

function parseLabels(text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const name = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(rest);
    if (!name || !LABEL_NAME.test(name[1]!)) throw new Error(`${where}: bad label at "${rest.slice(0, 40)}"`);
    rest = rest.slice(name[0].length);
    let end = 0;
    while (end < rest.length && rest[end] !== '"') end += rest[end] === '\\' ? 2 : 1;
    if (end >= rest.length) throw new Error(`${where}: an unterminated label value`);
    if (name[1]! in labels) throw new Error(`${where}: the label ${name[1]} twice`);
    labels[name[1]!] = unescape(rest.slice(0, end), true, where);
    rest = rest.slice(end + 1);
    if (rest.startsWith(',')) rest = rest.slice(1);
    else if (rest.length > 0) throw new Error(`${where}: labels not separated by commas`);
  }
  return labels;
}

/** Label values may escape \\, \" and \n; HELP text \\ and \n; nothing else. */
function unescape(text: string, quoted: boolean, where: string): string {
  return text.replace(/\\(.)/g, (_, char: string) => {
    if (char === '\\') return '\\';
    if (char === 'n') return '\n';
    if (char === '"' && quoted) return '"';
    throw new Error(`${where}: an unknown escape \\${char}`);
  });
}

/** A value as Prometheus reads it (Go's ParseFloat): a decimal, or Inf and NaN in any case (prom-client writes "Nan"). */
function parseValue(text: string, where: string): number {
  if (/^\+?inf$/i.test(text)) return Infinity;
  if (/^-inf$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: "${text}" is not a number`);
  return Number(text);
}

function checkHistogram(family: Family): void {
  const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (sample.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${family.name}: a bucket without le`);
      entry.buckets.push([parseValue(le, `${family.name} le`), sample.value]);
    } else if (sample.name.endsWith('_sum')) entry.sum = sample.value;
    else if (sample.name.endsWith('_count')) entry.count = sample.value;
  }
  for (const [key, entry] of series) {
    const where = `${family.name}${key}`;
    if (entry.sum === undefined || entry.count === undefined) throw new Error(`${where}: no _sum or no _count`);
    const sorted = [...entry.buckets].sort((a, b) => a[0] - b[0]);
    if (sorted.at(-1)?.[0] !== Infinity) throw new Error(`${where}: no +Inf bucket`);
    sorted.forEach(([le, count], index) => {
      if (index > 0 && count < sorted[index - 1]![1]) throw new Error(`${where}: the bucket le=${le} holds fewer than the one before`);
    });
    if (sorted.at(-1)![1] !== entry.count) throw new Error(`${where}: +Inf holds ${sorted.at(-1)![1]}, _count says ${entry.count}`);
  }
}

/** The value of one series, or undefined. */
export function valueOf(families: Map<string, Family>, family: string, name: string, labels: Record<string, string>): number | undefined {
  const sample = families.get(family)?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length);
  return sample?.value;
}
