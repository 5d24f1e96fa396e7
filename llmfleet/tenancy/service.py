"""Tenancy at run time: the database, the key cache, the limiter, the spend writer and the price table, started
with the app's lifespan and closed after it (the spend writer last, so every booked request is written)."""
from __future__ import annotations

import logging
import time

from llmfleet.tenancy.cache import KeyCache, RedisInvalidation
from llmfleet.tenancy.config import TenancyConfig
from llmfleet.tenancy.errors import TenancyError
from llmfleet.tenancy.keys import key_hash, same_secret
from llmfleet.tenancy.limits import LocalLimiter
from llmfleet.tenancy.pricing import PriceTable
from llmfleet.tenancy.records import KeyRecord
from llmfleet.tenancy.spend import SpendWriter
from llmfleet.tenancy.store import Store

logger = logging.getLogger(__name__)
ADMIN = "admin"  # what `authenticate` returns for the master key


def config_filter(config: TenancyConfig) -> bool:
    return config.filter_url is not None or config.filter_callable is not None


def _unauthorized(message: str) -> TenancyError:
    return TenancyError(401, message, "invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])


class Tenancy:
    def __init__(self, config: TenancyConfig):
        self.config = config
        self.prices = PriceTable.load(config.prices, config.price_file)
        self.store: Store | None = None
        self.spend: SpendWriter | None = None
        self.limiter = LocalLimiter()
        self.cache = KeyCache(self._load, config.cache_ttl_s, config.cache_max_keys)
        self._redis = None
        self._invalidation: RedisInvalidation | None = None
        self.request_log = None
        self.alerts = None
        self.content_filter = None

    async def start(self) -> None:
        self.store = await Store.open(self.config.database_url)
        if self.config.redis_url:
            await self._start_redis()
        if self.config.alert_webhook_url:
            from llmfleet.tenancy.alerts import BudgetAlerts

            self.alerts = BudgetAlerts(self.config.alert_webhook_url, self.store, self._redis,
                                       self.config.redis_prefix)
        self.spend = SpendWriter(self.store, self.config.spend_flush_interval_s, self.config.spend_batch_size,
                                 self.alerts.check if self.alerts else None)
        self.spend.start()
        if self.config.request_log_dir:
            from llmfleet.tenancy.request_log import RequestLog, load_key

            self.request_log = RequestLog(self.config.request_log_dir, load_key(self.config.request_log_key_file))
        if config_filter(self.config):
            from llmfleet.tenancy.hooks import ContentFilter

            self.content_filter = ContentFilter(self.config.filter_url, self.config.filter_callable,
                                                self.config.filter_timeout_s, self.config.filter_fail_open)
            await self.content_filter.start()
        if self.config.injection_action != "off":  # train the classifier now, not on the first request
            import asyncio

            from llmfleet.tenancy.guards.injection import default_model

            await asyncio.to_thread(default_model)
        logger.info("tenancy: keys in %s, limits %s", self.store.engine.dialect.name,
                    "in Redis" if self._redis else "in process")

    async def _start_redis(self) -> None:
        import redis.asyncio as aioredis

        from llmfleet.tenancy.redis_limits import RedisLimiter

        self._redis = aioredis.from_url(self.config.redis_url)
        await self._redis.ping()
        self.limiter = RedisLimiter(self._redis, self.config.redis_prefix)
        channel = f"{self.config.redis_prefix}:key-invalidations"
        self._invalidation = RedisInvalidation(self._redis, channel, self.cache)
        await self._invalidation.start()

    async def close(self) -> None:
        if self.content_filter is not None:
            await self.content_filter.close()
        if self.request_log is not None:
            self.request_log.close()
        if self.spend is not None:
            await self.spend.close()
        if self.alerts is not None:
            await self.alerts.close()
        if self._invalidation is not None:
            await self._invalidation.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self.store is not None:
            await self.store.close()

    async def _load(self, digest: str) -> KeyRecord | None:
        return await self.store.lookup(digest)

    def hash(self, key: str) -> str:
        return key_hash(self.config.hmac_secret, key)

    async def authenticate(self, token: str | None) -> KeyRecord | str:
        """ADMIN for the master key, the key's record for a valid virtual key; TenancyError 401 otherwise."""
        if not token:
            raise _unauthorized("missing API key: send Authorization: Bearer <key>")
        if same_secret(token, self.config.master_key):
            return ADMIN
        record = await self.cache.get(self.hash(token))
        if record is None:
            raise _unauthorized("invalid API key")
        if record.blocked:
            raise _unauthorized("this API key is blocked")
        if record.expired(time.time()):
            raise _unauthorized("this API key has expired")
        return record

    async def invalidate(self, digest: str) -> None:
        """Drop a key from every gateway's cache (here at once; elsewhere by pub/sub, or by the TTL)."""
        self.cache.invalidate(digest)
        if self._invalidation is not None:
            await self._invalidation.publish(digest)
