"""samsvc.v1.AdminService: operator actions across every caller's jobs and this process's
models. The auth interceptor lets a call through only with a valid admin token."""

from __future__ import annotations

import logging

from samsvc.engine.amg_types import CancelToken
from samsvc.engine.loader import LoadedModel, ModelManager
from samsvc.server import convert
from samsvc.server.auth import Principal
from samsvc.server.error_boundary import ServicerContext, unary_boundary
from samsvc.server.job_servicer import JobRpcs
from samsvc.v1 import admin_service_pb2, admin_service_pb2_grpc, model_pb2, segmentation_service_pb2

log = logging.getLogger(__name__)

#: Whom an operator's model load is counted against (it holds an inference slot like any load).
OPERATOR = Principal("(admin)", admin=True)


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, jobs: JobRpcs, models: ModelManager) -> None:
        self._jobs = jobs
        self._models = models

    @unary_boundary
    async def ListAllJobs(
        self, request: admin_service_pb2.ListAllJobsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.ListJobsResponse:
        page = segmentation_service_pb2.ListJobsRequest(
            status=request.status, job_type=request.job_type, page_size=request.page_size, page_token=request.page_token
        )
        return await self._jobs.list_jobs_page(page, request.owner or None)

    @unary_boundary
    async def PurgeJob(
        self, request: admin_service_pb2.PurgeJobRequest, context: ServicerContext
    ) -> admin_service_pb2.PurgeJobResponse:
        cancelled = await self._jobs.calls.run_blocking(self._jobs.jobs.purge, request.job_id)
        return admin_service_pb2.PurgeJobResponse(job_id=request.job_id, cancelled=cancelled)

    @unary_boundary
    async def LoadModel(self, request: admin_service_pb2.LoadModelRequest, context: ServicerContext) -> model_pb2.Model:
        self._models.spec(request.name)  # NotFound before any work
        await self._jobs.calls.infer(OPERATOR, self._load, request.name)
        log.info("model %s loaded by an admin", request.name)
        return convert.model_to_proto(self._models.state(request.name), operator=True)

    def _load(self, name: str, cancel: CancelToken) -> LoadedModel:
        return self._models.get(name, retry=True)  # the operator may have fixed the checkpoint

    @unary_boundary
    async def UnloadModel(
        self, request: admin_service_pb2.UnloadModelRequest, context: ServicerContext
    ) -> model_pb2.Model:
        self._models.unload(request.name)
        return convert.model_to_proto(self._models.state(request.name), operator=True)
