"""The asyncio client, and the one source of both clients: scripts/unasync.py writes the
blocking client (samsvc/client/sync.py) from this file, so each behaviour (paging, stream
resume, requests) is written once. Edit here, then run `uv run python scripts/generate.py`.

async with AsyncClient("127.0.0.1:50051", api_key="sk_...") as client:
    result = await client.segment("photo.jpg", points_per_side=16)
    masks = result.arrays()                     # N x H x W bool
    async for outcome in client.segment_batch(["a.jpg", "b.jpg"]):
        print(outcome.index, len(outcome.result.masks) if outcome.ok else outcome.error)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.api import httpbody_pb2

from samsvc.client.channel import (
    DEFAULT_RESUME_DELAY_S,
    DEFAULT_RESUME_FOR_S,
    DEFAULT_RESUME_MAX_DELAY_S,
    PRIORITIES,
    ChannelConfig,
    batch_request,
    list_jobs_request,
    segment_request,
)
from samsvc.client.errors import ClientError, UnavailableError, from_rpc_error
from samsvc.client.images import ImageLike, image_bytes
from samsvc.client.interactive import Embedding, PromptAnswer, embedding_request, prompt_request
from samsvc.client.results import ImageOutcome, JobUpdate, SegmentResult
from samsvc.v1 import (
    health_pb2,
    interactive_pb2,
    job_pb2,
    model_pb2,
    segmentation_service_pb2,
    segmentation_service_pb2_grpc,
)

T = TypeVar("T")


class AsyncClient:
    """A typed client over samsvc.v1.SegmentationService; every failure raises a ClientError."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str = "",
        tls: bool = False,
        ca_file: str | Path | None = None,
        timeout_s: float | None = 600.0,
        config: ChannelConfig | None = None,
    ) -> None:
        self.config = config or ChannelConfig.create(target, api_key, tls, ca_file, timeout_s)
        options = self.config.options()
        if self.config.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.config.root_certificates)
            self.channel = grpc.aio.secure_channel(self.config.target, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self.config.target, options=options)
        self.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, timeout_s: float | None = None) -> T:
        try:
            return await method(request, timeout=timeout_s or self.config.timeout_s, metadata=self.config.metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # --- segmentation ------------------------------------------------------------------------

    async def segment(
        self,
        image: ImageLike,
        *,
        model: str | None = None,
        mask_format: str = "png",
        visualize: bool = False,
        timeout_s: float | None = None,
        **options: Any,
    ) -> SegmentResult:
        """Every mask SAM finds on `image` (a path, bytes, PIL image or array); options are
        SegmentRequest's (points_per_side, pred_iou_thresh, ...)."""
        request = segment_request(image, model, mask_format, visualize, options)
        return SegmentResult.from_response(await self._call(self.stub.Segment, request, timeout_s))

    async def submit_batch(
        self,
        images: Iterable[ImageLike],
        *,
        model: str | None = None,
        mask_format: str = "png",
        visualize: bool = False,
        priority: str = "normal",
        request_id: str | None = None,
        webhook_url: str = "",
        export_url: str = "",
        **options: Any,
    ) -> segmentation_service_pb2.SubmitBatchResponse:
        """Queue a batch and return at once (job id, status, estimate); with `export_url`
        (s3://bucket/prefix or a folder the server allows) each image is also exported there."""
        request = batch_request(
            images, model, mask_format, visualize, priority, request_id, webhook_url, options, export_url
        )
        response: segmentation_service_pb2.SubmitBatchResponse = await self._call(self.stub.SubmitBatch, request)
        return response

    async def segment_batch(
        self,
        images: Iterable[ImageLike],
        *,
        model: str | None = None,
        mask_format: str = "png",
        visualize: bool = False,
        priority: str = "normal",
        request_id: str | None = None,
        resume_for_s: float = DEFAULT_RESUME_FOR_S,
        export_url: str = "",
        **options: Any,
    ) -> AsyncIterator[ImageOutcome]:
        """Submit a batch and yield each image's outcome as it finishes (completion order); a
        dropped stream is resumed where it stopped, without repeating or missing an image."""
        async for update in self.stream_batch(
            images,
            model=model,
            mask_format=mask_format,
            visualize=visualize,
            priority=priority,
            request_id=request_id,
            resume_for_s=resume_for_s,
            export_url=export_url,
            **options,
        ):
            if update.image is not None:
                yield update.image

    async def stream_batch(
        self,
        images: Iterable[ImageLike],
        *,
        model: str | None = None,
        mask_format: str = "png",
        visualize: bool = False,
        priority: str = "normal",
        request_id: str | None = None,
        resume_for_s: float = DEFAULT_RESUME_FOR_S,
        export_url: str = "",
        **options: Any,
    ) -> AsyncIterator[JobUpdate]:
        """Like segment_batch, yielding every event (accepted, image, progress, finished)."""
        request = batch_request(images, model, mask_format, visualize, priority, request_id, "", options, export_url)
        stream = self.stub.SegmentBatch(request, metadata=self.config.metadata())
        job_id, cursor = "", ""
        try:
            async for event in stream:
                update = JobUpdate.from_proto(event)
                job_id, cursor = update.job_id, update.cursor
                yield update
                if update.kind == "finished":
                    return
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if not job_id or not isinstance(failure, UnavailableError):
                raise failure from None
        async for resumed in self.watch(job_id, cursor, resume_for_s=resume_for_s):
            yield resumed

    async def watch(
        self, job_id: str, cursor: str = "", *, resume_for_s: float = DEFAULT_RESUME_FOR_S
    ) -> AsyncIterator[JobUpdate]:
        """A job's events after `cursor` until it ends. When the connection drops (the server
        restarts, a proxy cuts the stream), it reconnects with backoff for up to `resume_for_s`
        seconds and continues after the last event it yielded."""
        delay = DEFAULT_RESUME_DELAY_S
        outage_since: float | None = None
        while True:
            stream = self.stub.WatchJob(
                segmentation_service_pb2.WatchJobRequest(job_id=job_id, cursor=cursor), metadata=self.config.metadata()
            )
            try:
                async for event in stream:
                    outage_since, delay = None, DEFAULT_RESUME_DELAY_S
                    update = JobUpdate.from_proto(event)
                    cursor = update.cursor
                    yield update
                    if update.kind == "finished":
                        return
                return
            except grpc.RpcError as error:
                failure = from_rpc_error(error)
                if not isinstance(failure, UnavailableError):
                    raise failure from None
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > resume_for_s:
                    raise failure from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, DEFAULT_RESUME_MAX_DELAY_S)

    # --- jobs --------------------------------------------------------------------------------

    # --- interactive: sessions, clicks, embeddings, decoders ---------------------------------

    async def create_session(
        self,
        image: ImageLike | None = None,
        *,
        job_id: str | None = None,
        index: int = 0,
        model: str | None = None,
        url: str | None = None,
    ) -> interactive_pb2.ImageSession:
        """Upload and encode `image` once (or have the server fetch it from `url`, or open image
        `index` of embedding job `job_id`); its `image_id` then stands for it in `prompt` and
        `embedding`."""
        request = interactive_pb2.CreateImageSessionRequest(model_type=model or "")
        if job_id is not None:
            request.job_image.CopyFrom(interactive_pb2.JobImage(job_id=job_id, index=index))
        elif url is not None:
            request.image_url = url
        elif image is not None:
            request.image = image_bytes(image)
        else:
            raise ValueError("give an image, a url or a job_id")
        session: interactive_pb2.ImageSession = await self._call(self.stub.CreateImageSession, request)
        return session

    async def delete_session(self, image_id: str) -> None:
        request = interactive_pb2.DeleteImageSessionRequest(image_id=image_id)
        await self._call(self.stub.DeleteImageSession, request)

    async def prompt(
        self,
        image: ImageLike | None = None,
        *,
        image_id: str | None = None,
        points: Sequence[tuple[float, float]] = (),
        negative: Sequence[tuple[float, float]] = (),
        box: tuple[float, float, float, float] | None = None,
        multimask: bool = False,
        refine: bool = False,
        model: str | None = None,
        mask_format: str = "png",
        return_logits: bool = False,
    ) -> PromptAnswer:
        """Masks for clicks (`points` foreground, `negative` background) and/or a box, on `image`
        or an image session's `image_id`; `refine` feeds the session's previous answer back."""
        request = prompt_request(
            image, image_id, points, negative, box, multimask, refine, model, mask_format, return_logits
        )
        return PromptAnswer(await self._call(self.stub.SegmentPrompts, request))

    async def embedding(
        self,
        image: ImageLike | None = None,
        *,
        image_id: str | None = None,
        job_id: str | None = None,
        index: int = 0,
        model: str | None = None,
        dtype: str = "float32",
    ) -> Embedding:
        """The image's embedding (from `image`, a session's `image_id`, or image `index` of the
        embedding job `job_id`) with the transform a decoder needs."""
        request = embedding_request(image, image_id, job_id, index, model, dtype)
        return Embedding(await self._call(self.stub.GetImageEmbedding, request))

    async def decoder(
        self, model: str | None = None, *, int8: bool = False, reference_graph: bool = False, cvat: bool = False
    ) -> tuple[bytes, interactive_pb2.DecoderInfo]:
        """The model's ONNX prompt decoder (float32, or int8; the folded graph, or with
        `reference_graph` segment-anything's own export model, or with `cvat` the graph CVAT's SAM
        plugin loads as its decoder.onnx) and what it is (digests, inputs)."""
        if reference_graph and cvat:
            raise ValueError("ask for the reference graph or CVAT's, not both")
        quantization = interactive_pb2.DECODER_QUANTIZATION_INT8 if int8 else interactive_pb2.DECODER_QUANTIZATION_FP32
        graph = (
            interactive_pb2.DECODER_GRAPH_CVAT
            if cvat
            else interactive_pb2.DECODER_GRAPH_REFERENCE
            if reference_graph
            else interactive_pb2.DECODER_GRAPH_FOLDED
        )
        request = interactive_pb2.GetDecoderRequest(model_type=model or "", quantization=quantization, graph=graph)
        info: interactive_pb2.DecoderInfo = await self._call(self.stub.GetDecoderInfo, request)
        body: httpbody_pb2.HttpBody = await self._call(self.stub.GetDecoder, request)
        return body.data, info

    async def submit_embeddings(
        self,
        images: Iterable[ImageLike],
        *,
        model: str | None = None,
        priority: str = "normal",
        request_id: str | None = None,
        webhook_url: str = "",
    ) -> segmentation_service_pb2.SubmitBatchResponse:
        """Queue an embedding job: the images' embeddings are kept for the job's retention, ready
        for `embedding(job_id=...)` and `create_session(job_id=...)`; follow it with `watch`."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
        request = interactive_pb2.SubmitEmbeddingBatchRequest(
            images=[image_bytes(image) for image in images],
            model_type=model or "",
            priority=PRIORITIES[priority],  # type: ignore[arg-type]
            request_id=request_id or uuid.uuid4().hex,
            webhook_url=webhook_url,
        )
        response: segmentation_service_pb2.SubmitBatchResponse = await self._call(
            self.stub.SubmitEmbeddingBatch, request
        )
        return response

    async def status(self, job_id: str) -> job_pb2.Job:
        job: job_pb2.Job = await self._call(
            self.stub.GetJobStatus, segmentation_service_pb2.GetJobStatusRequest(job_id=job_id)
        )
        return job

    async def results(self, job_id: str, *, page_size: int = 10) -> AsyncIterator[ImageOutcome]:
        """Every recorded image result of a job, in image order, page after page."""
        token = ""
        while True:
            page = await self._call(
                self.stub.GetJobResults,
                segmentation_service_pb2.GetJobResultsRequest(job_id=job_id, page_size=page_size, page_token=token),
            )
            for image in page.results:
                yield ImageOutcome.from_proto(job_id, image, page.job.model_type)
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str) -> job_pb2.Job:
        job: job_pb2.Job = await self._call(
            self.stub.CancelJob, segmentation_service_pb2.CancelJobRequest(job_id=job_id)
        )
        return job

    async def list_jobs(self, *, status: str | None = None, page_size: int = 20) -> AsyncIterator[job_pb2.Job]:
        """This key's jobs, newest first, optionally in one status (queued, processing, ...)."""
        token = ""
        while True:
            page = await self._call(self.stub.ListJobs, list_jobs_request(status, page_size, token))
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    # --- service -----------------------------------------------------------------------------

    async def list_models(self) -> list[model_pb2.Model]:
        models: list[model_pb2.Model] = []
        token = ""
        while True:
            page = await self._call(self.stub.ListModels, segmentation_service_pb2.ListModelsRequest(page_token=token))
            models += page.models
            token = page.next_page_token
            if not token:
                return models

    async def health(self) -> health_pb2.CheckHealthResponse:
        health: health_pb2.CheckHealthResponse = await self._call(
            self.stub.CheckHealth, health_pb2.CheckHealthRequest()
        )
        return health


__all__ = ["AsyncClient", "ClientError"]
