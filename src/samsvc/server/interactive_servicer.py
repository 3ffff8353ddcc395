"""The interactive RPCs of samsvc.v1.SegmentationService: SegmentPrompts (on a sent image or an
image session), GetImageEmbedding and its raw form, the image session calls and GetDecoder.

An embedding comes from one of three places (GetImageEmbedding, CreateImageSession): a sent
image (the encoder runs under admission control, unless the embedding cache has it), an image
session (no upload, no encoder), or an embedding job's stored output. Sessions belong to the
key that created them; every call is charged to the caller's rate limits, and every encoder or
decoder run holds inference slots like any other inference.

SegmentationServicer (samsvc.server.servicer) extends this class.
"""

from __future__ import annotations

import time
from typing import Any

from google.api import httpbody_pb2

from samsvc.engine.amg_types import CancelToken
from samsvc.engine.embeddings import EmbeddingCache, ImageEmbedding
from samsvc.engine.loader import ModelManager
from samsvc.engine.sam.decoder_export import DecoderExports, DecoderFile
from samsvc.errors import FailedPrecondition
from samsvc.inference.interactive import EmbeddedImage, PromptTask, embed_image, run_prompts
from samsvc.jobs.service import JobService
from samsvc.server import convert, interactive_convert
from samsvc.server.auth import Principal
from samsvc.server.calls import Calls, InferenceTiming
from samsvc.server.error_boundary import ServicerContext, headers_boundary, send_headers, unary_boundary
from samsvc.server.image_fetch import ImageFetcher, LabelStudioAccess
from samsvc.server.job_servicer import JobRpcs
from samsvc.server.options import ServiceOptions
from samsvc.sessions.store import ImageSessionRecord, SessionStore, session_expired
from samsvc.v1 import interactive_pb2, segmentation_service_pb2
from samsvc.validation.amg_options import check_model_name
from samsvc.validation.image import check_image_bytes
from samsvc.validation.image_url import ImageUrlPolicy
from samsvc.validation.prompts import check_prompts
from samsvc.validation.sessions import check_image_id
from samsvc.validation.sources import check_same_model, missing_source

OCTET_STREAM = "application/octet-stream"


class InteractiveRpcs(JobRpcs):
    def __init__(
        self,
        options: ServiceOptions,
        models: ModelManager,
        jobs: JobService,
        calls: Calls,
        embedding_cache: EmbeddingCache | None,
        sessions: SessionStore | None,
        decoders: DecoderExports,
    ) -> None:
        super().__init__(options, models, jobs, calls)
        self._embedding_cache = embedding_cache
        self._sessions = sessions
        self._decoders = decoders
        self._fetcher = ImageFetcher(
            calls,
            ImageUrlPolicy(list(options.allowed_hosts), options.label_studio_url),
            LabelStudioAccess(options.label_studio_url, options.label_studio_token),
            max_bytes=options.image_limits.max_bytes,
            max_fetches=options.max_image_fetches,
            per_key=options.max_inferences_per_key,
        )

    # Where embeddings come from.

    def _model(self, caller: Principal, requested: str, field: str = "model_type") -> str:
        """The model a request names (or the default), registered and allowed to the caller."""
        model = requested or self._options.default_model
        known = self._models.registry.names()
        check_model_name(model, known, field=field, shown=caller.visible(known))
        caller.check_model(model, field=field)
        return model

    def _session_store(self) -> SessionStore:
        if self._sessions is None:
            raise FailedPrecondition(
                "image sessions are off on this server (IMAGE_SESSION_BYTES=0)", reason="SESSIONS_OFF"
            )
        return self._sessions

    def _session_model(self, image_id: str, requested: str) -> str:
        return check_same_model(requested, check_image_id(image_id), f"image {image_id!r}")

    async def _session(
        self, caller: Principal, image_id: str, requested_model: str, renew: bool = True
    ) -> ImageSessionRecord:
        model = self._session_model(image_id, requested_model)
        caller.check_model(model)
        record = await self.calls.run_blocking(self._session_store().get, caller.name, image_id, renew)
        if record is None:
            raise session_expired(image_id)
        return record

    def _job_embedding(self, job_id: str, index: int, owner: str, requested: str) -> EmbeddedImage:
        started = time.perf_counter()
        data, _ = self._jobs.embedding(job_id, index, owner, field="job_image")
        embedding, meta = ImageEmbedding.from_bytes_with_meta(data, self._models.device)
        model = check_same_model(requested, meta.get("model", ""), "the embedding job")
        return EmbeddedImage(
            embedding=embedding,
            model=model,
            identity=meta.get("identity", ""),
            digest=meta.get("digest", ""),
            image_id=meta.get("image_id", ""),
            reused=True,
            processing_time_s=time.perf_counter() - started,
        )

    async def _embedded(self, caller: Principal, request: Any) -> EmbeddedImage:
        """The embedding a request's `source` names (its image, image_id or job_image)."""
        source = request.WhichOneof("source")
        if source == "image":
            header = check_image_bytes(request.image, self._limits)
            model = self._model(caller, request.model_type)
            return await self.calls.infer(
                caller, embed_image, request.image, header, model, self._models, self._embedding_cache, caller.name
            )
        if source == "image_url":
            model = self._model(caller, request.model_type)  # judged before the fetch
            data = await self._fetcher.fetch(caller, request.image_url)
            header = check_image_bytes(data, self._limits, field="image_url")
            return await self.calls.infer(
                caller, embed_image, data, header, model, self._models, self._embedding_cache, caller.name
            )
        if source == "image_id":
            record = await self._session(caller, request.image_id, request.model_type)
            return EmbeddedImage(
                record.embedding, record.model, record.identity, record.digest, record.image_id, True, 0.0
            )
        if source == "job_image":
            job = request.job_image
            embedded = await self.calls.run_blocking(
                self._job_embedding, job.job_id, job.index, caller.name, request.model_type
            )
            caller.check_model(embedded.model)
            return embedded
        raise missing_source()

    # Embeddings.

    async def _embedding_message(
        self, request: interactive_pb2.GetImageEmbeddingRequest, context: ServicerContext
    ) -> interactive_pb2.ImageEmbedding:
        source = request.WhichOneof("source")
        caller = await self.calls.caller(context, images=1 if source == "image" else 0)
        dtype = interactive_convert.tensor_dtype(request.dtype)
        embedded = await self._embedded(caller, request)
        return await self.calls.run_blocking(interactive_convert.embedding_to_proto, embedded, dtype)

    @unary_boundary
    async def GetImageEmbedding(
        self, request: interactive_pb2.GetImageEmbeddingRequest, context: ServicerContext
    ) -> interactive_pb2.ImageEmbedding:
        return await self._embedding_message(request, context)

    @headers_boundary
    async def GetImageEmbeddingRaw(
        self, request: interactive_pb2.GetImageEmbeddingRequest, context: ServicerContext
    ) -> httpbody_pb2.HttpBody:
        message = await self._embedding_message(request, context)
        await send_headers(context, interactive_convert.embedding_headers(message))
        body = b"".join(tensor.data for tensor in message.tensors)
        return httpbody_pb2.HttpBody(content_type=OCTET_STREAM, data=body)

    # Image sessions.

    @unary_boundary
    async def CreateImageSession(
        self, request: interactive_pb2.CreateImageSessionRequest, context: ServicerContext
    ) -> interactive_pb2.ImageSession:
        started = time.perf_counter()
        source = request.WhichOneof("source")
        caller = await self.calls.caller(context, images=1 if source in {"image", "image_url"} else 0)
        store = self._session_store()
        embedded = await self._embedded(caller, request)
        record = ImageSessionRecord(
            image_id=embedded.image_id,
            owner=caller.name,
            model=embedded.model,
            identity=embedded.identity,
            digest=embedded.digest,
            embedding=embedded.embedding,
        )
        stored = await self.calls.run_blocking(store.put, record)
        return interactive_convert.session_to_proto(stored, embedded.reused, time.perf_counter() - started)

    @unary_boundary
    async def GetImageSession(
        self, request: interactive_pb2.GetImageSessionRequest, context: ServicerContext
    ) -> interactive_pb2.ImageSession:
        caller = await self.calls.caller(context)
        record = await self._session(caller, request.image_id, "", renew=False)
        return interactive_convert.session_to_proto(record, True, 0.0)

    @unary_boundary
    async def DeleteImageSession(
        self, request: interactive_pb2.DeleteImageSessionRequest, context: ServicerContext
    ) -> interactive_pb2.DeleteImageSessionResponse:
        caller = await self.calls.caller(context)
        check_image_id(request.image_id)
        if not await self.calls.run_blocking(self._session_store().delete, caller.name, request.image_id):
            raise session_expired(request.image_id)
        return interactive_pb2.DeleteImageSessionResponse(image_id=request.image_id)

    # Prompts.

    @unary_boundary
    async def SegmentPrompts(
        self, request: segmentation_service_pb2.SegmentPromptsRequest, context: ServicerContext
    ) -> segmentation_service_pb2.SegmentPromptsResponse:
        source = request.WhichOneof("source")
        caller = await self.calls.caller(context, images=1 if source == "image" else 0)
        fast = self._options.fast_engine
        encoding = convert.mask_encoding(request.mask_format)
        common: dict[str, Any] = {
            "multimask": request.multimask_output,
            "encoding": encoding,
            "return_logits": request.return_logits,
            "fast": fast,
        }
        record = None
        if source == "image_id":
            record = await self._session(caller, request.image_id, request.model_type)
            height, width = record.embedding.original_size
            prompts = check_prompts(request.prompts, width, height, previous=record.previous)
            task = PromptTask(
                model=record.model,
                prompts=prompts,
                embedding=record.embedding,
                identity=record.identity,
                image_id=record.image_id,
                **common,
            )
        else:
            header = check_image_bytes(request.image, self._limits)
            model = self._model(caller, request.model_type)
            width, height = header.oriented_size
            prompts = check_prompts(request.prompts, width, height)
            task = PromptTask(
                model=model, prompts=prompts, image=request.image, header=header, owner=caller.name, **common
            )
        timing = InferenceTiming()
        outcome = await self.calls.infer(caller, run_prompts, task, self._models, self._embedding_cache, timing=timing)
        if record is not None:
            await self.calls.run_blocking(
                self._session_store().set_previous, caller.name, record.image_id, outcome.previous
            )
        return convert.prompts_response(outcome, timing.queued_s)

    # Served decoders.

    def _decoder(self, model: str, quantization: str, graph: str, cancel: CancelToken | None = None) -> DecoderFile:
        loaded = self._models.get(model)
        return self._decoders.get(loaded.exportable_decoder(), loaded.digest, quantization, graph)

    async def _decoder_file(
        self, request: interactive_pb2.GetDecoderRequest, context: ServicerContext
    ) -> tuple[DecoderFile, interactive_pb2.DecoderInfo]:
        caller = await self.calls.caller(context)
        model = self._model(caller, request.model_type)
        quantization = interactive_convert.decoder_quantization(request.quantization)
        graph = interactive_convert.decoder_graph(request.graph)
        loaded = await self.calls.model(caller, self._models, model)
        decoder = self._decoders.known(loaded.digest, quantization, graph)
        if decoder is None:  # exporting is inference-sized work: it takes a slot
            decoder = await self.calls.infer(caller, self._decoder, model, quantization, graph)
        return decoder, interactive_convert.decoder_info(decoder, model)

    @headers_boundary
    async def GetDecoder(
        self, request: interactive_pb2.GetDecoderRequest, context: ServicerContext
    ) -> httpbody_pb2.HttpBody:
        decoder, info = await self._decoder_file(request, context)
        data = await self.calls.run_blocking(decoder.read)
        await send_headers(context, interactive_convert.decoder_headers(info))
        return httpbody_pb2.HttpBody(content_type=OCTET_STREAM, data=data)

    @unary_boundary
    async def GetDecoderInfo(
        self, request: interactive_pb2.GetDecoderRequest, context: ServicerContext
    ) -> interactive_pb2.DecoderInfo:
        return (await self._decoder_file(request, context))[1]
