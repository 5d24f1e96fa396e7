"""`build_app(config)`: the Ray Serve application of a fleet, and `run(config)` to deploy it.

One deployment per model version (`<model>--<version>`), whose replicas each run an llmfleet engine (replica.py)
with its resources (`num_gpus` per replica, reserved as one placement-group bundle on one node, since the engine's
worker processes are the replica's children), a fixed count or autoscaling on our signals (autoscaling.py), and the
gateway's prefix-aware policy as request router (router.py). In front, the OpenAI ingress (ingress.py), served by
Ray Serve's HTTP proxy at `route_prefix`.
"""
from __future__ import annotations

import logging

from ray import serve
from ray.serve.config import RequestRouterConfig

from llmfleet.rayserve.autoscaling import autoscaling_config
from llmfleet.rayserve.config import RayFleetConfig, RayVersion
from llmfleet.rayserve.ingress import OpenAIIngress
from llmfleet.rayserve.replica import EngineReplica

logger = logging.getLogger(__name__)
INGRESS_NAME = "openai"


def engine_deployment_options(version: RayVersion, config: RayFleetConfig) -> dict:
    """The serve.deployment options of one version's engine deployment."""
    settings = version.replicas
    options = {"name": version.deployment_name, "max_ongoing_requests": settings.max_ongoing_requests,
               "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
               "health_check_period_s": 2.0, "request_router_config": _router_config(version, config),
               # a replica drains (finishes what it has) before Ray stops it, up to the server's drain timeout
               "graceful_shutdown_timeout_s": max(version.server.drain_timeout, 1.0)}
    if settings.num_gpus:
        options["placement_group_bundles"] = [{"CPU": settings.num_cpus, "GPU": settings.num_gpus}]
        options["placement_group_strategy"] = "STRICT_PACK"
    if settings.autoscaling:
        options["autoscaling_config"] = autoscaling_config(settings)
    else:
        options["num_replicas"] = settings.min
    return options


def _router_config(version: RayVersion, config: RayFleetConfig) -> RequestRouterConfig | None:
    if config.policy != "prefix-aware":
        return None   # Ray Serve's own power-of-two-choices router
    kwargs = {"tokenizer": version.engine.tokenizer or version.engine.model, "block_size": version.engine.block_size,
              "load_weight": config.load_weight, "balance_ratio": config.balance_ratio,
              "approx_capacity": config.approx_capacity, "approx_ttl_s": config.approx_ttl_s}
    return RequestRouterConfig(request_router_class="llmfleet.rayserve.router:PrefixAwareRouter",
                               request_router_kwargs=kwargs)


def build_app(config: RayFleetConfig):
    """The Ray Serve Application (pass it to `serve.run`)."""
    engines = {}
    for version in config.versions():
        options = {k: v for k, v in engine_deployment_options(version, config).items() if v is not None}
        deployment = serve.deployment(EngineReplica).options(**options)
        engines[version.deployment_name] = deployment.bind(version.engine, version.server)
    ingress = serve.deployment(OpenAIIngress).options(name=INGRESS_NAME, num_replicas=config.ingress_replicas,
                                                      max_ongoing_requests=10_000,
                                                      ray_actor_options={"num_cpus": 0})
    return ingress.bind(config, engines)


def run(config: RayFleetConfig, blocking: bool = False):
    """Deploy the app on the connected Ray cluster (Serve's HTTP proxy on config.host:port); its ingress handle."""
    serve.start(http_options={"host": config.host, "port": config.port})
    handle = serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix,
                       blocking=blocking)
    logger.info("llmfleet app %r ready at http://%s:%d%s", config.app_name, config.host, config.port,
                config.route_prefix)
    return handle
