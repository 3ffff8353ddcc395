"""Binary masks to and from their wire encodings.

- PNG: 1-bit grayscale PNG of the full image size.
- RLE: COCO compressed run-length encoding, exactly as pycocotools writes it.
- Polygons: outer contours of each connected region (OpenCV), COCO style flat [x0, y0, ...].
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools import mask as coco_mask

BoolMask = npt.NDArray[np.bool_]


class MaskEncoding(Enum):
    PNG = "png"
    RLE = "rle"
    POLYGONS = "polygons"


@dataclass(frozen=True)
class Rle:
    """COCO RLE: size is [height, width]; counts is pycocotools' compressed string."""

    size: tuple[int, int]
    counts: str


#: One polygon, flat [x0, y0, x1, y1, ...].
Polygon = list[float]


#: zlib level of mask PNGs: about PIL's default size in less than half its time.
PNG_COMPRESSION = 3


def encode_png(mask: BoolMask) -> bytes:
    """A 1-bit grayscale PNG (OpenCV's bilevel writer)."""
    ok, data = cv2.imencode(
        ".png",
        np.ascontiguousarray(mask, dtype=bool).view(np.uint8),
        [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION],
    )
    if not ok:
        raise ValueError(f"cannot encode a {mask.shape} mask as PNG")
    return bytes(data)


def decode_png(data: bytes) -> BoolMask:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8) > 0


def encode_rle(mask: BoolMask) -> Rle:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    height, width = (int(v) for v in encoded["size"])
    counts = encoded["counts"]
    return Rle(size=(height, width), counts=counts.decode("ascii") if isinstance(counts, bytes) else str(counts))


def encode_rle_runs(size: tuple[int, int], counts: list[int]) -> Rle:
    """COCO RLE from uncompressed column-major run lengths (starting with zeros), without
    expanding them to pixels; the same bytes as `encode_rle` of the mask they describe."""
    height, width = size
    encoded = coco_mask.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width)
    counts_text = encoded["counts"]
    return Rle(
        size=(height, width), counts=counts_text.decode("ascii") if isinstance(counts_text, bytes) else counts_text
    )


def decode_rle(rle: Rle) -> BoolMask:
    decoded = coco_mask.decode({"size": list(rle.size), "counts": rle.counts.encode("ascii")})
    return np.asarray(decoded, dtype=bool)


def encode_polygons(mask: BoolMask) -> list[Polygon]:
    """Outer contours, largest region first; regions too thin to be a polygon give a 2-point outline."""
    contours, _ = cv2.findContours(mask.astype(np.uint8, copy=False), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ordered = sorted(contours, key=lambda c: cv2.contourArea(c), reverse=True)
    polygons: list[Polygon] = []
    for contour in ordered:
        points = contour.reshape(-1, 2).astype(np.float32)
        if len(points) < 3:
            # COCO needs at least three vertices: repeat the last one for lines and single pixels.
            points = np.concatenate([points, np.repeat(points[-1:], 3 - len(points), axis=0)])
        polygons.append(points.reshape(-1).tolist())
    return polygons


def decode_polygons(polygons: list[Polygon], height: int, width: int) -> BoolMask:
    """Rasterise polygons (edges included) back to a mask."""
    out = np.zeros((height, width), dtype=np.uint8)
    for flat in polygons:
        points = np.asarray(flat, dtype=np.float32).reshape(-1, 2).round().astype(np.int32)
        cv2.fillPoly(out, [points], 1)
        cv2.polylines(out, [points], isClosed=True, color=1, thickness=1)
    return out.astype(bool)
