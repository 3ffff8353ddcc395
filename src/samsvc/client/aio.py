"""The asyncio client: the same calls as samsvc.client.Client, awaited.

async with AsyncClient("127.0.0.1:50051") as client:
    result = await client.segment("photo.jpg")
    async for outcome in client.segment_batch(paths):
        ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from samsvc.client.channel import DEFAULT_RESUME_FOR_S, ChannelConfig, batch_request, segment_request
from samsvc.client.errors import UnavailableError, from_rpc_error
from samsvc.client.images import ImageLike
from samsvc.client.results import ImageOutcome, JobUpdate, SegmentResult
from samsvc.v1 import health_pb2, job_pb2, model_pb2, segmentation_service_pb2, segmentation_service_pb2_grpc

T = TypeVar("T")


class AsyncClient:
    """A typed asyncio client over samsvc.v1.SegmentationService; failures raise ClientError."""

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
        **options: Any,
    ) -> segmentation_service_pb2.SubmitBatchResponse:
        request = batch_request(images, model, mask_format, visualize, priority, request_id, webhook_url, options)
        return await self._call(self.stub.SubmitBatch, request)

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
        **options: Any,
    ) -> AsyncIterator[ImageOutcome]:
        """Each image's outcome as it finishes; a dropped stream resumes where it stopped."""
        request = batch_request(images, model, mask_format, visualize, priority, request_id, "", options)
        stream = self.stub.SegmentBatch(request, metadata=self.config.metadata())
        job_id, cursor = "", ""
        try:
            async for event in stream:
                update = JobUpdate.from_proto(event)
                job_id, cursor = update.job_id, update.cursor
                if update.image is not None:
                    yield update.image
                if update.kind == "finished":
                    return
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if not job_id or not isinstance(failure, UnavailableError):
                raise failure from None
        async for resumed in self.watch(job_id, cursor, resume_for_s=resume_for_s):
            if resumed.image is not None:
                yield resumed.image

    async def watch(
        self, job_id: str, cursor: str = "", *, resume_for_s: float = DEFAULT_RESUME_FOR_S
    ) -> AsyncIterator[JobUpdate]:
        """A job's events after `cursor` until it ends, reconnecting after a dropped connection."""
        delay = 0.2
        outage_since: float | None = None
        while True:
            stream = self.stub.WatchJob(
                segmentation_service_pb2.WatchJobRequest(job_id=job_id, cursor=cursor), metadata=self.config.metadata()
            )
            try:
                async for event in stream:
                    outage_since, delay = None, 0.2
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
                delay = min(delay * 2, 5.0)

    async def status(self, job_id: str) -> job_pb2.Job:
        return await self._call(self.stub.GetJobStatus, segmentation_service_pb2.GetJobStatusRequest(job_id=job_id))

    async def results(self, job_id: str, *, page_size: int = 10) -> AsyncIterator[ImageOutcome]:
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
        return await self._call(self.stub.CancelJob, segmentation_service_pb2.CancelJobRequest(job_id=job_id))

    async def list_jobs(self, *, page_size: int = 20) -> AsyncIterator[job_pb2.Job]:
        token = ""
        while True:
            page = await self._call(
                self.stub.ListJobs, segmentation_service_pb2.ListJobsRequest(page_size=page_size, page_token=token)
            )
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

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
        return await self._call(self.stub.CheckHealth, health_pb2.CheckHealthRequest())
