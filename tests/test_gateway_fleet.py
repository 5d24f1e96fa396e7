"""The gateway over three real `llmfleet serve` replicas of a tiny model (started once for the module):
routing per policy, the KV-event index against the replicas' reported cache hits, the hot-prefix guard, the
official openai client, and last (they take replicas down) drain on SIGTERM and kill -9."""
from __future__ import annotations

import concurrent.futures as cf
import json
import random
import signal
import threading
import time
from collections import Counter

import httpx
import openai
import pytest

try:
    from fleet_procs import gateway, replica, wait_until
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import gateway, replica, wait_until

HEADER = "x-llmfleet-replica"
_http = httpx.Client(timeout=60)   # one pool for the module's many short requests


@pytest.fixture(scope="module")
def fleet(tiny_checkpoint):
    ckpt = tiny_checkpoint("llama")
    procs = [replica(ckpt).start() for _ in range(3)]
    try:
        for p in procs:
            p.wait_ready(240)
        yield procs, str(ckpt)
    finally:
        for p in procs:
            p.kill()


def _gateway(fleet, policy: str, **settings):
    procs, ckpt = fleet
    live = [p.url for p in procs if p.proc.poll() is None]
    return gateway(live, policy=policy, tokenizer=ckpt, **settings)


def _complete(url: str, prompt, max_tokens: int = 2, **extra) -> httpx.Response:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, **extra}
    answer = _http.post(url + "/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 500) for _ in range(n)]


@pytest.mark.parametrize("policy", ["round-robin", "least-loaded"])
def test_rotating_policies_spread_sequential_requests_evenly(fleet, policy):
    with _gateway(fleet, policy) as (url, _):
        order = [_complete(url, [7, 8, 9]).headers[HEADER] for _ in range(6)]
    assert order[:3] == order[3:] and len(set(order)) == 3


def test_power_of_two_uses_every_replica(fleet):
    with _gateway(fleet, "power-of-two") as (url, _):
        counts = Counter(_complete(url, [7, 8, 9]).headers[HEADER] for _ in range(12))
    assert len(counts) == 3 and min(counts.values()) >= 2


def test_session_affinity_sticks_per_session_and_spreads_sessions(fleet):
    with _gateway(fleet, "session") as (url, _):
        homes = {}
        for session in range(10):
            seen = {_complete(url, [7, 8], user=f"user-{session}").headers[HEADER] for _ in range(2)}
            assert len(seen) == 1
            homes[session] = seen.pop()
        by_header = {httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": [7], "max_tokens": 1},
                                headers={"x-session-id": "s-1"}).headers[HEADER] for _ in range(3)}
    assert len(set(homes.values())) >= 2 and len(by_header) == 1


def test_prefix_aware_keeps_a_prefix_on_its_replica(fleet):
    rng = random.Random(1)
    docs = [_ids(rng, 64) for _ in range(3)]
    with _gateway(fleet, "prefix-aware") as (url, _):
        homes = [_complete(url, doc + _ids(rng, 8)).headers[HEADER] for doc in docs]
        time.sleep(0.2)   # the stored events reach the gateway
        again = [[_complete(url, doc + _ids(rng, 8)).headers[HEADER] for _ in range(3)] for doc in docs]
    assert len(set(homes)) == 3
    assert all(set(hits) == {home} for hits, home in zip(again, homes))


def test_predicted_cache_hits_match_what_replicas_report(fleet):
    """The index built from KV events (evictions included: 96 blocks per replica) predicts each replica's cache."""
    rng = random.Random(2)
    docs = [_ids(rng, 80) for _ in range(8)]
    workload = [doc + _ids(rng, rng.randrange(4, 30)) for doc in docs for _ in range(3)]
    rng.shuffle(workload)
    predicted = reported = exact = 0
    with _gateway(fleet, "prefix-aware") as (url, gw):
        for prompt in workload:
            answer = _complete(url, prompt)
            guess = int(answer.headers["x-llmfleet-predicted-cached-tokens"])
            real = answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            predicted, reported, exact = predicted + guess, reported + real, exact + (guess == real)
            time.sleep(0.02)
        assert all(sub.synced.is_set() for sub, _ in gw.subscribers.values())
        streamed = _http.post(url + "/v1/completions", json={"model": "tiny", "prompt": workload[0], "max_tokens": 2,
                                                             "stream": True, "stream_options": {"include_usage": True}})
        usage = [json.loads(line[6:])["usage"] for line in streamed.text.splitlines()
                 if line.startswith("data: {") and json.loads(line[6:]).get("usage")]
        predicted += int(streamed.headers["x-llmfleet-predicted-cached-tokens"])
        reported += usage[0]["prompt_tokens_details"]["cached_tokens"]
        text = _http.get(url + "/metrics").text
    exported = {source: sum(float(line.split()[-1]) for line in text.splitlines()
                            if line.startswith("llmfleet_gateway_cache_hit_tokens_total") and f'"{source}"' in line)
                for source in ("predicted", "engine")}
    assert exported == {"predicted": predicted, "engine": reported}
    assert f"llmfleet_gateway_prefix_prediction_error_tokens_count {len(workload) + 1}.0" in text
    assert reported > 0 and abs(predicted - reported) <= 0.05 * reported, (predicted, reported)
    assert exact >= 0.9 * len(workload)


def test_one_system_prompt_for_everyone_does_not_pin_one_replica(fleet):
    """One chat caches a system prompt on one replica; then nine chats with that prompt arrive at once. The moment
    all nine are routed, in-flight counts across replicas stay within 1.5x of each other."""
    system = " ".join(["The weather is nice and the sun is shining over the hills."] * 6)

    release = threading.Event()

    def chat(url: str, i: int, max_tokens: int = 300) -> int:
        body = {"model": "tiny", "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}]}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(lines)
            if max_tokens > 1:
                release.wait(60)   # closed early: the replicas abort the rest
            return first.startswith("data: ")

    with _gateway(fleet, "prefix-aware") as (url, gw), cf.ThreadPoolExecutor(9) as pool:
        chat(url, -1, max_tokens=1)
        time.sleep(0.3)   # its stored events reach the gateway: the prefix is now cached on one replica
        routed = sum(r.routed for r in gw.replicas)
        futures = [pool.submit(chat, url, i) for i in range(9)]
        wait_until(lambda: sum(r.routed for r in gw.replicas) == routed + 9, 30, poll=0.001)
        loads = [r.in_flight for r in gw.replicas]
        predicted = gw.metrics.predicted_cached.collect()[0].samples
        release.set()
        assert all(f.result() for f in futures)
    assert sum(loads) == 9 and max(loads) <= 1.5 * min(loads), loads
    assert sum(s.value for s in predicted if s.name.endswith("_total")) > 0   # the prefix was seen cached


def test_the_openai_client_through_the_gateway(fleet):
    openai = pytest.importorskip("openai")
    with _gateway(fleet, "prefix-aware") as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        raw = client.completions.with_raw_response.create(model="tiny", prompt="Hello, world!", max_tokens=4)
        assert raw.headers[HEADER].startswith("http://127.0.0.1:")
        assert raw.parse().usage.completion_tokens == 4
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=5, stream=True, extra_body={"ignore_eos": True})
        chunks = list(stream)
        assert chunks[-1].choices[0].finish_reason == "length"
        assert [m.id for m in client.models.list().data] == ["tiny"]


def test_logprob_escalation_reads_a_real_replicas_logprobs(fleet):
    """llmfleet serve's own logprobs decide: a threshold no answer reaches sends every request up, the lowest one
    none; logprobs the client did not ask for are stripped."""
    from llmfleet.gateway.tiers import parse_tiers

    tiers = parse_tiers({"auto": [{"model": "tiny", "min_mean_logprob": -1e9}, {"model": "tiny"}],
                         "strict": [{"model": "tiny", "min_mean_logprob": 0.0}, {"model": "big"}]})
    with _gateway(fleet, "round-robin", tiers=tiers) as (url, gw):
        kept = _complete(url, [5, 6, 7], model="auto")
        assert kept.headers["x-llmfleet-tier-reason"] == "cheapest tier"
        assert kept.json()["choices"][0]["logprobs"] is None
        chat = _http.post(url + "/v1/chat/completions", json={"model": "auto", "max_tokens": 2, "logprobs": True,
                                                              "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200 and len(chat.json()["choices"][0]["logprobs"]["content"]) == 2
        sent_up = _http.post(url + "/v1/completions", json={"model": "strict", "prompt": [5, 6, 7], "max_tokens": 2})
        assert sent_up.headers["x-llmfleet-tier"] == "big" and "mean logprob" in sent_up.headers[
            "x-llmfleet-tier-reason"]
        assert sent_up.status_code == 503   # no replica serves "big": the escalation itself is what is tested


def test_sigterm_drains_a_replica_out_of_rotation_while_its_stream_completes(fleet):
    procs, _ = fleet
    target = procs[2]
    with _gateway(fleet, "round-robin") as (url, gw):
        events: list[str] = []
        started = threading.Event()

        def stream():
            body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 40, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
                assert response.headers[HEADER] == target.url
                for line in response.iter_lines():
                    if line:
                        events.append(line)
                        started.set()

        _complete(url, [7]), _complete(url, [7])   # round-robin: the next request goes to the third replica
        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        target.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: gw.replicas[2].draining or not gw.replicas[2].healthy, 5)
        assert all(_complete(url, [7]).headers[HEADER] != target.url for _ in range(6))
        reader.join(120)
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    assert target.proc.wait(60) == 0


def test_kill_9_retries_requests_and_ends_streams_with_an_error(fleet):
    procs, _ = fleet
    victim = procs[1]
    body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 32, "ignore_eos": True}
    started, release = threading.Semaphore(0), threading.Event()

    def stream(url: str) -> list[str]:
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True, "max_tokens": 400},
                          timeout=120) as response:
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 1:
                    started.release()
                if line == "data: [DONE]" or release.is_set():
                    return lines   # the stream on the surviving replica is closed early
        return lines

    with _gateway(fleet, "round-robin") as (url, gw), cf.ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(stream, url) for _ in range(2)]
        for _ in streams:
            assert started.acquire(timeout=60)
        plain = [pool.submit(httpx.post, url + "/v1/completions", json=body, timeout=120) for _ in range(4)]
        wait_until(lambda: gw.replicas[1].in_flight >= 2, 30)
        victim.kill()
        assert wait_until(lambda: not gw.replicas[1].healthy, 2) < 2
        answers = [f.result() for f in plain]
        release.set()
        lines = [f.result() for f in streams]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.headers[HEADER] != victim.url for a in answers)
    broken = [ls for ls in lines if any('"replica_failed"' in line for line in ls)]
    assert len(broken) == 1 and broken[0][-1] == "data: [DONE]"


def test_responses_follow_ups_reach_the_replica_that_stored_them(fleet):
    with _gateway(fleet, "round-robin") as (url, gw):
        assert all(rep.instance for rep in gw.replicas)   # one per serving process (earlier tests may have killed some)
        assert len({rep.instance for rep in gw.replicas}) == len(gw.replicas)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        first = client.responses.create(model="tiny", input="one", max_output_tokens=2, temperature=0)
        homes, previous = set(), first
        for turn in range(4):   # round-robin would spread these: each is pinned to the first one's replica
            raw = client.responses.with_raw_response.create(model="tiny", input=f"turn {turn}", max_output_tokens=2,
                                                            previous_response_id=previous.id, temperature=0)
            homes.add(raw.headers[HEADER])
            previous = raw.parse()
        assert len(homes) == 1
        assert client.responses.retrieve(previous.id).id == previous.id
        assert [i.content[0].text for i in client.responses.input_items.list(previous.id).data] == ["turn 3"]
        client.responses.delete(first.id)
        for call in (lambda: client.responses.retrieve(first.id),
                     lambda: client.responses.create(model="tiny", input="x", previous_response_id="resp_unknown")):
            with pytest.raises(openai.NotFoundError):
                call()
