#!/usr/bin/env node
/**
 * Draws one figure from the bench's JSON lines as a self-contained SVG:
 *   node dist/tools/plot.js RESULTS.jsonl [throughput|latency|values|connections|keys|replicas] > FIGURE.svg
 * Each line is one `npm run bench -- --json` result, or a `--compare redis` pair {pbkv, redis}.
 * `npm run bench:sweep` runs the points and draws every figure (tools/sweep.ts); this
 * redraws one from a file it wrote. What each figure shows: tools/sweep-figures.ts.
 */
import { failWith, type Fail } from '../src/cli/flags.js';
import { FIGURE_KINDS, drawFigure, readResults, type FigureKind } from './sweep-figures.js';

const USAGE = `usage: node dist/tools/plot.js RESULTS.jsonl [${FIGURE_KINDS.join('|')}] > FIGURE.svg`;
const fail: Fail = failWith('plot', USAGE);
const [file, kind = 'throughput', ...rest] = process.argv.slice(2);
if (!file || rest.length > 0 || !(FIGURE_KINDS as readonly string[]).includes(kind)) fail('a results file and one figure kind');
try {
  console.log(drawFigure(kind as FigureKind, readResults(file)));
} catch (error) {
  fail((error as Error).message, 1);
}
