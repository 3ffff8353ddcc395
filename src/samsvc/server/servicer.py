"""samsvc.v1.SegmentationService: protobuf in, protobuf out.

Each RPC reads its request into domain values (convert), has them judged (validation), runs
the work off the event loop under admission control (samsvc.server.calls), and converts the
outcome back. Errors leave through the error boundary. This class holds Segment,
SegmentUpload, ListModels and CheckHealth; it extends samsvc.server.interactive_servicer's
(prompts, embeddings, image sessions, decoders), which extends samsvc.server.job_servicer's
(the job RPCs).
"""

from __future__ import annotations

import functools
import logging
import time

from samsvc import __version__
from samsvc.cache.backend import ByteCache
from samsvc.engine.costs import grid_work
from samsvc.engine.embeddings import EmbeddingCache
from samsvc.engine.loader import ModelManager
from samsvc.engine.sam.decoder_export import DecoderExports
from samsvc.errors import Unavailable
from samsvc.inference.pipeline import SegmentOutcome, SegmentTask, result_cache_key, run_segment
from samsvc.infra import metrics
from samsvc.jobs.records import ImageResult, JobSpec, JobType
from samsvc.jobs.service import JobService, new_job_id
from samsvc.server import convert
from samsvc.server.auth import Principal
from samsvc.server.calls import Calls, InferenceTiming
from samsvc.server.error_boundary import ServicerContext, unary_boundary
from samsvc.server.health import HealthService, ProcessProbe
from samsvc.server.interactive_servicer import InteractiveRpcs
from samsvc.server.options import ServiceOptions
from samsvc.sessions.store import SessionStore
from samsvc.v1 import health_pb2, segmentation_service_pb2
from samsvc.validation.amg_options import check_amg_options, check_model_name, check_work
from samsvc.validation.image import check_image_bytes
from samsvc.validation.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_page_token, encode_page_token, page_size
from samsvc.validation.sources import check_one_source

log = logging.getLogger(__name__)


class SegmentationServicer(InteractiveRpcs):
    def __init__(
        self,
        options: ServiceOptions,
        models: ModelManager,
        health: HealthService,
        jobs: JobService,
        calls: Calls,
        decoders: DecoderExports,
        result_cache: ByteCache | None = None,
        embedding_cache: EmbeddingCache | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        super().__init__(options, models, jobs, calls, embedding_cache, sessions, decoders)
        self._health = health
        self._admission = calls.admission
        self._result_cache = result_cache
        self._probe = ProcessProbe()

    def _check_segment(
        self, request: segmentation_service_pb2.SegmentRequest, caller: Principal
    ) -> tuple[SegmentTask, int]:
        """Judge everything about the request before any pixel is decoded; with its work (prompts)."""
        header = check_image_bytes(request.image, self._limits)
        model = request.model_type or self._options.default_model
        known = self._models.registry.names()
        check_model_name(model, known, shown=caller.visible(known))
        options = check_amg_options(
            convert.amg_fields_set(request),
            defaults=self._models.amg_defaults(model),
            family_check=functools.partial(self._models.option_violations, model),
        )
        prompts = check_work(options, self._options.max_prompts_per_image)
        return SegmentTask(
            image=request.image,
            header=header,
            model=model,
            options=options,
            encoding=convert.mask_encoding(request.mask_format),
            visualize=request.return_visualization,
            fast=self._options.fast_engine,
        ), prompts

    async def _run(self, caller: Principal, task: SegmentTask, prompts: int, timing: InferenceTiming) -> SegmentOutcome:
        weight = self._admission.weight(prompts, self._options.prompts_per_slot)
        return await self.calls.infer(caller, run_segment, task, self._models, weight=weight, timing=timing)

    @unary_boundary
    async def Segment(
        self, request: segmentation_service_pb2.SegmentRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        caller = await self.calls.caller(context, images=1)
        if request.image_url:
            check_one_source(request.image, request.image_url)
            self._model(caller, request.model_type)  # judged before anything is fetched
            request.image = await self._fetcher.fetch(caller, request.image_url)
        return await self._segment(request, caller, context)

    @unary_boundary
    async def SegmentUpload(
        self, request: segmentation_service_pb2.SegmentUploadRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        caller = await self.calls.caller(context, images=1)
        return await self._segment(convert.upload_to_segment_request(request), caller, context)

    async def _segment(
        self, request: segmentation_service_pb2.SegmentRequest, caller: Principal, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        started = time.perf_counter()
        task, prompts = self._check_segment(request, caller)
        caller.check_model(task.model)
        work = grid_work(task.options)
        expected = self._models.costs.seconds(task.model, work)
        self.calls.check_deadline(context, expected, f"a grid of {work.prompts} points on model {task.model!r}")
        job_id = new_job_id(JobType.SINGLE)
        spec = JobSpec(task.model, task.options, task.encoding, task.visualize)
        cache_key = None
        result = None
        if self._result_cache is not None:
            loaded = await self.calls.model(caller, self._models, task.model)
            cache_key = result_cache_key(task, loaded.identity, caller.name)
            cached = await self.calls.run_blocking(self._result_cache.get, cache_key)
            if cached is not None:
                result = ImageResult.from_json(cached.decode())
            metrics.CACHE_REQUESTS.labels("result", "miss" if cached is None else "hit").inc()
        hit = result is not None
        timing = InferenceTiming()
        if result is None:
            outcome = await self._run(caller, task, prompts, timing)
            result = ImageResult.from_outcome(0, outcome)
            if cache_key is not None and self._result_cache is not None:
                await self.calls.run_blocking(self._result_cache.put, cache_key, result.to_json().encode())
        try:
            await self.calls.run_blocking(self._jobs.record_single, job_id, spec, result, caller.name)
        except Unavailable as exc:
            # The masks are computed and correct: answer them; only the job record is lost.
            log.warning("segment %s: not recorded as a job: %s", job_id, exc.message)
        elapsed = time.perf_counter() - started
        log.info(
            "segment %s: model=%s %dx%d masks=%d in %.3f s%s",
            job_id, task.model, result.width, result.height, len(result.masks), elapsed, " (cached)" if hit else "",
        )  # fmt: skip
        processing = elapsed if hit else result.processing_time_s
        return convert.segment_response(
            job_id, result, task.model, task.encoding, processing, cache_hit=hit, queued_s=timing.queued_s
        )

    @unary_boundary
    async def ListModels(
        self, request: segmentation_service_pb2.ListModelsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListModelsResponse:
        caller = await self.calls.caller(context)
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = decode_page_token(request.page_token)
        states = [state for state in self._models.states() if caller.may_use(state.spec.name)]
        page = states[offset : offset + size]
        more = offset + size < len(states)
        return segmentation_service_pb2.ListModelsResponse(
            models=[convert.model_to_proto(s) for s in page],
            next_page_token=encode_page_token(offset + size) if more else "",
        )

    def _jobs_health(self) -> health_pb2.JobsHealth:
        jobs = self._jobs.health()
        return health_pb2.JobsHealth(
            mode=jobs.mode,
            store_reachable=jobs.store_reachable,
            live_workers=jobs.live_workers,
            live_worker_threads=jobs.live_worker_threads,
        )

    @unary_boundary
    async def CheckHealth(
        self, request: health_pb2.CheckHealthRequest, context: ServicerContext
    ) -> health_pb2.CheckHealthResponse:
        # Open to probes without a key (see samsvc.server.auth.OPEN_PREFIXES); not rate limited.
        # Without a key it says whether the service serves, nothing more: models, load, limits
        # and resources are for callers with one.
        status = self._health.proto_status()
        caller = self.calls.known_caller(context)
        if caller is None:
            return health_pb2.CheckHealthResponse(status=status)  # type: ignore[arg-type]
        jobs = await self.calls.run_blocking(self._jobs_health)
        return health_pb2.CheckHealthResponse(
            jobs=jobs,
            status=status,  # type: ignore[arg-type]
            version=__version__,
            models=[convert.model_to_proto(s) for s in self._models.states() if caller.may_use(s.spec.name)],
            process=self._probe.resources(),
            limits=health_pb2.RequestLimits(
                max_image_bytes=self._options.image_limits.max_bytes,
                max_image_side=self._options.image_limits.max_side,
                max_batch_images=self._options.max_batch_images,
                max_batch_bytes=self._options.max_batch_bytes,
            ),
            inference=health_pb2.InferenceLoad(
                running=self._admission.running,
                waiting=self._admission.waiting,
                max_workers=self._admission.max_running,
                max_queue=self._admission.max_waiting,
            ),
        )
