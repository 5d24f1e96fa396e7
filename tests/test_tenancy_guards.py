"""The PII guard: each kind found (with checksums: Luhn, IBAN mod-97), no hits on dates, times or versions; and the
actions on a served app: mask (prompts upstream, answers, streamed events), block (400, nothing charged), log."""
from __future__ import annotations

import json

import pytest

from llmfleet.tenancy.guards import pii

try:
    from tenancy_app import LEAK, TenantServer, tenancy_config, until
except ImportError:
    from tests.tenancy_app import LEAK, TenantServer, tenancy_config, until

FOUND = {
    "EMAIL": "write to jane.doe+x@mail.example.org today",
    "CREDIT_CARD": "card 4111 1111 1111 1111 exp",
    "IBAN": "pay to GB82 WEST 1234 5698 7654 32 now",
    "SSN": "ssn 123-45-6789 on file",
    "IP_ADDRESS": "from 192.168.10.1 and 2001:db8::8a2e:370:7334",
    "PHONE": "ring +1 415-555-0123",
    "SECRET": "token sk-live_abcdefghijklmnopqrstuvwx and AKIAABCDEFGHIJKLMNOP",
}
NOT_FOUND = ["card 4111 1111 1111 1112 (bad checksum)", "iban GB82 WEST 1234 5698 7654 33", "on 2026-12-01 at 12:30:45",
             "version 1.2.3.4.5", "ssn 000-12-3456", "order 12345", "999.1.1.1", "it costs 1,299.00"]


@pytest.mark.parametrize("kind", list(FOUND))
def test_each_kind_is_found_and_masked(kind):
    hits = pii.find(FOUND[kind])
    assert hits and {h.kind for h in hits} == {kind}
    assert f"[{kind}]" in pii.mask(FOUND[kind], hits)


@pytest.mark.parametrize("text", NOT_FOUND)
def test_checksums_and_shapes_keep_false_hits_out(text):
    assert pii.find(text) == []


def test_checksums():
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("DE89 3704 0044 0532 0130 00") and not pii.iban_ok("DE89 3704 0044 0532 0130 01")


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('guards') / 'keys.db'}"
    with TenantServer(tenancy_config(url, pii_action="mask")) as server:
        yield server


def test_mask_prompt_upstream_and_answer(tenant):
    key = tenant.new_key()
    answer = tenant.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json={
        "model": "leaky", "messages": [{"role": "user", "content": [{"type": "text", "text": FOUND["EMAIL"]}]}]})
    assert answer.status_code == 200
    assert tenant.app.bodies[-1]["messages"][0]["content"][0]["text"] == "write to [EMAIL] today"
    assert answer.json()["choices"][0]["message"]["content"] == "call me at [PHONE] or mail [EMAIL]"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_mask_streamed_events(tenant):
    key = tenant.new_key()
    answer = tenant.chat(key, model="leaky", stream=True)
    first = json.loads(answer.text.split("\n\n")[0][6:])
    assert first["choices"][0]["delta"]["content"] == "call me at [PHONE] or mail [EMAIL]"
    assert LEAK not in answer.text


def test_block_per_key_refuses_and_charges_nothing(tenant):
    key = tenant.new_key(metadata={"pii_action": "block"})
    answer = tenant.http.post("/v1/completions", headers={"authorization": f"Bearer {key}"},
                              json={"model": "m", "prompt": FOUND["CREDIT_CARD"], "max_tokens": 2})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["code"] == "pii_detected" and error["param"] == "prompt"
    assert "4111" not in answer.text
    assert tenant.chat(key).status_code == 200  # a clean prompt passes
    assert until(lambda: tenant.admin("GET", "/spend/logs", key=key).json())
    assert len(tenant.admin("GET", "/spend/logs", key=key).json()) == 1


def test_log_per_key_passes_everything(tenant):
    key = tenant.new_key(metadata={"pii_action": "log"})
    answer = tenant.chat(key, model="leaky", messages=[{"role": "user", "content": FOUND["SSN"]}])
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == LEAK
    assert tenant.app.bodies[-1]["messages"][0]["content"] == FOUND["SSN"]


def test_bad_pii_action_is_refused(tenant):
    answer = tenant.admin("POST", "/key/generate", json={"metadata": {"pii_action": "shout"}})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "metadata.pii_action"


def test_responses_shapes_are_guarded():
    from llmfleet.tenancy.guards.injection_policy import prompt_text
    from llmfleet.tenancy.guards.policy import guard_answer, guard_prompt

    request = {"input": [{"role": "user", "content": [{"type": "input_text", "text": FOUND["EMAIL"]}]},
                         {"type": "function_call_output", "call_id": "c", "output": FOUND["SSN"]}],
               "instructions": FOUND["PHONE"]}
    guarded = guard_prompt(json.loads(json.dumps(request)), "mask", "test")
    assert guarded["input"][0]["content"][0]["text"] == "write to [EMAIL] today"
    assert guarded["input"][1]["output"] == "ssn [SSN] on file" and guarded["instructions"] == "ring [PHONE]"
    assert guard_prompt({"input": FOUND["EMAIL"]}, "mask", "test")["input"] == "write to [EMAIL] today"
    assert prompt_text(request) == f"{FOUND['EMAIL']}\n{FOUND['SSN']}"
    answer = {"output": [{"type": "message", "content": [{"type": "output_text", "text": FOUND["EMAIL"]}]}]}
    assert json.loads(guard_answer(json.dumps(answer).encode(), "mask", "test"))["output"][0]["content"][0][
        "text"] == "write to [EMAIL] today"
    delta = {"type": "response.output_text.delta", "delta": FOUND["EMAIL"]}
    assert json.loads(guard_answer(json.dumps(delta).encode(), "mask", "test"))["delta"] == "write to [EMAIL] today"
    done = {"type": "response.completed", "response": answer}
    assert "[EMAIL]" in guard_answer(json.dumps(done).encode(), "mask", "test").decode()
