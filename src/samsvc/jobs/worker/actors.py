"""The Dramatiq actors: one image of a job (one actor per priority queue) and a job's webhook.

Each image is one message carrying (job id, index); its bytes come from the blob store. A
delivery first asks the store whether to run (samsvc.jobs.store.BeginOutcome): nothing to do
when the job ended or the image has its result, leave it when another delivery holds it, fail
it (IMAGE_CRASHED_WORKER) when its deliveries died mid-image JOB_MAX_RETRIES times. Then:

- success, or a bad image (fails at once): the result is recorded, retried through a store
  outage (JOB_STORE_RETRY_S) so that finished work is not thrown away;
- past JOB_TIME_LIMIT_S (checked between prompt batches, and by Dramatiq's time limit): the
  image fails with IMAGE_TIME_LIMIT;
- a transient failure (store unreachable, GPU out of memory, anything unexpected): the store
  schedules a retry with backoff and the reconciler queues it when due, up to
  JOB_MAX_RETRIES, then the image fails. Retries never ride in broker delays, which a worker
  holds in memory and loses with it.

Whatever this code cannot finish (its process killed, Redis gone for longer than the retry
time), the reconciler (samsvc.jobs.recovery.reconciler) finds and finishes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from samsvc.engine.amg_types import CancelToken
from samsvc.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    SamsvcError,
    Unavailable,
)
from samsvc.inference.pipeline import SegmentTask, run_segment
from samsvc.infra import metrics
from samsvc.infra.logs import REQUEST_ID
from samsvc.jobs import failpoints
from samsvc.jobs.export import ExportWriter, export_image
from samsvc.jobs.queues import ACTOR_PRIORITIES, IMAGE_QUEUES, WEBHOOK_QUEUE, Priority
from samsvc.jobs.records import ImageError, ImageResult, JobRecord, JobSpec, JobTask, now_ms
from samsvc.jobs.recovery.leases import new_token
from samsvc.jobs.runtime import WEBHOOK_FINAL_STATES, JobRuntime
from samsvc.jobs.store import BeginOutcome, JobStore, RecordOutcome
from samsvc.jobs.webhooks import deliver, webhook_delivery_id, webhook_payload
from samsvc.jobs.worker.broker import IMAGE_ACTORS, WEBHOOK_ACTOR, delivery_token
from samsvc.validation.image import ImageHeader, check_image_bytes

log = logging.getLogger(__name__)

#: Errors that retrying cannot fix: the image fails at once.
PERMANENT_ERRORS = (InvalidArgument, FailedPrecondition, NotFound, DeadlineExceeded)
#: Seconds Dramatiq's own time limit allows beyond JOB_TIME_LIMIT_S (the cooperative check
#: between prompt batches normally fires first).
TIME_LIMIT_MARGIN_S = 5


class StoreCancelToken(CancelToken):
    """Cancelled when the job is (asks the store at most every `interval_s` seconds); past
    `deadline` (monotonic seconds) the image has run out of time."""

    def __init__(self, store: JobStore, job_id: str, interval_s: float, deadline: float) -> None:
        super().__init__()
        self._store = store
        self._job_id = job_id
        self._interval_s = interval_s
        self._next_check = 0.0
        self._deadline = deadline

    def raise_if_cancelled(self) -> None:
        now = time.monotonic()
        if now > self._deadline:
            raise DeadlineExceeded("the image ran past JOB_TIME_LIMIT_S", reason="IMAGE_TIME_LIMIT")
        if not self.cancelled and now >= self._next_check:
            self._next_check = now + self._interval_s
            try:
                job = self._store.get(self._job_id)
            except Unavailable as exc:
                # The image goes on: an outage is no reason to stop work that will be recorded.
                log.info("job %s: cancellation not checked (%s)", self._job_id, exc.message)
            else:
                if job is None or job.status.final:
                    self.cancel()
        super().raise_if_cancelled()


def _message_option(name: str, default: Any) -> Any:
    message = CurrentMessage.get_current_message()
    return message.options.get(name, default) if message is not None else default


def _token() -> str:
    message = CurrentMessage.get_current_message()
    return (delivery_token(message) if message is not None else "") or new_token()


def _adopt_correlation_id(job_id: str) -> None:
    """Log (and pass on) the correlation id the message carries, or the job id."""
    REQUEST_ID.set(str(_message_option("correlation_id", None) or job_id))


def image_failure(index: int, error: SamsvcError, seconds: float = 0.0) -> ImageResult:
    return ImageResult(index, error=ImageError.from_exception(error), processing_time_s=seconds)


def backoff_ms(runtime: JobRuntime, failures: int) -> int:
    return runtime.options.backoff_ms(failures)


def segment_image(runtime: JobRuntime, job_id: str, index: int) -> None:
    _adopt_correlation_id(job_id)
    token = _token()
    begin = runtime.durably(
        runtime.store.begin_image, job_id, index, token, runtime.leases.lease_ms, runtime.options.max_retries
    )
    if begin.outcome is BeginOutcome.MISSING:
        log.warning("job %s is gone (expired or purged); image %d dropped", job_id, index)
        return
    if begin.outcome in (BeginOutcome.SKIP, BeginOutcome.BUSY):
        log.info("image %d of job %s: nothing to do (%s)", index, job_id, begin.outcome.value)
        return
    job = runtime.durably(runtime.store.get, job_id)
    if job is None:
        return
    if begin.outcome is BeginOutcome.CRASHED:
        crashed = Internal(
            f"the image's worker died {begin.crashes} times while running it", reason="IMAGE_CRASHED_WORKER"
        )
        log.error("image %d of job %s: %s; failing it", index, job_id, crashed.message)
        record_image(runtime, job_id, image_failure(index, crashed), job.spec.model)
        return
    runtime.leases.keep(job_id, index, token)
    try:
        result = _run_image(runtime, job, index, token, begin.failures)
        if result is not None:
            record_image(runtime, job_id, result, job.spec.model)
    finally:
        runtime.leases.forget(token)


def _segment_image(
    runtime: JobRuntime, job_id: str, index: int, data: bytes, header: ImageHeader, spec: JobSpec, cancel: CancelToken
) -> ImageResult:
    """The image's masks; with an export, also written where the batch asked (the overlay is
    drawn for it even when the result carries none)."""
    fast = runtime.options.fast_engine
    visualize = spec.visualize or bool(spec.export_url)
    task = SegmentTask(data, header, spec.model, spec.options, spec.encoding, visualize, fast)
    outcome = runtime.run_engine(run_segment, task, runtime.models, cancel)
    result = ImageResult.from_outcome(index, outcome)
    if not spec.visualize:
        result = dataclasses.replace(result, visualization=b"")
    if not spec.export_url:
        return result
    writer = ExportWriter(spec.export_url, runtime.options.s3, runtime.options.export_roots)
    records = [m.record for m in outcome.masks]
    failpoints.hit("jobs.image.before_export", job_id=job_id, index=index)
    try:
        exported = export_image(
            writer, job_id, index, outcome.width, outcome.height, records, outcome.visualization or b""
        )
    except Unavailable as exc:
        return dataclasses.replace(result, export_error=ImageError.from_exception(exc))
    return dataclasses.replace(result, exported=exported)


def _run_image(runtime: JobRuntime, job: JobRecord, index: int, token: str, failures: int) -> ImageResult | None:
    """The image's result, or None when it needs no record now (cancelled; retry scheduled)."""
    options = runtime.options
    started = time.perf_counter()
    job_id = job.job_id
    spec = job.spec
    try:
        failpoints.hit("jobs.image.run", job_id=job_id, index=index)
        data = runtime.blobs.get(job_id, index)
        field = f"images[{index}]"
        header = check_image_bytes(data, options.image_limits, field)
        deadline = time.monotonic() + options.time_limit_s
        cancel = StoreCancelToken(runtime.store, job_id, options.cancel_poll_interval_s, deadline)
        if spec.task is JobTask.EMBED:
            result = _embed_image(runtime, job_id, index, data, header, spec.model, cancel)
        else:
            result = _segment_image(runtime, job_id, index, data, header, spec, cancel)
    except Cancelled:
        log.info("job %s cancelled while image %d ran", job_id, index)
        runtime.durably(runtime.store.release_image, job_id, index, token, ended=True)
        return None
    except TimeLimitExceeded:
        limit = DeadlineExceeded("the image ran past JOB_TIME_LIMIT_S", reason="IMAGE_TIME_LIMIT")
        result = image_failure(index, limit, time.perf_counter() - started)
    except PERMANENT_ERRORS as exc:
        result = image_failure(index, exc, time.perf_counter() - started)
    except Exception as exc:
        attempt = failures + 1
        if attempt <= options.max_retries:
            due = now_ms() + backoff_ms(runtime, attempt)
            log.warning("image %d of job %s failed (attempt %d, will retry): %s", index, job_id, attempt, exc)
            runtime.durably(runtime.store.schedule_retry, job_id, index, token, due)
            return None
        log.exception("image %d of job %s failed after %d attempts", index, job_id, attempt)
        reason = exc.reason if isinstance(exc, SamsvcError) else "INTERNAL"
        # The cause's text may name hosts or paths: it stays in the log.
        error = Internal(f"the image failed {attempt} times (transient errors; see the worker log)", reason=reason)
        result = image_failure(index, error, time.perf_counter() - started)
    log.info(
        "image %d of job %s %s in %.2f s", index, job_id, "done" if result.succeeded else "failed",
        result.processing_time_s, extra={"job_id": job_id, "image": index},
    )  # fmt: skip
    metrics.IMAGES.labels(spec.model, "succeeded" if result.succeeded else "failed").inc()
    return result


def _embed_image(
    runtime: JobRuntime, job_id: str, index: int, data: bytes, header: ImageHeader, model: str, cancel: CancelToken
) -> ImageResult:
    """An embedding job's image: its embedding kept as the job's output (with what it was
    computed by), its result naming the image's session id."""
    # Imported here: samsvc.inference.interactive holds the engine's embeddings (torch), which the processes
    # that import this module only to deliver webhooks or reconcile never need.
    from samsvc.inference.interactive import embed_image

    image = runtime.run_engine(embed_image, data, header, model, runtime.models, None, "", cancel)
    meta = {"model": model, "identity": image.identity, "digest": image.digest, "image_id": image.image_id}
    runtime.blobs.put_output(job_id, index, image.embedding.to_bytes(meta))
    height, width = image.embedding.original_size
    return ImageResult(
        index,
        processing_time_s=image.processing_time_s,
        width=width,
        height=height,
        image_id=image.image_id,
        encoder_passes=0 if image.reused else 1,
    )


def record_image(runtime: JobRuntime, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
    """Record the result (through a store outage), then end the job after its last image."""
    store = runtime.store
    failpoints.hit("jobs.image.before_record", job_id=job_id, index=result.index)
    outcome = runtime.durably(store.record_result, job_id, result, model)
    failpoints.hit("jobs.image.after_record", job_id=job_id, index=result.index)
    if outcome is RecordOutcome.FINISHED:
        ended = runtime.durably(store.get, job_id)
        if ended is not None:
            try:
                runtime.job_ended(ended)
            except Unavailable as exc:
                log.warning("job %s ended; its clean-up waits for the reconciler: %s", job_id, exc.message)
    return outcome


def deliver_webhook(runtime: JobRuntime, job_id: str) -> None:
    _adopt_correlation_id(job_id)
    store = runtime.store
    webhooks = runtime.options.webhooks
    job = store.get(job_id)
    if job is None or not job.webhook_url:
        store.ending_done(job_id)
        return
    state, attempts = store.webhook_state(job_id)
    if state in WEBHOOK_FINAL_STATES:
        store.ending_done(job_id)  # a re-send of a notice already settled
        return
    attempt = attempts + 1
    store.set_webhook_state(job_id, "sending", attempt)
    store.defer_ending(job_id, now_ms() + runtime.webhook_patience_ms)
    try:
        deliver(
            job.webhook_url,
            webhook_payload(job),
            secret=webhooks.secret,
            policy=runtime.webhook_policy,
            correlation_id=REQUEST_ID.get() or job_id,
            delivery_id=webhook_delivery_id(job_id),
            timeout=webhooks.timeout_s,
        )
    except InvalidArgument as exc:
        log.warning("webhook of job %s refused: %s", job_id, exc.message)
        store.set_webhook_state(job_id, "refused", attempt)
        store.ending_done(job_id)
        return
    except SamsvcError as exc:
        if attempt <= webhooks.max_retries:
            store.set_webhook_state(job_id, "retrying", attempt)
            log.info("webhook of job %s failed (attempt %d), will retry: %s", job_id, attempt, exc.message)
            raise
        store.set_webhook_state(job_id, "failed", attempt)
        store.ending_done(job_id)
        log.warning("webhook of job %s failed after %d attempts: %s", job_id, attempt, exc.message)
        return
    store.set_webhook_state(job_id, "delivered", attempt)
    store.ending_done(job_id)


@dataclasses.dataclass(frozen=True)
class Actors:
    """The Dramatiq actors of a process, declared once by declare_actors: one
    image actor per priority queue, and the webhook actor."""

    images: dict[Priority, dramatiq.Actor[[str, int], None]]
    webhook: dramatiq.Actor[[str], None]


def declare_actors(runtime: JobRuntime) -> Actors:
    options = runtime.options
    images: dict[Priority, dramatiq.Actor[[str, int], None]] = {}
    for priority, queue in IMAGE_QUEUES.items():

        def run_image(job_id: str, index: int) -> None:
            segment_image(runtime, job_id, index)

        name = IMAGE_ACTORS[priority]
        images[priority] = dramatiq.actor(
            broker=runtime.broker,
            actor_name=name,
            queue_name=queue,
            priority=ACTOR_PRIORITIES[priority],
            # Retries are the store's (see the module's docstring); a message that fails anyway
            # goes to the dead letters, and the reconciler queues its image again.
            max_retries=0,
            time_limit=(options.time_limit_s + TIME_LIMIT_MARGIN_S) * 1000,
        )(run_image)

    def run_webhook(job_id: str) -> None:
        deliver_webhook(runtime, job_id)

    webhook = dramatiq.actor(
        broker=runtime.broker,
        actor_name=WEBHOOK_ACTOR,
        queue_name=WEBHOOK_QUEUE,
        max_retries=options.webhooks.max_retries,
        min_backoff=options.webhooks.min_backoff_ms,
        max_backoff=options.webhooks.max_backoff_ms,
        time_limit=int(options.webhooks.timeout_s * 3000),
    )(run_webhook)
    return Actors(images, webhook)
