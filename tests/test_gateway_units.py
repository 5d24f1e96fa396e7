"""The gateway's parts on their own: config validation, policies, the circuit breaker, the prefix index, prompt
hashing (token for token the replica's), the CLI flags."""
from __future__ import annotations

import subprocess
import sys

import pytest

from llmfleet.entrypoints.cli import build_parser
from llmfleet.entrypoints.gateway import build_config
from llmfleet.gateway.config import GatewayConfig, ReplicaConfig
from llmfleet.gateway.index import PrefixIndex
from llmfleet.gateway.policies import PowerOfTwo, RoundRobin, RoutingRequest, SessionAffinity
from llmfleet.gateway.prefix import PrefixAware
from llmfleet.gateway.prompts import PromptHasher
from llmfleet.gateway.replica import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Replica
from llmfleet.protocol import kv_events as msg
from llmfleet.protocol.block_hash import hash_prefix


class TokenIdHasher:
    """The prefix-aware policy's hasher for prompts given as token ids (no tokenizer), 16-token blocks."""
    block_size = 16

    def token_ids(self, path, payload):
        return payload["prompt"]

    def block_hashes(self, ids, salt=""):
        return hash_prefix(ids, 16, salt)


def _replicas(n: int) -> list[Replica]:
    return [Replica(f"http://r{i}:1", CircuitBreaker(), healthy=True) for i in range(n)]


def _request(**kw) -> RoutingRequest:
    return RoutingRequest("/v1/completions", kw.pop("payload", {"prompt": [1, 2, 3]}), **kw)


@pytest.mark.parametrize("settings, field", [({"replicas": ()}, "replicas"), ({"policy": "random"}, "policy"),
                                             ({"port": 70000}, "port"), ({"block_size": 0}, "block_size"),
                                             ({"balance_ratio": 0.5}, "balance_ratio"),
                                             ({"max_retries": -1}, "max_retries"), ({"open_s": 0}, "open_s")])
def test_bad_settings_name_their_field(settings, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        GatewayConfig(**{"replicas": (ReplicaConfig("http://a:1"),), **settings})


def test_yaml_and_flags_build_one_config(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("policy: session\nport: 9000\nreplicas:\n  - http://a:1/\n  - {url: http://b:2, kv_events: "
                    "tcp://b:5557}\n")
    config = build_config(build_parser().parse_args(["gateway", "--config", str(path), "--port", "9100"]))
    assert config.policy == "session" and config.port == 9100
    assert config.replicas == (ReplicaConfig("http://a:1"), ReplicaConfig("http://b:2", "tcp://b:5557"))
    path.write_text("replicas: [http://a:1]\nwhatever: 1\n")
    with pytest.raises(ValueError, match="^whatever: unknown setting"):
        build_config(build_parser().parse_args(["gateway", "--config", str(path)]))
    assert build_parser().parse_args(["gateway", "--replica", "ftp://x"]).replica == ["ftp://x"]
    with pytest.raises(ValueError, match="replicas.url"):
        build_config(build_parser().parse_args(["gateway", "--replica", "ftp://x"]))


def test_circuit_opens_after_the_threshold_and_a_trial_decides(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("llmfleet.gateway.replica.time.monotonic", lambda: clock[0])
    breaker = CircuitBreaker(threshold=2, open_s=1.0)
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allows()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allows()
    clock[0] += 1.0
    assert breaker.allows() and breaker.state == HALF_OPEN
    breaker.on_send()
    assert not breaker.allows()               # one trial at a time
    breaker.failure()                         # the trial failed: open twice as long
    clock[0] += 1.5
    assert not breaker.allows()
    clock[0] += 0.5
    assert breaker.allows()
    breaker.success()
    assert breaker.state == CLOSED and breaker.failures == 0


def test_round_robin_and_power_of_two():
    reps = _replicas(3)
    rr = RoundRobin()
    assert [rr.choose(_request(), reps).url for _ in range(4)] == [reps[i % 3].url for i in range(4)]
    reps[0].in_flight, reps[1].in_flight, reps[2].in_flight = 5, 0, 5
    p2c = PowerOfTwo(seed=0)
    picks = [p2c.choose(_request(), reps) for _ in range(30)]
    assert reps[1] in picks and picks.count(reps[1]) > 10


def test_session_affinity_is_sticky_and_bounded():
    reps = _replicas(3)
    policy = SessionAffinity(load_factor=1.25)
    home = policy.choose(_request(session_key="alice"), reps)
    assert all(policy.choose(_request(session_key="alice"), reps) is home for _ in range(5))
    homes = {policy.choose(_request(session_key=f"user-{i}"), reps).url for i in range(30)}
    assert len(homes) == 3
    home.in_flight = 10                                  # overloaded: alice spills to the next on the ring
    assert policy.choose(_request(session_key="alice"), reps) is not home
    assert policy.choose(_request(), reps).in_flight == 0   # no key: least loaded


def test_prefix_aware_prefers_the_cached_replica_within_the_balance_guard():
    reps = _replicas(3)
    index = PrefixIndex()
    prompt = list(range(100, 165))                       # 65 tokens: 4 full blocks usable
    hashes = hash_prefix(prompt, 16)
    index.precise_replicas.add(reps[2].url)
    index.apply(reps[2].url, msg.BlockStored(hashes[:3], None, 48))

    policy = PrefixAware(index, TokenIdHasher())
    request = _request(payload={"prompt": prompt})
    assert policy.choose(request, reps) is reps[2] and request.predicted_cached_tokens == 48
    reps[2].in_flight, reps[0].in_flight, reps[1].in_flight = 5, 4, 4
    assert policy.choose(_request(payload={"prompt": prompt}), reps) is reps[2]   # 5 + 1 <= 1.5 x 4
    reps[2].in_flight = 6                                # 6 + 1 > 1.5 x 4: the guard sends it elsewhere
    assert policy.choose(_request(payload={"prompt": prompt}), reps) is not reps[2]
    # without events the index learns from its own decisions
    other = list(range(200, 240))
    first = policy.choose(_request(payload={"prompt": other}), reps[:2])
    assert policy.choose(_request(payload={"prompt": other}), reps[:2]) is first


def test_index_approximate_entries_obey_ttl_and_capacity():
    index = PrefixIndex(approx_capacity=3, approx_ttl_s=10.0)
    index.record("a", [b"1", b"2"], now=0.0)
    index.record("b", [b"1", b"3", b"4"], now=5.0)      # capacity 3: b"2" (least recent) is dropped
    assert index.match([b"1", b"2"], ["a", "b"], now=6.0) == {"a": 1, "b": 1}
    assert index.match([b"1", b"3"], ["a", "b"], now=12.0) == {"a": 0, "b": 2}   # a's entry expired


def test_prompt_hasher_tokenizes_like_the_replica(tiny_checkpoint):
    from transformers import AutoTokenizer

    folder = str(tiny_checkpoint("llama"))
    hf, ours = AutoTokenizer.from_pretrained(folder), PromptHasher(folder, 16)
    text = "The quick brown fox jumps over the lazy dog. héllo"
    assert ours.token_ids("/v1/completions", {"prompt": text}) == hf.encode(text)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.token_ids("/v1/chat/completions", {"messages": messages}) == hf.encode(rendered,
                                                                                       add_special_tokens=False)
    assert ours.token_ids("/v1/chat/completions", {"messages": "not a list"}) is None
    assert PromptHasher("demo", 16).token_ids("/v1/completions", {"prompt": [1, 2]}) == [1, 2]


def test_the_gateway_imports_no_torch():
    code = ("import sys, llmfleet.gateway.app, llmfleet.entrypoints.gateway; "
            "bad = [m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_canary_split_keeps_its_weight_and_each_user_their_version():
    from llmfleet.gateway.splits import TrafficSplit, parse_models

    split = TrafficSplit(parse_models({"chat": [{"version": "v1", "weight": 95, "replicas": ["http://a:1"]},
                                                {"version": "v2", "weight": 5, "replicas": ["http://b:1"]}]}))
    picks = [split.version_for("chat", f"user-{i}").version for i in range(2000)]
    assert abs(picks.count("v2") / 2000 - 0.05) <= 0.02
    assert all(split.version_for("chat", f"user-{i}").version == picks[i] for i in range(0, 2000, 97))
    assert split.version_for("other", "user-1") is None
    with pytest.raises(ValueError, match="^models.chat: the weights add up to 0"):
        parse_models({"chat": [{"version": "v1", "weight": 0, "replicas": ["http://a:1"]}]})
    config = GatewayConfig.from_dict({"models": {"chat": [{"version": "v1", "replicas": ["http://a:1/"]}]}})
    assert config.replicas == (ReplicaConfig("http://a:1"),)


def test_hash_prefix_equals_the_engines_block_by_block_chain():
    """The gateway's one-pass hashing must give exactly the chain the engine builds with hash_block."""
    import random

    from llmfleet.protocol.block_hash import hash_block

    rng = random.Random(0)
    for n, salt in ((0, ""), (15, ""), (16, "t"), (50, ""), (333, "tenant-a")):
        ids = [rng.randrange(2 ** 40) for _ in range(n)]
        chain: list[bytes] = []
        for start in range(0, n - 15, 16):
            chain.append(hash_block(chain[-1] if chain else None, ids[start:start + 16], salt))
        assert hash_prefix(ids, 16, salt) == chain
