"""samsvc.v1.SegmentationService: protobuf in, protobuf out.

Each RPC reads its request into domain values (convert), has them judged (validation), runs
the work off the event loop under admission control, and converts the outcome back. Errors
leave through the error boundary.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from samsvc import __version__
from samsvc.config import Settings
from samsvc.engine.amg import CancelToken
from samsvc.engine.loader import ModelManager
from samsvc.errors import InvalidArgument
from samsvc.pipeline import SegmentOutcome, SegmentTask, run_segment
from samsvc.server import convert
from samsvc.server.admission import AdmissionControl
from samsvc.server.error_boundary import ServicerContext, unary_boundary
from samsvc.server.health import HealthService, ProcessProbe
from samsvc.v1 import health_pb2, segmentation_service_pb2, segmentation_service_pb2_grpc
from samsvc.validation.image import ImageLimits, check_image_bytes
from samsvc.validation.options import check_amg_options, check_model_name

log = logging.getLogger(__name__)


#: ListModels page size when the request gives none, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class SegmentationServicer(segmentation_service_pb2_grpc.SegmentationServiceServicer):
    def __init__(
        self,
        settings: Settings,
        models: ModelManager,
        admission: AdmissionControl,
        executor: ThreadPoolExecutor,
        health: HealthService,
    ) -> None:
        self._settings = settings
        self._models = models
        self._admission = admission
        self._executor = executor
        self._health = health
        self._limits = ImageLimits(max_bytes=settings.max_image_bytes, max_side=settings.max_image_side)
        self._probe = ProcessProbe()

    def _check_segment(self, request: segmentation_service_pb2.SegmentRequest) -> SegmentTask:
        """Judge everything about the request before any pixel is decoded."""
        header = check_image_bytes(request.image, self._limits)
        model = request.model_type or self._settings.default_model
        check_model_name(model, self._models.registry.names())
        options = check_amg_options(convert.amg_fields_set(request))
        return SegmentTask(
            image=request.image,
            header=header,
            model=model,
            options=options,
            encoding=convert.mask_encoding(request.mask_format),
            visualize=request.return_visualization,
        )

    async def _run(self, task: SegmentTask) -> SegmentOutcome:
        """Run one task in the inference pool; a cancelled caller stops it at the next safe point."""
        cancel = CancelToken()
        async with self._admission.slot():
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, run_segment, task, self._models, cancel)
            try:
                outcome = await future
            except asyncio.CancelledError:
                cancel.cancel()
                raise
        self._admission.record_duration(outcome.processing_time_s)
        return outcome

    @unary_boundary
    async def Segment(
        self, request: segmentation_service_pb2.SegmentRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentResponse:
        task = self._check_segment(request)
        job_id = f"seg_{uuid.uuid4().hex}"
        outcome = await self._run(task)
        log.info(
            "segment %s: model=%s %dx%d masks=%d in %.3f s",
            job_id, task.model, outcome.width, outcome.height, len(outcome.masks), outcome.processing_time_s,
        )  # fmt: skip
        return convert.segment_response(job_id, outcome, task.encoding)

    @unary_boundary
    async def ListModels(
        self, request: segmentation_service_pb2.ListModelsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListModelsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument.for_field(
                "page_size", f"must be between 0 and {MAX_PAGE_SIZE}", reason="INVALID_PARAMETER"
            )
        size = request.page_size or DEFAULT_PAGE_SIZE
        offset = convert.decode_page_token(request.page_token)
        states = self._models.states()
        page = states[offset : offset + size]
        more = offset + size < len(states)
        return segmentation_service_pb2.ListModelsResponse(
            models=[convert.model_to_proto(s) for s in page],
            next_page_token=convert.encode_page_token(offset + size) if more else "",
        )

    @unary_boundary
    async def CheckHealth(
        self, request: health_pb2.CheckHealthRequest, context: ServicerContext
    ) -> health_pb2.CheckHealthResponse:
        return health_pb2.CheckHealthResponse(
            status=self._health.proto_status(),  # type: ignore[arg-type]
            version=__version__,
            models=[convert.model_to_proto(s) for s in self._models.states()],
            process=self._probe.resources(),
            inference=health_pb2.InferenceLoad(
                running=self._admission.running,
                waiting=self._admission.waiting,
                max_workers=self._admission.max_running,
                max_queue=self._admission.max_waiting,
            ),
        )
