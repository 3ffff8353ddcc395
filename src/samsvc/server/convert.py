"""Protobuf messages to domain values and back. No judgement of input happens here beyond
reading which optional fields were set; samsvc.validation decides what is acceptable."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from samsvc.encoding.masks import MaskEncoding, Rle
from samsvc.engine.amg import AmgOptions
from samsvc.engine.loader import ModelState
from samsvc.engine.registry import ModelSource
from samsvc.errors import InvalidArgument
from samsvc.pipeline import EncodedMask, SegmentOutcome
from samsvc.v1 import mask_pb2, model_pb2, segmentation_service_pb2

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


def mask_encoding(value: int, field: str = "mask_format") -> MaskEncoding:
    encoding: MaskEncoding | None = _ENCODINGS.get(value)
    if encoding is None:
        raise InvalidArgument.for_field(field, f"unknown mask format {value}", reason="INVALID_PARAMETER")
    return encoding


def mask_to_proto(encoded: EncodedMask) -> mask_pb2.Mask:
    record = encoded.record
    message = mask_pb2.Mask(
        area=record.area,
        bbox=list(record.bbox),
        predicted_iou=record.predicted_iou,
        stability_score=record.stability_score,
        point_coords=[mask_pb2.Point(x=x, y=y) for x, y in record.point_coords],
        crop_box=list(record.crop_box),
    )
    data = encoded.data
    if isinstance(data, bytes):
        message.segmentation = data
    elif isinstance(data, Rle):
        message.rle.CopyFrom(mask_pb2.CocoRle(size=list(data.size), counts=data.counts))
    else:
        message.polygons.CopyFrom(mask_pb2.Polygons(polygons=[mask_pb2.Polygon(points=p) for p in data]))
    return message


def segment_response(
    job_id: str, outcome: SegmentOutcome, encoding: MaskEncoding
) -> segmentation_service_pb2.SegmentResponse:
    return segmentation_service_pb2.SegmentResponse(
        job_id=job_id,
        masks=[mask_to_proto(m) for m in outcome.masks],
        visualization=outcome.visualization or b"",
        processing_time=outcome.processing_time_s,
        model_type=outcome.model,
        mask_format=_FORMATS[encoding],
        image_width=outcome.width,
        image_height=outcome.height,
    )


def model_to_proto(state: ModelState) -> model_pb2.Model:
    spec = state.spec
    arch = spec.architecture
    return model_pb2.Model(
        name=spec.name,
        source=_SOURCES[spec.source],
        architecture=model_pb2.ModelArchitecture(
            encoder_embed_dim=arch.encoder_embed_dim,
            encoder_depth=arch.encoder_depth,
            encoder_num_heads=arch.encoder_num_heads,
            encoder_global_attn_indexes=list(arch.encoder_global_attn_indexes),
        ),
        url=spec.url or "",
        checkpoint=spec.path.name if spec.url else str(spec.path),
        size_bytes=spec.size_bytes or 0,
        sha256=spec.sha256 or "",
        weights_present=state.weights_present,
        loaded=state.loaded,
        device=state.device,
        load_time_seconds=state.load_time_s,
    )


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode("ascii")


def decode_page_token(token: str, field: str = "page_token") -> int:
    """The offset a page token stands for; InvalidArgument for tokens we did not issue."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if not text.startswith("o:"):
            raise ValueError(text)
        offset = int(text[2:])
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidArgument.for_field(
            field, "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        ) from None
    if offset < 0:
        raise InvalidArgument.for_field(field, "is not a token this server issued", reason="INVALID_PAGE_TOKEN")
    return offset
