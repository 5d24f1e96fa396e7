"""A fixed-answer OpenAI-shaped ASGI app for tenancy tests: every completion uses 10 prompt tokens and
min(max_tokens, 5) completion tokens; model "hold" waits until `release()` (to keep requests in flight)."""
from __future__ import annotations

import asyncio
import json
import threading
import time

try:
    from serving import wait_until as until
except ImportError:
    from tests.serving import wait_until as until

PROMPT_TOKENS, COMPLETION_TOKENS = 10, 5
LEAK = "call me at 415-555-0123 or mail bob@example.com"  # what model "leaky" answers


class FixedApp:
    def __init__(self):
        self.bodies: list[dict] = []
        self.header_names: list[set[bytes]] = []  # each request's header names, as the app behind tenancy got them
        self.gate = threading.Event()
        self.held = 0

    def release(self) -> None:
        self.gate.set()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        body = await read_body(receive)
        if scope["path"] == "/v1/models":
            return await _json(send, 200, {"object": "list", "data": []})
        data = json.loads(body or b"{}")
        self.bodies.append(data)
        self.header_names.append({k.lower() for k, _ in scope["headers"]})
        if data.get("model") == "hold":
            self.held += 1
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": min(data.get("max_tokens") or 5, 5)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if data.get("stream"):
            return await _stream(send, data, usage)
        content = LEAK if data.get("model") == "leaky" else "ok"
        choice = {"index": 0, "message": {"role": "assistant", "content": content}}
        await _json(send, 200, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def read_body(receive) -> bytes:
    """The whole request body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _json(send, status, payload):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send, data, usage):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    with_usage = (data.get("stream_options") or {}).get("include_usage")
    for text in ((LEAK, "b", "c") if data.get("model") == "leaky" else ("a", "b", "c")):
        chunk = {"id": "x", "choices": [{"index": 0, "delta": {"content": text}}]}
        if with_usage:
            chunk["usage"] = None
        await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True})
    if with_usage:
        await send({"type": "http.response.body", "more_body": True,
                    "body": f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n".encode()})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


MASTER = "sk-master-test-key"


def tenancy_config(database_url: str, **kw):
    from llmfleet.tenancy import TenancyConfig

    return TenancyConfig(master_key=MASTER, database_url=database_url, spend_flush_interval_s=0.05, **kw)


class TenantServer:
    """`with TenantServer(config) as t:` a FixedApp behind TenancyMiddleware on loopback; t.url, t.admin(...)."""

    def __init__(self, config, app: FixedApp | None = None):
        from llmfleet.server.background import BackgroundServer
        from llmfleet.tenancy import TenancyMiddleware

        self.app = app or FixedApp()
        self.middleware = TenancyMiddleware(self.app, config)
        self._server = BackgroundServer(self.middleware)

    def __enter__(self):
        import httpx

        self.url = self._server.start()
        self.http = httpx.Client(base_url=self.url, timeout=60)
        return self

    def __exit__(self, *exc):
        self.http.close()
        self._server.stop()

    def admin(self, method: str, path: str, key: str = MASTER, headers: dict | None = None, **kw):
        headers = {"authorization": f"Bearer {key}", **(headers or {})}
        return self.http.request(method, path, headers=headers, **kw)

    def new_key(self, **body) -> str:
        answer = self.admin("POST", "/key/generate", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["key"]

    def chat(self, key: str, model: str = "m", max_tokens: int = 5, **body):
        payload = {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": max_tokens,
                   **body}
        return self.http.post("/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {key}"})


PRICES = {"default": {"input": 1000.0, "output": 2000.0}}  # a fixed answer (10 + 5 tokens) costs $0.02
ANSWER_COST = 0.02
RESERVATION = 0.021  # 44 prompt characters (11 tokens) at $1000/1M + 5 asked tokens at $2000/1M


def wait_for_minute_room(seconds: float = 8.0) -> None:
    """Sleep past the next minute boundary when fewer than `seconds` remain in this one, so that a test's burst
    falls in one rate-limit window."""
    left = 60.0 - time.time() % 60.0
    if left < seconds:
        time.sleep(left + 0.05)




def race(urls_and_keys: list[tuple[str, str]], model: str = "hold") -> list:
    """Send every (url, key) chat request at once from threads; returns the answers in order."""
    import concurrent.futures

    import httpx

    def one(pair):
        url, key = pair
        body = {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 5}
        return httpx.post(url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                          timeout=120)

    with concurrent.futures.ThreadPoolExecutor(len(urls_and_keys)) as pool:
        return list(pool.map(one, urls_and_keys))
