#!/usr/bin/env node
/**
 * Draws throughput (or p50/p99 latency) against requests in flight from the bench's JSON lines:
 *   node dist/tools/plot.js results.jsonl [throughput|latency] > docs/throughput.svg
 * Each line is one `npm run bench -- --json` result, or a `--compare redis` pair
 * {pbkv, redis}; a line is drawn per system (and per mix), points sorted by in-flight.
 */
import { readFileSync } from 'node:fs';

interface Result { system?: string; opsPerSecond: number; latencyMs: { p50: number; p99: number }; workload: Record<string, unknown> }

const [file, metric = 'throughput'] = process.argv.slice(2);
if (!file || (metric !== 'throughput' && metric !== 'latency')) {
  console.error('usage: node dist/tools/plot.js RESULTS.jsonl [throughput|latency] > plot.svg');
  process.exit(2);
}

/** One line per system and mix; for latency, one per percentile too. */
const series = new Map<string, { inFlight: number; y: number; title: string }[]>();
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const parsed = JSON.parse(line) as Result | Record<string, Result>;
  const results: Result[] = 'opsPerSecond' in parsed ? [parsed as Result] : Object.values(parsed as Record<string, Result>);
  for (const result of results) {
    if (result.system === 'echo') continue;
    const w = result.workload;
    const mix = String(w['mix']) === '1:0' ? 'puts' : String(w['mix']) === '0:1' ? 'gets' : `mix ${w['mix']}`;
    const name = `${result.system ?? 'pbkv'} ${mix}${result.system === 'redis' && mix === 'puts' ? ' (SET + WAIT)' : ''}`;
    const inFlight = Number(w['connections']) * Number(w['depth']);
    const points: [string, number][] = metric === 'throughput'
      ? [[name, result.opsPerSecond]]
      : [[`${name} p50`, result.latencyMs.p50], [`${name} p99`, result.latencyMs.p99]];
    for (const [label, y] of points) {
      const line = series.get(label) ?? [];
      line.push({ inFlight, y, title: `${label}: ${y} ${metric === 'throughput' ? 'ops/s' : 'ms'} at ${inFlight} in flight` });
      series.set(label, line);
    }
  }
}

const width = 760;
const height = 440;
const margin = { left: 80, right: 250, top: 40, bottom: 60 };
const plotWidth = width - margin.left - margin.right;
const plotHeight = height - margin.top - margin.bottom;
const all = [...series.values()].flat();
const xs = [...new Set(all.map((p) => p.inFlight))].sort((a, b) => a - b);
const yMax = niceCeiling(Math.max(...all.map((p) => p.y)));
// In-flight counts double from point to point: a log scale spaces them evenly.
const x = (inFlight: number) =>
  margin.left + (xs.length === 1 ? plotWidth / 2 : (Math.log2(inFlight) - Math.log2(xs[0]!)) / (Math.log2(xs[xs.length - 1]!) - Math.log2(xs[0]!)) * plotWidth);
const y = (value: number) => margin.top + plotHeight - (value / yMax) * plotHeight;
const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf', '#7f7f7f'];
const title = metric === 'throughput'
  ? 'Throughput against requests in flight (2 replicas, 100-byte values)'
  : 'Latency (p50 and p99) against requests in flight (2 replicas, 100-byte values)';

const parts: string[] = [];
parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
parts.push(`<rect width="${width}" height="${height}" fill="white"/>`);
parts.push(`<text x="${margin.left}" y="24" font-size="15">${title}</text>`);
for (let step = 0; step <= 5; step += 1) {
  const value = (yMax / 5) * step;
  parts.push(`<line x1="${margin.left}" x2="${margin.left + plotWidth}" y1="${y(value)}" y2="${y(value)}" stroke="#ddd"/>`);
  const label = metric === 'throughput' ? Math.round(value).toLocaleString('en-US') : String(Number(value.toFixed(2)));
  parts.push(`<text x="${margin.left - 8}" y="${y(value) + 4}" text-anchor="end">${label}</text>`);
}
for (const inFlight of xs) {
  parts.push(`<text x="${x(inFlight)}" y="${margin.top + plotHeight + 18}" text-anchor="middle">${inFlight}</text>`);
}
parts.push(`<text x="${margin.left + plotWidth / 2}" y="${height - 18}" text-anchor="middle">requests in flight (connections x depth)</text>`);
parts.push(`<text transform="translate(20 ${margin.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">${metric === 'throughput' ? 'ops/s' : 'ms'}</text>`);
[...series.entries()].forEach(([name, points], index) => {
  const color = colors[index % colors.length]!;
  const dashed = name.endsWith(' p99') ? ' stroke-dasharray="6 3"' : '';
  const sorted = points.sort((a, b) => a.inFlight - b.inFlight);
  parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dashed} points="${sorted.map((p) => `${x(p.inFlight)},${y(p.y)}`).join(' ')}"/>`);
  for (const p of sorted) parts.push(`<circle cx="${x(p.inFlight)}" cy="${y(p.y)}" r="3.5" fill="${color}"><title>${p.title}</title></circle>`);
  const legendY = margin.top + 10 + index * 20;
  parts.push(`<line x1="${width - margin.right + 16}" x2="${width - margin.right + 40}" y1="${legendY}" y2="${legendY}" stroke="${color}" stroke-width="2"${dashed}/>`);
  parts.push(`<text x="${width - margin.right + 46}" y="${legendY + 4}">${name}</text>`);
});
parts.push('</svg>');
console.log(parts.join('\n'));

function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / power) * power;
}
