"""Autoscaling beside the request path: one policy object for every adapter (Ray Serve, KEDA / HPA), the
autoscaler that applies it, and a fleet simulator that runs it over load traces on measured replica curves.
Imports no torch and nothing of the engine, the server or the gateway."""
from llmfleet.autoscale.autoscaler import Autoscaler, Decision, FleetSignals
from llmfleet.autoscale.policy import AutoscalePolicy, PredictiveConfig, Target, policy_from_dict, preset, static

__all__ = ["AutoscalePolicy", "Autoscaler", "Decision", "FleetSignals", "PredictiveConfig", "Target",
           "policy_from_dict", "preset", "static"]
