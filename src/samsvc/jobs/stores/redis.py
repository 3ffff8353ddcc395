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
    {p}:active              set     ids of queued jobs (batch, embedding) that have not ended
    {p}:active:{owner}      set     the same, for one owner (their images still to run are counted)
    {p}:retries             zset    "{job id}|{index}" by the time its retry is due (ms)
    {p}:outbox              zset    ended job ids whose clean-up or webhook is due (ms)
    {p}:request:{key}       string  job id of a request_id
    {p}:stats:image_seconds hash    model -> running mean seconds per image

Redis errors leave as the project's Unavailable, without their text (which names hosts and
ports): that goes to the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from samsvc.infra.redis_connection import connect
from samsvc.jobs.records import EventKind, ImageResult, JobEvent, JobRecord, JobStatus, JobType, now_ms
from samsvc.jobs.store import (
    DEFAULT_EWMA_WEIGHT,
    DEFAULT_RETENTION_S,
    ListCursor,
    RecordOutcome,
    queued_images_refusal,
)
from samsvc.jobs.stores.redis_base import DEFAULT_PREFIX, translated
from samsvc.jobs.stores.redis_ledger import RedisImageLedger

log = logging.getLogger(__name__)

#: Job ids read from the index per round trip while listing.
LIST_BATCH = 200


class RedisJobStore(RedisImageLedger):
    """The job store in Redis (samsvc.jobs.store.JobStore): this half holds jobs, results, events,
    listing and webhooks; RedisImageLedger the leases, retries and reconciliation."""

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, retention_s: int = DEFAULT_RETENTION_S) -> RedisJobStore:
        return cls(connect(url), prefix, retention_s)

    @translated
    def ping(self) -> None:
        self.client.ping()

    @translated
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

    @translated
    def get(self, job_id: str) -> JobRecord | None:
        fields: dict[str, str] = self.client.hgetall(self._job(job_id))  # type: ignore[assignment]
        return JobRecord.from_fields(fields) if fields else None

    @translated
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

    @translated
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

    @translated
    def results(self, job_id: str, from_index: int, limit: int) -> tuple[list[ImageResult], bool]:
        key = f"{self._job(job_id)}:results"
        keys: list[str] = self.client.hkeys(key)  # type: ignore[assignment]
        indexes = sorted(i for i in (int(k) for k in keys) if i >= from_index)
        page = indexes[:limit]
        if not page:
            return [], False
        texts: list[str | None] = self.client.hmget(key, [str(i) for i in page])  # type: ignore[assignment]
        return [ImageResult.from_json(t) for t in texts if t is not None], len(indexes) > limit

    @translated
    def result(self, job_id: str, index: int) -> ImageResult | None:
        text: str | None = self.client.hget(f"{self._job(job_id)}:results", str(index))  # type: ignore[assignment]
        return ImageResult.from_json(text) if text else None

    @translated
    def events(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        key = f"{self._job(job_id)}:events"
        block = max(int(timeout_s * 1000), 1)
        reply: Any = self.client.xread({key: after or "0-0"}, block=block)
        events: list[JobEvent] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(JobEvent(cursor=entry_id, kind=EventKind(fields["kind"]), data=fields["data"]))
        return events

    @translated
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

    @translated
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

    @translated
    def mean_image_seconds(self, model: str) -> float | None:
        value: str | None = self.client.hget(self._key("stats:image_seconds"), model)  # type: ignore[assignment]
        return float(value) if value else None

    @translated
    def set_webhook_state(self, job_id: str, state: str, attempts: int) -> None:
        self.client.hset(self._job(job_id), mapping={"webhook_state": state, "webhook_attempts": str(attempts)})

    @translated
    def webhook_state(self, job_id: str) -> tuple[str, int]:
        values: list[str | None] = self.client.hmget(self._job(job_id), ["webhook_state", "webhook_attempts"])  # type: ignore[assignment]
        state, attempts = values
        return state or "", int(attempts or 0)

    @translated
    def finish_if_complete(self, job_id: str) -> JobRecord | None:
        key = self._job(job_id)
        stamp = now_ms()
        status = self._run(
            "finish",
            [key, f"{key}:results", f"{key}:events", self._key("active"), self._key("outbox")],
            [job_id, stamp, stamp + self.ending_grace_ms],
        )
        return self.get(job_id) if status else None
