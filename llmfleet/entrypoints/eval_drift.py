"""`llmfleet eval drift`: the request logs (exported JSONL, or the encrypted logs themselves) in windows against a
reference; a PNG report, a JSON of every window, alerts through the tenancy webhook, and with --watch Prometheus
gauges kept current."""
from __future__ import annotations

import argparse
import asyncio
import json
import os


def _rows(args: argparse.Namespace) -> list[dict]:
    if (args.input is None) == (args.log_dir is None):
        raise ValueError("input: give --input (exported JSONL) or --log-dir (the encrypted logs)")
    if args.input:
        from llmfleet.apps.evals.runner import read_rows

        return read_rows(args.input)
    from llmfleet.tenancy.export import Selection, records, row
    from llmfleet.tenancy.request_log import load_key

    key_file = args.key_file or os.environ.get("LLMFLEET_REQUEST_LOG_KEY_FILE")
    if not key_file:
        raise ValueError("key_file: give --key-file (or $LLMFLEET_REQUEST_LOG_KEY_FILE)")
    return [row(r) for r in records(args.log_dir, load_key(key_file), Selection())]


def _scores(path: str | None) -> dict:
    if path is None:
        return {}
    from llmfleet.apps.evals.runner import read_rows

    return {r["request_id"]: r["score"] for r in read_rows(path) if "score" in r and r.get("request_id")}


def _config(args: argparse.Namespace):
    from llmfleet.apps.evals.drift import DriftConfig
    from llmfleet.tenancy.keys import parse_duration

    return DriftConfig(window_s=parse_duration(args.window, "window"),
                       step_s=parse_duration(args.step, "step") if args.step else None,
                       reference_s=parse_duration(args.reference, "reference") if args.reference else None,
                       min_count=args.min_count, psi_alert=args.psi_alert, mmd_alpha=args.mmd_alpha)


async def _vectors(args: argparse.Namespace, observations) -> tuple:
    if not args.embedding_url:
        return None, None
    from llmfleet.apps.endpoint import Endpoint

    endpoint, out = Endpoint(args.embedding_url), []
    try:
        for texts in ([o.prompt for o in observations], [o.answer or " " for o in observations]):
            parts = [await endpoint.embed(args.embedding_model, texts[i:i + 64]) for i in range(0, len(texts), 64)]
            import numpy as np

            out.append(np.concatenate(parts))
    finally:
        await endpoint.close()
    return tuple(out)


async def analyze_once(args: argparse.Namespace, config):
    from llmfleet.apps.evals.drift import analyze, observation

    scores = _scores(args.scores)
    observations = [observation(r, scores) for r in _rows(args)]
    return analyze(observations, config, *(await _vectors(args, observations)))


def _window_json(w) -> dict:
    return {"start": w.start, "end": w.end, "count": w.count, "psi": w.psi, "means": w.means,
            "mmd": {k: {"mmd2": v[0], "p_value": v[1]} for k, v in w.mmd.items()}, "alerts": w.alerts}


async def run_drift(args: argparse.Namespace) -> int:
    from llmfleet.apps.evals.report import write_png

    config = _config(args)
    alerts = gauges = None
    if args.alert_webhook_url:
        from llmfleet.tenancy.alerts import BudgetAlerts

        alerts = BudgetAlerts(args.alert_webhook_url, store=None)
    if args.watch:
        from prometheus_client import start_http_server

        from llmfleet.apps.evals.monitor import DriftGauges

        gauges = DriftGauges()
        start_http_server(args.metrics_port, registry=gauges.registry)
    try:
        while True:
            reference, windows = await analyze_once(args, config)
            await _publish(args, config, reference, windows, alerts, gauges, write_png)
            if not args.watch:
                return 0
            await asyncio.sleep(args.watch)
    finally:
        if alerts is not None:
            await alerts.close()


async def _publish(args, config, reference, windows, alerts, gauges, write_png) -> None:
    from llmfleet.apps.evals.monitor import send_alerts

    latest = windows[-1] if windows else None
    if gauges is not None and latest is not None:
        gauges.update(latest)
    if alerts is not None and latest is not None:
        await send_alerts(alerts, latest, {"psi": config.psi_alert, "mmd": config.mmd_alpha})
    if args.report:
        write_png(args.report, reference, windows, config)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"reference": _window_json(reference), "windows": [_window_json(w) for w in windows]}, f,
                      indent=2)
    alerted = [w for w in windows if w.alerts]
    print(f"{len(windows)} windows against a reference of {reference.count} requests; {len(alerted)} alerted"
          + "".join(f"\n  {w.start:.0f}: {', '.join(w.alerts)}" for w in alerted))
