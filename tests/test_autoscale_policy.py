"""The autoscaling policy's validation and the autoscaler's decisions on hand-built signal sequences:
stabilization windows (and their reset), smoothing, scale to zero at the cold-start break-even and straight
back from zero, the on-demand floor under spot, the KV and TTFT targets, and the seasonal forecast."""
from __future__ import annotations

import pytest

from llmfleet.autoscale import AutoscalePolicy, Autoscaler, FleetSignals, PredictiveConfig, Target, preset
from llmfleet.autoscale.policy import policy_from_dict


def _policy(**fields) -> AutoscalePolicy:
    base = {"targets": (Target("ongoing", 10.0),), "min_replicas": 1, "max_replicas": 20, "initial_replicas": 2,
            "upscale_delay_s": 30.0, "downscale_delay_s": 600.0}
    return AutoscalePolicy(**{**base, **fields})


def _signals(t: float, replicas: int, ongoing: float = 0.0, **extra) -> FleetSignals:
    return FleetSignals(time_s=t, ready_replicas=replicas, running=ongoing, **extra)


def _run(scaler: Autoscaler, steps: list[tuple[float, float]]) -> list[int]:
    """(time, ongoing) pairs; the fleet is taken to be at the count last decided."""
    return [scaler.decide(_signals(t, scaler.replicas, ongoing)).replicas for t, ongoing in steps]


@pytest.mark.parametrize("make, field", [
    (lambda: Target("queue_depth", 1.0), "targets.metric"),
    (lambda: Target("kv", 1.5), "targets[kv].value"),
    (lambda: Target("ongoing", 0.0), "targets[ongoing].value"),
    (lambda: _policy(max_replicas=0), "max_replicas"),
    (lambda: _policy(initial_replicas=50), "initial_replicas"),
    (lambda: _policy(on_demand_floor=21), "on_demand_floor"),
    (lambda: _policy(upscale_delay_s=-1.0), "upscale_delay_s"),
    (lambda: _policy(downscale_smoothing_factor=0.0), "downscale_smoothing_factor"),
    (lambda: _policy(targets=()), "targets"),
    (lambda: PredictiveConfig(requests_per_replica=0.0), "predictive.requests_per_replica"),
    (lambda: PredictiveConfig(requests_per_replica=1.0, bin_s=10.0, period_s=5.0), "predictive.bin_s"),
    (lambda: policy_from_dict({"colour": "red"}), "colour"),
    (lambda: preset("fastest"), "policy"),
])
def test_bad_values_name_their_field(make, field):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value).startswith(field + ":")


def test_scale_up_waits_for_the_upscale_delay_without_a_break():
    scaler = Autoscaler(_policy())
    # 50 ongoing wants 5 replicas; the delay runs from t=0 and is met at t=30
    assert _run(scaler, [(0, 50), (10, 50), (20, 50), (30, 50)]) == [2, 2, 2, 5]


def test_a_break_restarts_the_upscale_window():
    scaler = Autoscaler(_policy())
    assert _run(scaler, [(0, 50), (10, 20), (20, 50), (40, 50), (50, 50)]) == [2, 2, 2, 2, 5]


def test_scale_down_waits_for_the_downscale_delay_and_smooths():
    scaler = Autoscaler(_policy(initial_replicas=10, downscale_smoothing_factor=0.5))
    decisions = _run(scaler, [(t, 20) for t in range(0, 610, 10)])   # 20 ongoing wants 2
    assert decisions[:-1] == [10] * 60 and decisions[-1] == 6           # half of the way from 10 to 2


def test_scale_to_zero_waits_for_the_cold_start_break_even_and_returns_at_once():
    policy = _policy(min_replicas=0, initial_replicas=1, downscale_delay_s=60.0, cold_start_s=20.0,
                     cold_start_weight=10.0)
    assert policy.to_zero_delay_s == 200.0
    scaler = Autoscaler(policy)
    idle = [scaler.decide(_signals(t, scaler.replicas)).replicas for t in range(0, 210, 10)]
    assert idle[:20] == [1] * 20 and idle[20] == 0                       # gone at t=200, not at t=60
    back = scaler.decide(FleetSignals(time_s=210, ready_replicas=0, waiting=3.0))
    assert back.replicas == 1 and back.reason == "ongoing"               # no upscale delay from zero


def test_traffic_keeps_one_replica_even_when_targets_ask_for_none():
    scaler = Autoscaler(_policy(min_replicas=0, initial_replicas=1, downscale_to_zero_delay_s=0.0,
                                downscale_delay_s=0.0, targets=(Target("waiting", 4.0),)))
    assert scaler.decide(_signals(0, 1, arrival_rate=0.5)).replicas == 1
    assert scaler.decide(_signals(10, 1)).replicas == 0


def test_the_on_demand_floor_lies_under_spot_replicas():
    scaler = Autoscaler(_policy(spot=True, on_demand_floor=3, upscale_delay_s=0.0, initial_replicas=2))
    low = scaler.decide(_signals(0, 2, 20))
    assert (low.replicas, low.on_demand, low.spot) == (2, 2, 0)
    high = scaler.decide(_signals(10, 2, 70))
    assert (high.replicas, high.on_demand, high.spot) == (7, 3, 4)
    plain = Autoscaler(_policy(on_demand_floor=3, upscale_delay_s=0.0)).decide(_signals(0, 2, 70))
    assert (plain.on_demand, plain.spot) == (7, 0)                        # spot off: all on-demand


def test_kv_and_ttft_targets_scale_the_ready_count_and_the_largest_wins():
    policy = _policy(targets=(Target("kv", 0.6), Target("ttft_p90", 0.5), Target("ongoing", 100.0)),
                     upscale_delay_s=0.0, initial_replicas=4)
    scaler = Autoscaler(policy)
    assert scaler.recommend(_signals(0, 4, 10, kv_usage=0.9, ttft_p90_s=0.2)) == (6, "kv")
    assert scaler.recommend(_signals(0, 4, 10, kv_usage=0.3, ttft_p90_s=1.2)) == (10, "ttft_p90")


def test_the_forecast_orders_replicas_ahead_of_a_load_seen_one_period_earlier():
    predictive = PredictiveConfig(requests_per_replica=10.0, period_s=100.0, bin_s=10.0, lead_s=20.0,
                                  headroom=0.0, smoothing=1.0)
    scaler = Autoscaler(AutoscalePolicy(targets=(), predictive=predictive, min_replicas=1, max_replicas=20,
                                        upscale_delay_s=0.0, downscale_delay_s=0.0))
    first = [scaler.decide(_signals(t, 1, arrival_rate=80.0 if 30 <= t < 40 else 10.0)).replicas
             for t in range(0, 110, 5)]
    assert max(first) == 1                       # nothing learned yet: no forecast in the first period
    assert scaler.forecaster.forecast(130.0) == 80.0
    ahead = scaler.decide(_signals(110, 1, arrival_rate=10.0))   # 110 + 20 lies in the slot that had 80 req/s
    assert (ahead.replicas, ahead.reason) == (8, "predictive")


def test_the_policy_maps_onto_ray_serve_autoscaling_config():
    config = preset("queue", max_replicas=50, min_replicas=0, cold_start_s=15.0).ray_autoscaling_config()
    assert config == {"min_replicas": 0, "max_replicas": 50, "initial_replicas": 0, "upscale_delay_s": 10.0,
                      "downscale_delay_s": 600.0, "downscale_to_zero_delay_s": 600.0,
                      "upscale_smoothing_factor": 1.0, "downscale_smoothing_factor": 1.0,
                      "metrics_interval_s": 10.0, "target_ongoing_requests": 48.0}


def test_a_yaml_policy_file_loads_with_the_same_field_names():
    import yaml

    text = """
name: night-shift
targets: {ongoing: 32, kv: 0.7}
min_replicas: 0
max_replicas: 40
upscale_delay_s: 15
spot: true
on_demand_floor: 2
predictive: {requests_per_replica: 9.5, lead_s: 120}
"""
    policy = policy_from_dict(yaml.safe_load(text))
    assert policy.targets == (Target("ongoing", 32.0), Target("kv", 0.7))
    assert (policy.name, policy.min_replicas, policy.max_replicas, policy.upscale_delay_s) == ("night-shift", 0, 40, 15)
    assert policy.spot and policy.on_demand_floor == 2
    assert policy.predictive == PredictiveConfig(requests_per_replica=9.5, lead_s=120.0)


def test_the_policy_renders_as_a_keda_scaled_object():
    from llmfleet.autoscale.keda import keda_scaled_object

    policy = preset("queue", min_replicas=2, max_replicas=40, spot=True, on_demand_floor=2)
    scaled = keda_scaled_object(policy, name="llm", deployment="llm-spot", server_address="http://prom:9090",
                                namespace="serving", selector='app="llmfleet"')
    spec = scaled["spec"]
    assert (scaled["kind"], scaled["metadata"]) == ("ScaledObject", {"name": "llm", "namespace": "serving"})
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (0, 38, 10)
    assert spec["cooldownPeriod"] == 600   # the spot part may go to zero: the floor stays
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 10,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}]},
        "scaleDown": {"stabilizationWindowSeconds": 600,
                      "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-spot"}
    assert all(t["metadata"]["activationThreshold"] == "0" for t in spec["triggers"])
    ongoing, waiting = spec["triggers"]
    sel = '{app="llmfleet"}'
    assert ongoing["metricType"] == "AverageValue" and ongoing["metadata"]["threshold"] == "48"
    assert ongoing["metadata"]["query"] == (f"clamp_min((sum(vllm:num_requests_running{sel}) + "
                                            f"sum(vllm:num_requests_waiting{sel})) - 96, 0)")
    assert waiting["metadata"]["query"] == (
        f"clamp_min(((count(vllm:num_requests_waiting{sel}) * 16 + sum(vllm:num_requests_waiting{sel})) "
        f"and on() (sum(vllm:num_requests_waiting{sel}) > 0)) - 32, 0)")
    ttft = keda_scaled_object(preset("ttft"), name="a", deployment="b", server_address="http://p")
    (trigger,) = ttft["spec"]["triggers"]
    assert trigger["metricType"] == "Value" and trigger["metadata"]["threshold"] == "0.25"
    assert trigger["metadata"]["query"].startswith("histogram_quantile(0.9, sum(rate(vllm:time_to_first_token")
    assert "cooldownPeriod" not in ttft["spec"] and ttft["spec"]["minReplicaCount"] == 1


@pytest.mark.parametrize("fields, field", [
    ({"predictive": PredictiveConfig(requests_per_replica=5.0)}, "predictive"),
    ({"upscale_smoothing_factor": 0.5}, "upscale_smoothing_factor"),
    ({"initial_replicas": 3}, "initial_replicas"),
    ({"upscale_delay_s": 7.5}, "upscale_delay_s"),
    ({"downscale_delay_s": 3601.0}, "downscale_delay_s"),
])
def test_what_kubernetes_cannot_carry_out_is_refused_by_field(fields, field):
    from llmfleet.autoscale.keda import keda_scaled_object

    with pytest.raises(ValueError) as error:
        keda_scaled_object(preset("queue", **fields), name="a", deployment="b", server_address="http://p")
    assert str(error.value).startswith(field + ":")
