"""The image ledger half of the Redis job store (samsvc.jobs.store.JobStore's lease, retry
and reconciliation calls): per image of a job, who holds it and until when, how often its
deliveries started, ended, failed and were requeued (`{p}:job:{id}:ledger`), the retries due
(`{p}:retries`), the active jobs (`{p}:active`) and the endings whose clean-up is due
(`{p}:outbox`). Taking, renewing and releasing a lease are Lua scripts, so two deliveries of one
image never both run it."""

from __future__ import annotations

from collections.abc import Sequence

from samsvc.jobs.records import now_ms
from samsvc.jobs.store import Begin, BeginOutcome, PendingImage
from samsvc.jobs.stores.redis_base import RedisStoreBase, translated


class RedisImageLedger(RedisStoreBase):
    @translated
    def begin_image(self, job_id: str, index: int, token: str, lease_ms: int, max_crashes: int) -> Begin:
        outcome, failures, crashes = self._run(
            "begin", self._image_keys(job_id), [index, token, now_ms(), lease_ms, max_crashes, self.retention_s]
        )
        return Begin(BeginOutcome(outcome), int(failures), int(crashes))

    @translated
    def hold_image(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        taken = self._run("hold", self._image_keys(job_id), [index, token, now_ms(), lease_ms, self.retention_s])
        return bool(taken)

    @translated
    def renew_lease(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        renewed = self._run("renew", [f"{self._job(job_id)}:ledger"], [index, token, now_ms() + lease_ms])
        return bool(renewed)

    @translated
    def release_image(self, job_id: str, index: int, token: str, *, ended: bool) -> None:
        key = self._job(job_id)
        self._run("release", [f"{key}:results", f"{key}:ledger"], [index, token, "1" if ended else "0"])

    @translated
    def schedule_retry(self, job_id: str, index: int, token: str, due_ms: int) -> int:
        keys = [*self._image_keys(job_id), self._key("retries")]
        return int(self._run("retry", keys, [job_id, index, token, due_ms, self.retention_s]))

    @translated
    def take_due_retries(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        members: list[str] = self._run("due", [self._key("retries")], [now_ms, limit])
        due = []
        for member in members:
            job_id, _, index = member.rpartition("|")
            due.append((job_id, int(index)))
        return due

    @translated
    def mark_enqueued(self, job_id: str, indexes: Sequence[int]) -> None:
        if indexes:
            ledger = f"{self._job(job_id)}:ledger"
            stamp = now_ms()
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(ledger, mapping={f"{i}:touched": stamp for i in indexes})
            pipe.expire(ledger, self.retention_s)
            pipe.execute()

    @translated
    def requeue_lost(self, job_id: str, index: int) -> int:
        ledger = f"{self._job(job_id)}:ledger"
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(ledger, f"{index}:requeues", 1)
        pipe.hset(ledger, f"{index}:touched", now_ms())
        pipe.expire(ledger, self.retention_s)
        requeues, *_ = pipe.execute()
        return int(requeues)

    @translated
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

    @translated
    def active_jobs(self, limit: int) -> list[str]:
        members: list[str] = self.client.srandmember(self._key("active"), limit) or []  # type: ignore[assignment]
        return sorted(members)

    @translated
    def forget_active(self, job_id: str) -> None:
        self.client.srem(self._key("active"), job_id)

    @translated
    def overdue_endings(self, now_ms: int, limit: int) -> list[str]:
        due: list[str] = self.client.zrangebyscore(self._key("outbox"), "-inf", now_ms, start=0, num=limit)  # type: ignore[assignment]
        return due

    @translated
    def defer_ending(self, job_id: str, due_ms: int) -> None:
        self.client.zadd(self._key("outbox"), {job_id: due_ms}, xx=True)

    @translated
    def ending_done(self, job_id: str) -> None:
        self.client.zrem(self._key("outbox"), job_id)
