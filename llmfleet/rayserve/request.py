"""What the ingress hands an engine replica: the client's HTTP request, plus what routing it may look at.

Only the HTTP parts travel to the replica. `payload` (the parsed body, for the request router's prompt hashing),
`avoid` (replicas that already failed this request), `replica` (where the router sent it) and `routing` (the
router's scratch) stay in the ingress process, where Ray Serve's router runs: Ray's pickling leaves them out.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class EngineRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    payload: dict = field(default_factory=dict)     # routing only: not sent
    avoid: set[str] = field(default_factory=set)    # routing only: replica ids not to choose again
    replica: str | None = None                      # set by the router: the replica id it chose
    routing: object | None = None                   # the router's RoutingRequest (prompt hashes, once per request)

    def __getstate__(self):
        return self.method, self.path, self.headers, self.body

    def __setstate__(self, state) -> None:
        self.method, self.path, self.headers, self.body = state
        self.payload, self.avoid, self.replica, self.routing = {}, set(), None, None
