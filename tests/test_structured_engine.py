"""Structured outputs inside the engine: the sampler's bitmask step, the scheduler passing over a request whose
grammar compiles, matchers across preemption, n samples, a grammar that fails to compile, and the grammar ending
a request by itself."""
from __future__ import annotations

import json
import re
import threading

import jsonschema
import pytest
import torch

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.engine.request import Request
from llmfleet.engine.scheduler import Scheduler
from llmfleet.model.layers.sampler import apply_token_bitmask
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.protocol.structured import StructuredSpec

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "w": {"enum": ["ab", "cd"]}}, "required": ["n", "w"]}


def _run(engine: LLMEngine, requests: dict[str, tuple[str, SamplingParams]]) -> dict:
    for request_id, (prompt, params) in requests.items():
        engine.add_request(request_id, prompt, params)
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    engine.step()
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks and stats.num_running == stats.num_waiting == 0
    return finals


def test_bitmask_masks_only_its_rows_and_the_padded_vocabulary():
    torch.manual_seed(0)
    logits = torch.randn(4, 70)                      # vocab 70: the bitmask's 3 words cover 96 ids
    bits = torch.randint(0, 2, (2, 96), dtype=torch.bool)
    words = torch.zeros(2, 3, dtype=torch.int64)
    for j in range(96):
        words[:, j // 32] |= bits[:, j].long() << (j % 32)
    bitmask = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    expected = logits.clone()
    for r, row in enumerate([3, 1]):
        expected[row] = expected[row].masked_fill(~bits[r, :70], float("-inf"))
    apply_token_bitmask(logits, bitmask, torch.tensor([3, 1]))
    assert torch.equal(logits, expected)             # rows 0 and 2 untouched, bit for bit


def test_scheduler_passes_over_a_request_that_is_not_admissible():
    kv = KVCacheManager(32, 4, False)
    blocked: set[int] = set()
    sched = Scheduler(kv, 8, 64, admissible=lambda seq: seq.seq_id not in blocked)
    first, second = (Request([5, 6, 7], SamplingParams(max_tokens=4), float(i), 7, frozenset()) for i in range(2))
    sched.add(first)
    sched.add(second)
    blocked.add(first.seq_id)
    out = sched.schedule()
    assert list(out.num_scheduled_tokens) == [second.seq_id] and sched.waiting == [first]
    sched.update(out, {second.seq_id: 9})
    blocked.clear()
    assert first.seq_id in sched.schedule().num_scheduled_tokens


@pytest.fixture(scope="module")
def tight_engine(tiny_checkpoint):
    """Few KV blocks, so that concurrent constrained requests preempt each other."""
    return LLMEngine(EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32",
                                  num_kv_blocks=20, block_size=4, max_model_len=256, max_num_seqs=4))


def test_preempted_constrained_requests_still_follow_their_grammar(tight_engine):
    spec = StructuredSpec("json", json.dumps(SCHEMA))
    prompt = "Hello, world! How are you today?"
    requests = {f"r{i}": (prompt + " " * i, SamplingParams(temperature=0, max_tokens=40, structured=spec))
                for i in range(4)}
    before = tight_engine.stats().num_preemptions
    finals = _run(tight_engine, requests)
    assert tight_engine.stats().num_preemptions > before
    for out in finals.values():
        assert out.outputs[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.outputs[0].text), SCHEMA)


def test_n_samples_and_a_grammar_that_ends_the_request_despite_ignore_eos(tight_engine):
    choice = StructuredSpec("choice", json.dumps(["alpha", "beta", "gamma"]))
    params = SamplingParams(n=3, temperature=1.0, max_tokens=30, ignore_eos=True, structured=choice)
    regex = StructuredSpec("regex", r"[0-9]{2}:[0-9]{2}")
    finals = _run(tight_engine, {"choice": ("Pick one:", params),
                                 "time": ("The time is", SamplingParams(temperature=0, max_tokens=30,
                                                                        structured=regex))})
    assert len(finals["choice"].outputs) == 3
    for sample in finals["choice"].outputs:
        assert sample.text in ("alpha", "beta", "gamma") and sample.finish_reason == "stop"
    assert re.fullmatch(r"[0-9]{2}:[0-9]{2}", finals["time"].outputs[0].text)


def test_a_grammar_that_fails_to_compile_ends_only_its_request(tight_engine):
    bad = SamplingParams(max_tokens=8, structured=StructuredSpec("regex", "a(b"))  # the server would refuse it
    finals = _run(tight_engine, {"bad": ("Hello", bad),
                                 "good": ("Hello", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))})
    assert finals["bad"].outputs[0].finish_reason == "abort" and finals["bad"].outputs[0].token_ids == []
    assert len(finals["good"].outputs[0].token_ids) == 8


def test_equal_specs_compile_once(tight_engine):
    grammars = tight_engine.core.grammars
    spec = StructuredSpec("regex", "[xyz]{3}")
    _run(tight_engine, {f"same{i}": ("Hi", SamplingParams(temperature=0, max_tokens=8, structured=spec))
                        for i in range(3)})
    assert list(grammars._compiled).count(spec.key) == 1 and len(grammars) == 0


def test_json_object_with_the_demo_model_parses():
    engine = LLMEngine(EngineConfig(model="demo", device="cpu", dtype="float32", num_kv_blocks=64,
                                    max_model_len=256))
    finals = _run(engine, {"j": ("Give me JSON.", SamplingParams(temperature=0, max_tokens=60,
                                                                  structured=StructuredSpec("json_object")))})
    out = finals["j"].outputs[0]
    assert out.finish_reason == "stop" and isinstance(json.loads(out.text), dict)


def test_ids_past_the_tokenizer_in_a_padded_vocabulary_are_never_drawn(tiny_checkpoint):
    padded = tiny_checkpoint("llama", vocab_size=640)   # the model has 128 ids more than its tokenizer (512)
    engine = LLMEngine(EngineConfig(model=str(padded), device="cpu", dtype="float32", num_kv_blocks=64,
                                    max_model_len=256))
    assert engine.vocab_size == 640
    spec = StructuredSpec("regex", "[a-z ]{20}")
    finals = _run(engine, {f"p{i}": ("Hello" + "!" * i, SamplingParams(temperature=1.0, max_tokens=24,
                                                                       structured=spec)) for i in range(4)})
    for out in finals.values():
        assert all(t < 512 for t in out.outputs[0].token_ids)
        assert re.fullmatch("[a-z ]{20}", out.outputs[0].text)


def test_a_step_with_only_compiling_grammars_is_stalled_and_then_runs(tight_engine):
    """While the only request's grammar compiles nothing can be scheduled: the step says so (the core process then
    waits instead of spinning), and the request runs once its grammar is ready."""
    core = tight_engine.core
    spec = StructuredSpec("regex", "[0-9]{3}-stall")
    release = threading.Event()
    compile_grammar = core.grammars._compile
    core.grammars._compile = lambda s: (release.wait(10), compile_grammar(s))[1]
    try:
        tight_engine.add_request("slow", "Hi", SamplingParams(temperature=0, max_tokens=12, structured=spec))
        assert tight_engine.step() == [] and core.stalled
        release.set()
        finals = {}
        while tight_engine.has_unfinished_requests():
            finals.update({o.request_id: o for o in tight_engine.step() if o.finished})
        assert not core.stalled and re.fullmatch(r"[0-9]{3}-stall", finals["slow"].outputs[0].text)
    finally:
        core.grammars._compile = compile_grammar
