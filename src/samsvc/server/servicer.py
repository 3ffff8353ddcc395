"""samsvc.v1.SegmentationService: protobuf in, protobuf out.

Each RPC reads its request into domain values (convert), has them judged (validation), runs
the work off the event loop under admission control, and converts the outcome back. Errors
leave through the error boundary.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis

from samsvc import __version__, metrics
from samsvc.cache.store import ByteCache
from samsvc.config import Settings
from samsvc.engine.amg import CancelToken
from samsvc.engine.embeddings import EmbeddingCache
from samsvc.engine.loader import ModelManager
from samsvc.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable
from samsvc.jobs.event_feed import EventFeed, PollingEventFeed
from samsvc.jobs.records import EventKind, ImageError, ImageResult, JobEvent, JobRecord, JobSpec, JobType
from samsvc.jobs.service import BatchImage, JobService, new_job_id
from samsvc.jobs.store import ListCursor
from samsvc.pipeline import PromptTask, SegmentOutcome, SegmentTask, result_cache_key, run_prompts, run_segment
from samsvc.server import convert
from samsvc.server.admission import AdmissionControl
from samsvc.server.auth import Authenticator, Principal
from samsvc.server.error_boundary import ServicerContext, stream_boundary, unary_boundary
from samsvc.server.health import HealthService, ProcessProbe
from samsvc.server.rate_limit import RateLimiter
from samsvc.v1 import health_pb2, job_pb2, segmentation_service_pb2, segmentation_service_pb2_grpc
from samsvc.validation.cursor import check_cursor
from samsvc.validation.image import ImageLimits, check_image_bytes
from samsvc.validation.options import check_amg_options, check_model_name, check_work, invalid_parameters
from samsvc.validation.prompts import check_prompts
from samsvc.validation.webhook_url import WebhookPolicy

log = logging.getLogger(__name__)


#: ListModels page size when the request gives none, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: GetJobResults and ListJobs page sizes.
DEFAULT_RESULTS_PAGE_SIZE = 10
MAX_RESULTS_PAGE_SIZE = 50
DEFAULT_JOBS_PAGE_SIZE = 20
MAX_JOBS_PAGE_SIZE = 100
#: Seconds one wait for new job events lasts before the stream checks the job still exists.
FOLLOW_POLL_S = 1.0
#: Seconds a job stream rides out an unreachable store before failing with UNAVAILABLE.
STORE_OUTAGE_GRACE_S = 60.0
MAX_REQUEST_ID_LENGTH = 128

T = TypeVar("T")


def _page_size(value: int, default: int, most: int, field: str = "page_size") -> int:
    if value < 0 or value > most:
        raise InvalidArgument.for_field(field, f"must be between 0 and {most}", reason="INVALID_PARAMETER")
    return value or default


class SegmentationServicer(segmentation_service_pb2_grpc.SegmentationServiceServicer):
    def __init__(
        self,
        settings: Settings,
        models: ModelManager,
        admission: AdmissionControl,
        executor: ThreadPoolExecutor,
        health: HealthService,
        jobs: JobService,
        io_executor: ThreadPoolExecutor,
        result_cache: ByteCache | None = None,
        embedding_cache: EmbeddingCache | None = None,
        authenticator: Authenticator | None = None,
        rate_limiter: RateLimiter | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self._settings = settings
        self._models = models
        self._admission = admission
        self._executor = executor
        self._health = health
        self._jobs = jobs
        self._io_executor = io_executor
        self._result_cache = result_cache
        self._embedding_cache = embedding_cache
        self._limits = ImageLimits(max_bytes=settings.max_image_bytes, max_side=settings.max_image_side)
        self._probe = ProcessProbe()
        self.jobs = jobs
        self._auth = authenticator or Authenticator({})
        self._rate_limiter = rate_limiter
        self._feed = feed or PollingEventFeed(jobs.store)
        self._open_streams: collections.Counter[str] = collections.Counter()
        self._inferences: collections.Counter[str] = collections.Counter()

    async def _caller(self, context: ServicerContext, images: int = 0) -> Principal:
        """Who calls (the interceptor already refused unknown callers), charged to their rate
        limits: one call and `images` images."""
        principal = self._auth.caller(context.invocation_metadata() or ())
        if self._rate_limiter is not None:
            await self.io(self._rate_limiter.take, principal.name, images)
        return principal

    def _check_segment(self, request: segmentation_service_pb2.SegmentRequest) -> tuple[SegmentTask, int]:
        """Judge everything about the request before any pixel is decoded; with its work (prompts)."""
        header = check_image_bytes(request.image, self._limits)
        model = request.model_type or self._settings.default_model
        check_model_name(model, self._models.registry.names())
        options = check_amg_options(convert.amg_fields_set(request))
        prompts = check_work(options, self._settings.max_prompts_per_image)
        return SegmentTask(
            image=request.image,
            header=header,
            model=model,
            options=options,
            encoding=convert.mask_encoding(request.mask_format),
            visualize=request.return_visualization,
            fast=self._settings.amg_engine == "fast",
        ), prompts

    @contextlib.contextmanager
    def _key_inference(self, caller: Principal) -> Iterator[None]:
        """One of the caller's MAX_INFERENCES_PER_KEY inferences running or waiting here."""
        most = self._settings.max_inferences_per_key
        if most and self._inferences[caller.name] >= most:
            raise ResourceExhausted(
                f"{most} inferences of this key are running or waiting (MAX_INFERENCES_PER_KEY); retry later",
                reason="KEY_INFERENCE_LIMIT",
                retry_after=self._admission.retry_after(),
            )
        self._inferences[caller.name] += 1
        try:
            yield
        finally:
            self._inferences[caller.name] -= 1
            if not self._inferences[caller.name]:
                del self._inferences[caller.name]

    async def _infer(self, caller: Principal, fn: Callable[..., T], *args: Any, weight: int = 1) -> T:
        """Run `fn(*args, cancel_token)` in the inference pool under admission control, holding
        `weight` slots and one of the caller's inferences; a cancelled caller stops it at its
        next safe point."""
        cancel = CancelToken()
        with self._key_inference(caller):
            return await self._admitted(fn, args, weight, cancel)

    async def _admitted(self, fn: Callable[..., T], args: tuple[Any, ...], weight: int, cancel: CancelToken) -> T:
        async with self._admission.slot(weight):
            started = time.perf_counter()
            call = functools.partial(contextvars.copy_context().run, fn, *args, cancel)
            future = asyncio.get_running_loop().run_in_executor(self._executor, call)
            try:
                result = await future
            except asyncio.CancelledError:
                cancel.cancel()
                raise
        self._admission.record_duration(time.perf_counter() - started)
        return result

    async def _run(self, caller: Principal, task: SegmentTask, prompts: int) -> SegmentOutcome:
        weight = self._admission.weight(prompts, self._settings.prompts_per_slot)
        return await self._infer(caller, run_segment, task, self._models, weight=weight)

    @unary_boundary
    async def Segment(
        self, request: segmentation_service_pb2.SegmentRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        return await self._segment(request, await self._caller(context, images=1))

    @unary_boundary
    async def SegmentUpload(
        self, request: segmentation_service_pb2.SegmentUploadRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        caller = await self._caller(context, images=1)
        return await self._segment(convert.upload_to_segment_request(request), caller)

    async def _segment(
        self, request: segmentation_service_pb2.SegmentRequest, caller: Principal
    ) -> segmentation_service_pb2.SegmentResponse:
        started = time.perf_counter()
        task, prompts = self._check_segment(request)
        caller.check_model(task.model)
        job_id = new_job_id(JobType.SINGLE)
        spec = JobSpec(task.model, task.options, task.encoding, task.visualize)
        cache_key = None
        result = None
        if self._result_cache is not None:
            loaded = await self.io(self._models.get, task.model)
            cache_key = result_cache_key(task, loaded.identity)
            cached = await self.io(self._result_cache.get, cache_key)
            if cached is not None:
                result = ImageResult.from_json(cached.decode())
            metrics.CACHE_REQUESTS.labels("result", "miss" if cached is None else "hit").inc()
        hit = result is not None
        if result is None:
            outcome = await self._run(caller, task, prompts)
            result = ImageResult.from_outcome(0, outcome)
            if cache_key is not None and self._result_cache is not None:
                await self.io(self._result_cache.put, cache_key, result.to_json().encode())
        try:
            await self.io(self._jobs.record_single, job_id, spec, result, caller.name)
        except Unavailable as exc:
            # The masks are computed and correct: answer them; only the job record is lost.
            log.warning("segment %s: not recorded as a job: %s", job_id, exc.message)
        elapsed = time.perf_counter() - started
        log.info(
            "segment %s: model=%s %dx%d masks=%d in %.3f s%s",
            job_id, task.model, result.width, result.height, len(result.masks), elapsed, " (cached)" if hit else "",
        )  # fmt: skip
        processing = elapsed if hit else result.processing_time_s
        return convert.segment_response(job_id, result, task.model, task.encoding, processing, cache_hit=hit)

    @unary_boundary
    async def SegmentPrompts(
        self, request: segmentation_service_pb2.SegmentPromptsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentPromptsResponse:
        caller = await self._caller(context, images=1)
        header = check_image_bytes(request.image, self._limits)
        model = request.model_type or self._settings.default_model
        check_model_name(model, self._models.registry.names())
        caller.check_model(model)
        prompts = check_prompts(request.prompts, self._settings.max_image_side)
        task = PromptTask(
            image=request.image,
            header=header,
            model=model,
            prompts=prompts,
            multimask=request.multimask_output,
            encoding=convert.mask_encoding(request.mask_format),
            return_logits=request.return_logits,
        )
        outcome = await self._infer(caller, run_prompts, task, self._models, self._embedding_cache)
        return convert.prompts_response(outcome)

    @unary_boundary
    async def ListModels(
        self, request: segmentation_service_pb2.ListModelsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListModelsResponse:
        await self._caller(context)
        size = _page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = convert.decode_page_token(request.page_token)
        states = self._models.states()
        page = states[offset : offset + size]
        more = offset + size < len(states)
        return segmentation_service_pb2.ListModelsResponse(
            models=[convert.model_to_proto(s) for s in page],
            next_page_token=convert.encode_page_token(offset + size) if more else "",
        )

    def _jobs_health(self) -> health_pb2.JobsHealth:
        runtime = self._jobs.runtime
        try:
            runtime.store.ping()
            processes, threads = runtime.live_workers()
            reachable = True
        except (Unavailable, redis.RedisError):
            processes, threads, reachable = 0, 0, False
        return health_pb2.JobsHealth(
            mode="embedded" if runtime.embedded else "redis",
            store_reachable=reachable,
            live_workers=processes,
            live_worker_threads=threads,
        )

    @unary_boundary
    async def CheckHealth(
        self, request: health_pb2.CheckHealthRequest, context: ServicerContext
    ) -> health_pb2.CheckHealthResponse:
        # Open to probes without a key (see samsvc.server.auth.OPEN_PREFIXES); not rate limited.
        # Without a key it says whether the service serves, nothing more: models, load, limits
        # and resources are for callers with one.
        status = self._health.proto_status()
        if self._auth.enabled:
            try:
                self._auth.caller(context.invocation_metadata() or ())
            except Unauthenticated:
                return health_pb2.CheckHealthResponse(status=status)  # type: ignore[arg-type]
        jobs = await self.io(self._jobs_health)
        return health_pb2.CheckHealthResponse(
            jobs=jobs,
            status=status,  # type: ignore[arg-type]
            version=__version__,
            models=[convert.model_to_proto(s) for s in self._models.states()],
            process=self._probe.resources(),
            limits=health_pb2.RequestLimits(
                max_image_bytes=self._settings.max_image_bytes,
                max_image_side=self._settings.max_image_side,
                max_batch_images=self._settings.max_batch_images,
                max_batch_bytes=self._settings.max_batch_bytes,
            ),
            inference=health_pb2.InferenceLoad(
                running=self._admission.running,
                waiting=self._admission.waiting,
                max_workers=self._admission.max_running,
                max_queue=self._admission.max_waiting,
            ),
        )

    # --- jobs -------------------------------------------------------------------------------

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work in the I/O pool (in this call's context: its correlation id)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await loop.run_in_executor(self._io_executor, call)

    def _check_batch(
        self, request: segmentation_service_pb2.SubmitBatchRequest
    ) -> tuple[list[BatchImage], JobSpec, Any, str, str]:
        """Judge a batch: the options and webhook (the whole request fails) and each image's
        header (only that image fails)."""
        settings = self._settings
        count = len(request.images)
        if count == 0:
            raise InvalidArgument.for_field("images", "must hold at least one image", reason="INVALID_PARAMETER")
        if count > settings.max_batch_images:
            raise InvalidArgument.for_field(
                "images", f"holds {count} images; the limit is {settings.max_batch_images}", reason="TOO_MANY_IMAGES"
            )
        model, given, encoding, visualize = convert.job_spec(request.options, settings.default_model)
        check_model_name(model, self._models.registry.names(), field="options.model_type")
        options = check_amg_options(given, prefix="options.")
        check_work(options, settings.max_prompts_per_image, prefix="options.")
        priority = convert.priority(request.priority)
        request_id = request.request_id
        if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
            raise invalid_parameters(
                [FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} printable characters")]
            )
        if request.webhook_url:
            WebhookPolicy(settings.webhook_allowed_hosts).check(request.webhook_url)
        images: list[BatchImage] = []
        for index, data in enumerate(request.images):
            try:
                check_image_bytes(data, self._limits, field=f"images[{index}]")
            except InvalidArgument as exc:
                images.append(BatchImage(None, ImageError.from_exception(exc)))
            else:
                images.append(BatchImage(data))
        return images, JobSpec(model, options, encoding, visualize), priority, request.webhook_url, request_id

    async def _submit(
        self, request: segmentation_service_pb2.SubmitBatchRequest, context: ServicerContext
    ) -> JobRecord:
        caller = await self._caller(context, images=len(request.images))
        images, spec, priority, webhook_url, request_id = await self.io(self._check_batch, request)
        caller.check_model(spec.model, field="options.model_type")
        # Idempotency keys are per caller: another key's request_id never returns this key's job.
        scoped_request_id = f"{caller.name}/{request_id}" if request_id and caller.name else request_id
        job, _ = await self.io(
            functools.partial(
                self._jobs.submit,
                images,
                spec,
                priority=priority,
                webhook_url=webhook_url,
                request_id=scoped_request_id,
                owner=caller.name,
            )
        )
        return job

    async def _job_proto(self, job: JobRecord) -> job_pb2.Job:
        return convert.job_to_proto(job, await self.io(self._jobs.estimate, job))

    async def _event_proto(self, job_id: str, event: JobEvent) -> job_pb2.JobEvent:
        message = job_pb2.JobEvent(cursor=event.cursor, job_id=job_id)
        data = json.loads(event.data)
        if event.kind is EventKind.IMAGE:
            result = await self.io(self._jobs.result, job_id, int(data["index"]))
            if result is not None:
                message.image.CopyFrom(convert.image_result_to_proto(result))
            return message
        job = await self.io(self._jobs.get, job_id)
        if event.kind is EventKind.ACCEPTED:
            estimate = await self.io(self._jobs.estimate, job)
            message.accepted.CopyFrom(
                job_pb2.JobAccepted(job_id=job_id, total_images=job.total_images, estimated_time=estimate)
            )
        elif event.kind is EventKind.PROGRESS:
            estimate = await self.io(self._jobs.estimate, job)
            message.progress.CopyFrom(
                job_pb2.JobProgress(
                    processed_images=int(data["processed"]),
                    failed_images=int(data["failed"]),
                    total_images=int(data["total"]),
                    estimated_time=estimate,
                )
            )
        else:
            message.finished.CopyFrom(job_pb2.JobFinished(job=await self._job_proto(job)))
        return message

    async def _follow(self, job_id: str, cursor: str) -> AsyncIterator[job_pb2.JobEvent]:
        """Stream a job's events after `cursor` until its FINISHED event (at once, for a job
        that ended before `cursor`). Waiting holds no thread (samsvc.jobs.event_feed)."""
        outage_since: float | None = None
        while True:
            try:
                events = await self._feed.wait(job_id, cursor, FOLLOW_POLL_S)
                if not events:
                    job = await self.io(self._jobs.get, job_id)  # NotFound once the job expired
                    if job.status.final and not await self._feed.wait(job_id, cursor, 0):
                        return  # its last event is behind the cursor: nothing more will come
                    continue
                protos = [await self._event_proto(job_id, e) for e in events]
            except Unavailable:
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > STORE_OUTAGE_GRACE_S:
                    raise
                log.warning("job store unreachable while following %s; retrying", job_id)
                await asyncio.sleep(0.5)
                continue
            outage_since = None
            for event, proto in zip(events, protos, strict=True):
                yield proto
                cursor = event.cursor
                if event.kind is EventKind.FINISHED:
                    return

    @unary_boundary
    async def SubmitBatch(
        self, request: segmentation_service_pb2.SubmitBatchRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SubmitBatchResponse:
        job = await self._submit(request, context)
        proto = await self._job_proto(job)
        return segmentation_service_pb2.SubmitBatchResponse(
            job_id=job.job_id, status=proto.status, total_images=job.total_images, estimated_time=proto.estimated_time
        )

    @contextlib.contextmanager
    def _stream_slot(self, caller: Principal) -> Iterator[None]:
        """One of the caller's MAX_STREAMS_PER_KEY open job streams (in this process)."""
        most = self._settings.max_streams_per_key
        if self._open_streams[caller.name] >= most:
            raise ResourceExhausted(
                f"{most} job streams are open for this key (MAX_STREAMS_PER_KEY); close one or retry later",
                reason="TOO_MANY_STREAMS",
                retry_after=5.0,
            )
        self._open_streams[caller.name] += 1
        try:
            yield
        finally:
            self._open_streams[caller.name] -= 1
            if not self._open_streams[caller.name]:
                del self._open_streams[caller.name]

    @stream_boundary
    async def SegmentBatch(
        self, request: segmentation_service_pb2.SubmitBatchRequest, context: ServicerContext
    ) -> AsyncIterator[job_pb2.JobEvent]:
        caller = self._auth.caller(context.invocation_metadata() or ())
        with self._stream_slot(caller):
            job = await self._submit(request, context)
            async for event in self._follow(job.job_id, ""):
                yield event

    @stream_boundary
    async def WatchJob(
        self, request: segmentation_service_pb2.WatchJobRequest, context: ServicerContext
    ) -> AsyncIterator[job_pb2.JobEvent]:
        caller = await self._caller(context)
        cursor = check_cursor(request.cursor)
        with self._stream_slot(caller):
            await self.io(self._jobs.get, request.job_id, caller.name)
            async for event in self._follow(request.job_id, cursor):
                yield event

    @unary_boundary
    async def GetJobStatus(
        self, request: segmentation_service_pb2.GetJobStatusRequest, context: ServicerContext
    ) -> job_pb2.Job:
        caller = await self._caller(context)
        return await self._job_proto(await self.io(self._jobs.get, request.job_id, caller.name))

    @unary_boundary
    async def GetJobResults(
        self, request: segmentation_service_pb2.GetJobResultsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.GetJobResultsResponse:
        caller = await self._caller(context)
        size = _page_size(request.page_size, DEFAULT_RESULTS_PAGE_SIZE, MAX_RESULTS_PAGE_SIZE)
        start = convert.decode_page_token(request.page_token)
        job, results, more = await self.io(self._jobs.results, request.job_id, start, size, caller.name)
        return segmentation_service_pb2.GetJobResultsResponse(
            job=await self._job_proto(job),
            results=[convert.image_result_to_proto(r) for r in results],
            next_page_token=convert.encode_page_token(results[-1].index + 1) if more and results else "",
        )

    @unary_boundary
    async def CancelJob(
        self, request: segmentation_service_pb2.CancelJobRequest, context: ServicerContext
    ) -> job_pb2.Job:
        caller = await self._caller(context)
        return await self._job_proto(await self.io(self._jobs.cancel, request.job_id, caller.name))

    @unary_boundary
    async def ListJobs(
        self, request: segmentation_service_pb2.ListJobsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListJobsResponse:
        caller = await self._caller(context)
        return await self.list_jobs_page(request, caller.name)

    async def list_jobs_page(
        self, request: segmentation_service_pb2.ListJobsRequest, owner: str | None
    ) -> segmentation_service_pb2.ListJobsResponse:
        """One page of `owner`'s jobs (None: everyone's), for ListJobs and AdminService.ListAllJobs."""
        size = _page_size(request.page_size, DEFAULT_JOBS_PAGE_SIZE, MAX_JOBS_PAGE_SIZE)
        status = convert.status_filter(request.status)
        job_type = convert.type_filter(request.job_type)
        after = convert.decode_list_token(request.page_token)
        jobs = await self.io(self._jobs.list_jobs, status, job_type, after, size + 1, owner)
        page = jobs[:size]
        token = ""
        if len(jobs) > size:
            last = page[-1]
            token = convert.encode_list_token(ListCursor(last.created_at_ms, last.job_id))
        return segmentation_service_pb2.ListJobsResponse(
            jobs=[await self._job_proto(j) for j in page], next_page_token=token
        )
