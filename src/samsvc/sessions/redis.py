"""Image sessions in Redis (samsvc.sessions.store.SessionStore), shared by every replica: a
hash per session that expires `ttl_s` after its last use, one key's sessions held to
`max_bytes_per_key` and all together to `max_bytes` (the owner's least recently used go first,
then everyone's), so sessions cannot grow the Redis that holds the jobs and one key cannot evict
the others'. Unlike a cache, an unreachable Redis is an error (UNAVAILABLE), never a silent miss.

Keys: `{prefix}:s:{owner}:{image_id}` (hash: meta, emb, prev), `{prefix}:index` (zset: session
key by last use), `{prefix}:sizes` (hash: session key -> bytes), `{prefix}:bytes` (their sum),
`{prefix}:owners` (hash: session key -> owner), `{prefix}:owner_bytes` (hash: owner -> bytes),
`{prefix}:o:{owner}` (zset: the owner's session keys by last use).
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
from samsvc.sessions.memory import check_fits
from samsvc.sessions.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES_PER_KEY, DEFAULT_TTL_S, ImageSessionRecord

DEFAULT_PREFIX = "samsvc:sessions"
#: Bytes of one previous answer's logits (1 x 256 x 256 float32).
_LOGITS_BYTES = 256 * 256 * 4

# Every script: KEYS session, index, sizes, total, owners, owner_bytes; ARGV[1] the prefix of the
# owners' own indexes ({prefix}:o:), ARGV[2] the owner, ARGV[3] the store's budget, ARGV[4] the
# owner's (0: none).
_COMMON = """
local owner_prefix, owner = ARGV[1], ARGV[2]
local budget, per_key = tonumber(ARGV[3]), tonumber(ARGV[4])
local function drop(key)
  local bytes = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  local holder = redis.call('HGET', KEYS[5], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  redis.call('DEL', key)
  if holder then
    redis.call('HDEL', KEYS[5], key)
    redis.call('ZREM', owner_prefix .. holder, key)
    if redis.call('HINCRBY', KEYS[6], holder, -bytes) <= 0 then redis.call('HDEL', KEYS[6], holder) end
  end
  return redis.call('DECRBY', KEYS[4], bytes)
end
local function oldest(index, keep)
  local first = redis.call('ZRANGE', index, 0, 1)
  if first[1] == keep then return first[2] end
  return first[1]
end
local function owned()
  return tonumber(redis.call('HGET', KEYS[6], owner) or '0')
end
-- The owner's oldest sessions until it fits its budget, then the owner's or anyone's until the
-- store fits its own.
local function fit(total)
  while per_key > 0 and owned() > per_key do
    local victim = oldest(owner_prefix .. owner, KEYS[1])
    if not victim then break end
    total = drop(victim)
  end
  while total > budget do
    local victim = oldest(owner_prefix .. owner, KEYS[1]) or oldest(KEYS[2], KEYS[1])
    if not victim then break end
    total = drop(victim)
  end
end
local function touch(now, size)
  redis.call('ZADD', KEYS[2], now, KEYS[1])
  redis.call('ZADD', owner_prefix .. owner, now, KEYS[1])
  redis.call('HSET', KEYS[5], KEYS[1], owner)
  redis.call('HINCRBY', KEYS[6], owner, size)
  redis.call('HINCRBY', KEYS[3], KEYS[1], size)
  return redis.call('INCRBY', KEYS[4], size)
end
"""
# ARGV[5..]: meta, emb, prev, ttl_ms, now_ms.
_PUT = (
    _COMMON
    + """
local ttl, now = tonumber(ARGV[8]), tonumber(ARGV[9])
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do drop(key) end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then drop(KEYS[1]) end
redis.call('HSET', KEYS[1], 'meta', ARGV[5], 'emb', ARGV[6], 'prev', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
fit(touch(now, string.len(ARGV[6]) + string.len(ARGV[7])))
return 1
"""
)
# KEYS: session, index. ARGV: ttl_ms, now_ms, renew (1/0), the owner's index. Returns the fields
# and the ms left.
_GET = """
if ARGV[3] == '1' then
  if redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) == 0 then return false end
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), KEYS[1])
  redis.call('ZADD', ARGV[4], 'XX', tonumber(ARGV[2]), KEYS[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return false end
local fields = redis.call('HMGET', KEYS[1], 'meta', 'emb', 'prev')
table.insert(fields, left)
return fields
"""
# ARGV[5..]: prev, ttl_ms, now_ms.
_SET_PREVIOUS = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local before = string.len(redis.call('HGET', KEYS[1], 'prev') or '')
redis.call('HSET', KEYS[1], 'prev', ARGV[5])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
fit(touch(tonumber(ARGV[7]), string.len(ARGV[5]) - before))
return 1
"""
)
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
        max_bytes_per_key: int = DEFAULT_MAX_BYTES_PER_KEY,
    ) -> None:
        self.client = client
        self.device = device
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.max_bytes_per_key = max_bytes_per_key
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._set_previous = client.register_script(_SET_PREVIOUS)
        self._delete = client.register_script(_DELETE)

    def _keys(self, owner: str, image_id: str) -> list[str]:
        p = self.prefix
        return [
            f"{p}:s:{owner}:{image_id}",
            f"{p}:index",
            f"{p}:sizes",
            f"{p}:bytes",
            f"{p}:owners",
            f"{p}:owner_bytes",
        ]

    def _budget(self, owner: str) -> list[str | int]:
        """The scripts' first arguments: the owners' index prefix, the owner, both budgets."""
        return [f"{self.prefix}:o:", owner, self.max_bytes, self.max_bytes_per_key]

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    def put(self, record: ImageSessionRecord) -> ImageSessionRecord:
        check_fits(record.nbytes, self.max_bytes, self.max_bytes_per_key)
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
                args=[
                    *self._budget(record.owner),
                    meta,
                    features,
                    _join(record.previous),
                    self._ttl_ms,
                    int(now * 1000),
                ],
            )
        except redis.RedisError as exc:
            raise _unavailable() from exc
        return record.evolve(expires_at=now + self.ttl_s)

    def get(self, owner: str, image_id: str, renew: bool = True) -> ImageSessionRecord | None:
        keys = self._keys(owner, image_id)
        now = time.time()
        try:
            found = self._get(
                keys=keys[:2], args=[self._ttl_ms, int(now * 1000), "1" if renew else "0", f"{self.prefix}:o:{owner}"]
            )
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
                keys=self._keys(owner, image_id), args=[*self._budget(owner), _join(previous), self._ttl_ms, now_ms]
            )
        except redis.RedisError as exc:
            raise _unavailable() from exc
        return bool(done)

    def delete(self, owner: str, image_id: str) -> bool:
        try:
            return bool(self._delete(keys=self._keys(owner, image_id), args=self._budget(owner)))
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
