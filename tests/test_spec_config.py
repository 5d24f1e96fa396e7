"""Speculative decoding options: vLLM's spelling, validated with the field named; its counters on /metrics."""
from __future__ import annotations

import pytest

from llmfleet.entrypoints.serve import build_configs
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import EngineStats
from llmfleet.protocol.speculative import SpeculativeConfig
from llmfleet.server.metrics import ServerMetrics


def test_dict_and_json_forms_parse():
    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    config = EngineConfig(model="demo", speculative_config=spec)
    assert config.speculative_config == SpeculativeConfig("ngram", 4, 4, 2)
    assert SpeculativeConfig.parse('{"method": "draft", "model": "demo-draft"}').uses_draft_model
    assert EngineConfig(model="demo").speculative_config is None


@pytest.mark.parametrize("value, field", [
    ({"method": "medusa"}, "speculative_config.method"),
    ({"num_speculative_tokens": 3}, "speculative_config.method"),
    ({"method": "ngram", "num_speculative_tokens": 0}, "speculative_config.num_speculative_tokens"),
    ({"method": "ngram", "prompt_lookup_min": 5, "prompt_lookup_max": 3}, "speculative_config.prompt_lookup_min"),
    ({"method": "ngram", "lookahead": 3}, "speculative_config.lookahead"),
    ({"method": "draft"}, "speculative_config.model"),
    ({"method": "ngram", "model": "demo-draft"}, "speculative_config.model"),
    ({"method": "ngram", "disable_by_batch_size": 0}, "speculative_config.disable_by_batch_size"),
    ("{not json", "speculative_config"),
    (["ngram"], "speculative_config"),
])
def test_bad_options_name_their_field(value, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        EngineConfig(model="demo", speculative_config=value)


def test_serve_flag_reaches_the_engine_config():
    import argparse

    from llmfleet.entrypoints.serve import add_parser
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub, "serve")
    args = parser.parse_args(["serve", "--model", "demo", "--speculative-config",
                              '{"method": "ngram", "num_speculative_tokens": 3}'])
    _, engine = build_configs(args)
    assert engine.speculative_config == SpeculativeConfig("ngram", 3)


def test_metrics_use_vllm_names():
    stats = EngineStats(1, 0, 10, 16, 0.4, 0, 0, 0, 20, 50, spec_num_drafts=7, spec_num_draft_tokens=20,
                        spec_num_accepted_tokens=12, spec_accepted_per_pos=[6, 4, 2])
    text = ServerMetrics("m").render(stats).decode()
    assert 'vllm:spec_decode_num_drafts_total{model_name="m"} 7.0' in text
    assert 'vllm:spec_decode_num_draft_tokens_total{model_name="m"} 20.0' in text
    assert 'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 12.0' in text
    for pos, count in enumerate([6, 4, 2]):
        assert (f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="m",position="{pos}"}} '
                f'{count}.0') in text
    plain = ServerMetrics("m").render(EngineStats(1, 0, 10, 16, 0.4, 0, 0, 0, 20, 50)).decode()
    assert "spec_decode" not in plain
