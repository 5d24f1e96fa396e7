"""Drift as a service: the latest window's PSI and MMD as Prometheus gauges, and its alerts sent through the
tenancy webhook (Slack-compatible JSON, once per metric and UTC day), recomputed every `interval_s` from the
request logs."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.apps.evals.drift import Window

logger = logging.getLogger(__name__)


class DriftGauges:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.psi = Gauge("llmfleet_drift_psi", "PSI of the latest window against the reference", ["metric"],
                         registry=r)
        self.mean = Gauge("llmfleet_drift_window_mean", "The latest window's mean", ["metric"], registry=r)
        self.mmd = Gauge("llmfleet_drift_mmd2", "Squared RBF-kernel MMD of the latest window's embeddings against "
                         "the reference", ["space"], registry=r)
        self.mmd_p = Gauge("llmfleet_drift_mmd_p_value", "Permutation p-value of that MMD", ["space"], registry=r)
        self.count = Gauge("llmfleet_drift_window_requests", "Requests in the latest window", registry=r)
        self.alerts = Counter("llmfleet_drift_alerts", "Windows that passed a drift threshold", ["metric"],
                              registry=r)

    def update(self, window: Window) -> None:
        self.count.set(window.count)
        for name, value in window.psi.items():
            self.psi.labels(name).set(value)
        for name, value in window.means.items():
            self.mean.labels(name).set(value)
        for space, (mmd2, p) in window.mmd.items():
            self.mmd.labels(space).set(mmd2)
            self.mmd_p.labels(space).set(p)
        for alert in window.alerts:
            self.alerts.labels(alert).inc()


def alert_text(window: Window, alert: str) -> tuple[str, float]:
    kind, _, name = alert.partition(":")
    value = window.psi[name] if kind == "psi" else window.mmd[name][1]
    what = f"PSI {value:.3f}" if kind == "psi" else f"MMD p-value {value:.4f}"
    return f"llmfleet: drift in {name} ({what}, {window.count} requests in the latest window)", value


async def send_alerts(alerts, window: Window, thresholds: dict) -> None:
    """Each of the window's alerts through tenancy's webhook sender (`alerts`: a tenancy BudgetAlerts)."""
    for alert in window.alerts:
        text, value = alert_text(window, alert)
        await alerts.notify(f"drift:{alert}", "drift", text, value, thresholds[alert.split(":")[0]])
