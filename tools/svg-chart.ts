/**
 * Self-contained SVG charts for the bench's figures, drawn without a library: lines
 * against an x axis that may double from point to point (log 2), and grouped bars in
 * panels side by side. Every point and bar carries its exact figure in a <title> (a
 * tooltip in a browser); bars are also labelled with it, compactly.
 */

export interface LineSeries {
  name: string;
  color: string;
  dashed?: boolean;
  points: { x: number; y: number; title: string }[];
}

export interface LineChart {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  /** Whether x doubles from point to point: then a log-2 scale spaces the points evenly. */
  log2X: boolean;
  series: LineSeries[];
}

export interface BarPanel {
  title: string;
  /** The bars of every group, left to right, each with its legend entry. */
  bars: { name: string; color: string }[];
  /** values[group][bar]; undefined draws no bar ("n/a"). */
  values: (number | undefined)[][];
  /** The tooltip of each bar (values' shape). */
  titles: (string | undefined)[][];
}

export interface BarChart {
  title: string;
  subtitle?: string;
  /** The groups along the x axis, and an optional line of notes under each (e.g. ratios). */
  groups: { label: string; note?: string }[];
  panels: BarPanel[];
}

const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';
const AXIS = '#444';
const GRID = '#e3e3e3';
const MUTED = '#666';

export function lineChart(chart: LineChart): string {
  const width = 780;
  const legendWidth = 260;
  const margin = { left: 78, right: legendWidth, top: chart.subtitle ? 62 : 44, bottom: 58 };
  const height = margin.top + 320 + margin.bottom;
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const all = chart.series.flatMap((series) => series.points);
  const xs = [...new Set(all.map((p) => p.x))].sort((a, b) => a - b);
  const yMax = niceCeiling(Math.max(...all.map((p) => p.y), 0));
  const scaleX = (value: number) => (chart.log2X ? Math.log2(value) : value);
  const [xFirst, xLast] = [scaleX(xs[0] ?? 1), scaleX(xs[xs.length - 1] ?? 1)];
  const x = (value: number) => margin.left + (xFirst === xLast ? plotWidth / 2 : ((scaleX(value) - xFirst) / (xLast - xFirst)) * plotWidth);
  const y = (value: number) => margin.top + plotHeight - (value / yMax) * plotHeight;

  const parts = [...header(width, height, chart.title, chart.subtitle)];
  parts.push(...yGrid(margin.left, margin.left + plotWidth, yMax, y));
  parts.push(line(margin.left, margin.top + plotHeight, margin.left + plotWidth, margin.top + plotHeight, AXIS));
  for (const value of xs) parts.push(text(x(value), margin.top + plotHeight + 18, compact(value), { anchor: 'middle' }));
  parts.push(text(margin.left + plotWidth / 2, height - 16, chart.xLabel, { anchor: 'middle' }));
  parts.push(text(18, margin.top + plotHeight / 2, chart.yLabel, { anchor: 'middle', rotate: true }));
  chart.series.forEach((series, index) => {
    const dash = series.dashed ? ' stroke-dasharray="6 3"' : '';
    const points = [...series.points].sort((a, b) => a.x - b.x);
    parts.push(`<polyline fill="none" stroke="${series.color}" stroke-width="2"${dash} points="${points.map((p) => `${fixed(x(p.x))},${fixed(y(p.y))}`).join(' ')}"/>`);
    for (const p of points) parts.push(`<circle cx="${fixed(x(p.x))}" cy="${fixed(y(p.y))}" r="3.5" fill="${series.color}"><title>${escape(p.title)}</title></circle>`);
    const legendY = margin.top + 8 + index * 20;
    const legendX = width - legendWidth + 18;
    parts.push(`<line x1="${legendX}" x2="${legendX + 24}" y1="${legendY}" y2="${legendY}" stroke="${series.color}" stroke-width="2"${dash}/>`);
    parts.push(text(legendX + 30, legendY + 4, series.name));
  });
  parts.push('</svg>');
  return parts.join('\n');
}

export function barChart(chart: BarChart): string {
  const panelWidth = 400;
  const gap = 36;
  const margin = { left: 64, right: 16, top: chart.subtitle ? 60 : 42, bottom: chart.groups.some((g) => g.note) ? 60 : 42 };
  const legendRows = Math.max(...chart.panels.map((panel) => Math.ceil(panel.bars.length / 2)));
  const legendHeight = 22 + legendRows * 17;
  const plotHeight = 270;
  // Headroom above the tallest bar for its label, which stands upright.
  const labelRoom = 30;
  const width = margin.left + chart.panels.length * panelWidth + (chart.panels.length - 1) * (gap + margin.left) + margin.right;
  const height = margin.top + legendHeight + labelRoom + plotHeight + margin.bottom;
  const parts = [...header(width, height, chart.title, chart.subtitle)];
  chart.panels.forEach((panel, index) => {
    const left = margin.left + index * (panelWidth + gap + margin.left);
    parts.push(...barPanel(panel, chart.groups, { left, top: margin.top, width: panelWidth, legendHeight, labelRoom, plotHeight }));
  });
  parts.push('</svg>');
  return parts.join('\n');
}

interface PanelBox {
  left: number;
  top: number;
  width: number;
  legendHeight: number;
  labelRoom: number;
  plotHeight: number;
}

function barPanel(panel: BarPanel, groups: BarChart['groups'], box: PanelBox): string[] {
  const parts: string[] = [];
  parts.push(text(box.left, box.top + 4, panel.title, { size: 13, weight: 'bold' }));
  panel.bars.forEach((bar, index) => {
    const column = index % 2;
    const row = Math.floor(index / 2);
    const x = box.left + column * (box.width / 2);
    const y = box.top + 22 + row * 17;
    parts.push(`<rect x="${x}" y="${y - 9}" width="12" height="12" fill="${bar.color}"/>`);
    parts.push(text(x + 17, y + 1, bar.name, { size: 11 }));
  });
  const plotTop = box.top + box.legendHeight + box.labelRoom;
  const bottom = plotTop + box.plotHeight;
  const all = panel.values.flat().filter((value): value is number => value !== undefined);
  const yMax = niceCeiling(Math.max(0, ...all));
  const y = (value: number) => bottom - (value / yMax) * box.plotHeight;
  parts.push(...yGrid(box.left, box.left + box.width, yMax, y));
  const groupWidth = box.width / groups.length;
  const barWidth = Math.min(34, (groupWidth * 0.78) / panel.bars.length);
  groups.forEach((group, g) => {
    const center = box.left + groupWidth * (g + 0.5);
    const first = center - (barWidth * panel.bars.length) / 2;
    panel.bars.forEach((bar, b) => {
      const value = panel.values[g]?.[b];
      const x = first + b * barWidth;
      const labelX = x + barWidth / 2 + 4;
      if (value === undefined) {
        parts.push(text(labelX, bottom - 4, 'n/a', { size: 10, color: MUTED, rotate: true, anchor: 'start' }));
        return;
      }
      const top = y(value);
      const tooltip = panel.titles[g]?.[b];
      parts.push(`<rect x="${fixed(x + 1)}" y="${fixed(top)}" width="${fixed(barWidth - 2)}" height="${fixed(bottom - top)}" fill="${bar.color}">${tooltip ? `<title>${escape(tooltip)}</title>` : ''}</rect>`);
      parts.push(text(labelX, top - 4, compact(value), { size: 10, rotate: true, anchor: 'start' }));
    });
    parts.push(text(center, bottom + 18, group.label, { anchor: 'middle' }));
    if (group.note) parts.push(text(center, bottom + 34, group.note, { anchor: 'middle', size: 10.5, color: MUTED }));
  });
  parts.push(line(box.left, bottom, box.left + box.width, bottom, AXIS));
  return parts;
}

function header(width: number, height: number, title: string, subtitle: string | undefined): string[] {
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    text(16, 24, title, { size: 15, weight: 'bold' }),
  ];
  if (subtitle) parts.push(text(16, 43, subtitle, { size: 11.5, color: MUTED }));
  return parts;
}

/** Five grid lines up to yMax, labelled on the left of `left`. */
function yGrid(left: number, right: number, yMax: number, y: (value: number) => number): string[] {
  const parts: string[] = [];
  for (let step = 0; step <= 5; step += 1) {
    const value = (yMax / 5) * step;
    parts.push(line(left, y(value), right, y(value), GRID));
    parts.push(text(left - 8, y(value) + 4, compact(value), { anchor: 'end', color: MUTED }));
  }
  return parts;
}

function line(x1: number, y1: number, x2: number, y2: number, color: string): string {
  return `<line x1="${fixed(x1)}" x2="${fixed(x2)}" y1="${fixed(y1)}" y2="${fixed(y2)}" stroke="${color}"/>`;
}

interface TextStyle {
  anchor?: 'start' | 'middle' | 'end';
  size?: number;
  weight?: 'bold';
  color?: string;
  /** Upright: rotated a quarter turn, read from the bottom up. */
  rotate?: boolean;
}

function text(x: number, y: number, content: string, style: TextStyle = {}): string {
  const attributes = [
    style.rotate ? `transform="translate(${fixed(x)} ${fixed(y)}) rotate(-90)"` : `x="${fixed(x)}" y="${fixed(y)}"`,
    style.anchor && style.anchor !== 'start' ? `text-anchor="${style.anchor}"` : '',
    style.size ? `font-size="${style.size}"` : '',
    style.weight ? `font-weight="${style.weight}"` : '',
    style.color ? `fill="${style.color}"` : '',
  ].filter((attribute) => attribute !== '');
  return `<text ${attributes.join(' ')}>${escape(content)}</text>`;
}

/** A figure in at most four characters or so: 512, 27.4, 3.19, 1.2k, 23k, 1.5M. */
export function compact(value: number): string {
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6) return `${trim(value / 1e6)}M`;
  if (magnitude >= 1e4) return `${Math.round(value / 1e3)}k`;
  if (magnitude >= 1e3) return `${trim(value / 1e3)}k`;
  return trim(value);
}

function trim(value: number): string {
  return String(Number(value.toPrecision(3)));
}

/** The smallest round top at or above `value` whose fifths are round too (grid lines). */
function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const top = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find((candidate) => candidate * power >= value * (1 - 1e-9))!;
  return top * power;
}

function fixed(value: number): string {
  return String(Math.round(value * 10) / 10);
}

function escape(content: string): string {
  return content.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
