"""What a simulation comes to: SLO attainment, replica-hours, cost, cost per 1M output tokens; and its plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llmfleet.autoscale.replica_model import ReplicaModel
from llmfleet.autoscale.simulator import Series, SimConfig, ttft_within


def summarize(series: Series, model: ReplicaModel, config: SimConfig) -> dict:
    """The run's figures. Cost = billed replica-hours x GPUs per replica x the GPU-hour price of their kind."""
    within_slo, _ = ttft_within(series, model, config)
    hours = config.step_s / 3600.0
    on_demand_h = float(series.billed_on_demand.sum() * hours)
    spot_h = float(series.billed_spot.sum() * hours)
    cost = model.gpus * (on_demand_h * config.prices.on_demand_gpu_hour + spot_h * config.prices.spot_gpu_hour)
    requests, admitted = float(series.arrivals.sum()), float(series.admitted.sum())
    output_tokens = admitted * model.output_tokens
    return {
        "requests": requests,
        "requests_admitted": admitted,
        "slo_ttft_s": config.ttft_slo_s,
        "slo_attainment": float(within_slo.sum() / requests) if requests else 1.0,
        "replica_hours": on_demand_h + spot_h,
        "replica_hours_on_demand": on_demand_h,
        "replica_hours_spot": spot_h,
        "gpu_hours": model.gpus * (on_demand_h + spot_h),
        "cost": cost,
        "output_tokens": output_tokens,
        "cost_per_1m_output_tokens": cost / (output_tokens / 1e6) if output_tokens else None,
        "replicas_max": int(series.live.max()),
        "replicas_mean": float(series.live.mean()),
        "queue_max": float(series.queue.max()),
        "preemptions": series.preemptions,
        "spot_fallbacks_to_on_demand": series.fallbacks,
    }


def ttft_series(series: Series, model: ReplicaModel, config: SimConfig) -> dict[str, np.ndarray]:
    """Per step: TTFT p50 and p99 (the replica's distribution at its load, shifted by the mean queueing delay)
    and the fraction within the SLO."""
    within_slo, delay = ttft_within(series, model, config)
    rate = series.per_replica_rate
    return {"p50": model.curve("ttft_p50_s", rate) + delay, "p99": model.curve("ttft_p99_s", rate) + delay,
            "within": np.divide(within_slo, series.arrivals, out=np.ones_like(within_slo),
                                where=series.arrivals > 0)}


def plot(series: Series, model: ReplicaModel, config: SimConfig, path: Path, title: str) -> Path:
    """Load, replicas and latency over time, one panel each, to a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")   # files only, no display
    import matplotlib.pyplot as plt

    hours = series.time_s / 3600.0
    ttft = ttft_series(series, model, config)
    fig, (load, reps, lat) = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    load.plot(hours, series.rate, lw=0.8, label="offered")
    load.plot(hours, series.admitted / config.step_s, lw=0.8, label="admitted")
    load.set_ylabel("requests / s")
    load.legend(loc="upper right")
    load.set_title(title)
    reps.plot(hours, series.ready, lw=0.8, label="ready")
    reps.plot(hours, series.target, lw=0.8, ls="--", label="autoscaler target")
    reps.fill_between(hours, 0, series.billed_spot, step="mid", alpha=0.3, label="billed spot")
    reps.set_ylabel("replicas")
    reps.legend(loc="upper right")
    lat.semilogy(hours, np.maximum(ttft["p50"], 1e-3), lw=0.8, label="TTFT p50")
    lat.semilogy(hours, np.maximum(ttft["p99"], 1e-3), lw=0.8, label="TTFT p99")
    lat.axhline(config.ttft_slo_s, color="red", lw=0.8, ls=":", label=f"SLO {config.ttft_slo_s * 1000:.0f} ms")
    lat.set_ylabel("seconds")
    lat.set_xlabel("hours")
    lat.legend(loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
