"""The one way samsvc connects to Redis (job store, queue, event feed, caches, rate limits,
worker presence and metrics): every client has connect and reply timeouts, so a hung Redis fails
a call instead of hanging a thread, and retries a dropped connection briefly with backoff before
the failure reaches the caller (whose own retry, or the reconciler, takes over from there)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

#: Seconds to connect before a call fails.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Seconds a reply may take: longer than any blocking read samsvc issues (the event feed's
#: XREAD BLOCK waits 0.5 s, Dramatiq's fetch does not block).
DEFAULT_SOCKET_TIMEOUT_S = 30.0
#: Retries of a call whose connection failed or timed out, with exponential backoff.
DEFAULT_RETRIES = 3
#: Backoff of those retries: the first waits DEFAULT_BACKOFF_BASE_S, none more than the cap.
DEFAULT_BACKOFF_BASE_S = 0.05
DEFAULT_BACKOFF_CAP_S = 1.0
#: Seconds an idle pooled connection may sit before it is checked with PING on its next use.
DEFAULT_HEALTH_CHECK_INTERVAL_S = 15


def _options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": DEFAULT_HEALTH_CHECK_INTERVAL_S,
    }


def connect(url: str, *, text: bool = True) -> redis.Redis:
    """A client for `url`; `text` decodes replies to str, otherwise they stay bytes (caches,
    Dramatiq's broker)."""
    retry = Retry(ExponentialBackoff(cap=DEFAULT_BACKOFF_CAP_S, base=DEFAULT_BACKOFF_BASE_S), retries=DEFAULT_RETRIES)
    return redis.Redis.from_url(url, decode_responses=text, retry=retry, **_options())


def connect_async(url: str) -> redis.asyncio.Redis:
    """An asyncio client for `url` with the same timeouts and retries; replies decoded to str."""
    retry = AsyncRetry(
        ExponentialBackoff(cap=DEFAULT_BACKOFF_CAP_S, base=DEFAULT_BACKOFF_BASE_S), retries=DEFAULT_RETRIES
    )
    return redis.asyncio.Redis.from_url(url, decode_responses=True, retry=retry, **_options())
