"""The drift report as a PNG (matplotlib, headless): per scalar its PSI per window against the alert line and its
window means, per embedding space its MMD p-value, and the windows that alerted shaded."""
from __future__ import annotations

import datetime as dt

from llmfleet.apps.evals.drift import SCALARS, DriftConfig, Window


def _time(seconds: float):
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def write_png(path: str, reference: Window, windows: list[Window], config: DriftConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = sorted({space for w in windows for space in w.mmd})
    rows = len(SCALARS) + len(spaces)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.4 * rows), squeeze=False, sharex=True)
    mids = [_time((w.start + w.end) / 2) for w in windows]
    for row, name in enumerate(SCALARS):
        _plot(axes[row][0], mids, [w.psi.get(name) for w in windows], f"PSI {name}", config.psi_alert)
        _plot(axes[row][1], mids, [w.means.get(name) for w in windows], f"mean {name}", reference.means.get(name))
    for i, space in enumerate(spaces):
        ax_mmd, ax_p = axes[len(SCALARS) + i]
        _plot(ax_mmd, mids, [w.mmd[space][0] if space in w.mmd else None for w in windows], f"MMD² {space}", None)
        _plot(ax_p, mids, [w.mmd[space][1] if space in w.mmd else None for w in windows], f"MMD p-value {space}",
              config.mmd_alpha)
    for ax in axes.flat:
        for w in windows:
            if w.alerts:
                ax.axvspan(_time(w.start), _time(w.end), color="tab:red", alpha=0.12)
    fig.suptitle(f"drift against the reference window ({reference.count} requests); shaded: alerts")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot(ax, xs, ys, title: str, line: float | None) -> None:
    points = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
    if line is not None:
        ax.axhline(line, color="tab:red", linestyle="--", linewidth=1)
    ax.set_title(title, fontsize=9)
