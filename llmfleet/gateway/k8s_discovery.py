"""Replicas from a Kubernetes Service's EndpointSlices: list once, then watch, and tell the fleet what changed.

The slices of Service S are those labelled kubernetes.io/service-name=S (one Service may have several: at most 100
endpoints each). An endpoint is a replica while its `conditions.ready` is not false (unset means ready, as the API
says); a terminating pod's endpoint turns not-ready at once, so the gateway sends it nothing new while the pod's
preStop sleep and its drain on SIGTERM finish what it has. Each slice port named `port_name` or `port_name-N`
gives one replica per address (a pod of several engines, one per GPU, serves http, http-1, ...); a slice with a
single port uses it whatever its name.

A watch that ends (its timeoutSeconds, a dropped connection) resumes from the last resourceVersion seen; one the
server no longer has history for (410 Gone) starts over with a list. While the API server cannot be reached the
last known replicas stay: their own health checks take them out if they are gone too.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable

import httpx

from llmfleet.gateway.k8s_api import KubernetesAPI, ServiceRef

logger = logging.getLogger(__name__)


class APIError(Exception):
    """The API server answered, but not with what was asked (403 without RBAC, 404 for an unknown namespace)."""


def replica_urls(slices: Iterable[dict], port_name: str = "http", scheme: str = "http") -> set[str]:
    """The replica base URLs that `slices` (EndpointSlice objects) describe."""
    urls = set()
    for item in slices:
        ports = [p for p in item.get("ports") or () if isinstance(p.get("port"), int)]
        named = [p for p in ports if (p.get("name") or "") == port_name
                 or (p.get("name") or "").startswith(port_name + "-")]
        ports = named or (ports if len(ports) == 1 else [])
        ipv6 = item.get("addressType") == "IPv6"
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or ():
                host = f"[{address}]" if ipv6 else address
                urls.update(f"{scheme}://{host}:{p['port']}" for p in ports)
    return urls


class EndpointSliceWatch:
    """Follows one Service; `on_change(urls)` gets the full set of replica URLs whenever it changes."""

    def __init__(self, service: ServiceRef, api: KubernetesAPI, on_change: Callable[[set[str]], None],
                 port_name: str = "http", scheme: str = "http", watch_timeout_s: int = 300,
                 retry_s: float = 0.5, max_retry_s: float = 30.0):
        self.service, self.api, self.on_change = service, api, on_change
        self.namespace = service.namespace or api.namespace
        self.port_name, self.scheme = port_name, scheme
        self.watch_timeout_s, self.retry_s, self.max_retry_s = watch_timeout_s, retry_s, max_retry_s
        self.urls: set[str] | None = None          # None until the first list answered
        self._slices: dict[str, dict] = {}
        self._path = api.endpoint_slices_path(self.namespace)
        self._selector = f"kubernetes.io/service-name={service.name}"

    async def run(self) -> None:
        """List and watch until cancelled, retrying with a doubling delay while the API server fails."""
        timeout = httpx.Timeout(5.0, read=self.watch_timeout_s + 30.0)
        async with httpx.AsyncClient(base_url=self.api.base_url, verify=self.api.verify(), timeout=timeout) as http:
            delay, version = self.retry_s, None
            while True:
                try:
                    if version is None:
                        version = await self._list(http)
                    version = await self._watch(http, version)
                    delay = self.retry_s
                except (httpx.HTTPError, APIError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                    # KeyError ... AttributeError: an answer not shaped like EndpointSlices; never end the task
                    logger.warning("kubernetes discovery of %s/%s: %s (retry in %.1f s)", self.namespace,
                                   self.service.name, exc, delay)
                    version = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_retry_s)

    async def _list(self, http: httpx.AsyncClient) -> str:
        answer = await http.get(self._path, params={"labelSelector": self._selector}, headers=self.api.headers())
        if answer.status_code != 200:
            raise APIError(f"listing EndpointSlices answered {answer.status_code}: {_message(answer.content)}")
        body = answer.json()
        self._slices = {item["metadata"]["name"]: item for item in body.get("items") or ()}
        self._publish()
        return body["metadata"]["resourceVersion"]

    async def _watch(self, http: httpx.AsyncClient, version: str) -> str | None:
        """Apply watch events from `version` on; the newest version seen, or None when a new list is needed."""
        params = {"labelSelector": self._selector, "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(self.watch_timeout_s)}
        async with http.stream("GET", self._path, params=params, headers=self.api.headers()) as answer:
            if answer.status_code == 410:
                return None
            if answer.status_code != 200:
                raise APIError(f"watching EndpointSlices answered {answer.status_code}: "
                               f"{_message(await answer.aread())}")
            async for line in answer.aiter_lines():
                if not line.strip():
                    continue
                version = self._apply(json.loads(line), version)
                if version is None:
                    return None
        return version

    def _apply(self, event: dict, version: str) -> str | None:
        kind, item = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == 410:
                return None
            raise APIError(f"watch error {item.get('code')}: {item.get('message')}")
        if kind in ("ADDED", "MODIFIED"):
            self._slices[item["metadata"]["name"]] = item
        elif kind == "DELETED":
            self._slices.pop(item["metadata"]["name"], None)
        if kind != "BOOKMARK":
            self._publish()
        return item.get("metadata", {}).get("resourceVersion") or version

    def _publish(self) -> None:
        urls = replica_urls(self._slices.values(), self.port_name, self.scheme)
        if urls != self.urls:
            added, gone = sorted(urls - (self.urls or set())), sorted((self.urls or set()) - urls)
            logger.info("service %s/%s: %d replica(s)%s%s", self.namespace, self.service.name, len(urls),
                        f", added {', '.join(added)}" if added else "", f", gone {', '.join(gone)}" if gone else "")
            self.urls = urls
            self.on_change(set(urls))


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
