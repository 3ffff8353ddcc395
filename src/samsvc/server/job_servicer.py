"""The job RPCs of samsvc.v1.SegmentationService: SubmitBatch, SegmentBatch and WatchJob (event
streams), GetJobStatus, GetJobResults, CancelJob, ListJobs. Requests are judged (validation),
jobs run through samsvc.jobs.service, events are followed without a thread per stream
(samsvc.jobs.event_feed), and each key holds at most MAX_STREAMS_PER_KEY streams here.

SegmentationServicer (samsvc.server.servicer) adds the image RPCs on top of this class.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from samsvc.engine.costs import WorkCost
from samsvc.engine.loader import ModelManager
from samsvc.errors import InvalidArgument, Unavailable
from samsvc.jobs.queues import Priority
from samsvc.jobs.records import EventKind, ImageError, JobEvent, JobRecord, JobSpec
from samsvc.jobs.service import BatchImage, JobService
from samsvc.jobs.store import ListCursor
from samsvc.server import convert
from samsvc.server.auth import Principal
from samsvc.server.calls import Calls, KeyedLimit
from samsvc.server.error_boundary import ServicerContext, stream_boundary, unary_boundary
from samsvc.server.options import ServiceOptions
from samsvc.v1 import interactive_pb2, job_pb2, segmentation_service_pb2, segmentation_service_pb2_grpc
from samsvc.validation.amg_options import check_amg_options, check_model_name, check_work
from samsvc.validation.batch import check_batch_count, check_request_id
from samsvc.validation.cursor import check_cursor
from samsvc.validation.export import check_export_url
from samsvc.validation.image import check_image_bytes
from samsvc.validation.paging import (
    DEFAULT_JOBS_PAGE_SIZE,
    DEFAULT_RESULTS_PAGE_SIZE,
    MAX_JOBS_PAGE_SIZE,
    MAX_RESULTS_PAGE_SIZE,
    decode_list_token,
    decode_page_token,
    encode_list_token,
    encode_page_token,
    page_size,
)
from samsvc.validation.webhook_url import WebhookPolicy

log = logging.getLogger(__name__)

#: Seconds one wait for new job events lasts before the stream checks the job still exists.
FOLLOW_POLL_S = 1.0
#: Seconds a job stream rides out an unreachable store before failing with UNAVAILABLE.
STORE_OUTAGE_GRACE_S = 60.0


@dataclass(frozen=True)
class _Batch:
    """A judged batch request, ready to submit."""

    images: list[BatchImage]
    spec: JobSpec
    priority: Priority
    webhook_url: str
    request_id: str
    #: The request field naming the model (for PERMISSION_DENIED).
    model_field: str


class JobRpcs(segmentation_service_pb2_grpc.SegmentationServiceServicer):
    def __init__(self, options: ServiceOptions, models: ModelManager, jobs: JobService, calls: Calls) -> None:
        self._options = options
        self._models = models
        self._jobs = jobs
        self.jobs = jobs
        self.calls = calls
        self._feed = jobs.feed
        self._limits = options.image_limits
        self._streams = KeyedLimit(
            options.max_streams_per_key, "job streams", "MAX_STREAMS_PER_KEY", "TOO_MANY_STREAMS"
        )

    def _check_images(self, images: Any) -> list[BatchImage]:
        """Each image's header: a bad one fails alone (its own error), the rest run."""
        check_batch_count(len(images), self._options.max_batch_images)
        checked: list[BatchImage] = []
        for index, data in enumerate(images):
            try:
                check_image_bytes(data, self._limits, field=f"images[{index}]")
            except InvalidArgument as exc:
                checked.append(BatchImage(None, ImageError.from_exception(exc)))
            else:
                checked.append(BatchImage(data))
        return checked

    def _check_batch(self, request: segmentation_service_pb2.SubmitBatchRequest, caller: Principal) -> _Batch:
        """Judge a batch: the options and webhook (the whole request fails) and each image's
        header (only that image fails)."""
        service = self._options
        check_batch_count(len(request.images), service.max_batch_images)
        model, given, encoding, visualize = convert.job_spec(request.options, service.default_model)
        known = self._models.registry.names()
        check_model_name(model, known, field="options.model_type", shown=caller.visible(known))
        options = check_amg_options(
            given,
            prefix="options.",
            defaults=self._models.amg_defaults(model),
            family_check=functools.partial(self._models.option_violations, model),
        )
        check_work(options, service.max_prompts_per_image, prefix="options.")
        export_url = check_export_url(request.export_url, service.export_roots, caller.name)
        spec = JobSpec(model, options, encoding, visualize, export_url=export_url)
        return self._batch(request, spec, "options.model_type")

    def _check_embedding_batch(self, request: interactive_pb2.SubmitEmbeddingBatchRequest, caller: Principal) -> _Batch:
        check_batch_count(len(request.images), self._options.max_batch_images)
        model = request.model_type or self._options.default_model
        known = self._models.registry.names()
        check_model_name(model, known, shown=caller.visible(known))
        return self._batch(request, JobSpec.embedding(model), "model_type")

    def _batch(self, request: Any, spec: JobSpec, model_field: str) -> _Batch:
        priority = convert.priority(request.priority)
        request_id = check_request_id(request.request_id)
        if request.webhook_url:
            WebhookPolicy(list(self._options.allowed_hosts)).check(request.webhook_url)
        images = self._check_images(request.images)
        return _Batch(images, spec, priority, request.webhook_url, request_id, model_field)

    async def _submit(self, request: Any, context: ServicerContext) -> JobRecord:
        caller = await self.calls.caller(context, images=len(request.images))
        check = (
            self._check_embedding_batch
            if isinstance(request, interactive_pb2.SubmitEmbeddingBatchRequest)
            else self._check_batch
        )
        batch = await self.calls.run_blocking(check, request, caller)
        caller.check_model(batch.spec.model, field=batch.model_field)
        # Idempotency keys are per caller: another key's request_id never returns this key's job.
        request_id = batch.request_id
        scoped_request_id = f"{caller.name}/{request_id}" if request_id and caller.name else request_id
        job, _ = await self.calls.run_blocking(
            functools.partial(
                self._jobs.submit,
                batch.images,
                batch.spec,
                priority=batch.priority,
                webhook_url=batch.webhook_url,
                request_id=scoped_request_id,
                owner=caller.name,
            )
        )
        return job

    async def _estimate(self, job: JobRecord) -> tuple[int, WorkCost]:
        """Seconds until `job` ends and each image's expected cost, from this server's figures
        for its model where measured."""
        expected = functools.partial(self._models.costs.seconds, job.spec.model)
        return await self.calls.run_blocking(self._jobs.estimate, job, expected)

    async def _job_proto(self, job: JobRecord) -> job_pb2.Job:
        return convert.job_to_proto(job, (await self._estimate(job))[0])

    async def _event_proto(self, job_id: str, event: JobEvent) -> job_pb2.JobEvent:
        message = job_pb2.JobEvent(cursor=event.cursor, job_id=job_id)
        data = json.loads(event.data)
        if event.kind is EventKind.IMAGE:
            result = await self.calls.run_blocking(self._jobs.result, job_id, int(data["index"]))
            if result is not None:
                message.image.CopyFrom(convert.image_result_to_proto(result))
            return message
        job = await self.calls.run_blocking(self._jobs.get, job_id)
        if event.kind is EventKind.ACCEPTED:
            estimate, cost = await self._estimate(job)
            message.accepted.CopyFrom(
                job_pb2.JobAccepted(
                    job_id=job_id,
                    total_images=job.total_images,
                    estimated_time=estimate,
                    estimated_image_cost=convert.work_cost_to_proto(cost),
                )
            )
        elif event.kind is EventKind.PROGRESS:
            estimate, _ = await self._estimate(job)
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
                    job = await self.calls.run_blocking(self._jobs.get, job_id)  # NotFound once the job expired
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
        return await self._accepted(await self._submit(request, context))

    @unary_boundary
    async def SubmitEmbeddingBatch(
        self, request: interactive_pb2.SubmitEmbeddingBatchRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SubmitBatchResponse:
        return await self._accepted(await self._submit(request, context))

    async def _accepted(self, job: JobRecord) -> segmentation_service_pb2.SubmitBatchResponse:
        estimate, cost = await self._estimate(job)
        return segmentation_service_pb2.SubmitBatchResponse(
            job_id=job.job_id,
            status=convert.job_to_proto(job).status,
            total_images=job.total_images,
            estimated_time=estimate,
            estimated_image_cost=convert.work_cost_to_proto(cost),
        )

    @stream_boundary
    async def SegmentBatch(
        self, request: segmentation_service_pb2.SubmitBatchRequest, context: ServicerContext
    ) -> AsyncIterator[job_pb2.JobEvent]:
        caller = self.calls.auth.caller(context.invocation_metadata() or ())
        with self._streams.hold(caller):
            job = await self._submit(request, context)
            async for event in self._follow(job.job_id, ""):
                yield event

    @stream_boundary
    async def WatchJob(
        self, request: segmentation_service_pb2.WatchJobRequest, context: ServicerContext
    ) -> AsyncIterator[job_pb2.JobEvent]:
        caller = await self.calls.caller(context)
        cursor = check_cursor(request.cursor)
        with self._streams.hold(caller):
            await self.calls.run_blocking(self._jobs.get, request.job_id, caller.name)
            async for event in self._follow(request.job_id, cursor):
                yield event

    @unary_boundary
    async def GetJobStatus(
        self, request: segmentation_service_pb2.GetJobStatusRequest, context: ServicerContext
    ) -> job_pb2.Job:
        caller = await self.calls.caller(context)
        return await self._job_proto(await self.calls.run_blocking(self._jobs.get, request.job_id, caller.name))

    @unary_boundary
    async def GetJobResults(
        self, request: segmentation_service_pb2.GetJobResultsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.GetJobResultsResponse:
        caller = await self.calls.caller(context)
        size = page_size(request.page_size, DEFAULT_RESULTS_PAGE_SIZE, MAX_RESULTS_PAGE_SIZE)
        start = decode_page_token(request.page_token)
        job, results, more = await self.calls.run_blocking(self._jobs.results, request.job_id, start, size, caller.name)
        return segmentation_service_pb2.GetJobResultsResponse(
            job=await self._job_proto(job),
            results=[convert.image_result_to_proto(r) for r in results],
            next_page_token=encode_page_token(results[-1].index + 1) if more and results else "",
        )

    @unary_boundary
    async def CancelJob(
        self, request: segmentation_service_pb2.CancelJobRequest, context: ServicerContext
    ) -> job_pb2.Job:
        caller = await self.calls.caller(context)
        return await self._job_proto(await self.calls.run_blocking(self._jobs.cancel, request.job_id, caller.name))

    @unary_boundary
    async def ListJobs(
        self, request: segmentation_service_pb2.ListJobsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListJobsResponse:
        caller = await self.calls.caller(context)
        return await self.list_jobs_page(request, caller.name)

    async def list_jobs_page(
        self, request: segmentation_service_pb2.ListJobsRequest, owner: str | None
    ) -> segmentation_service_pb2.ListJobsResponse:
        """One page of `owner`'s jobs (None: everyone's), for ListJobs and AdminService.ListAllJobs."""
        size = page_size(request.page_size, DEFAULT_JOBS_PAGE_SIZE, MAX_JOBS_PAGE_SIZE)
        status = convert.status_filter(request.status)
        job_type = convert.type_filter(request.job_type)
        after = decode_list_token(request.page_token)
        jobs = await self.calls.run_blocking(self._jobs.list_jobs, status, job_type, after, size + 1, owner)
        page = jobs[:size]
        token = ""
        if len(jobs) > size:
            last = page[-1]
            token = encode_list_token(ListCursor(last.created_at_ms, last.job_id))
        return segmentation_service_pb2.ListJobsResponse(
            jobs=[await self._job_proto(j) for j in page], next_page_token=token
        )
