"""`llmfleet top`'s screen: the console's JSON drawn with rich (tables, colours, and redrawing in place without
terminal-capability code of our own). Fed by entrypoints/top.py; knows nothing of HTTP."""
from __future__ import annotations

import time
from collections import deque

from rich.console import Group
from rich.table import Table
from rich.text import Text

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 60          # samples a sparkline spans
FLEET_ROWS = ("requests", "tokens", "goodput", "slo", "ttft", "tpot", "e2e", "queue", "retries", "splits")
HEALTH_STYLE = {"healthy": "green", "draining": "yellow", "drained": "yellow", "down": "red"}


class Screen:
    """The newest values of every chart line (and a short history), the replica table and spend."""

    def __init__(self, url: str):
        self.url = url
        self.meta: dict = {}
        self.history: dict[str, dict[str, deque]] = {}
        self.last_t: float | None = None
        self.replicas: dict = {}
        self.spend: dict | None = None
        self.error: str | None = None

    def add_series(self, answer: dict) -> None:
        self.meta = {k: answer[k] for k in ("kind", "policy", "slo", "interval_s", "charts")}
        for chart, lines in answer["series"].items():
            known = self.history.setdefault(chart, {})
            for line, values in lines.items():
                known.setdefault(line, deque(maxlen=HISTORY)).extend(values)
        if answer["t"]:
            self.last_t = answer["t"][-1]

    def latest(self, chart: str) -> dict[str, float | None]:
        return {line: next((v for v in reversed(col) if v is not None), None)
                for line, col in self.history.get(chart, {}).items()}

    def render(self) -> Group:
        parts = [self._header(), self._fleet()]
        if self.replicas:
            parts.append(self._replicas())
        if self.spend and self.spend.get("enabled"):
            parts.append(self._spend())
            parts += [Text.assemble(("alert ", "bold yellow"), f"{a['subject']}: {a['message']}")
                      for a in self.spend["alerts"]]
        if self.error:
            parts.append(Text(self.error, style="bold red"))
        return Group(*parts)

    def _header(self) -> Text:
        when = time.strftime("%H:%M:%S", time.localtime(self.last_t)) if self.last_t else "no sample yet"
        text = Text.assemble(("llmfleet top ", "bold"), (self.url, "cyan"),
                             f"  {self.meta.get('kind', '?')}", f"  policy {self.meta.get('policy') or '-'}",
                             f"  updated {when}", ("  (Ctrl-C quits)", "dim"))
        return text

    def _fleet(self) -> Table:
        slo = self.meta.get("slo", {})
        table = Table(title=f"Fleet (SLOs: TTFT {slo.get('ttft_ms', '?')} ms, TPOT {slo.get('tpot_ms', '?')} ms)",
                      title_justify="left", expand=True)
        table.add_column("metric", style="bold")
        table.add_column("now")
        table.add_column(f"last {HISTORY} samples", no_wrap=True)
        charts = {c["id"]: c for c in self.meta.get("charts", [])}
        for chart in (c for c in FLEET_ROWS if c in charts):
            values = self.latest(chart)
            unit = charts[chart]["unit"]
            now = "  ".join(f"{line} {_number(v)}" for line, v in values.items()) + f"  {unit}"
            first = next(iter(self.history.get(chart, {}).values()), ())
            table.add_row(charts[chart]["title"], now, sparkline(list(first)))
        return table

    def _replicas(self) -> Table:
        table = Table(title="Replicas", title_justify="left", expand=True)
        for name in ("replica", "model", "version", "health", "circuit", "in flight", "running", "waiting", "KV %",
                     "prefix hit %", "routed"):
            table.add_column(name, justify="right" if name not in ("replica", "model", "version", "health",
                                                                     "circuit") else "left")
        prefix = self.latest("prefix")
        for rep in self.replicas.get("replicas", []):
            health = "down" if not rep["healthy"] else (
                "drained" if rep.get("drained_by") == "operator" else "draining" if rep["draining"] else "healthy")
            kv = rep.get("kv_usage")
            table.add_row(rep["url"].split("://")[-1], rep.get("model") or "-", rep.get("version") or "-",
                          Text(health, style=HEALTH_STYLE[health]), rep.get("circuit") or "-",
                          _number(rep.get("in_flight")), _number(rep.get("running")), _number(rep.get("waiting")),
                          _number(None if kv is None else 100 * kv), _number(prefix.get(rep["url"])),
                          _number(rep.get("routed")))
        return table

    def _spend(self) -> Table:
        spend = self.spend
        tokens = sum(r["tokens"] for r in spend["by_model"])
        per_1m = f", ${spend['total'] * 1e6 / tokens:.2f} per 1M tokens" if tokens else ""
        table = Table(title=f"Spend, last {spend['window_s'] / 60:.0f} min: ${spend['total']:.4f}{per_1m}; "
                            f"{len(spend['alerts'])} alert(s)", title_justify="left", expand=True)
        for name in ("by", "name", "requests", "tokens", "spend $", "$ / 1M tokens"):
            table.add_column(name, justify="left" if name in ("by", "name") else "right")
        for group, key in (("model", "model"), ("team", "team_id"), ("key", "name")):
            for row in spend[f"by_{group}"][:5]:
                table.add_row(group, str(row.get(key) or "-"), str(row["requests"]), str(row["tokens"]),
                              f"{row['spend']:.4f}", "-" if row["cost_per_1m"] is None else f"{row['cost_per_1m']:.2f}")
        return table


def sparkline(values: list) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return ""
    top = max(present) or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int(len(SPARK) * v / top))] if top > 0
                   else SPARK[0] for v in values)


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
