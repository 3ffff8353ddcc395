"""Every bad input of a Segment request gets INVALID_ARGUMENT with a BadRequest naming the
field and an ErrorInfo reason, before any model work; the server keeps serving."""

from __future__ import annotations

import io
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene

GOOD = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with a tiny compressed body of zeros (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    body = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def assert_invalid(server: ServerThread, request: pb.SegmentRequest, field: str, reason: str) -> str:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(request)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status, details = rich_status(error)
    assert details["ErrorInfo"].reason == reason
    assert details["ErrorInfo"].domain == "samsvc"
    fields = [v.field for v in details["BadRequest"].field_violations]
    assert field in fields, fields
    assert field in status.message
    assert elapsed < 5, "refused before any model work"
    return status.message


@pytest.fixture(autouse=True)
def still_serving(server: ServerThread):
    yield
    response = server.stub.Segment(pb.SegmentRequest(image=encode(scene(64, 48)), **GOOD))
    assert response.image_width == 64


def test_empty_image(server: ServerThread) -> None:
    assert_invalid(server, pb.SegmentRequest(image=b"", **GOOD), "image", "IMAGE_MISSING")


def test_image_over_the_byte_limit(server: ServerThread) -> None:
    limit = server.settings.max_image_bytes
    data = encode(scene(64, 48)) + b"\x00" * limit
    message = assert_invalid(server, pb.SegmentRequest(image=data, **GOOD), "image", "IMAGE_TOO_LARGE")
    assert str(limit) in message


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + b"\x00" * 64,
        encode(scene(32, 32), "BMP"),
        encode(scene(32, 32), "TIFF"),
        b"this is not an image at all",
        b"%PDF-1.7\n",
    ],
    ids=["gif", "bmp", "tiff", "text", "pdf"],
)
def test_unsupported_formats_by_content(server: ServerThread, data: bytes) -> None:
    assert_invalid(server, pb.SegmentRequest(image=data, **GOOD), "image", "UNSUPPORTED_IMAGE_FORMAT")


def test_too_many_pixels_is_refused_from_the_header(server: ServerThread) -> None:
    data = encode(np.zeros((8, server.settings.max_image_side + 1, 3), np.uint8))
    assert_invalid(server, pb.SegmentRequest(image=data, **GOOD), "image", "IMAGE_TOO_LARGE")


def test_decompression_bomb_is_never_decoded(server: ServerThread) -> None:
    bomb = png_header_only(40_000, 40_000)  # 1.6 G pixels, about 200 KB on the wire
    assert len(bomb) < server.settings.max_image_bytes
    message = assert_invalid(server, pb.SegmentRequest(image=bomb, **GOOD), "image", "IMAGE_TOO_LARGE")
    assert str(server.settings.max_image_side) in message


def test_truncated_jpeg(server: ServerThread) -> None:
    data = encode(scene(128, 96), "JPEG", quality=95)
    assert_invalid(server, pb.SegmentRequest(image=data[: len(data) // 2], **GOOD), "image", "IMAGE_CORRUPT")


def test_corrupt_png_body(server: ServerThread) -> None:
    data = bytearray(encode(scene(64, 48)))
    data[60:120] = b"\xff" * 60
    assert_invalid(server, pb.SegmentRequest(image=bytes(data), **GOOD), "image", "IMAGE_CORRUPT")


def test_corrupt_header(server: ServerThread) -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    assert_invalid(server, pb.SegmentRequest(image=data, **GOOD), "image", "IMAGE_CORRUPT")


@pytest.mark.parametrize(
    "params,field",
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_side": 129}, "points_per_side"),
        ({"points_per_side": -4}, "points_per_side"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"),
        ({"pred_iou_thresh": float("inf")}, "pred_iou_thresh"),
        ({"pred_iou_thresh": -0.1}, "pred_iou_thresh"),
        ({"stability_score_thresh": 1.5}, "stability_score_thresh"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"box_nms_thresh": 2.0}, "box_nms_thresh"),
        ({"crop_n_layers": 4}, "crop_n_layers"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
        ({"min_mask_region_area": -1}, "min_mask_region_area"),
        ({"stability_score_offset": -1.0}, "stability_score_offset"),
    ],
)
def test_parameters_out_of_range(server: ServerThread, params: dict, field: str) -> None:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), **{**GOOD, **params})
    assert_invalid(server, request, field, "INVALID_PARAMETER")


def test_every_bad_parameter_is_named_at_once(server: ServerThread) -> None:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), points_per_side=0, pred_iou_thresh=7, crop_n_layers=9)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(request)
    _, details = rich_status(caught.value)
    named = {v.field for v in details["BadRequest"].field_violations}
    assert named == {"points_per_side", "pred_iou_thresh", "crop_n_layers"}


def test_unknown_model(server: ServerThread) -> None:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), model_type="vit_x", **GOOD)
    message = assert_invalid(server, request, "model_type", "UNKNOWN_MODEL")
    assert "vit_h" in message and "tiny" in message


def test_unknown_mask_format(server: ServerThread) -> None:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), mask_format=42, **GOOD)  # type: ignore[arg-type]
    assert_invalid(server, request, "mask_format", "INVALID_PARAMETER")


def test_absent_weights_name_the_download_command(server: ServerThread) -> None:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), model_type="vit_b", **GOOD)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status, details = rich_status(caught.value)
    assert "samsvc models download vit_b" in status.message
    assert details["ErrorInfo"].reason == "MODEL_WEIGHTS_MISSING"
    assert details["ErrorInfo"].metadata["model"] == "vit_b"


@pytest.mark.parametrize("mode", ["L", "P", "PA", "RGBA", "LA", "I;16", "CMYK", "1"])
def test_every_pixel_mode_becomes_rgb(server: ServerThread, mode: str) -> None:
    rgb = Image.fromarray(scene(64, 48))
    if mode == "I;16":
        picture = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
        assert picture.mode == "I;16"
    elif mode == "PA":
        picture = rgb.convert("P")
        picture.info["transparency"] = 0
    else:
        picture = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    response = server.stub.Segment(pb.SegmentRequest(image=encode(picture, fmt), **GOOD))
    assert (response.image_width, response.image_height) == (64, 48)


def test_message_limit_fits_the_largest_allowed_image(server: ServerThread) -> None:
    """A request at exactly MAX_IMAGE_BYTES reaches validation (no transport-level refusal)."""
    limit = server.settings.max_image_bytes
    padded = encode(scene(64, 48))
    padded += b"\x00" * (limit - len(padded))
    with Image.open(io.BytesIO(padded)) as picture:  # trailing bytes after IEND are ignored
        assert picture.size == (64, 48)
    response = server.stub.Segment(pb.SegmentRequest(image=padded, **GOOD))
    assert response.image_width == 64
