"""Tokenizing off the event loop: a few worker threads, each with its own copy of the server's tokenizer.

A multi-megabyte prompt takes seconds to tokenize; on the loop it would stall every other request and the health
probes. Fast tokenizers do the work in Rust without holding the GIL, so the loop keeps serving meanwhile. Each
thread has its own copy because a fast tokenizer's Python wrapper keeps mutable state (truncation, padding) that
concurrent callers must not share. Chat templates are rendered here too (jinja is pure Python, but it holds the
loop no longer than any other thread would).
"""
from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class TokenizerPool:
    """`await pool.run(fn, *args)` runs `fn(tokenizer, *args)` on a worker thread with that thread's tokenizer."""

    def __init__(self, tokenizer: Any, max_workers: int | None = None):
        self._source = tokenizer
        self._local = threading.local()
        workers = max_workers or max(1, min(4, os.cpu_count() or 1))
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="llmfleet-tokenize")
        for _ in range(workers):  # copy the tokenizers now, in the background, rather than on the first requests
            self._executor.submit(self._call, lambda tokenizer: None, ())

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)

    def shutdown(self) -> None:
        """Stop the workers once their current job is done; queued jobs are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self._local.tokenizer = copy.deepcopy(self._source)
        return fn(tokenizer, *args)
