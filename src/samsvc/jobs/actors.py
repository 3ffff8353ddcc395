"""The Dramatiq actors: one image of a job (one actor per priority queue) and a job's webhook.

Each image is one message carrying (job id, index); its bytes come from the blob store. The
store records an image's first result only, so a redelivery after a worker crash or a retry
never records it twice. Bad images fail at once without retries; transient failures (store
unreachable, GPU out of memory, anything unexpected) retry with backoff up to
JOB_MAX_RETRIES, then fail that image.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from samsvc import metrics
from samsvc.engine.amg import CancelToken
from samsvc.errors import Cancelled, FailedPrecondition, Internal, InvalidArgument, NotFound, SamsvcError
from samsvc.jobs.broker import ACTOR_PRIORITIES, IMAGE_QUEUES, WEBHOOK_QUEUE
from samsvc.jobs.records import ImageError, ImageResult, JobRecord
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.store import JobStore, RecordOutcome
from samsvc.jobs.webhooks import deliver
from samsvc.logs import REQUEST_ID
from samsvc.pipeline import SegmentTask, run_segment
from samsvc.validation.image import ImageLimits, check_image_bytes

log = logging.getLogger(__name__)

#: Errors that retrying cannot fix: the image fails at once.
PERMANENT_ERRORS = (InvalidArgument, FailedPrecondition, NotFound)


class StoreCancelToken(CancelToken):
    """Cancelled when the job is: asks the store at most every `interval_s` seconds."""

    def __init__(self, store: JobStore, job_id: str, interval_s: float) -> None:
        super().__init__()
        self._store = store
        self._job_id = job_id
        self._interval_s = interval_s
        self._next_check = 0.0

    def raise_if_cancelled(self) -> None:
        now = time.monotonic()
        if not self.cancelled and now >= self._next_check:
            self._next_check = now + self._interval_s
            job = self._store.get(self._job_id)
            if job is None or job.status.final:
                self.cancel()
        super().raise_if_cancelled()


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _adopt_correlation_id(job_id: str) -> None:
    """Log (and pass on) the correlation id the message carries, or the job id."""
    message = CurrentMessage.get_current_message()
    carried = message.options.get("correlation_id") if message is not None else None
    REQUEST_ID.set(str(carried or job_id))


def summary(job: JobRecord, estimate: int = 0) -> dict[str, Any]:
    """The job summary sent to webhooks."""
    return {
        "job_id": job.job_id,
        "job_type": job.job_type.value,
        "status": job.status.value,
        "total_images": job.total_images,
        "processed_images": job.processed_images,
        "failed_images": job.failed_images,
        "created_at_ms": job.created_at_ms,
        "started_at_ms": job.started_at_ms,
        "completed_at_ms": job.completed_at_ms,
        "processing_time": job.processing_time_s(),
        "error_message": job.error_message,
        "model_type": job.spec.model,
    }


def segment_image(runtime: JobRuntime, job_id: str, index: int) -> None:
    _adopt_correlation_id(job_id)
    store = runtime.store
    job = store.get(job_id)
    if job is None:
        log.warning("job %s is gone (expired?); image %d dropped", job_id, index)
        return
    if job.status.final:
        return  # cancelled (or already ended): queued images never run
    settings = runtime.settings
    spec = job.spec
    started = time.perf_counter()
    try:
        data = runtime.blobs.get(job_id, index)
        field = f"images[{index}]"
        header = check_image_bytes(data, ImageLimits(settings.max_image_bytes, settings.max_image_side), field)
        fast = settings.amg_engine == "fast"
        task = SegmentTask(data, header, spec.model, spec.options, spec.encoding, spec.visualize, fast)
        cancel = StoreCancelToken(store, job_id, settings.cancel_poll_interval_s)
        result = ImageResult.from_outcome(index, run_segment(task, runtime.models, cancel))
    except Cancelled:
        log.info("job %s cancelled while image %d ran", job_id, index)
        return
    except PERMANENT_ERRORS as exc:
        result = ImageResult(
            index, error=ImageError.from_exception(exc), processing_time_s=time.perf_counter() - started
        )
    except Exception as exc:
        if _retries() < settings.job_max_retries:
            log.warning("image %d of job %s failed (will retry): %s", index, job_id, exc)
            raise
        log.exception("image %d of job %s failed after %d retries", index, job_id, settings.job_max_retries)
        error = exc if isinstance(exc, SamsvcError) else Internal(f"image failed after retries: {exc}")
        result = ImageResult(
            index, error=ImageError.from_exception(error), processing_time_s=time.perf_counter() - started
        )
    log.info(
        "image %d of job %s %s in %.2f s", index, job_id, "done" if result.succeeded else "failed",
        result.processing_time_s, extra={"job_id": job_id, "image": index},
    )  # fmt: skip
    metrics.IMAGES.labels(spec.model, "succeeded" if result.succeeded else "failed").inc()
    if store.record_result(job_id, result, spec.model) is RecordOutcome.FINISHED:
        ended = store.get(job_id)
        if ended is not None:
            runtime.job_ended(ended)


def deliver_webhook(runtime: JobRuntime, job_id: str) -> None:
    _adopt_correlation_id(job_id)
    store = runtime.store
    job = store.get(job_id)
    if job is None or not job.webhook_url:
        return
    attempt = _retries() + 1
    try:
        deliver(
            job.webhook_url,
            summary(job),
            secret=runtime.settings.webhook_secret,
            policy=runtime.webhook_policy,
            correlation_id=REQUEST_ID.get() or job_id,
            timeout=runtime.settings.webhook_timeout_s,
        )
    except InvalidArgument as exc:
        log.warning("webhook of job %s refused: %s", job_id, exc.message)
        store.set_webhook_state(job_id, "refused", attempt)
        return
    except SamsvcError as exc:
        if attempt <= runtime.settings.webhook_max_retries:
            store.set_webhook_state(job_id, "retrying", attempt)
            log.info("webhook of job %s failed (attempt %d), will retry: %s", job_id, attempt, exc.message)
            raise
        store.set_webhook_state(job_id, "failed", attempt)
        log.warning("webhook of job %s failed after %d attempts: %s", job_id, attempt, exc.message)
        return
    store.set_webhook_state(job_id, "delivered", attempt)


def declare_actors(runtime: JobRuntime) -> dict[str, dramatiq.Actor[Any, Any]]:
    settings = runtime.settings
    actors: dict[str, dramatiq.Actor[Any, Any]] = {}
    for priority, queue in IMAGE_QUEUES.items():
        name = f"segment_image_{priority.value}"

        def run_image(job_id: str, index: int) -> None:
            segment_image(runtime, job_id, index)

        actors[name] = dramatiq.actor(
            broker=runtime.broker,
            actor_name=name,
            queue_name=queue,
            priority=ACTOR_PRIORITIES[priority],
            max_retries=settings.job_max_retries,
            min_backoff=settings.job_min_backoff_ms,
            max_backoff=settings.job_max_backoff_ms,
            time_limit=settings.job_time_limit_s * 1000,
        )(run_image)

    def run_webhook(job_id: str) -> None:
        deliver_webhook(runtime, job_id)

    actors["deliver_webhook"] = dramatiq.actor(
        broker=runtime.broker,
        actor_name="deliver_webhook",
        queue_name=WEBHOOK_QUEUE,
        max_retries=settings.webhook_max_retries,
        min_backoff=settings.webhook_min_backoff_ms,
        max_backoff=settings.webhook_min_backoff_ms * 64,
        time_limit=int(settings.webhook_timeout_s * 3000),
    )(run_webhook)
    return actors
