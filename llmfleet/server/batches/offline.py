"""`llmfleet run-batch`: an OpenAI batch file run offline, through the same serving code as the HTTP server.

The engine core starts as a process of its own (as under `llmfleet serve`), the requests run with bounded
concurrency, and one result line per input line is written in input order: `{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error": null}`, or, for a line that is not a valid request line,
`"response": null` and `"error": {"code", "message"}`. Lines may mix endpoints (each names its own `url`).
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path

from llmfleet.engine.core_client import EngineCoreClient
from llmfleet.protocol.config import EngineConfig
from llmfleet.server.batches.dispatch import parse_line, run_line
from llmfleet.server.batches.store import new_id
from llmfleet.server.config import ServerConfig
from llmfleet.server.context import ServingContext
from llmfleet.server.lifecycle import Lifecycle
from llmfleet.server.metrics import ServerMetrics


async def run_batch_file(server_config: ServerConfig, engine_config: EngineConfig, input_path: str | Path,
                         output_path: str | Path, concurrency: int, progress: bool = True) -> tuple[int, int]:
    """Runs every line of `input_path`; writes `output_path`. Returns (lines answered 200, other lines)."""
    raw_lines = [(n, raw) for n, raw in enumerate(Path(input_path).read_text(encoding="utf-8").splitlines(), 1)
                 if raw.strip()]
    engine = await EngineCoreClient.start(engine_config, log_level="WARNING")
    names = server_config.served_model_names or (engine.model_name,)
    ctx = ServingContext(server_config, engine, copy.deepcopy(engine.tokenizer), ServerMetrics(names[0]),
                         Lifecycle(server_config.drain_timeout), names, int(time.time()))
    bar = _progress(len(raw_lines), progress)
    limit = asyncio.Semaphore(concurrency)

    async def one(number: int, raw: str) -> dict:
        line, error = parse_line(raw, number, None)
        if error is not None:
            result = {"id": new_id("batch_req"), "custom_id": _custom_id(raw), "response": None,
                      "error": {"code": error["code"], "message": error["message"]}}
        else:
            async with limit:
                result = await run_line(ctx, line)
        bar.update(1)
        return result

    try:
        results = await asyncio.gather(*(one(n, raw) for n, raw in raw_lines))
    finally:
        bar.close()
        await engine.shutdown()
        ctx.tokenizers.shutdown()
    with open(output_path, "w", encoding="utf-8") as out:
        for result in results:
            out.write(_dumps(result) + "\n")
    ok = sum(1 for r in results if r["response"] is not None and r["response"]["status_code"] == 200)
    return ok, len(results) - ok


def _custom_id(raw: str) -> str | None:
    try:
        value = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="requests", unit="req", dynamic_ncols=True, disable=not enabled)
