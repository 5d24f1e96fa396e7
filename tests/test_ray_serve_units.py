"""The Ray Serve app's parts that need no cluster: fleet.yaml validation, the deployment options it maps to, the
autoscaling policy's arithmetic on Ray's own AutoscalingContext, and the CLI's errors."""
from __future__ import annotations

import pytest
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from llmfleet.entrypoints.cli import main
from llmfleet.rayserve.autoscaling import EngineAutoscalingPolicy, autoscaling_config, desired_replicas
from llmfleet.rayserve.config import RayFleetConfig, ReplicaSettings
from llmfleet.rayserve.replica import KV_USAGE, WAITING


def fleet(**version) -> dict:
    return {"models": {"chat": [{"version": "v1", "engine": {"model": "demo"}, **version}]}}


def test_a_fleet_yaml_maps_onto_versions_with_engine_server_and_replicas():
    config = RayFleetConfig.from_dict({
        "port": 9000, "policy": "power-of-two",
        "models": {"chat": [{"version": "v1", "weight": 3, "engine": {"model": "demo", "max_num_seqs": 8},
                             "server": {"max_waiting_requests": 64}, "replicas": {"min": 1, "max": 4}},
                            {"version": "v2", "engine": {"model": "demo-draft"}}]}})
    v1, v2 = config.models["chat"]
    assert (v1.deployment_name, v1.weight, v1.engine.max_num_seqs) == ("chat--v1", 3, 8)
    assert v1.server.served_model_names == ("chat",) and v1.server.max_waiting_requests == 64
    assert v1.replicas.autoscaling and not v2.replicas.autoscaling and v2.weight == 1
    assert [v.version for v in config.versions()] == ["v1", "v2"]


@pytest.mark.parametrize("data, message", [
    ({"models": {}}, "models: must map"),
    ({**fleet(), "replicas": []}, "replicas: unknown setting"),
    ({**fleet(), "policy": "random"}, "policy: unknown value 'random'"),
    (fleet(replicas=[1]), "models.chat.v1.replicas: must be a mapping"),
    (fleet(replicas={"min": 3, "max": 2}), "models.chat.v1.replicas.min: 3 is above max (2)"),
    (fleet(replicas={"target_kv_usage": 1.5}), "models.chat.v1.replicas.target_kv_usage: must be a fraction"),
    (fleet(replicas={"gpus": 1}), "models.chat.v1.replicas.gpus: unknown setting"),
    (fleet(engine={"model": "demo", "block_size": 0}), "models.chat.v1.engine.block_size: must be a positive"),
    (fleet(engine={"block_size": 16}), "models.chat.v1.engine: must be a mapping of engine settings with at least"),
    (fleet(server={"port": 1}), "models.chat.v1.server.port: set by the Ray Serve app"),
    (fleet(server={"max_waiting_requests": 0}), "models.chat.v1.server.max_waiting_requests: must be a positive"),
    (fleet(served_model="x"), "models.chat.v1.served_model: unknown version setting (under Ray Serve"),
    (fleet(weight=0), "models.chat: the weights add up to 0"),
    ({"models": {"chat": [{"version": "v1", "engine": {"model": "demo"}}] * 2}},
     "models.chat: version names must be unique"),
])
def test_bad_settings_name_their_field(data, message):
    with pytest.raises(ValueError) as error:
        RayFleetConfig.from_dict(data)
    assert str(error.value).startswith(message), str(error.value)


def test_deployment_options_reserve_gpus_on_one_node_and_map_autoscaling():
    from llmfleet.rayserve.app import engine_deployment_options

    config = RayFleetConfig.from_dict(fleet(replicas={"min": 1, "max": 3, "num_gpus": 2, "num_cpus": 4,
                                                      "upscale_delay_s": 5, "downscale_delay_s": 60}))
    options = engine_deployment_options(config.models["chat"][0], config)
    assert options["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 2}
    assert options["placement_group_bundles"] == [{"CPU": 4, "GPU": 2}]
    assert options["placement_group_strategy"] == "STRICT_PACK" and "num_replicas" not in options
    scaling = AutoscalingConfig(**options["autoscaling_config"])   # Ray's own validation accepts it
    assert (scaling.min_replicas, scaling.max_replicas, scaling.upscale_delay_s, scaling.downscale_delay_s) == \
        (1, 3, 5, 60)
    assert scaling.policy.policy_function == "llmfleet.rayserve.autoscaling:EngineAutoscalingPolicy"
    assert options["request_router_config"].request_router_kwargs["tokenizer"] == "demo"
    fixed = RayFleetConfig.from_dict({**fleet(replicas={"min": 2, "max": 2}), "policy": "power-of-two"})
    options = engine_deployment_options(fixed.models["chat"][0], fixed)
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["request_router_config"] is None and "placement_group_bundles" not in options


def test_desired_replicas_is_the_largest_of_the_three_targets():
    settings = ReplicaSettings(min=1, max=10, target_ongoing_requests=8, target_waiting_requests=2,
                               target_kv_usage=0.5)
    assert desired_replicas(2, ongoing=24, waiting=2, mean_kv_usage=0.25, settings=settings) == (3.0, "ongoing")
    assert desired_replicas(2, ongoing=8, waiting=10, mean_kv_usage=0.25, settings=settings) == (5.0, "waiting")
    assert desired_replicas(2, ongoing=8, waiting=2, mean_kv_usage=0.75, settings=settings) == (3.0, "kv")
    assert desired_replicas(4, ongoing=0, waiting=0, mean_kv_usage=0.0, settings=settings) == (0.0, "ongoing")


def context(current: int, ongoing: float, metrics: dict, settings: dict) -> AutoscalingContext:
    config = AutoscalingConfig(**autoscaling_config(ReplicaSettings(**settings)))
    return AutoscalingContext(
        deployment_id=None, deployment_name="chat--v1", app_name="llmfleet", current_num_replicas=current,
        target_num_replicas=current, running_replicas=[], total_num_requests=ongoing, total_queued_requests=0.0,
        aggregated_metrics=metrics, raw_metrics=None, capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas, policy_state={}, last_scale_up_time=None,
        last_scale_down_time=None, current_time=0.0, config=config)


def test_the_policy_reads_the_replicas_reported_waiting_and_kv_usage():
    settings = {"min": 1, "max": 8, "target_ongoing_requests": 100, "target_waiting_requests": 2,
                "target_kv_usage": 0.8}
    policy = EngineAutoscalingPolicy(**settings)
    waiting = context(2, 10, {WAITING: {"a": 5.0, "b": 2.0}, KV_USAGE: {"a": 0.5, "b": 0.3}}, settings)
    assert policy(waiting) == (4, {"signal": "waiting", "desired": 3.5})
    full = context(2, 10, {WAITING: {"a": 0.0, "b": 0.0}, KV_USAGE: {"a": 1.0, "b": 0.92}}, settings)
    assert policy(full) == (3, {"signal": "kv", "desired": pytest.approx(2.4)})
    idle = context(3, 0, {}, settings)
    assert policy(idle)[0] == 0                     # Ray's bounds then keep min_replicas


def test_ray_serve_command_rejects_a_bad_config_naming_the_field(tmp_path, capsys):
    path = tmp_path / "fleet.yaml"
    path.write_text("models:\n  chat:\n    - {version: v1, engine: {model: demo}, replicas: {min: 0, max: 0}}\n")
    assert main(["ray", "serve", "--config", str(path)]) == 2
    assert "models.chat.v1.replicas.max: must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["ray", "serve", "--config", str(tmp_path / "missing.yaml")]) == 2
