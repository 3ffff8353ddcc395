"""Image sessions in Redis (samsvc.sessions.store.SessionStore), shared by every replica: a
hash per session that expires `ttl_s` after its last use, and all sessions together held to
`max_bytes` (the least recently used go first), so sessions cannot grow the Redis that holds
the jobs. Unlike a cache, an unreachable Redis is an error (UNAVAILABLE), never a silent miss.

Keys: `{prefix}:s:{owner}:{image_id}` (hash: meta, emb, prev), `{prefix}:index` (zset: session
key by last use), `{prefix}:sizes` (hash: session key -> bytes), `{prefix}:bytes` (their sum).
"""

from __future__ import annotations

import json
import time

import numpy as np
import numpy.typing as npt
import redis
import torch

from samsvc.engine.embeddings import ImageEmbedding
from samsvc.errors import Unavailable
from samsvc.redis_budget import DROP_LUA
from samsvc.sessions.memory_sessions import too_large
from samsvc.sessions.store import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, ImageSessionRecord

DEFAULT_PREFIX = "samsvc:sessions"
#: Bytes of one previous answer's logits (1 x 256 x 256 float32).
_LOGITS_BYTES = 256 * 256 * 4

_COMMON = (
    DROP_LUA
    + """
local function evict(total, budget, keep)
  while total > budget do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 1)
    local victim = oldest[1]
    if victim == keep then victim = oldest[2] end
    if not victim then break end
    total = drop(victim)
  end
end
"""
)
# KEYS: session, index, sizes, total. ARGV: meta, emb, prev, ttl_ms, now_ms, budget.
_PUT = (
    _COMMON
    + """
local ttl, now, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do drop(key) end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then drop(KEYS[1]) end
local size = string.len(ARGV[2]) + string.len(ARGV[3])
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'emb', ARGV[2], 'prev', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('ZADD', KEYS[2], now, KEYS[1])
evict(redis.call('INCRBY', KEYS[4], size), budget, KEYS[1])
return 1
"""
)
# KEYS: session, index. ARGV: ttl_ms, now_ms, renew (1/0). Returns the fields and the ms left.
_GET = """
if ARGV[3] == '1' then
  if redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) == 0 then return false end
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), KEYS[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return false end
local fields = redis.call('HMGET', KEYS[1], 'meta', 'emb', 'prev')
table.insert(fields, left)
return fields
"""
# KEYS: session, index, sizes, total. ARGV: prev, ttl_ms, now_ms, budget.
_SET_PREVIOUS = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local before = string.len(redis.call('HGET', KEYS[1], 'prev') or '')
redis.call('HSET', KEYS[1], 'prev', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), KEYS[1])
local delta = string.len(ARGV[1]) - before
redis.call('HINCRBY', KEYS[3], KEYS[1], delta)
evict(redis.call('INCRBY', KEYS[4], delta), tonumber(ARGV[4]), KEYS[1])
return 1
"""
)
# KEYS: session, index, sizes, total.
_DELETE = (
    _COMMON
    + """
local existed = redis.call('EXISTS', KEYS[1])
drop(KEYS[1])
return existed
"""
)


def _unavailable() -> Unavailable:
    return Unavailable("the image session store is unreachable; retry shortly", reason="STORE_UNAVAILABLE")


class RedisSessionStore:
    def __init__(
        self,
        client: redis.Redis,
        device: torch.device,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = DEFAULT_TTL_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.client = client
        self.device = device
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._set_previous = client.register_script(_SET_PREVIOUS)
        self._delete = client.register_script(_DELETE)

    def _keys(self, owner: str, image_id: str) -> list[str]:
        p = self.prefix
        return [f"{p}:s:{owner}:{image_id}", f"{p}:index", f"{p}:sizes", f"{p}:bytes"]

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    def put(self, record: ImageSessionRecord) -> ImageSessionRecord:
        if record.nbytes > self.max_bytes:
            raise too_large(record.nbytes, self.max_bytes)
        embedding = record.embedding
        meta = json.dumps(
            {
                "model": record.model,
                "identity": record.identity,
                "digest": record.digest,
            }
        )
        features = embedding.to_bytes()
        now = time.time()
        try:
            self._put(
                keys=self._keys(record.owner, record.image_id),
                args=[meta, features, _join(record.previous), self._ttl_ms, int(now * 1000), self.max_bytes],
            )
        except redis.RedisError as exc:
            raise _unavailable() from exc
        return record.evolve(expires_at=now + self.ttl_s)

    def get(self, owner: str, image_id: str, renew: bool = True) -> ImageSessionRecord | None:
        keys = self._keys(owner, image_id)
        now = time.time()
        try:
            found = self._get(keys=keys[:2], args=[self._ttl_ms, int(now * 1000), "1" if renew else "0"])
        except redis.RedisError as exc:
            raise _unavailable() from exc
        if not found:
            return None
        meta_raw, features, previous, left_ms = found
        meta = json.loads(meta_raw)
        embedding = ImageEmbedding.from_bytes(features, self.device)
        return ImageSessionRecord(
            image_id=image_id,
            owner=owner,
            model=meta["model"],
            identity=meta["identity"],
            digest=meta["digest"],
            embedding=embedding,
            previous=_split(previous or b""),
            expires_at=now + int(left_ms) / 1000,
        )

    def set_previous(self, owner: str, image_id: str, previous: tuple[npt.NDArray[np.float32], ...]) -> bool:
        now_ms = int(time.time() * 1000)
        try:
            done = self._set_previous(
                keys=self._keys(owner, image_id), args=[_join(previous), self._ttl_ms, now_ms, self.max_bytes]
            )
        except redis.RedisError as exc:
            raise _unavailable() from exc
        return bool(done)

    def delete(self, owner: str, image_id: str) -> bool:
        try:
            return bool(self._delete(keys=self._keys(owner, image_id)))
        except redis.RedisError as exc:
            raise _unavailable() from exc

    def stored_bytes(self) -> int:
        return int(self.client.get(f"{self.prefix}:bytes") or 0)


def _join(previous: tuple[npt.NDArray[np.float32], ...]) -> bytes:
    return b"".join(np.ascontiguousarray(p, dtype="<f4").tobytes() for p in previous)


def _split(data: bytes) -> tuple[npt.NDArray[np.float32], ...]:
    count = len(data) // _LOGITS_BYTES
    array = np.frombuffer(data, dtype="<f4")[: count * 256 * 256].astype(np.float32)
    return tuple(array.reshape(count, 1, 256, 256))
