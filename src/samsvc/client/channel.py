"""Channels and requests shared by the sync and asyncio clients: TLS, the API key, message
limits matching the server's, gRPC's own retry policy (UNAVAILABLE only, with backoff), and the
request messages built from Python arguments."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor

from samsvc.client.errors import FieldViolation, InvalidArgumentError
from samsvc.client.images import ImageLike, image_bytes
from samsvc.config import DEFAULT_MAX_BATCH_BYTES, MESSAGE_OVERHEAD_BYTES
from samsvc.v1 import job_pb2, mask_pb2, segmentation_service_pb2

#: The server's default receive limit: the largest batch plus its envelope.
DEFAULT_MAX_SEND_BYTES = DEFAULT_MAX_BATCH_BYTES + MESSAGE_OVERHEAD_BYTES
#: Attempts of a call that failed with UNAVAILABLE (gRPC's retry policy), first one included.
DEFAULT_MAX_ATTEMPTS = 5
#: Seconds a dropped job stream keeps trying to resume before giving up.
DEFAULT_RESUME_FOR_S = 120.0
SERVICES = ("samsvc.v1.SegmentationService", "samsvc.v1.AdminService", "grpc.health.v1.Health")


def _short_names(enum: Any, prefix: str) -> dict[str, int]:
    """An enum's values by short lower-case name (MASK_FORMAT_PNG -> png), UNSPECIFIED left out."""
    return {
        name.removeprefix(prefix).lower(): value for name, value in enum.items() if not name.endswith("_UNSPECIFIED")
    }


MASK_FORMATS = _short_names(mask_pb2.MaskFormat, "MASK_FORMAT_")
PRIORITIES = _short_names(job_pb2.Priority, "PRIORITY_")
#: Job statuses by their short names (queued, processing, ...).
JOB_STATUSES = _short_names(job_pb2.JobStatus, "JOB_STATUS_")
#: Mask generation options accepted as keyword arguments and CLI flags: the fields of
#: SegmentOptions a caller may leave unset (proto3 `optional`), with their Python types.
_PYTHON_TYPES: dict[int, type] = {FieldDescriptor.CPPTYPE_INT32: int, FieldDescriptor.CPPTYPE_BOOL: bool}
OPTION_TYPES: dict[str, type] = {
    field.name: _PYTHON_TYPES.get(field.cpp_type, float)
    for field in segmentation_service_pb2.SegmentOptions.DESCRIPTOR.fields
    if field.has_presence and field.message_type is None
}
OPTION_NAMES = tuple(OPTION_TYPES)
#: First wait before a dropped job stream reconnects; it doubles up to DEFAULT_RESUME_MAX_DELAY_S.
DEFAULT_RESUME_DELAY_S = 0.2
DEFAULT_RESUME_MAX_DELAY_S = 5.0


@dataclass(frozen=True)
class ChannelConfig:
    """Where and how to connect."""

    target: str = "127.0.0.1:50051"
    api_key: str = ""
    tls: bool = False
    root_certificates: bytes | None = None
    timeout_s: float | None = 600.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES

    @classmethod
    def create(
        cls,
        target: str,
        api_key: str = "",
        tls: bool = False,
        ca_file: str | Path | None = None,
        timeout_s: float | None = 600.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> ChannelConfig:
        roots = Path(ca_file).read_bytes() if ca_file else None
        return cls(target, api_key, tls or roots is not None, roots, timeout_s, max_attempts)

    def options(self) -> list[tuple[str, Any]]:
        retry = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": "0.2s",
            "maxBackoff": "5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        service_config = {"methodConfig": [{"name": [{"service": s} for s in SERVICES], "retryPolicy": retry}]}
        return [
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(service_config)),
        ]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown mask generation options: {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    return {name: value for name, value in options.items() if value is not None}


def mask_format_value(name: str) -> int:
    if name not in MASK_FORMATS:
        raise InvalidArgumentError(
            code=grpc.StatusCode.INVALID_ARGUMENT,
            message=f"mask_format must be one of {', '.join(MASK_FORMATS)}",
            violations=[FieldViolation("mask_format", f"must be one of {', '.join(MASK_FORMATS)}")],
        )
    return MASK_FORMATS[name]


def segment_request(
    image: ImageLike, model: str | None, mask_format: str, visualize: bool, options: dict[str, Any]
) -> segmentation_service_pb2.SegmentRequest:
    return segmentation_service_pb2.SegmentRequest(
        image=image_bytes(image),
        model_type=model or "",
        mask_format=mask_format_value(mask_format),  # type: ignore[arg-type]
        return_visualization=visualize,
        **_options(options),
    )


def list_jobs_request(status: str | None, page_size: int, page_token: str) -> segmentation_service_pb2.ListJobsRequest:
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}")
    return segmentation_service_pb2.ListJobsRequest(
        status=JOB_STATUSES[status] if status else job_pb2.JOB_STATUS_UNSPECIFIED,  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )


def batch_request(
    images: Iterable[ImageLike],
    model: str | None,
    mask_format: str,
    visualize: bool,
    priority: str,
    request_id: str | None,
    webhook_url: str,
    options: dict[str, Any],
    export_url: str = "",
) -> segmentation_service_pb2.SubmitBatchRequest:
    """A batch request; a request_id is made when none is given, so a retried submit never
    creates a second job."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    return segmentation_service_pb2.SubmitBatchRequest(
        images=[image_bytes(image) for image in images],
        options=segmentation_service_pb2.SegmentOptions(
            model_type=model or "",
            mask_format=mask_format_value(mask_format),  # type: ignore[arg-type]
            return_visualization=visualize,
            **_options(options),
        ),
        priority=PRIORITIES[priority],  # type: ignore[arg-type]
        request_id=request_id or uuid.uuid4().hex,
        webhook_url=webhook_url,
        export_url=export_url,
    )
