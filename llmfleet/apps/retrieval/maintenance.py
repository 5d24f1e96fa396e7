"""The collection's maintenance thread: seals the growing buffer into HNSW segments and merges small segments.

Both build a new segment from rows that no writer touches any more (rows are append-only) and then publish a new
View with one reference swap, so searches never wait for a build. Merging is tiered: once `merge_factor`
consecutive segments share a size tier (size // seal_rows, in powers of merge_factor), they become one, which
keeps the number of graphs a search walks logarithmic in the collection's size.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading

from llmfleet.apps.retrieval.segments import Segment

logger = logging.getLogger(__name__)


class Maintainer:
    def __init__(self, coll):
        self._coll = coll
        self._wake = threading.Condition()
        self._busy = threading.Lock()       # held while building; snapshot() holds it to see a stable view
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="retrieval-maintenance", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Called after writes: wakes the thread when the buffer is due for sealing."""
        coll = self._coll
        if len(coll.rows()) - coll.view.sealed >= coll.params.seal_rows:
            with self._wake:
                self._wake.notify()

    def wait_idle(self) -> None:
        """Block until no seal or merge is due (benchmarks and tests: a fully built index)."""
        while self._due():
            with self._wake:
                self._wake.notify()
            with self._busy:
                pass
            if not self._due():
                return
            threading.Event().wait(0.05)

    @contextlib.contextmanager
    def paused(self):
        with self._busy:
            yield

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _due(self) -> bool:
        coll = self._coll
        return len(coll.rows()) - coll.view.sealed >= coll.params.seal_rows or self._merge_run() is not None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._due():
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
            try:
                with self._busy:
                    self._step()
            except Exception:   # a failed build leaves the buffer searchable exactly; retried on the next write
                logger.exception("retrieval segment build failed")
                threading.Event().wait(1.0)

    def _step(self) -> None:
        coll = self._coll
        run = self._merge_run()
        if run is not None:
            segs = coll.view.segments
            first, last = segs[run[0]], segs[run[1] - 1]
            merged = Segment.build(coll.rows()[first.start:last.stop], first.start, coll.params)
            view = coll.view
            coll.publish(type(view)(view.segments[:run[0]] + (merged,) + view.segments[run[1]:], view.sealed))
            return
        start = coll.view.sealed
        stop = start + (len(coll.rows()) - start) // 8 * 8      # the next segment must start on a byte of bits
        segment = Segment.build(coll.rows()[start:stop], start, coll.params)
        view = coll.view
        coll.publish(type(view)(view.segments + (segment,), stop))

    def _merge_run(self) -> tuple[int, int] | None:
        """[i, j) of `merge_factor` consecutive segments of one tier at the tail, None when there is none."""
        params, segs = self._coll.params, self._coll.view.segments
        factor = params.merge_factor
        if len(segs) < factor:
            return None
        tiers = [int(math.log(max(s.size / params.seal_rows, 1), factor)) for s in segs[-factor:]]
        return (len(segs) - factor, len(segs)) if len(set(tiers)) == 1 else None
