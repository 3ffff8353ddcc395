"""Protobuf messages to domain values and back. No judgement of input happens here beyond
reading which optional fields were set; samsvc.validation decides what is acceptable."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from samsvc.encoding.masks import MaskEncoding, Rle
from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.costs import WorkCost
from samsvc.engine.loader import ModelState
from samsvc.engine.registry import ModelSource
from samsvc.inference.interactive import PromptsOutcome
from samsvc.infra.logs import redact_url
from samsvc.jobs.export import manifest_url
from samsvc.jobs.queues import Priority
from samsvc.jobs.records import ImageResult, JobRecord, JobStatus, JobType, StoredMask
from samsvc.server.statuses import error_by_kind, to_status
from samsvc.v1 import cost_pb2, job_pb2, mask_pb2, model_pb2, segmentation_service_pb2
from samsvc.validation.enums import known_value

#: Fields of SegmentRequest that carry AmgOptions, by the same names.
AMG_FIELDS = tuple(AmgOptions.__dataclass_fields__)

_ENCODINGS: dict[int, MaskEncoding] = {
    mask_pb2.MASK_FORMAT_UNSPECIFIED: MaskEncoding.PNG,
    mask_pb2.MASK_FORMAT_PNG: MaskEncoding.PNG,
    mask_pb2.MASK_FORMAT_RLE: MaskEncoding.RLE,
    mask_pb2.MASK_FORMAT_POLYGONS: MaskEncoding.POLYGONS,
}
_FORMATS = {
    MaskEncoding.PNG: mask_pb2.MASK_FORMAT_PNG,
    MaskEncoding.RLE: mask_pb2.MASK_FORMAT_RLE,
    MaskEncoding.POLYGONS: mask_pb2.MASK_FORMAT_POLYGONS,
}
_SOURCES = {
    ModelSource.BUILTIN: model_pb2.MODEL_SOURCE_BUILTIN,
    ModelSource.REGISTERED: model_pb2.MODEL_SOURCE_REGISTERED,
}


def amg_fields_set(message: Any) -> dict[str, Any]:
    """The AMG parameters the caller set explicitly (proto3 `optional` presence)."""
    return {name: getattr(message, name) for name in AMG_FIELDS if message.HasField(name)}


def upload_to_segment_request(
    upload: segmentation_service_pb2.SegmentUploadRequest,
) -> segmentation_service_pb2.SegmentRequest:
    """The SegmentRequest a raw upload stands for: its body is the image, its fields the same."""
    request = segmentation_service_pb2.SegmentRequest(image=upload.http_body.data)
    for field in segmentation_service_pb2.SegmentRequest.DESCRIPTOR.fields:
        if field.name in {"image", "image_url"}:  # the upload's body is the image
            continue
        source: Any = upload
        if not field.has_presence or source.HasField(field.name):
            setattr(request, field.name, getattr(upload, field.name))
    return request


def mask_encoding(value: int, field: str = "mask_format") -> MaskEncoding:
    encoding: MaskEncoding = known_value(_ENCODINGS, value, field)
    return encoding


def stored_mask_to_proto(record: StoredMask) -> mask_pb2.Mask:
    message = mask_pb2.Mask(
        area=record.area,
        bbox=list(record.bbox),
        predicted_iou=record.predicted_iou,
        stability_score=record.stability_score,
        point_coords=[mask_pb2.Point(x=x, y=y) for x, y in record.point_coords],
        crop_box=list(record.crop_box),
    )
    _set_pixels(message, record.data)
    return message


def _set_pixels(message: mask_pb2.Mask, data: bytes | Rle | list[list[float]]) -> None:
    if isinstance(data, bytes):
        message.segmentation = data
    elif isinstance(data, Rle):
        message.rle.CopyFrom(mask_pb2.CocoRle(size=list(data.size), counts=data.counts))
    else:
        message.polygons.CopyFrom(mask_pb2.Polygons(polygons=[mask_pb2.Polygon(points=p) for p in data]))


def segment_response(
    job_id: str,
    result: ImageResult,
    model: str,
    encoding: MaskEncoding,
    processing_time_s: float,
    cache_hit: bool = False,
    queued_s: float = 0.0,
) -> segmentation_service_pb2.SegmentResponse:
    """The answer; its cost is the result's work, none on a cache hit."""
    cost = WorkCost(0, 0) if cache_hit else WorkCost(result.encoder_passes, result.prompts, processing_time_s, queued_s)
    return segmentation_service_pb2.SegmentResponse(
        job_id=job_id,
        masks=[stored_mask_to_proto(m) for m in result.masks],
        visualization=result.visualization,
        processing_time=processing_time_s,
        model_type=model,
        mask_format=_FORMATS[encoding],
        image_width=result.width,
        image_height=result.height,
        cache_hit=cache_hit,
        cost=work_cost_to_proto(cost),
    )


def prompts_response(outcome: PromptsOutcome, queued_s: float = 0.0) -> segmentation_service_pb2.SegmentPromptsResponse:
    results = []
    for masks, logits in outcome.results:
        protos = []
        for m in masks:
            message = mask_pb2.Mask(area=m.area, bbox=list(m.bbox), predicted_iou=m.score)
            _set_pixels(message, m.data)
            protos.append(message)
        results.append(segmentation_service_pb2.PromptResult(masks=protos, low_res_logits=logits))
    return segmentation_service_pb2.SegmentPromptsResponse(
        results=results,
        embedding_cache_hit=outcome.embedding_cache_hit,
        processing_time=outcome.processing_time_s,
        model_type=outcome.model,
        image_width=outcome.width,
        image_height=outcome.height,
        cost=work_cost_to_proto(
            WorkCost(0 if outcome.embedding_cache_hit else 1, len(outcome.results), outcome.processing_time_s, queued_s)
        ),
    )


def work_cost_to_proto(work: WorkCost) -> cost_pb2.WorkCost:
    return cost_pb2.WorkCost(
        encoder_passes=work.encoder_passes,
        prompts_decoded=work.prompts,
        compute_seconds=work.compute_s,
        queued_seconds=work.queued_s,
    )


def model_cost_to_proto(state: ModelState) -> cost_pb2.ModelCost:
    """The model's figures and what a Segment call at its defaults costs; unmeasured: the
    default grid's points only."""
    if state.cost is None:
        return cost_pb2.ModelCost(default_grid_points=state.default_work.prompts)
    return cost_pb2.ModelCost(
        measured=True,
        encode_seconds=state.cost.encode_s,
        grid_point_seconds=state.cost.point_s,
        default_segment_seconds=state.default_work.compute_s,
        default_grid_points=state.default_work.prompts,
    )


_FAMILIES = {"sam": model_pb2.MODEL_FAMILY_SAM, "sam2": model_pb2.MODEL_FAMILY_SAM2}


def model_to_proto(state: ModelState, *, operator: bool = False) -> model_pb2.Model:
    """A model as a caller sees it: its checkpoint by file name, and where it downloads from only
    for built-ins (Meta's public addresses). `operator`: the admin's view, with the checkpoint's
    path and any registered URL (without credentials or query)."""
    spec = state.spec
    if operator:
        url, checkpoint = redact_url(spec.url) if spec.url else "", str(spec.path)
    else:
        url, checkpoint = (spec.url or "") if spec.source is ModelSource.BUILTIN else "", spec.path.name
    arch = spec.architecture
    architecture = None
    if arch is not None:
        architecture = model_pb2.ModelArchitecture(
            encoder_embed_dim=arch.encoder_embed_dim,
            encoder_depth=arch.encoder_depth,
            encoder_num_heads=arch.encoder_num_heads,
            encoder_global_attn_indexes=list(arch.encoder_global_attn_indexes),
        )
    return model_pb2.Model(
        name=spec.name,
        source=_SOURCES[spec.source],
        architecture=architecture,
        family=_FAMILIES[spec.family],
        config=spec.config or "",
        url=url,
        checkpoint=checkpoint,
        size_bytes=spec.size_bytes or 0,
        sha256=spec.sha256 or "",
        weights_present=state.weights_present,
        loaded=state.loaded,
        loadable=not state.problem,
        load_problem=state.problem,
        device=state.device,
        load_time_seconds=state.load_time_s,
        cost=model_cost_to_proto(state),
        encoder=state.encoder,
    )


# --- jobs -----------------------------------------------------------------------------------

_JOB_STATUSES = {
    JobStatus.QUEUED: job_pb2.JOB_STATUS_QUEUED,
    JobStatus.PROCESSING: job_pb2.JOB_STATUS_PROCESSING,
    JobStatus.COMPLETED: job_pb2.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: job_pb2.JOB_STATUS_FAILED,
    JobStatus.CANCELLED: job_pb2.JOB_STATUS_CANCELLED,
}
_JOB_STATUS_FILTERS: dict[int, JobStatus | None] = {job_pb2.JOB_STATUS_UNSPECIFIED: None} | {
    v: k for k, v in _JOB_STATUSES.items()
}
_JOB_TYPES = {
    JobType.SINGLE: job_pb2.JOB_TYPE_SINGLE,
    JobType.BATCH: job_pb2.JOB_TYPE_BATCH,
    JobType.EMBEDDING: job_pb2.JOB_TYPE_EMBEDDING,
}
_JOB_TYPE_FILTERS: dict[int, JobType | None] = {job_pb2.JOB_TYPE_UNSPECIFIED: None} | {
    v: k for k, v in _JOB_TYPES.items()
}
_PRIORITIES = {
    Priority.LOW: job_pb2.PRIORITY_LOW,
    Priority.NORMAL: job_pb2.PRIORITY_NORMAL,
    Priority.HIGH: job_pb2.PRIORITY_HIGH,
}
_PRIORITY_VALUES: dict[int, Priority] = {int(job_pb2.PRIORITY_UNSPECIFIED): Priority.NORMAL} | {
    int(v): k for k, v in _PRIORITIES.items()
}


def priority(value: int, field: str = "priority") -> Priority:
    result: Priority = known_value(_PRIORITY_VALUES, value, field)
    return result


def status_filter(value: int, field: str = "status") -> JobStatus | None:
    result: JobStatus | None = known_value(_JOB_STATUS_FILTERS, value, field)
    return result


def type_filter(value: int, field: str = "job_type") -> JobType | None:
    result: JobType | None = known_value(_JOB_TYPE_FILTERS, value, field)
    return result


def _timestamp(ms: int | None) -> timestamp_pb2.Timestamp | None:
    if ms is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def job_to_proto(job: JobRecord, estimated_time: int = 0) -> job_pb2.Job:
    message = job_pb2.Job(
        job_id=job.job_id,
        job_type=_JOB_TYPES[job.job_type],
        status=_JOB_STATUSES[job.status],
        total_images=job.total_images,
        processed_images=job.processed_images,
        failed_images=job.failed_images,
        processing_time=job.processing_time_s(),
        error_message=job.error_message,
        model_type=job.spec.model,
        priority=_PRIORITIES[job.priority],
        estimated_time=estimated_time,
        webhook_url=job.webhook_url,
        owner=job.owner,
        export_url=job.spec.export_url,
        export_manifest=manifest_url(job.spec.export_url, job.job_id),
    )
    for name, ms in (
        ("created_at", job.created_at_ms),
        ("started_at", job.started_at_ms),
        ("completed_at", job.completed_at_ms),
    ):
        stamp = _timestamp(ms)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def image_result_to_proto(result: ImageResult) -> job_pb2.ImageResult:
    message = job_pb2.ImageResult(
        index=result.index,
        masks=[stored_mask_to_proto(m) for m in result.masks],
        processing_time=result.processing_time_s,
        visualization=result.visualization,
        image_width=result.width,
        image_height=result.height,
        image_id=result.image_id,
        exported_objects=list(result.exported),
        cost=work_cost_to_proto(WorkCost(result.encoder_passes, result.prompts, result.processing_time_s)),
    )
    for field, error in (("error", result.error), ("export_error", result.export_error)):
        if error is not None:
            status = to_status(error_by_kind(error.kind, error.message, error.reason, list(error.violations)))
            getattr(message, field).CopyFrom(status)
    return message


def job_spec(message: Any, default_model: str) -> tuple[str, dict[str, Any], MaskEncoding, bool]:
    """(model, AMG options the caller set, encoding, visualize) of a SegmentOptions message."""
    return (
        message.model_type or default_model,
        amg_fields_set(message),
        mask_encoding(message.mask_format, "options.mask_format"),
        message.return_visualization,
    )
