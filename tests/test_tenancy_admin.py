"""The tenancy admin API on SQLite and PostgreSQL: keys, teams, users, spend logs; who may call what (401, 403);
tenants isolated; keys never stored in plain text; fuzzed bodies answered 4xx in OpenAI's envelope."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from tenancy_app import MASTER, TenantServer, tenancy_config
except ImportError:
    from tests.tenancy_app import MASTER, TenantServer, tenancy_config


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tenant(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('tenancy') / 'keys.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with TenantServer(tenancy_config(url)) as server:
        server.database_url = url
        yield server


def _envelope(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"]
    return error


def test_generate_info_update_delete(tenant):
    answer = tenant.admin("POST", "/key/generate", json={"models": ["m"], "rpm_limit": 5, "max_budget": 1.5,
                                                         "budget_duration": "30d", "duration": "1h",
                                                         "metadata": {"owner": "a"}})
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["key"].startswith("sk-") and made["key_name"].endswith(made["key"][-4:])
    assert made["budget_duration"] == 30 * 86400 and made["expires"] and "key_hash" not in made
    info = tenant.admin("GET", "/key/info", params={"key": made["key"]}).json()
    assert info["key_id"] == made["key_id"] and info["info"]["rpm_limit"] == 5
    assert info["info"]["metadata"] == {"owner": "a"}
    updated = tenant.admin("POST", "/key/update", json={"key_id": made["key_id"], "rpm_limit": 7}).json()
    assert updated["info"]["rpm_limit"] == 7 and updated["info"]["max_budget"] == 1.5
    assert tenant.chat(made["key"]).status_code == 200
    deleted = tenant.admin("POST", "/key/delete", json={"keys": [made["key"]]}).json()
    assert deleted == {"deleted_keys": [made["key_id"]]}
    _envelope(tenant.chat(made["key"]), 401)


def test_wrong_blocked_and_expired_keys_get_401(tenant):
    assert _envelope(tenant.chat("sk-wrong"), 401)["code"] == "invalid_api_key"
    assert _envelope(tenant.http.get("/v1/models"), 401)["code"] == "invalid_api_key"
    key = tenant.new_key()
    key_id = tenant.admin("GET", "/key/info", params={"key": key}).json()["key_id"]
    tenant.admin("POST", "/key/update", json={"key_id": key_id, "blocked": True})
    assert "blocked" in _envelope(tenant.chat(key), 401)["message"]
    expired = tenant.new_key(duration=1)
    deadline = time.monotonic() + 30
    while tenant.chat(expired).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "expired" in _envelope(tenant.chat(expired), 401)["message"]


def test_non_admin_key_gets_403_on_admin_routes(tenant):
    key = tenant.new_key()
    for method, path, body in (("POST", "/key/generate", {}), ("POST", "/key/update", {"key": key}),
                               ("POST", "/key/delete", {"keys": [key]}), ("POST", "/team/new", {}),
                               ("POST", "/user/new", {}), ("GET", "/global/spend/report", None)):
        error = _envelope(tenant.admin(method, path, key=key, json=body), 403)
        assert error["type"] == "permission_error" and error["code"] == "forbidden"
    assert tenant.admin("GET", "/key/info", key=key).json()["info"]["key_name"].endswith(key[-4:])


def test_tenants_never_read_each_other(tenant):
    team_a = tenant.admin("POST", "/team/new", json={"team_alias": "a"}).json()["team_id"]
    team_b = tenant.admin("POST", "/team/new", json={"team_alias": "b"}).json()["team_id"]
    key_a, key_b = tenant.new_key(team_id=team_a), tenant.new_key(team_id=team_b)
    assert tenant.chat(key_a).status_code == 200 and tenant.chat(key_b).status_code == 200
    id_b = tenant.admin("GET", "/key/info", params={"key": key_b}).json()["key_id"]
    _envelope(tenant.admin("GET", "/key/info", key=key_a, params={"key": key_b}), 403)
    _envelope(tenant.admin("GET", "/key/info", key=key_a, params={"key_id": id_b}), 403)
    _envelope(tenant.admin("GET", "/spend/logs", key=key_a, params={"key_id": id_b}), 403)
    _envelope(tenant.admin("GET", "/spend/logs", key=key_a, params={"team_id": team_b}), 403)
    rows = _spend(tenant, key_a, {})
    assert rows and {r["key_id"] for r in rows} != {id_b} and all(r["team_id"] == team_a for r in rows)
    assert _spend(tenant, key_b, {})  # B's row may come in a later batch than A's: wait for it too
    report = tenant.admin("GET", "/global/spend/report", params={"group_by": "team_id"}).json()
    assert {team_a, team_b} <= {r["team_id"] for r in report}


def _spend(tenant, key: str, params: dict) -> list[dict]:
    """The key's spend rows, once the spend writer has flushed its batch."""
    deadline = time.monotonic() + 30
    while True:
        rows = tenant.admin("GET", "/spend/logs", key=key, params=params).json()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_user_new_makes_a_user_and_a_key(tenant):
    team = tenant.admin("POST", "/team/new", json={}).json()["team_id"]
    made = tenant.admin("POST", "/user/new", json={"user_email": "u@example.com", "team_id": team,
                                                   "rpm_limit": 3}).json()
    assert made["user_id"] and made["key"].startswith("sk-")
    info = tenant.admin("GET", "/key/info", params={"key": made["key"]}).json()["info"]
    assert info["user_id"] == made["user_id"] and info["team_id"] == team and info["rpm_limit"] == 3
    _envelope(tenant.admin("POST", "/team/new", json={"team_id": team}), 409)
    _envelope(tenant.admin("POST", "/key/generate", json={"team_id": "nope"}), 400)


def test_keys_are_stored_only_as_hmacs(tenant):
    key = tenant.new_key(key_alias="plain")
    assert tenant.chat(key).status_code == 200
    if tenant.database_url.startswith("sqlite"):
        path = tenant.database_url.removeprefix("sqlite:///")
        stored = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if __import__("os").path.exists(p))
        assert b"plain" in stored or b"keys" in stored  # the file is the one written
        assert key.encode() not in stored and key[3:].encode() not in stored


BAD_BODIES = [b"", b"[]", b"null", b"{", b'"x"', b'{"rpm_limit": -1}', b'{"rpm_limit": 1e40}',
              b'{"max_budget": Infinity}', b'{"max_budget": NaN}', b'{"unknown": 1}', b'{"models": "m"}',
              b'{"team_id": "\\u0000"}', b'{"metadata": {"a": "\\ud800"}}', b'{"duration": "forever"}',
              b'{"budget_duration": -5}', b'{"rpm_limit": true}', b'{"models": [1, 2]}', b"[" * 5000 + b"]" * 5000,
              b'{"team_id": "' + b"x" * 1000 + b'"}', b'{"key_alias": {"a": 1}}']


@pytest.mark.parametrize("path", ["/key/generate", "/key/update", "/key/delete", "/team/new", "/user/new"])
def test_bad_admin_bodies_get_4xx_envelopes(tenant, path):
    for body in BAD_BODIES:
        answer = tenant.admin("POST", path, content=body, headers={"content-type": "application/json"})
        if answer.status_code == 200:  # e.g. {} is a valid /team/new
            continue
        assert 400 <= answer.status_code < 500, (path, body[:60], answer.text)
        _envelope(answer, answer.status_code)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=8)
_fields = st.sampled_from(["models", "max_budget", "budget_duration", "rpm_limit", "tpm_limit", "team_id",
                           "duration", "metadata", "key_id", "keys", "soft_budget", "blocked"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/key/generate", "/key/update", "/key/delete", "/team/new"]),
       body=st.dictionaries(_fields, _json, max_size=4))
def test_fuzzed_admin_bodies_never_fail_the_server(tenant, path, body):
    answer = tenant.admin("POST", path, content=json.dumps(body).encode())
    assert answer.status_code < 500, (path, body, answer.text)
    if answer.status_code >= 400:
        _envelope(answer, answer.status_code)
