"""The fleet simulator: deterministic for a seed, its cost arithmetic and FIFO queueing delays checked by hand on
tiny traces, the measured curves it reads, and `llmfleet autoscale simulate` writing its summary and plots."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmfleet.autoscale import preset, static
from llmfleet.autoscale.fleet import SpotMarket
from llmfleet.autoscale.replica_model import ReplicaModel, load_replica_model, within
from llmfleet.autoscale.report import summarize
from llmfleet.autoscale.simulator import Prices, Series, SimConfig, queueing_delays, simulate
from llmfleet.autoscale.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model(**fields) -> ReplicaModel:
    base = dict(shape="tiny", rates=(1.0, 2.0), ttft_p50_s=(0.1, 0.1), ttft_p90_s=(0.2, 0.2),
                ttft_p99_s=(0.3, 0.3), e2e_s=(2.0, 2.0), capacity_rps=2.0, input_tokens=50.0, output_tokens=100.0,
                kv_tokens=10_000, startup_s=(0.0, 0.0))
    return ReplicaModel(**{**base, **fields})


def test_the_cost_of_a_tiny_static_fleet_by_hand():
    model, config = _tiny_model(), SimConfig(step_s=60.0, poisson=False, prices=Prices(4.0, 1.6))
    rate = np.full(60, 1.0)                       # one hour at 1 req/s: 3,600 requests, 360,000 output tokens
    summary = summarize(simulate(rate, model, static(2), config), model, config)
    assert summary["requests"] == pytest.approx(3600.0) and summary["requests_admitted"] == pytest.approx(3600.0)
    assert summary["replica_hours"] == pytest.approx(2.0) and summary["cost"] == pytest.approx(8.0)
    assert summary["cost_per_1m_output_tokens"] == pytest.approx(8.0 / 0.36)
    # 0.5 req/s per replica, no queue: P(TTFT <= 0.5) = 1 - 0.01 * 10 ** (-(0.5 - 0.3) / (0.3 - 0.2))
    assert summary["slo_attainment"] == pytest.approx(1 - 0.01 * 10 ** -2.0)


def test_spot_above_the_floor_is_billed_at_the_spot_price():
    model = _tiny_model()
    config = SimConfig(step_s=60.0, poisson=False, prices=Prices(4.0, 1.6), spot=SpotMarket(0.0))
    policy = static(2, spot=True, on_demand_floor=1)
    summary = summarize(simulate(np.full(60, 1.0), model, policy, config), model, config)
    assert summary["replica_hours_on_demand"] == pytest.approx(1.0)
    assert summary["replica_hours_spot"] == pytest.approx(1.0)
    assert summary["cost"] == pytest.approx(4.0 + 1.6)


def test_fifo_queueing_delays_on_hand_built_curves():
    # 20 requests arrive evenly over the first 10 s; one replica admits 1 req/s: request k arrives at k/2 s and
    # is admitted at k s, so it waits k/2 s: exactly its arrival time
    series = Series(*(np.zeros(3) for _ in range(11)))
    series.arrivals[:], series.admitted[:] = [20.0, 0.0, 0.0], [10.0, 10.0, 0.0]
    step, weight, delay = queueing_delays(series, 10.0)
    first = step == 0
    arrived = (np.arange(8) + 0.5) / 8 * 10.0
    assert np.allclose(delay[first], arrived) and np.allclose(weight[first], 2.5)


def test_unserved_requests_miss_the_slo():
    model, config = _tiny_model(), SimConfig(step_s=10.0, poisson=False)
    summary = summarize(simulate(np.full(6, 4.0), model, static(1), config), model, config)
    assert summary["requests_admitted"] == pytest.approx(120.0) and summary["requests"] == pytest.approx(240.0)
    assert summary["queue_max"] == pytest.approx(120.0) and summary["slo_attainment"] < 0.5


def test_the_simulator_is_deterministic_for_a_seed():
    model = load_replica_model("llama3-8b")
    times = np.arange(0.0, 4 * 3600.0, 10.0)
    policy = preset("queue", max_replicas=60, spot=True, on_demand_floor=5)
    market = SpotMarket(preemptions_per_hour=2.0)

    def run(seed: int) -> tuple[dict, Series]:
        config = SimConfig(seed=seed, spot=market)
        series = simulate(load_trace("bursty", times, seed, 500.0), model, policy, config)
        return summarize(series, model, config), series

    (a, series_a), (b, series_b), (c, _) = run(7), run(7), run(8)
    assert a == b and all(np.array_equal(getattr(series_a, f), getattr(series_b, f))
                          for f in ("arrivals", "admitted", "live", "billed_spot"))
    assert a["preemptions"] > 0 and a != c


def test_the_replica_model_reads_the_measured_h200_curves():
    model = load_replica_model("llama3-8b")
    assert model.rates == (4.0, 8.0, 16.0) and model.gpus == 1
    assert model.capacity_rps == pytest.approx(10272.399 / 553.63, rel=1e-4)   # offline W1 / W3 output length
    assert 10 < model.startup_s[0] <= model.startup_s[1] < 30
    assert model.slo_rate(0.5) == pytest.approx(16.0)
    assert math.isclose(float(within(model, np.array([4.0]), np.array([0.0386]))[0]), 0.5, rel_tol=1e-3)


def test_the_cli_writes_summary_series_and_plot(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate\n0,100\n1800,300\n3600,100\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "llmfleet", "autoscale", "simulate", "--trace", str(trace), "--policy",
               "queue", "--hours", "1", "--max-replicas", "50", "--seed", "3", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["replicas_max"] <= 50
    assert (out / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "series.csv").read_text().splitlines()) == 361
    bad = subprocess.run(command[:-2] + ["--startup-s", "fast"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "startup_s:" in bad.stderr


def test_scale_to_zero_saves_the_idle_hours_and_pays_a_cold_start():
    model = _tiny_model(startup_s=(30.0, 30.0))
    config = SimConfig(step_s=10.0, poisson=False)
    rate = np.concatenate([np.full(60, 1.0), np.zeros(720), np.full(60, 1.0)])   # 10 min, 2 h idle, 10 min
    policy = dict(targets={"ongoing": 4.0}, max_replicas=4, upscale_delay_s=0.0, downscale_delay_s=60.0,
                  cold_start_s=30.0, cold_start_weight=10.0, initial_replicas=1)
    to_zero = simulate(rate, model, preset("queue", min_replicas=0, **policy), config)
    kept = simulate(rate, model, preset("queue", min_replicas=1, **policy), config)
    # idle from step 60: the last replica goes after the break-even, 30 s x 10 = 300 s (30 steps) later
    assert to_zero.live[89] == 1 and to_zero.live[90:780].max() == 0
    # the first requests (step 780) ask for ceil(10 waiting / 4) = 3 at once, ready after the 30 s start-up
    assert to_zero.live[780] == 3 and to_zero.ready[780:783].max() == 0 and to_zero.ready[783] == 3
    zero, one = summarize(to_zero, model, config), summarize(kept, model, config)
    assert one["replica_hours"] == pytest.approx(140 / 60) and zero["replica_hours"] < one["replica_hours"] - 1.5
    assert one["slo_attainment"] == pytest.approx(1 - 0.01 * 10 ** -2.0)
    assert zero["slo_attainment"] < one["slo_attainment"] - 30 / 1200   # the 30 requests of the cold start miss
