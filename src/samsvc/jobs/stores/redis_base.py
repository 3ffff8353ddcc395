"""What both halves of the Redis job store share (samsvc.jobs.stores.redis for jobs, results and
listing; samsvc.jobs.stores.redis_ledger for the image ledger): the client, key names, the Lua scripts
and the translation of Redis errors into the project's Unavailable."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import redis

from samsvc.errors import Unavailable
from samsvc.jobs.store import DEFAULT_ENDING_GRACE_MS, DEFAULT_RETENTION_S

log = logging.getLogger(__name__)

#: Key prefix of everything the store writes.
DEFAULT_PREFIX = "samsvc"
#: What a caller reads when Redis cannot be reached (the cause is logged, never sent).
UNREACHABLE_MESSAGE = "the job store is unreachable; try again shortly"

P = ParamSpec("P")
R = TypeVar("R")


def _script(name: str) -> str:
    folder = resources.files("samsvc.jobs.stores") / "lua"
    return (folder / "common.lua").read_text(encoding="utf-8") + (folder / f"{name}.lua").read_text(encoding="utf-8")


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Re-raise redis-py's errors as the project's Unavailable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            log.warning("job store call %s failed: %s", method.__name__, exc)
            raise Unavailable(UNREACHABLE_MESSAGE, reason="STORE_UNAVAILABLE") from exc

    return wrapper


class RedisStoreBase:
    """Connection, key names and Lua scripts shared by the job store's two halves."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        retention_s: int = DEFAULT_RETENTION_S,
        ending_grace_ms: int = DEFAULT_ENDING_GRACE_MS,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retention_s = retention_s
        self.ending_grace_ms = ending_grace_ms
        self._scripts = {
            name: client.register_script(_script(name))
            for name in ("create", "record", "cancel", "finish", "begin", "hold", "renew", "release", "retry", "due")
        }

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def _image_keys(self, job_id: str) -> list[str]:
        key = self._job(job_id)
        return [key, f"{key}:results", f"{key}:ledger"]

    def _owner_index(self, owner: str) -> str:
        return self._key(f"owner:{owner}:jobs")

    def _record_keys(self, job_id: str) -> list[str]:
        key = self._job(job_id)
        return [
            key,
            f"{key}:results",
            f"{key}:events",
            f"{key}:ledger",
            self._key("stats:image_seconds"),
            self._key("retries"),
            self._key("active"),
            self._key("outbox"),
        ]
