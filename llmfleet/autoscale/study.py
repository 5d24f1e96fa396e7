"""Runs behind `llmfleet autoscale simulate` and `figures`: arguments to a simulation, summaries to records."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from llmfleet.autoscale.fleet import SpotMarket
from llmfleet.autoscale.policy import AutoscalePolicy, PredictiveConfig, policy_from_dict, preset, static
from llmfleet.autoscale.replica_model import DEFAULT_RESULTS, ReplicaModel, load_replica_model
from llmfleet.autoscale.report import plot, summarize
from llmfleet.autoscale.simulator import Prices, Series, SimConfig, simulate
from llmfleet.autoscale.traces import load_trace

DEVICE = "cpu-2-core"                 # where the simulation ran (the curves it reads are the GPU's)
VLLM_STARTUP_S = (93.0, 112.0)        # vLLM 0.26.0 on the same H200, ready in (BENCHMARKS.md)
SWEEP_TARGETS = (16.0, 24.0, 32.0, 40.0, 48.0, 56.0)   # ongoing requests per replica


def startup_range(text: str | None, model: ReplicaModel) -> tuple[float, float]:
    if text is None:
        return model.startup_s
    low, _, high = text.partition("-")
    try:
        values = (float(low), float(high or low))
    except ValueError:
        raise ValueError(f"startup_s: expected LOW-HIGH seconds, got {text!r}") from None
    if not 0 <= values[0] <= values[1]:
        raise ValueError(f"startup_s: expected 0 <= LOW <= HIGH, got {text!r}")
    return values


def setup(args: argparse.Namespace) -> tuple[ReplicaModel, SimConfig, np.ndarray]:
    """The replica model, the simulator settings and the step times from the shared arguments."""
    model = load_replica_model(args.shape, args.results_dir or DEFAULT_RESULTS)
    model = model.with_startup(*startup_range(args.startup_s, model))
    spot = SpotMarket(preemptions_per_hour=args.preemptions_per_hour, notice_s=args.preemption_notice_s)
    config = SimConfig(step_s=args.step_s, ttft_slo_s=args.ttft_slo_s, seed=args.seed, spot=spot,
                       prices=Prices(args.on_demand_price, args.spot_price))
    if not args.hours > 0:
        raise ValueError(f"hours: must be positive, got {args.hours!r}")
    if not isinstance(args.max_replicas, int) or args.max_replicas < 1:
        raise ValueError(f"max_replicas: must be a positive integer, got {args.max_replicas!r}")
    return model, config, np.arange(0.0, args.hours * 3600.0, args.step_s)


def default_peak(args: argparse.Namespace, model: ReplicaModel, config: SimConfig) -> float:
    """80% of what --max-replicas carry at the SLO rate: the autoscaler has room above a static fleet's size."""
    return args.peak_rps if args.peak_rps is not None else 0.8 * args.max_replicas * model.slo_rate(config.ttft_slo_s)


def static_peak(rate: np.ndarray, model: ReplicaModel, config: SimConfig) -> AutoscalePolicy:
    """Static provisioning for the trace's peak: enough replicas for it at the SLO rate, all day, on-demand."""
    return static(max(1, math.ceil(rate.max() / model.slo_rate(config.ttft_slo_s) - 1e-9)))


def build_policy(args: argparse.Namespace, rate: np.ndarray, model: ReplicaModel, config: SimConfig):
    if args.policy == "static":
        return static_peak(rate, model, config)
    fields = {"max_replicas": args.max_replicas, "cold_start_s": float(np.mean(model.startup_s)),
              "spot": args.spot, "on_demand_floor": args.on_demand_floor}
    if args.predictive:
        fields["predictive"] = PredictiveConfig(requests_per_replica=0.7 * model.slo_rate(config.ttft_slo_s),
                                                lead_s=model.startup_s[1] + 60.0)
    path = Path(args.policy)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        import yaml

        if not path.exists():
            raise ValueError(f"policy: no such file {path}")
        return policy_from_dict({**fields, **(yaml.safe_load(path.read_text()) or {})})
    return preset(args.policy, **fields)


def simulate_from_args(args: argparse.Namespace) -> dict:
    model, config, times = setup(args)
    rate = load_trace(args.trace, times, args.seed, default_peak(args, model, config))
    policy = build_policy(args, rate, model, config)
    started = time.perf_counter()
    series = simulate(rate, model, policy, config)
    summary = summarize(series, model, config)
    summary["wall_s"] = time.perf_counter() - started
    summary.update(trace=args.trace, policy=policy.name, shape=model.shape, startup_s=list(model.startup_s),
                   max_replicas=policy.max_replicas, hours=args.hours, step_s=config.step_s, seed=config.seed)
    if args.out:
        write_outputs(Path(args.out), series, model, config, summary, f"{args.trace} / {policy.name}")
    if args.record:
        from llmfleet.bench.results import write_result

        summary["path"] = str(write_result({**summary, "workload": f"{args.trace}-{policy.name}",
                                            "device": DEVICE, "curves_from": list(model.sources)}, "autoscale"))
    return summary


def write_outputs(out: Path, series: Series, model: ReplicaModel, config: SimConfig, summary: dict, title: str):
    """summary.json, series.csv (one row per step) and simulation.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    names = ("time_s", "rate", "arrivals", "admitted", "queue", "ready", "live", "target", "billed_on_demand",
             "billed_spot", "per_replica_rate")
    with (out / "series.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(zip(*(np.round(getattr(series, n), 4).tolist() for n in names)))
    plot(series, model, config, out / "simulation.png", title)


def _run(rate, model, policy, config) -> dict:
    started = time.perf_counter()
    summary = summarize(simulate(rate, model, policy, config), model, config)
    return {**summary, "wall_s": time.perf_counter() - started, "policy": policy.name}


def cheapest_meeting_slo(rate, model, config, max_replicas: int, attainment: float = 0.99) -> dict:
    """Sweep the queue policy's ongoing target; the cheapest run that keeps `attainment` within the SLO."""
    runs = []
    for target in SWEEP_TARGETS:
        policy = preset("queue", max_replicas=max_replicas, cold_start_s=float(np.mean(model.startup_s)),
                        targets={"ongoing": target, "waiting": 16.0})
        runs.append({**_run(rate, model, policy, config), "target_ongoing_requests": target})
    meeting = [r for r in runs if r["slo_attainment"] >= attainment]
    return {"best": min(meeting, key=lambda r: r["cost"]) if meeting else None,
            "sweep": [{k: r[k] for k in ("target_ongoing_requests", "slo_attainment", "cost", "replica_hours")}
                      for r in runs]}


def write_figures(args: argparse.Namespace) -> list[Path]:
    """The bursty-trace records: the queue policy against static peak provisioning (with the run's wall time),
    and the cost of meeting the SLO with llmfleet's start-up time against vLLM's, the policy swept alike."""
    from llmfleet.bench.results import write_result

    model, config, times = setup(args)
    rate = load_trace("bursty", times, args.seed, default_peak(args, model, config))
    base = {"device": DEVICE, "shape": model.shape, "curves_from": list(model.sources), "hours": args.hours,
            "step_s": config.step_s, "seed": config.seed, "max_replicas": args.max_replicas,
            "peak_rps": float(rate.max()), "mean_rps": float(rate.mean()), "ttft_slo_s": config.ttft_slo_s,
            "prices_per_gpu_hour": {"on_demand": config.prices.on_demand_gpu_hour, "spot": config.prices.spot_gpu_hour}}
    fixed = _run(rate, model, static_peak(rate, model, config), config)
    cold = float(np.mean(model.startup_s))
    queue = _run(rate, model, preset("queue", max_replicas=args.max_replicas, cold_start_s=cold), config)
    floor = math.ceil(np.quantile(rate, 0.05) / model.slo_rate(config.ttft_slo_s))
    spot = _run(rate, model, preset("queue", max_replicas=args.max_replicas, cold_start_s=cold, spot=True,
                                    on_demand_floor=floor, name="queue-spot"), config)
    vs_static = {**base, "workload": "bursty-queue-vs-static", "startup_s": list(model.startup_s),
                 "static_peak": fixed, "queue": queue, "queue_spot": {**spot, "on_demand_floor": floor},
                 "queue_cost_vs_static": queue["cost"] / fixed["cost"],
                 "queue_spot_cost_vs_static": spot["cost"] / fixed["cost"],
                 "runtime_24h_s": queue["wall_s"] if args.hours == 24 else None,
                 "load_average_1m": os.getloadavg()[0]}   # the runtime's context: the machine is shared
    paths = [write_result(vs_static, "autoscale")]
    swap = {}
    for engine, startup in (("llmfleet", model.startup_s), ("vllm", VLLM_STARTUP_S)):
        swapped = model.with_startup(*startup)
        same = _run(rate, swapped, preset("queue", max_replicas=args.max_replicas,
                                          cold_start_s=float(np.mean(startup))), config)
        swap[engine] = {"startup_s": list(startup), "queue_policy": same,
                        **cheapest_meeting_slo(rate, swapped, config, args.max_replicas)}
    costs = {engine: (s["best"] or {}).get("cost") for engine, s in swap.items()}
    record = {**base, "workload": "bursty-startup-swap", "static_peak_cost": fixed["cost"], **swap,
              "cost_to_meet_slo": costs,
              "vllm_over_llmfleet": costs["vllm"] / costs["llmfleet"] if all(costs.values()) else None}
    paths.append(write_result(record, "autoscale"))
    return paths
