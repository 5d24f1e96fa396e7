"""Evals: PSI and MMD on samples with known answers, drift windows over a log fixture whose last hour shifts
(alerts there and only there, gauges, the PNG, the webhook), the judge's arithmetic against a small real HTTP
judge with fixed rules (agreement, position swapping), and `llmfleet eval judge` end to end against a real
`llmfleet serve`."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmfleet.apps.endpoint import Endpoint
from llmfleet.apps.evals.drift import DriftConfig, analyze, observation
from llmfleet.apps.evals.judge import Judge
from llmfleet.apps.evals.labelled import labelled_set
from llmfleet.apps.evals.monitor import DriftGauges, send_alerts
from llmfleet.apps.evals.rubric import CORRECTNESS, rubric_from_dict
from llmfleet.apps.evals.runner import judge_rows, summary
from llmfleet.apps.evals.stats import mmd_test, psi, psi_binary
from llmfleet.server.background import BackgroundServer
from llmfleet.tenancy.alerts import BudgetAlerts

try:
    from apps_helpers import served
    from fleet_procs import ROOT, _env
except ImportError:  # tests/ imported as a package
    from tests.apps_helpers import served
    from tests.fleet_procs import ROOT, _env


def test_psi_known_values():
    reference = np.arange(100.0)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    # every current value in the top decile: that bin holds 100% instead of 10%, the nine others 0.01% (epsilon)
    expected = (1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert psi(reference, np.full(50, 95.0)) == pytest.approx(expected, rel=1e-9)
    assert psi_binary(np.zeros(10), np.array([0, 1] * 5)) == pytest.approx(
        (0.5 - 1e-4) * np.log(0.5 / 1e-4) + (1e-4 - 0.5) * np.log(0.5 / (1 - 1e-4)))


def test_mmd_tells_a_shift_from_noise():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((60, 8)), rng.standard_normal((60, 8))
    assert mmd_test(a, b, permutations=100)[1] > 0.05
    assert mmd_test(a, b + 0.8, permutations=100)[1] < 0.02


def _logs(count: int = 600, shift_after: int = 400) -> list[dict]:
    """Three hours of requests; from request `shift_after` on, answers are slower and a third are refusals."""
    rng, rows, start = random.Random(0), [], 1_800_000_000
    for i in range(count):
        late = i >= shift_after
        t, latency = start + i * 18, rng.gauss(3.5 if late else 2.0, 0.3)
        refused = late and rng.random() < 0.3
        answer = "I'm sorry, I cannot help with that." if refused else " ".join(["word"] * rng.randint(20, 60))
        rows.append({"request_id": f"r{i}", "prompt": "q", "response": answer, "completion_tokens": None,
                     "started_at": dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(),
                     "ended_at": dt.datetime.fromtimestamp(t + latency, dt.timezone.utc).isoformat()})
    return rows


def test_drift_alerts_in_the_shifted_window_only(tmp_path):
    observations = [observation(r) for r in _logs()]
    rng = np.random.default_rng(0)
    answers = rng.standard_normal((600, 6))
    answers[400:] += 1.0  # the answers' embeddings move too
    reference, windows = analyze(observations, DriftConfig(window_s=3600), None, answers)
    assert reference.count == 200 and [w.count for w in windows] == [200, 200]
    assert windows[0].alerts == []
    assert set(windows[1].alerts) == {"psi:latency_s", "psi:output_tokens", "psi:refusal", "mmd:answer"}
    assert windows[1].means["refusal"] == pytest.approx(sum(o.refusal for o in observations[400:]) / 200)
    gauges = DriftGauges()
    gauges.update(windows[1])
    assert gauges.registry.get_sample_value("llmfleet_drift_psi", {"metric": "refusal"}) == windows[1].psi["refusal"]
    from llmfleet.apps.evals.report import write_png

    write_png(str(tmp_path / "drift.png"), reference, windows, DriftConfig())
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drift_alerts_reach_the_tenancy_webhook_once_a_day():
    received = []

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"ok": True})

    observations = [observation(r) for r in _logs()]
    _, windows = analyze(observations, DriftConfig(window_s=3600))
    with BackgroundServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        async def send() -> None:
            alerts = BudgetAlerts(url + "/hook", store=None)
            for _ in range(2):  # the second round is deduplicated
                await send_alerts(alerts, windows[-1], {"psi": 0.25, "mmd": 0.01})
            await alerts.close()

        asyncio.run(send())
    assert sorted(r["subject"] for r in received) == ["drift:psi:latency_s", "drift:psi:output_tokens",
                                                      "drift:psi:refusal"]
    assert all(r["kind"] == "drift" and r["text"].startswith("llmfleet: drift in") for r in received)


def _rule_judge(position_biased: bool) -> Starlette:
    """A judge with fixed rules: a graded answer containing the reference scores 5, else 1; of two answers the one
    containing the reference wins (or, position-biased, always the first)."""

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        text = body["messages"][-1]["content"]
        assert body["response_format"]["type"] == "json_schema" and body["temperature"] == 0
        reference = text.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
        if "Answer A:" in text:
            first = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
            verdict = {"winner": "A" if position_biased or reference in first else "B"}
        else:
            graded = text.split("Answer to grade:\n", 1)[1].split("\n\nCriteria:", 1)[0]
            verdict = {"correctness": 5 if reference in graded else 1}
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                  "content": json.dumps(verdict)}}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("biased", [False, True])
def test_judge_agreement_and_position_swapping(biased):
    rows = labelled_set()
    with BackgroundServer(_rule_judge(biased)) as url:
        async def run() -> list[dict]:
            endpoint = Endpoint(url)
            try:
                return await judge_rows(Judge(endpoint, "rules"), CORRECTNESS, rows)
            finally:
                await endpoint.close()

        results = asyncio.run(run())
    report = summary(CORRECTNESS, results)
    assert report["errors"] == 0 and report["scored"] == 48 and report["pairs"] == 24
    assert report["label_agreement"] == 1.0  # a wrong candidate never contains its reference here
    if biased:  # "A" in both orders names a different answer each time: never a verdict
        assert report["pair_decided_rate"] == 0.0 and {r["verdict"] for r in results if "verdict" in r} == {
            "inconsistent"}
    else:
        assert report["pair_decided_rate"] == 1.0 and report["pair_agreement_decided"] == 1.0


def test_rubric_files_are_checked():
    with pytest.raises(ValueError, match="^criteria.0.scale"):
        rubric_from_dict({"criteria": [{"name": "x", "scale": [5, 1]}]})
    with pytest.raises(ValueError, match="^criteria.0.name"):
        rubric_from_dict({"criteria": [{"name": "not an identifier"}]})
    rubric = rubric_from_dict({"name": "r", "criteria": [{"name": "clarity", "description": "d", "scale": [0, 3]}]})
    assert rubric.schema()["properties"]["clarity"] == {"type": "integer", "minimum": 0, "maximum": 3}


def test_eval_judge_end_to_end_against_a_served_model(tiny_checkpoint, tmp_path):
    rows = [r for r in labelled_set() if r["id"] in ("g0", "g1", "p0")]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text("name: qa\ncriteria:\n  - name: correctness\n    description: same result as the reference\n"
                      "    scale: [1, 5]\n")
    proc = served(tiny_checkpoint("llama"))
    try:
        url = proc.wait_ready(300).url
        out = tmp_path / "verdicts.jsonl"
        done = subprocess.run([sys.executable, "-m", "llmfleet", "eval", "judge", "--input", str(data), "--rubric",
                               str(rubric), "--judge-model", "tiny", "--base-url", url, "--output", str(out)],
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    finally:
        proc.kill()
    assert done.returncode == 0, done.stderr
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["id"] for v in verdicts] == ["g0", "g1", "p0"] and not any("error" in v for v in verdicts)
    assert all(1 <= v["scores"]["correctness"] <= 5 for v in verdicts[:2])
    assert verdicts[2]["verdict"] in ("a", "b", "tie", "inconsistent")
    assert json.loads(done.stdout)["scored"] == 2
