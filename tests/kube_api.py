"""A small HTTP server standing in for the Kubernetes API server's EndpointSlice list and watch.

It keeps EndpointSlices per namespace with resourceVersions, answers
GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=kubernetes.io/service-name=S as a list,
and with watch=true streams ADDED / MODIFIED / DELETED events (one JSON object a line) after the resourceVersion
asked for, as the real one does. `expire()` forgets the history (the next watch gets an ERROR event with code 410,
the real server's "too old resource version"); a bearer token is required when `token` is set.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import threading
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PREFIX = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def shared_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (loopback addresses such as 127.0.0.2), so that servers bound there
    look like the pods of one Service: one port, one address each."""
    while True:
        with contextlib.ExitStack() as stack:
            with socket.socket() as probe:
                probe.bind((hosts[0], 0))
                port = probe.getsockname()[1]
            try:
                for host in hosts:
                    stack.enter_context(socket.socket()).bind((host, port))
                return port
            except OSError:
                continue


def endpoint_slice(name: str, service: str, addresses: dict[str, dict], ports: dict[str, int],
                   address_type: str = "IPv4") -> dict:
    """An EndpointSlice of `service`: `addresses` maps each IP to its conditions ({"ready": True} ...)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in addresses.items()],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"} for port_name, port in ports.items()]}


class FakeKubeAPI:
    def __init__(self, token: str | None = None):
        self.token = token
        self.requests: list[tuple[str, dict, str | None]] = []   # (path, query, authorization) of each request
        self.refused = 0                                         # requests answered 401
        self._lock = threading.Lock()
        self._version = 100
        self._slices: dict[tuple[str, str], dict] = {}           # (namespace, name) -> slice
        self._events: list[tuple[int, str, str, dict]] = []      # (version, namespace, type, slice)
        self._oldest = 100                                       # history before this is forgotten
        self._generation = 0                                     # bumped to end the open watches

    # ---- what a test changes --------------------------------------------------------------------------------
    def put(self, namespace: str, item: dict) -> None:
        with self._lock:
            key = (namespace, item["metadata"]["name"])
            kind = "MODIFIED" if key in self._slices else "ADDED"
            self._record(namespace, kind, copy.deepcopy(item))
            self._slices[key] = self._events[-1][3]

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            item = self._slices.pop((namespace, name))
            self._record(namespace, "DELETED", item)

    def expire(self) -> None:
        """Forget every event so far and end the open watches: watching again from any version seen before gets
        410, and the watcher must list again (a list answers the new, valid version)."""
        with self._lock:
            self._version += 1
            self._oldest = self._version
            self._generation += 1

    def _record(self, namespace: str, kind: str, item: dict) -> None:
        self._version += 1
        item["metadata"]["resourceVersion"] = str(self._version)
        self._events.append((self._version, namespace, kind, item))

    # ---- the app --------------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[Route(PREFIX, self._endpoint_slices)])

    async def _endpoint_slices(self, request: Request) -> Response:
        query = {k: v[0] for k, v in parse_qs(request.url.query).items()}
        auth = request.headers.get("authorization")
        self.requests.append((request.url.path, query, auth))
        if self.token is not None and auth != f"Bearer {self.token}":
            self.refused += 1
            return JSONResponse({"kind": "Status", "code": 401, "message": "Unauthorized"}, 401)
        namespace = request.path_params["namespace"]
        service = query.get("labelSelector", "").removeprefix("kubernetes.io/service-name=")
        if query.get("watch") == "true":
            return StreamingResponse(self._watch(namespace, service, int(query["resourceVersion"]),
                                                 float(query.get("timeoutSeconds", 300))),
                                     media_type="application/json")
        with self._lock:
            items = [copy.deepcopy(s) for (ns, _), s in sorted(self._slices.items())
                     if ns == namespace and _service(s) == service]
            version = str(self._version)
        return JSONResponse({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                             "metadata": {"resourceVersion": version}, "items": items})

    async def _watch(self, namespace: str, service: str, since: int, timeout: float):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        generation = self._generation
        yield json.dumps({"type": "BOOKMARK", "object": {"kind": "EndpointSlice",
                                                         "metadata": {"resourceVersion": str(since)}}}) + "\n"
        while loop.time() < deadline and generation == self._generation:
            with self._lock:
                if since < self._oldest:
                    gone = {"kind": "Status", "status": "Failure", "code": 410, "reason": "Expired",
                            "message": f"too old resource version: {since}"}
                    yield json.dumps({"type": "ERROR", "object": gone}) + "\n"
                    return
                fresh = [(v, kind, copy.deepcopy(item)) for v, ns, kind, item in self._events
                         if v > since and ns == namespace and _service(item) == service]
                since = max(since, self._version)
            for _, kind, item in fresh:
                yield json.dumps({"type": kind, "object": item}) + "\n"
            await asyncio.sleep(0.02)


def _service(item: dict) -> str:
    return item["metadata"]["labels"]["kubernetes.io/service-name"]
