// The page's copy of the gateway's ring buffer: columns appended from each ?since= poll, trimmed to the window.
export class SeriesStore {
  constructor() {
    this.t = [];
    this.charts = {};   // chart id -> line -> column aligned with t
    this.last = null;   // the newest sample time, for ?since=
  }

  append(answer) {
    const n = answer.t.length;
    if (!n) return;
    const before = this.t.length;
    this.t.push(...answer.t);
    for (const [chart, lines] of Object.entries(answer.series)) {
      const known = (this.charts[chart] ||= {});
      for (const [line, values] of Object.entries(lines)) {
        known[line] ||= new Array(before).fill(null);
        known[line].push(...values);
      }
      for (const [line, column] of Object.entries(known)) {
        if (!(line in lines)) column.push(...new Array(n).fill(null));
      }
    }
    this.last = answer.t[n - 1];
    this.trim(answer.now - answer.window_s);
  }

  trim(oldest) {
    let drop = 0;
    while (drop < this.t.length && this.t[drop] < oldest) drop++;
    if (!drop) return;
    this.t.splice(0, drop);
    for (const lines of Object.values(this.charts)) {
      for (const [line, column] of Object.entries(lines)) {
        column.splice(0, drop);
        if (column.every((v) => v == null)) delete lines[line];
      }
    }
  }

  latest(chart) {
    // each line's newest non-null value
    const out = {};
    for (const [line, column] of Object.entries(this.charts[chart] || {})) {
      for (let i = column.length - 1; i >= 0; i--) {
        if (column[i] != null) { out[line] = column[i]; break; }
      }
    }
    return out;
  }
}
