"""Budget alerts reach a local webhook receiver as Slack-compatible JSON: the soft budget once it is passed, the
exhausted budget when a request is refused for it, each once a day however many requests follow."""
from __future__ import annotations

import json

import pytest

from llmfleet.server.background import BackgroundServer

try:
    from tenancy_app import PRICES, TenantServer, read_body, tenancy_config, until
except ImportError:
    from tests.tenancy_app import PRICES, TenantServer, read_body, tenancy_config, until


class Receiver:
    def __init__(self):
        self.posts: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.posts.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    receiver = Receiver()
    with BackgroundServer(receiver) as hook:
        config = tenancy_config(f"sqlite:///{tmp_path_factory.mktemp('alerts') / 'k.db'}", prices=PRICES,
                                alert_webhook_url=hook + "/slack")
        with TenantServer(config) as server:
            yield server, receiver


def test_soft_and_exhausted_alerts_once_each(setup):
    server, receiver = setup
    key = server.new_key(soft_budget=0.03, max_budget=0.05, key_alias="team-a-bot")
    statuses = [server.chat(key).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]  # $0.04 spent; a $0.021 reservation no longer fits
    assert until(lambda: {p["kind"] for p in receiver.posts} == {"soft_budget", "exhausted"})
    assert until(lambda: server.middleware.tenancy.spend._pending == [])
    server.chat(key)
    kinds = sorted(p["kind"] for p in receiver.posts)
    assert kinds == ["exhausted", "soft_budget"]
    soft = next(p for p in receiver.posts if p["kind"] == "soft_budget")
    assert "team-a-bot" in soft["text"] and soft["limit"] == 0.03 and soft["spend"] == pytest.approx(0.04)
