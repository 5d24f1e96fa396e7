"""Running batches: validating -> in_progress -> finalizing -> completed, or failed (the input file is invalid),
or cancelling -> cancelled.

A batch runs as a task on the server's event loop, at most `concurrency` of its requests in flight at once (they
compete with interactive traffic under the same admission bound). Each result is appended to a partial file on disk
as it arrives, so a restart resumes an unfinished batch: the lines whose results are on disk are not run again
(requests in flight when the server stopped are). Finalizing turns the partial files into the output file (status
200) and the error file (every other status), registered like uploaded files with purpose `batch_output`.
Cancelling stops launching requests, aborts the ones in flight (their KV blocks are freed) and finalizes what
finished.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from llmfleet.server.batches.dispatch import ENDPOINTS, parse_line, run_line
from llmfleet.server.batches.store import BatchStore, new_id
from llmfleet.server.context import ServingContext
from llmfleet.server.errors import APIError

logger = logging.getLogger(__name__)
COMPLETION_WINDOWS = ("24h",)
_UNFINISHED = ("validating", "in_progress", "finalizing")


class BatchService:
    def __init__(self, store: BatchStore, ctx: ServingContext, concurrency: int):
        self.store, self.ctx, self.concurrency = store, ctx, concurrency
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancelled: set[str] = set()

    @classmethod
    async def start(cls, store: BatchStore, ctx: ServingContext, concurrency: int) -> "BatchService":
        """The service, with every batch the last run left unfinished resumed (cancelling ones finalized)."""
        self = cls(store, ctx, concurrency)
        for batch in await store.batches_in((*_UNFINISHED, "cancelling")):
            logger.info("resuming batch %s (%s)", batch["id"], batch["status"])
            if batch["status"] == "cancelling":
                self._cancelled.add(batch["id"])
            self._spawn(batch["id"])
        return self

    async def stop(self) -> None:
        """Stops running batches where they are (a restart resumes them)."""
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def create(self, endpoint: str, input_file_id: str, completion_window: str, metadata) -> dict:
        if endpoint not in ENDPOINTS:
            raise APIError(400, f"endpoint: must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}", "endpoint",
                           "invalid_value")
        if completion_window not in COMPLETION_WINDOWS:
            raise APIError(400, f"completion_window: must be 24h, got {completion_window!r}", "completion_window",
                           "invalid_value")
        source = await self.store.get_file(input_file_id)
        if source is None or source["purpose"] != "batch":
            raise APIError(400, f"input_file_id: no file {input_file_id!r} with purpose batch", "input_file_id",
                           "invalid_value")
        if metadata is not None and not isinstance(metadata, dict):
            raise APIError(400, "metadata: must be an object of strings", "metadata", "invalid_value")
        batch = await self.store.add_batch(endpoint, input_file_id, completion_window, metadata)
        self._spawn(batch["id"])
        return batch

    async def cancel(self, batch_id: str) -> dict:
        batch = await self.get(batch_id)
        if batch["status"] in _UNFINISHED:
            await self.store.update_batch(batch_id, status="cancelling")
            self._cancelled.add(batch_id)
            task = self._tasks.get(batch_id)
            if task is not None:
                task.cancel()   # stops launching, aborts what is in flight, then finalizes as cancelled
        elif batch["status"] not in ("cancelling", "cancelled"):
            raise APIError(409, f"batch_id: cannot cancel a batch whose status is {batch['status']}", "batch_id",
                           "invalid_state")
        return await self.get(batch_id)

    async def get(self, batch_id: str) -> dict:
        batch = await self.store.get_batch(batch_id)
        if batch is None:
            raise APIError(404, f"batch_id: no batch {batch_id!r}", "batch_id", "not_found")
        return batch

    # ---- running ----------------------------------------------------------------------------------------------
    def _spawn(self, batch_id: str) -> None:
        task = asyncio.create_task(self._run(batch_id), name=f"batch-{batch_id}")
        self._tasks[batch_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(batch_id, None))

    async def _run(self, batch_id: str) -> None:
        try:
            if batch_id not in self._cancelled:
                lines = await self._validate(await self.get(batch_id))
                if lines is None:
                    return
                await self._run_lines(batch_id, lines)
        except asyncio.CancelledError:
            if batch_id not in self._cancelled:
                raise   # the server is stopping: leave the batch as it is, to resume
        except Exception as exc:  # noqa: BLE001 - a batch that breaks must say why, not hang in_progress
            logger.exception("batch %s failed", batch_id)
            await self.store.update_batch(batch_id, status="failed", errors=_errors(
                [{"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "param": None,
                  "line": None}]))
            return
        await self._finalize(batch_id, "cancelled" if batch_id in self._cancelled else "completed")

    async def _validate(self, batch: dict) -> list[dict] | None:
        """The input file's lines, or None after marking the batch failed with every invalid line's error."""
        text = self.store.path_of(batch["input_file_id"]).read_text(encoding="utf-8", errors="replace")
        lines, errors, seen = [], [], set()
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            line, error = parse_line(raw, number, batch["endpoint"])
            if line is not None and line["custom_id"] in seen:
                line, error = None, {"code": "duplicate_custom_id", "param": "custom_id", "line": number,
                                     "message": f"line {number}: custom_id {line['custom_id']!r} is not unique"}
            if error is not None:
                errors.append(error)
            else:
                seen.add(line["custom_id"])
                lines.append(line)
        if not lines and not errors:
            errors.append({"code": "empty_file", "message": "the input file has no requests", "param": None,
                           "line": None})
        if errors:
            await self.store.update_batch(batch["id"], status="failed", errors=_errors(errors[:1000]))
            return None
        if batch["status"] == "validating":
            await self.store.update_batch(batch["id"], status="in_progress", total=len(lines))
        return lines

    async def _run_lines(self, batch_id: str, lines: list[dict]) -> None:
        done = _custom_ids(self._partial(batch_id, "output")) | _custom_ids(self._partial(batch_id, "error"))
        counts = {"completed": len(_custom_ids(self._partial(batch_id, "output"))),
                  "failed": len(_custom_ids(self._partial(batch_id, "error")))}
        limit = asyncio.Semaphore(self.concurrency)

        async def one(line: dict) -> None:
            try:
                result = await run_line(self.ctx, line)
            finally:
                limit.release()
            ok = result["response"]["status_code"] == 200
            _append(self._partial(batch_id, "output" if ok else "error"), result)
            counts["completed" if ok else "failed"] += 1
            await self.store.update_batch(batch_id, **counts)

        tasks = []
        try:
            for line in lines:
                if line["custom_id"] in done:
                    continue
                await limit.acquire()
                tasks.append(asyncio.create_task(one(line)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()   # cancelled or stopping: abort what is still in flight

    async def _finalize(self, batch_id: str, status: str) -> None:
        if status == "completed":
            await self.store.update_batch(batch_id, status="finalizing")
        ids = {"completed": len(_custom_ids(self._partial(batch_id, "output"))),   # what is on disk, exactly
               "failed": len(_custom_ids(self._partial(batch_id, "error")))}
        for kind in ("output", "error"):
            partial = self._partial(batch_id, kind)
            if partial.is_file() and partial.stat().st_size:
                file_id = new_id("file")
                partial.rename(self.store.path_of(file_id))
                await self.store.register_file(file_id, f"{batch_id}_{kind}.jsonl", "batch_output")
                ids[f"{kind}_file_id"] = file_id
        await self.store.update_batch(batch_id, status=status, **ids)
        self._cancelled.discard(batch_id)

    def _partial(self, batch_id: str, kind: str):
        return self.store.files_dir / f"{batch_id}.{kind}.partial"


def _errors(items: list[dict]) -> dict:
    return {"object": "list", "data": items}


def _append(path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _custom_ids(path) -> set[str]:
    """custom_ids of the results already on disk (a torn last line, from a crash mid-write, is ignored)."""
    if not path.is_file():
        return set()
    ids = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ids.add(json.loads(raw)["custom_id"])
    return ids
