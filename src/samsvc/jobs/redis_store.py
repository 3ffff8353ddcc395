"""The Redis job store: a hash per job, a hash of per-image results, a stream of events and a
ledger hash per job, a sorted set indexing jobs by creation time. Every change that must be
atomic (creating with an idempotency key and the early results, recording a result once,
ending a job, starting a delivery) is one Lua script (`lua/*.lua`, each prefixed with
`lua/common.lua`).

Keys (prefix `samsvc` by default); those of a job expire after the retention time:
    {p}:job:{id}            hash    the job's fields (JobRecord.to_fields)
    {p}:job:{id}:results    hash    image index -> ImageResult JSON
    {p}:job:{id}:events     stream  kind, data
    {p}:job:{id}:ledger     hash    "{index}:{lease|started|ended|failures|requeues|touched}"
    {p}:jobs                zset    job id by creation time (ms)
    {p}:owner:{name}:jobs   zset    the same, for one owner's jobs (ListJobs reads only these)
    {p}:active              set     ids of batch jobs that have not ended
    {p}:active:{owner}      set     the same, for one owner (their images still to run are counted)
    {p}:retries             zset    "{job id}|{index}" by the time its retry is due (ms)
    {p}:outbox              zset    ended job ids whose clean-up or webhook is due (ms)
    {p}:request:{key}       string  job id of a request_id
    {p}:stats:image_seconds hash    model -> running mean seconds per image

Redis errors leave as the project's Unavailable, without their text (which names hosts and
ports): that goes to the log.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from samsvc.errors import Unavailable
from samsvc.jobs.records import EventKind, ImageResult, JobEvent, JobRecord, JobStatus, JobType, now_ms
from samsvc.jobs.store import (
    DEFAULT_ENDING_GRACE_MS,
    DEFAULT_EWMA_WEIGHT,
    DEFAULT_RETENTION_S,
    Begin,
    BeginOutcome,
    ListCursor,
    PendingImage,
    RecordOutcome,
    queued_images_refusal,
)

log = logging.getLogger(__name__)

#: Key prefix of everything this store writes.
DEFAULT_PREFIX = "samsvc"
#: Seconds to connect before a call fails.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Seconds a reply may take (longer than any blocking read we issue).
DEFAULT_SOCKET_TIMEOUT_S = 30.0
#: Job ids read from the index per round trip while listing.
LIST_BATCH = 200
#: What a caller reads when Redis cannot be reached (the cause is logged, never sent).
UNREACHABLE_MESSAGE = "the job store is unreachable; try again shortly"

P = ParamSpec("P")
R = TypeVar("R")


def _script(name: str) -> str:
    folder = resources.files("samsvc.jobs") / "lua"
    return (folder / "common.lua").read_text(encoding="utf-8") + (folder / f"{name}.lua").read_text(encoding="utf-8")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Re-raise redis-py's errors as the project's Unavailable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            log.warning("job store call %s failed: %s", method.__name__, exc)
            raise Unavailable(UNREACHABLE_MESSAGE, reason="STORE_UNAVAILABLE") from exc

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

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, retention_s: int = DEFAULT_RETENTION_S) -> RedisJobStore:
        return cls(connect(url), prefix, retention_s)

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

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

    @_translated
    def ping(self) -> None:
        self.client.ping()

    @_translated
    def create(
        self,
        job: JobRecord,
        early_results: Sequence[ImageResult] = (),
        request_id: str = "",
        queued_limit: int = 0,
    ) -> tuple[JobRecord, bool]:
        key = self._job(job.job_id)
        stamp = now_ms()
        early: list[Any] = []
        for result in early_results:
            early += [result.index, result.to_json(), "1" if result.succeeded else "0"]
        stored = self._run(
            "create",
            [
                key,
                f"{key}:events",
                self._key("jobs"),
                self._key(f"request:{request_id}"),
                self._key("job:"),
                f"{key}:results",
                f"{key}:ledger",
                self._key("stats:image_seconds"),
                self._key("retries"),
                self._key("active"),
                self._key("outbox"),
                self._owner_index(job.owner),
            ],
            [
                request_id,
                job.job_id,
                job.created_at_ms,
                self.retention_s,
                json.dumps(job.to_fields()),
                json.dumps({"total_images": job.total_images}),
                stamp - self.retention_s * 1000,
                stamp,
                job.spec.model,
                DEFAULT_EWMA_WEIGHT,
                stamp + self.ending_grace_ms,
                queued_limit,
                *early,
            ],
        )
        if str(stored).startswith("limit:"):
            raise queued_images_refusal(int(str(stored).split(":", 1)[1]), job, len(early_results), queued_limit)
        if stored != job.job_id:
            existing = self.get(str(stored))
            if existing is not None:
                return existing, False
        return self.get(job.job_id) or job, True

    @_translated
    def get(self, job_id: str) -> JobRecord | None:
        fields: dict[str, str] = self.client.hgetall(self._job(job_id))  # type: ignore[assignment]
        return JobRecord.from_fields(fields) if fields else None

    @_translated
    def record_result(self, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
        stamp = now_ms()
        outcome = self._run(
            "record",
            self._record_keys(job_id),
            [
                job_id,
                result.index,
                result.to_json(),
                "1" if result.succeeded else "0",
                repr(result.processing_time_s),
                stamp,
                self.retention_s,
                model,
                DEFAULT_EWMA_WEIGHT,
                stamp + self.ending_grace_ms,
            ],
        )
        return RecordOutcome(outcome)

    @_translated
    def cancel(self, job_id: str, message: str) -> tuple[JobRecord | None, bool]:
        key = self._job(job_id)
        stamp = now_ms()
        outcome = self._run(
            "cancel",
            [key, f"{key}:events", self._key("active"), self._key("outbox")],
            [job_id, stamp, message, stamp + self.ending_grace_ms],
        )
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
        # One owner's listing reads that owner's index, never everyone's jobs.
        index = self._key("jobs") if owner is None else self._owner_index(owner)
        while len(found) < limit:
            batch: list[tuple[str, float]] = self.client.zrevrangebyscore(  # type: ignore[assignment]
                index, top, "-inf", start=offset, num=LIST_BATCH, withscores=True
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
                self.client.zrem(index, *expired)
                offset -= len(expired)
        return found

    @_translated
    def purge(self, job_id: str) -> bool:
        key = self._job(job_id)
        owner: str | None = self.client.hget(key, "owner")  # type: ignore[assignment]
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key, f"{key}:results", f"{key}:events", f"{key}:ledger")
        pipe.zrem(self._key("jobs"), job_id)
        pipe.zrem(self._owner_index(owner or ""), job_id)
        pipe.srem(self._key("active"), job_id)
        pipe.srem(self._key(f"active:{owner or ''}"), job_id)
        pipe.zrem(self._key("outbox"), job_id)
        deleted, *_ = pipe.execute()
        return int(deleted) > 0

    @_translated
    def mean_image_seconds(self, model: str) -> float | None:
        value: str | None = self.client.hget(self._key("stats:image_seconds"), model)  # type: ignore[assignment]
        return float(value) if value else None

    @_translated
    def set_webhook_state(self, job_id: str, state: str, attempts: int) -> None:
        self.client.hset(self._job(job_id), mapping={"webhook_state": state, "webhook_attempts": str(attempts)})

    @_translated
    def webhook_state(self, job_id: str) -> tuple[str, int]:
        values: list[str | None] = self.client.hmget(self._job(job_id), ["webhook_state", "webhook_attempts"])  # type: ignore[assignment]
        state, attempts = values
        return state or "", int(attempts or 0)

    # --- the image ledger ----------------------------------------------------------------------

    def _image_keys(self, job_id: str) -> list[str]:
        key = self._job(job_id)
        return [key, f"{key}:results", f"{key}:ledger"]

    @_translated
    def begin_image(self, job_id: str, index: int, token: str, lease_ms: int, max_crashes: int) -> Begin:
        outcome, failures, crashes = self._run(
            "begin", self._image_keys(job_id), [index, token, now_ms(), lease_ms, max_crashes, self.retention_s]
        )
        return Begin(BeginOutcome(outcome), int(failures), int(crashes))

    @_translated
    def hold_image(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        taken = self._run("hold", self._image_keys(job_id), [index, token, now_ms(), lease_ms, self.retention_s])
        return bool(taken)

    @_translated
    def renew_lease(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        renewed = self._run("renew", [f"{self._job(job_id)}:ledger"], [index, token, now_ms() + lease_ms])
        return bool(renewed)

    @_translated
    def release_image(self, job_id: str, index: int, token: str, *, ended: bool) -> None:
        key = self._job(job_id)
        self._run("release", [f"{key}:results", f"{key}:ledger"], [index, token, "1" if ended else "0"])

    @_translated
    def schedule_retry(self, job_id: str, index: int, token: str, due_ms: int) -> int:
        keys = [*self._image_keys(job_id), self._key("retries")]
        return int(self._run("retry", keys, [job_id, index, token, due_ms, self.retention_s]))

    @_translated
    def take_due_retries(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        members: list[str] = self._run("due", [self._key("retries")], [now_ms, limit])
        due = []
        for member in members:
            job_id, _, index = member.rpartition("|")
            due.append((job_id, int(index)))
        return due

    @_translated
    def mark_enqueued(self, job_id: str, indexes: Sequence[int]) -> None:
        if indexes:
            ledger = f"{self._job(job_id)}:ledger"
            stamp = now_ms()
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(ledger, mapping={f"{i}:touched": stamp for i in indexes})
            pipe.expire(ledger, self.retention_s)
            pipe.execute()

    @_translated
    def requeue_lost(self, job_id: str, index: int) -> int:
        ledger = f"{self._job(job_id)}:ledger"
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(ledger, f"{index}:requeues", 1)
        pipe.hset(ledger, f"{index}:touched", now_ms())
        pipe.expire(ledger, self.retention_s)
        requeues, *_ = pipe.execute()
        return int(requeues)

    @_translated
    def pending_images(self, job_id: str) -> list[PendingImage]:
        key = self._job(job_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(key, ["total_images", "created_at_ms"])
        pipe.hkeys(f"{key}:results")
        pipe.hgetall(f"{key}:ledger")
        (total, created), done, ledger = pipe.execute()
        if total is None:
            return []
        recorded = {int(i) for i in done}
        fields: dict[int, dict[str, str]] = {}
        for name, value in ledger.items():
            index, _, field = name.partition(":")
            fields.setdefault(int(index), {})[field] = value
        pending = []
        for index in range(int(total)):
            if index in recorded:
                continue
            entry = fields.get(index, {})
            holder, _, until = entry.get("lease", "|0").partition("|")
            pending.append(
                PendingImage(
                    index=index,
                    lease_token=holder,
                    lease_until_ms=int(until or 0),
                    started=int(entry.get("started", 0)),
                    ended=int(entry.get("ended", 0)),
                    failures=int(entry.get("failures", 0)),
                    requeues=int(entry.get("requeues", 0)),
                    touched_ms=int(entry.get("touched") or created),
                )
            )
        return pending

    @_translated
    def active_jobs(self, limit: int) -> list[str]:
        members: list[str] = self.client.srandmember(self._key("active"), limit) or []  # type: ignore[assignment]
        return sorted(members)

    @_translated
    def forget_active(self, job_id: str) -> None:
        self.client.srem(self._key("active"), job_id)

    @_translated
    def finish_if_complete(self, job_id: str) -> JobRecord | None:
        key = self._job(job_id)
        stamp = now_ms()
        status = self._run(
            "finish",
            [key, f"{key}:results", f"{key}:events", self._key("active"), self._key("outbox")],
            [job_id, stamp, stamp + self.ending_grace_ms],
        )
        return self.get(job_id) if status else None

    @_translated
    def overdue_endings(self, now_ms: int, limit: int) -> list[str]:
        due: list[str] = self.client.zrangebyscore(self._key("outbox"), "-inf", now_ms, start=0, num=limit)  # type: ignore[assignment]
        return due

    @_translated
    def defer_ending(self, job_id: str, due_ms: int) -> None:
        self.client.zadd(self._key("outbox"), {job_id: due_ms}, xx=True)

    @_translated
    def ending_done(self, job_id: str) -> None:
        self.client.zrem(self._key("outbox"), job_id)
