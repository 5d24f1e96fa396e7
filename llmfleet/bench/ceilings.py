"""What a throughput is compared with, per device: the bandwidth/compute bound of each shape and workload, and the
peers' figures measured on the same kind of machine (BENCHMARKS.md). Output tokens/s.

Chosen by the running device's name (torch.cuda.get_device_name, as a slug): a device without measured figures
(another GPU, a variant of one with other memory or clocks, the CPU) gets no bound and no peers, never another
device's.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DeviceCeilings:
    device: str                                        # slug of the device name the figures were measured on
    measured: str                                      # when (BENCHMARKS.md's section)
    bounds: dict[str, dict[str, int]]                  # shape -> workload -> output tok/s bound
    peers: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # shape -> engine -> workload -> tok/s

    def bound(self, shape: str, workload: str) -> int | None:
        return self.bounds.get(shape, {}).get(workload)

    def peer_figures(self, shape: str, workload: str) -> dict[str, int | None]:
        return {engine: figures.get(workload) for engine, figures in self.peers.get(shape, {}).items()}


_H100 = DeviceCeilings(
    device="nvidia-h100-80gb-hbm3", measured="2026-11-21",
    bounds={"qwen3-0.6b": {"W0": 2530, "W1": 26100, "W2": 34500},
            "llama3-8b": {"W0": 188, "W1": 10400, "W2": 11400}},
    peers={"qwen3-0.6b": {"vllm-0.26.0": {"W0": 536, "W1": 18611, "W2": 23572, "W4": 15737, "W6": 415},
                          "sglang-0.5.17": {"W0": 636, "W1": 18817, "W2": 24436, "W4": 16735}},
           "llama3-8b": {"vllm-0.26.0": {"W0": 156, "W1": 8430, "W2": 9078, "W4": 8595},
                         "sglang-0.5.17": {"W0": 155, "W1": 8440, "W2": 9112, "W4": 8605}}})

_H200 = DeviceCeilings(
    device="nvidia-h200", measured="2026-12-01",
    bounds={"qwen3-0.6b": {"W0": 3590, "W1": 36500, "W2": 46900},
            "llama3-8b": {"W0": 266, "W1": 13600, "W2": 13700}},
    peers={"qwen3-0.6b": {"vllm-0.26.0": {"W0": 385, "W1": 18399, "W2": 26195, "W4": 16597, "W6": 481},
                          "sglang-0.5.17": {"W0": 588, "W1": 23306, "W2": 30060, "W4": 18118, "W6": 497}},
           "llama3-8b": {"vllm-0.26.0": {"W0": 205, "W1": 9899, "W2": 9706, "W4": 8693},
                         "sglang-0.5.17": {"W0": 207, "W1": 9891, "W2": 9796, "W4": 8808}}})

CEILINGS = {c.device: c for c in (_H100, _H200)}


def ceilings_for(device_slug: str) -> DeviceCeilings | None:
    """The figures measured on this device (`slug(torch.cuda.get_device_name())`), or None."""
    return CEILINGS.get(device_slug)


def bound_fields(device_slug: str, shape: str, workload: str, output_tokens_per_s: float) -> dict:
    """The record's comparison keys: which device's figures were used (None: no figures for this device), the
    bound and the fraction of it where one is known, and the peers' figures."""
    ceilings = ceilings_for(device_slug)
    if ceilings is None:
        return {"ceilings_device": None, "peers_output_tokens_per_s": {}}
    fields = {"ceilings_device": ceilings.device,
              "peers_output_tokens_per_s": ceilings.peer_figures(shape, workload)}
    bound = ceilings.bound(shape, workload)
    if bound:
        fields.update(bound_output_tokens_per_s=bound, fraction_of_bound=output_tokens_per_s / bound)
    return fields
