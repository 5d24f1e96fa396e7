"""Who may open the console: it shows every tenant's spend and can drain replicas, so only an admin.

- With tenancy: the master key, or a virtual key whose metadata has "role": "admin".
- With a plain API key (`llmfleet serve --api-key`): that key.
- With neither: clients on the loopback interface only (anyone who can reach the host's loopback already runs
  code there); any other address is refused with 403 until a master key or API key is set.

The key comes as `Authorization: Bearer KEY` (curl, `llmfleet top`) or as the password of HTTP Basic auth, so a
browser asks for it in its own login dialog: no cookie, no login page.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from typing import Any

from llmfleet.console.source import ConsoleError

logger = logging.getLogger(__name__)
REALM = {"www-authenticate": 'Basic realm="llmfleet console", charset="UTF-8"'}


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key in the Authorization header (Bearer, or Basic's password); None when there is none."""
    value = next((v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"), "")
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _denied(status: int, message: str, code: str) -> ConsoleError:
    return ConsoleError(status, message, code, REALM if status == 401 else None)


class ConsoleAuth:
    def __init__(self, tenancy: Any = None, api_key: str | None = None):
        self.tenancy, self.api_key = tenancy, api_key

    @property
    def mode(self) -> str:
        return "tenancy" if self.tenancy is not None else "api_key" if self.api_key else "loopback"

    async def check(self, scope: dict) -> None:
        """Return if the request may use the console; ConsoleError 401 / 403 (or 503: key store down) if not."""
        if self.mode == "loopback":
            host = (scope.get("client") or ("",))[0]
            if not _loopback(host):
                raise _denied(403, "the console answers only loopback clients until a master key (--master-key) "
                                   "or an API key (--api-key) is set", "console_loopback_only")
            return
        key = presented_key(scope["headers"])
        if key is None:
            raise _denied(401, "the console needs an admin key: the master key as Bearer token or Basic password",
                          "invalid_api_key")
        if self.mode == "api_key":
            if not _same(key, self.api_key):
                raise _denied(401, "invalid API key", "invalid_api_key")
            return
        await self._check_tenancy(key)

    async def _check_tenancy(self, key: str) -> None:
        from llmfleet.tenancy.errors import TenancyError
        from llmfleet.tenancy.service import ADMIN

        try:
            principal = await self.tenancy.authenticate(key)
        except TenancyError as exc:
            raise _denied(exc.status, exc.message, exc.code) from None
        except Exception:
            logger.exception("console: key lookup failed")
            raise ConsoleError(503, "the key store is unavailable; retry shortly", "key_store_unavailable") from None
        if principal != ADMIN and getattr(principal, "role", None) != "admin":
            raise _denied(403, "the console needs the master key or a key with metadata role: admin", "forbidden")


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
