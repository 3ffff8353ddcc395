"""The Redis job store: a hash per job, a hash of per-image results, a stream of events per
job, a sorted set indexing jobs by creation time. Every change that must be atomic (creating
with an idempotency key, recording a result once, ending a job) is one Lua script.

Keys (prefix `samsvc` by default), all expiring after the retention time:
    {p}:job:{id}            hash    the job's fields (JobRecord.to_fields)
    {p}:job:{id}:results    hash    image index -> ImageResult JSON
    {p}:job:{id}:events     stream  kind, data
    {p}:jobs                zset    job id by creation time (ms)
    {p}:request:{key}       string  job id of a request_id
    {p}:stats:image_seconds hash    model -> running mean seconds per image
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from samsvc.errors import Unavailable
from samsvc.jobs.records import EventKind, ImageResult, JobEvent, JobRecord, JobStatus, JobType, now_ms
from samsvc.jobs.store import DEFAULT_EWMA_WEIGHT, DEFAULT_RETENTION_S, ListCursor, RecordOutcome

#: Key prefix of everything this store writes.
DEFAULT_PREFIX = "samsvc"
#: Seconds to connect before a call fails.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Seconds a reply may take (longer than any blocking read we issue).
DEFAULT_SOCKET_TIMEOUT_S = 30.0
#: Job ids read from the index per round trip while listing.
LIST_BATCH = 200

P = ParamSpec("P")
R = TypeVar("R")

_CREATE = """
if ARGV[1] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', KEYS[5] .. existing) == 1 then return existing end
end
local fields = cjson.decode(ARGV[5])
for name, value in pairs(fields) do redis.call('HSET', KEYS[1], name, value) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[2], '*', 'kind', 'accepted', 'data', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
if ARGV[1] ~= '' then redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[4]) end
return ARGV[2]
"""

_RECORD = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 'ignored' end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 'ignored' end
local ok, bad
if ARGV[3] == '1' then
  ok = redis.call('HINCRBY', KEYS[1], 'succeeded_images', 1)
  bad = tonumber(redis.call('HGET', KEYS[1], 'failed_images'))
else
  bad = redis.call('HINCRBY', KEYS[1], 'failed_images', 1)
  ok = tonumber(redis.call('HGET', KEYS[1], 'succeeded_images'))
end
redis.call('HINCRBYFLOAT', KEYS[1], 'image_seconds', ARGV[4])
if redis.call('HGET', KEYS[1], 'started_at_ms') == '' then
  redis.call('HSET', KEYS[1], 'started_at_ms', ARGV[5])
end
redis.call('HSET', KEYS[1], 'status', 'processing')
if ARGV[3] == '1' and tonumber(ARGV[4]) > 0 then
  local new = tonumber(ARGV[4])
  local old = redis.call('HGET', KEYS[4], ARGV[7])
  if old then new = tonumber(old) + tonumber(ARGV[8]) * (new - tonumber(old)) end
  redis.call('HSET', KEYS[4], ARGV[7], tostring(new))
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total_images'))
redis.call('XADD', KEYS[3], '*', 'kind', 'image', 'data', cjson.encode({index = tonumber(ARGV[1])}))
redis.call('XADD', KEYS[3], '*', 'kind', 'progress', 'data',
  cjson.encode({processed = ok + bad, failed = bad, total = total}))
local outcome = 'recorded'
if ok + bad >= total then
  local final = 'failed'
  if ok > 0 then final = 'completed' end
  redis.call('HSET', KEYS[1], 'status', final, 'completed_at_ms', ARGV[5])
  redis.call('XADD', KEYS[3], '*', 'kind', 'finished', 'data', cjson.encode({status = final}))
  outcome = 'finished'
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return outcome
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 'ended' end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at_ms', ARGV[1], 'error_message', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'kind', 'finished', 'data', cjson.encode({status = 'cancelled'}))
return 'cancelled'
"""


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Re-raise redis-py's errors as the project's Unavailable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise Unavailable(f"the job store (Redis) is unreachable: {exc}", reason="STORE_UNAVAILABLE") from exc

    return wrapper


def connect(url: str) -> redis.Redis:
    """A client that retries briefly on connection errors, then fails (callers retry later)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
        socket_timeout=DEFAULT_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=15,
    )


class RedisJobStore:
    def __init__(
        self, client: redis.Redis, prefix: str = DEFAULT_PREFIX, retention_s: int = DEFAULT_RETENTION_S
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retention_s = retention_s
        self._create = client.register_script(_CREATE)
        self._record = client.register_script(_RECORD)
        self._cancel = client.register_script(_CANCEL)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, retention_s: int = DEFAULT_RETENTION_S) -> RedisJobStore:
        return cls(connect(url), prefix, retention_s)

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def _stats(self) -> str:
        return f"{self.prefix}:stats:image_seconds"

    @_translated
    def ping(self) -> None:
        self.client.ping()

    @_translated
    def create(
        self, job: JobRecord, early_results: Sequence[ImageResult] = (), request_id: str = ""
    ) -> tuple[JobRecord, bool]:
        key = self._job(job.job_id)
        stored = self._create(
            keys=[key, f"{key}:events", self._index, f"{self.prefix}:request:{request_id}", f"{self.prefix}:job:"],
            args=[
                request_id,
                job.job_id,
                job.created_at_ms,
                self.retention_s,
                json.dumps(job.to_fields()),
                json.dumps({"total_images": job.total_images}),
                now_ms() - self.retention_s * 1000,
            ],
        )
        if stored != job.job_id:
            existing = self.get(str(stored))
            if existing is not None:
                return existing, False
        for result in early_results:
            self.record_result(job.job_id, result, job.spec.model)
        return self.get(job.job_id) or job, True

    @_translated
    def get(self, job_id: str) -> JobRecord | None:
        fields: dict[str, str] = self.client.hgetall(self._job(job_id))  # type: ignore[assignment]
        return JobRecord.from_fields(fields) if fields else None

    @_translated
    def record_result(self, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
        key = self._job(job_id)
        outcome = self._record(
            keys=[key, f"{key}:results", f"{key}:events", self._stats],
            args=[
                result.index,
                result.to_json(),
                "1" if result.succeeded else "0",
                repr(result.processing_time_s),
                now_ms(),
                self.retention_s,
                model,
                DEFAULT_EWMA_WEIGHT,
            ],
        )
        return RecordOutcome(outcome)

    @_translated
    def cancel(self, job_id: str, message: str) -> tuple[JobRecord | None, bool]:
        key = self._job(job_id)
        outcome = self._cancel(keys=[key, f"{key}:events"], args=[now_ms(), message])
        if outcome == "missing":
            return None, False
        return self.get(job_id), outcome == "cancelled"

    @_translated
    def results(self, job_id: str, from_index: int, limit: int) -> tuple[list[ImageResult], bool]:
        key = f"{self._job(job_id)}:results"
        keys: list[str] = self.client.hkeys(key)  # type: ignore[assignment]
        indexes = sorted(i for i in (int(k) for k in keys) if i >= from_index)
        page = indexes[:limit]
        if not page:
            return [], False
        texts: list[str | None] = self.client.hmget(key, [str(i) for i in page])  # type: ignore[assignment]
        return [ImageResult.from_json(t) for t in texts if t is not None], len(indexes) > limit

    @_translated
    def result(self, job_id: str, index: int) -> ImageResult | None:
        text: str | None = self.client.hget(f"{self._job(job_id)}:results", str(index))  # type: ignore[assignment]
        return ImageResult.from_json(text) if text else None

    @_translated
    def events(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        key = f"{self._job(job_id)}:events"
        block = max(int(timeout_s * 1000), 1)
        reply: Any = self.client.xread({key: after or "0-0"}, block=block)
        events: list[JobEvent] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(JobEvent(cursor=entry_id, kind=EventKind(fields["kind"]), data=fields["data"]))
        return events

    @_translated
    def list_jobs(
        self,
        status: JobStatus | None,
        job_type: JobType | None,
        after: ListCursor | None,
        limit: int,
        owner: str | None = None,
    ) -> list[JobRecord]:
        found: list[JobRecord] = []
        top: str = str(after.created_at_ms) if after else "+inf"
        offset = 0
        while len(found) < limit:
            batch: list[tuple[str, float]] = self.client.zrevrangebyscore(  # type: ignore[assignment]
                self._index, top, "-inf", start=offset, num=LIST_BATCH, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            candidates = [
                job_id
                for job_id, score in batch
                if after is None or (int(score), job_id) < (after.created_at_ms, after.job_id)
            ]
            pipe = self.client.pipeline(transaction=False)
            for job_id in candidates:
                pipe.hgetall(self._job(job_id))
            expired: list[str] = []
            for job_id, fields in zip(candidates, pipe.execute(), strict=True):
                if not fields:
                    expired.append(job_id)
                    continue
                record = JobRecord.from_fields(fields)
                if (
                    (status is None or record.status is status)
                    and (job_type is None or record.job_type is job_type)
                    and (owner is None or record.owner == owner)
                ):
                    found.append(record)
                    if len(found) == limit:
                        break
            if expired:
                self.client.zrem(self._index, *expired)
                offset -= len(expired)
        return found

    @_translated
    def purge(self, job_id: str) -> bool:
        key = self._job(job_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key, f"{key}:results", f"{key}:events")
        pipe.zrem(self._index, job_id)
        deleted, _ = pipe.execute()
        return int(deleted) > 0

    @_translated
    def mean_image_seconds(self, model: str) -> float | None:
        value: str | None = self.client.hget(self._stats, model)  # type: ignore[assignment]
        return float(value) if value else None

    @_translated
    def set_webhook_state(self, job_id: str, state: str, attempts: int) -> None:
        self.client.hset(self._job(job_id), mapping={"webhook_state": state, "webhook_attempts": str(attempts)})

    @_translated
    def webhook_state(self, job_id: str) -> tuple[str, int]:
        values: list[str | None] = self.client.hmget(self._job(job_id), ["webhook_state", "webhook_attempts"])  # type: ignore[assignment]
        state, attempts = values
        return state or "", int(attempts or 0)
