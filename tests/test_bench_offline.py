"""`llmfleet bench offline` on CPU with a tiny checkpoint: every request runs to its exact output length and the
record carries the keys the GPU results are compared by."""
from __future__ import annotations

import argparse
import json

from llmfleet.bench import offline
from tests.checkpoints import checkpoint


def test_offline_bench_writes_a_complete_record(tmp_path):
    parser = argparse.ArgumentParser()
    offline.add_arguments(parser)
    args = parser.parse_args(["--shape", str(checkpoint("qwen3")), "--workload", "W2", "--num-requests", "6",
                              "--device", "cpu", "--max-model-len", "1024", "--results-dir", str(tmp_path)])
    assert offline.run(args) == 0
    (path,) = tmp_path.glob("*/offline-w2-*.json")
    record = json.loads(path.read_text())
    for key in ("shape", "workload", "device", "output_tokens_per_s", "total_tokens_per_s", "elapsed_s", "command",
                "commit", "date", "num_kv_blocks", "steps", "prepare_inputs_ms_per_step_mean"):
        assert key in record, key
    assert record["output_tokens"] == 6 * 256 and record["input_tokens"] == 6 * 512
    assert record["device"] == "cpu" and record["output_tokens_per_s"] > 0
    assert record["prefix_cache_hit_tokens"] == 0   # the warm-up's cached prompts were dropped before timing
    assert record["ceilings_device"] is None and "fraction_of_bound" not in record  # no figures for the CPU


def test_bounds_and_peers_are_the_running_devices():
    from llmfleet.bench.ceilings import bound_fields
    from llmfleet.bench.results import slug

    h200 = bound_fields(slug("NVIDIA H200"), "llama3-8b", "W0", 211.0)
    assert h200["ceilings_device"] == "nvidia-h200" and h200["bound_output_tokens_per_s"] == 266
    assert round(h200["fraction_of_bound"], 3) == round(211 / 266, 3)
    assert h200["peers_output_tokens_per_s"] == {"vllm-0.26.0": 205, "sglang-0.5.17": 207}
    h100 = bound_fields(slug("NVIDIA H100 80GB HBM3"), "llama3-8b", "W0", 154.0)
    assert h100["bound_output_tokens_per_s"] == 188 and h100["peers_output_tokens_per_s"]["vllm-0.26.0"] == 156
    w6 = bound_fields("nvidia-h200", "qwen3-0.6b", "W6", 385.0)  # peers measured, no bound given
    assert "fraction_of_bound" not in w6 and w6["peers_output_tokens_per_s"]["sglang-0.5.17"] == 497
    for other in ("NVIDIA GH200 480GB", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB", "cpu"):
        assert bound_fields(slug(other), "llama3-8b", "W0", 100.0) == {"ceilings_device": None,
                                                                       "peers_output_tokens_per_s": {}}
