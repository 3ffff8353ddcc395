"""The reconciler: whatever failed on the way, every accepted image ends recorded and every job
ends.

Every server and worker process runs one; the one holding the lock (samsvc.jobs.recovery.leader)
acts, once a tick (DEFAULT_TICK_S):

- it queues the retries that are due (transient failures wait in the store's schedule, not
  in broker delays, so a retry is never lost with a worker's memory);
- it finishes the clean-up and webhook of ended jobs that the process ending them did not
  (it died right after recording the last image, or Redis was away);
- every RECONCILE_INTERVAL_S it sweeps the jobs that have not ended. An image with no
  result, no live lease (no worker holds it), no message waiting in its queue and nothing
  queued for it within RECONCILE_GRACE_S is lost: its message was acknowledged without a
  record, dropped by a crashed process or lost with Redis's last writes. It is queued again,
  at most JOB_MAX_RETRIES times, then failed (IMAGE_LOST, or IMAGE_CRASHED_WORKER when its
  deliveries kept dying). A job whose images all have results but which has not ended is
  ended.

A queued duplicate is harmless: a delivery runs an image only when it has no result and no
other delivery holds it, and results are recorded once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from samsvc.errors import Internal, SamsvcError, Unavailable
from samsvc.infra import metrics
from samsvc.jobs import failpoints
from samsvc.jobs.records import JobRecord, now_ms
from samsvc.jobs.recovery.leader import Leadership, LocalLeadership, RedisLeadership
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.store import PendingImage
from samsvc.jobs.stores.redis_base import DEFAULT_PREFIX
from samsvc.jobs.worker.actors import image_failure, record_image
from samsvc.jobs.worker.broker import waiting_images

log = logging.getLogger(__name__)

#: Seconds between ticks (due retries and overdue endings; sweeps every RECONCILE_INTERVAL_S).
DEFAULT_TICK_S = 1.0
#: Jobs looked at per sweep, retries queued and endings finished per tick.
DEFAULT_BATCH = 1000


@dataclass
class SweepReport:
    jobs: int = 0
    requeued: int = 0
    failed: int = 0
    finished: int = 0


class Reconciler:
    def __init__(self, runtime: JobRuntime, leadership: Leadership, *, tick_s: float = DEFAULT_TICK_S) -> None:
        self.runtime = runtime
        self.leadership = leadership
        self.tick_s = tick_s
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def grace_ms(self) -> int:
        return int(self.runtime.options.reconcile_grace_s * 1000)

    def tick(self) -> None:
        """One round, if this process leads: due retries, overdue endings, and a sweep when due."""
        try:
            if not self.leadership.acquire():
                return
            self.queue_due_retries()
            self.finish_endings()
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.runtime.options.reconcile_interval_s
                self.sweep()
        except SamsvcError as exc:
            metrics.RECONCILER_SWEEPS.labels("error").inc()
            log.warning("reconciler round failed (the next one tries again): %s", exc.message)
        except Exception:
            metrics.RECONCILER_SWEEPS.labels("error").inc()
            log.exception("reconciler round failed unexpectedly (the next one tries again)")

    def queue_due_retries(self) -> int:
        store = self.runtime.store
        queued = 0
        for job_id, index in store.take_due_retries(now_ms(), DEFAULT_BATCH):
            job = store.get(job_id)
            if job is None or job.status.final:
                continue
            failpoints.hit("jobs.retry.before_enqueue", job_id=job_id, index=index)
            # If this fails, the image has no lease and no message: the sweep queues it.
            self.runtime.enqueue_image(job_id, index, job.priority)
            store.mark_enqueued(job_id, [index])
            queued += 1
        metrics.RECONCILER_REPAIRS.labels("retry_queued").inc(queued)
        return queued

    def finish_endings(self) -> int:
        store = self.runtime.store
        overdue = store.overdue_endings(now_ms(), DEFAULT_BATCH)
        for job_id in overdue:
            job = store.get(job_id)
            if job is None:
                store.ending_done(job_id)
                continue
            log.info("job %s ended without its clean-up or webhook settled; finishing them", job_id)
            self.runtime.job_ended(job, count=False)
        metrics.RECONCILER_REPAIRS.labels("ending_finished").inc(len(overdue))
        return len(overdue)

    def sweep(self) -> SweepReport:
        """Look at every job that has not ended and repair what is lost."""
        store = self.runtime.store
        report = SweepReport()
        active = store.active_jobs(DEFAULT_BATCH)
        # Messages waiting now, read before the ledgers: an image taken off the queue after this
        # has its lease by the time its ledger is read.
        waiting = waiting_images(self.runtime.broker) if active else set()
        renewed = time.monotonic()
        for job_id in active:
            if time.monotonic() - renewed > self.tick_s:
                renewed = time.monotonic()
                if not self.leadership.acquire():
                    break  # another process leads now (this one was too slow to renew)
            job = store.get(job_id)
            if job is None or job.status.final:
                store.forget_active(job_id)
                continue
            report.jobs += 1
            pending = store.pending_images(job_id)
            if not pending:
                ended = store.finish_if_complete(job_id)
                if ended is not None:
                    report.finished += 1
                    log.warning("job %s had every result but had not ended; ended it", job_id)
                    self.runtime.job_ended(ended)
                continue
            for image in pending:
                if (job_id, image.index) in waiting or self._alive(image):
                    continue
                if self._repair(job, image):
                    report.requeued += 1
                else:
                    report.failed += 1
        metrics.RECONCILER_SWEEPS.labels("ok").inc()
        metrics.RECONCILER_REPAIRS.labels("image_requeued").inc(report.requeued)
        metrics.RECONCILER_REPAIRS.labels("image_failed").inc(report.failed)
        metrics.RECONCILER_REPAIRS.labels("job_finished").inc(report.finished)
        if report.requeued or report.failed or report.finished:
            log.warning(
                "reconciler: %d jobs running, %d lost images queued again, %d failed, %d jobs ended",
                report.jobs, report.requeued, report.failed, report.finished,
            )  # fmt: skip
        return report

    def _alive(self, image: PendingImage) -> bool:
        """Held by a worker, or queued (or due for a retry) within the grace time."""
        horizon = now_ms() - self.grace_ms
        return image.lease_until_ms > horizon or image.touched_ms > horizon

    def _repair(self, job: JobRecord, image: PendingImage) -> bool:
        """Queue the lost image again (True), or fail it once its budget is spent."""
        budget = self.runtime.options.max_retries
        if image.requeues < budget:
            requeues = self.runtime.store.requeue_lost(job.job_id, image.index)
            log.warning(
                "image %d of job %s is lost (no result, holder or queued message); queueing it again (%d of %d)",
                image.index, job.job_id, requeues, budget,
            )  # fmt: skip
            self.runtime.enqueue_image(job.job_id, image.index, job.priority)
            return True
        if image.crashes >= budget:
            error = Internal(
                f"the image's worker died {image.crashes} times while running it", reason="IMAGE_CRASHED_WORKER"
            )
        else:
            error = Internal(f"the image's work was lost {image.requeues + 1} times", reason="IMAGE_LOST")
        log.error("image %d of job %s: %s; failing it", image.index, job.job_id, error.message)
        record_image(self.runtime, job.job_id, image_failure(image.index, error), job.spec.model)
        return False

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="samsvc-reconciler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.leadership.release()
        except Unavailable as exc:
            log.warning("reconciler lock not released: %s", exc.message)


def build_reconciler(runtime: JobRuntime) -> Reconciler:
    """The process's reconciler: contending for the Redis lock, or the in-process mode's own."""
    leadership: Leadership = LocalLeadership()
    if runtime.redis_client is not None:
        leadership = RedisLeadership(runtime.redis_client, f"{DEFAULT_PREFIX}:reconciler")
    return Reconciler(runtime, leadership)
