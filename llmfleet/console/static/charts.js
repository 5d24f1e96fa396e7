// Live uPlot charts: one per chart id, fed whole columns (times, then one array per line); rebuilt when the set
// of lines changes (a replica appears), resized with its card.
import uPlot from "./vendor/uPlot.esm.js";

const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#39c5cf", "#f85149", "#8b949e",
                 "#ffa657", "#7ee787"];
const SUFFIXED = new Set(["req/s", "tok/s", "/s"]);   // units short enough to follow each value
const AXIS = { stroke: "#8694a5", grid: { stroke: "#222b36", width: 1 }, ticks: { stroke: "#263140", width: 1 } };

export function shortName(line) {
  // replica URLs read better as host:port
  return line.replace(/^https?:\/\//, "");
}

export function formatValue(value, unit) {
  if (value == null || Number.isNaN(value)) return "–";
  if (unit === "$") return `$${value.toFixed(Math.abs(value) >= 1 ? 2 : 4)}`;
  const text = compact(value);
  if (unit === "%") return `${text}%`;
  if (unit === "ms") return `${text} ms`;
  return SUFFIXED.has(unit) ? `${text} ${unit}` : text;
}

export function compact(value) {
  // few digits, no trailing zeros: 0.25, 3.5, 42, 1200, 1.5k
  const abs = Math.abs(value);
  if (abs >= 10000) return `${+(value / 1000).toFixed(1)}k`;
  return String(+value.toFixed(abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3));
}

function tick(unit) {
  // axis ticks carry the number only (the unit is in the card's title), % and $ excepted
  const mark = unit === "%" ? (v) => `${compact(v)}%` : unit === "$" ? (v) => `$${compact(v)}` : compact;
  return (u, ticks) => ticks.map(mark);
}

function lastValue(column) {
  for (let i = column.length - 1; i >= 0; i--) if (column[i] != null) return column[i];
  return null;
}

export class LiveChart {
  constructor(container, spec, options = {}) {
    this.container = container;
    this.spec = spec;
    this.options = options;
    this.plot = null;
    this.lines = [];
    this.empty = document.createElement("div");
    this.empty.className = "empty";
    this.empty.textContent = "waiting for samples…";
    container.appendChild(this.empty);
    new ResizeObserver(() => this.resize()).observe(container);
  }

  size() {
    return { width: Math.max(200, this.container.clientWidth), height: 190 };
  }

  build(lines) {
    if (this.plot) this.plot.destroy();
    this.lines = lines;
    const unit = this.spec.unit;
    const series = [{}].concat(lines.map((line, i) => ({
      label: shortName(line),
      stroke: PALETTE[i % PALETTE.length],
      width: 1.6,
      spanGaps: false,
      points: { show: false },
      paths: this.options.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
      // under the cursor: that sample; elsewhere the line's newest value
      value: (u, v, si, idx) => formatValue(idx == null ? lastValue(u.data[si]) : v, unit),
    })));
    const opts = {
      ...this.size(),
      series,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo ?? 0), hi > 0 ? hi * 1.1 : 1] } },
      axes: [{ ...AXIS }, { ...AXIS, size: 52, values: tick(unit) }],
      legend: { live: true },
    };
    this.plot = new uPlot(opts, [[]].concat(lines.map(() => [])), this.container);
  }

  update(times, columns) {
    const lines = Object.keys(columns);   // the server's order: total before errors, p50 before p99
    if (!times.length || !lines.length) return;
    this.empty.remove();
    if (!this.plot || lines.join("\n") !== this.lines.join("\n")) this.build(lines);
    this.plot.setData([times].concat(lines.map((line) => columns[line])));
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  points() {
    // non-null values drawn, over all lines (what the browser test reads)
    if (!this.plot) return 0;
    return this.plot.data.slice(1).reduce((n, col) => n + col.filter((v) => v != null).length, 0);
  }
}
