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
