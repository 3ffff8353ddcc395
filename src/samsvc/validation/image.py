"""Image checks and decoding.

Order matters: the size and format are checked on the raw bytes, the dimensions are read from
the header, and only then is anything decoded, so a decompression bomb is refused before a
single pixel is allocated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from samsvc.errors import InvalidArgument

#: Formats accepted, by the name Pillow gives them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_side: int


#: EXIF orientations that turn the image a quarter (width and height swap once applied).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before decoding."""

    format: str
    width: int
    height: int
    #: The EXIF orientation tag (1: as stored), applied when the image is decoded.
    orientation: int = 1

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(width, height) of the decoded image, EXIF orientation applied."""
        if self.orientation in _QUARTER_TURNS:
            return self.height, self.width
        return self.width, self.height


def sniff_format(data: bytes) -> str | None:
    """The format from the file's magic bytes, or None when it is not one we accept."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _bad(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, description, reason=reason)


def too_large(field: str, max_bytes: int, size: int | None = None) -> InvalidArgument:
    """An image over MAX_IMAGE_BYTES (`size` unknown when a download passed the limit)."""
    said = f"is {size} bytes" if size is not None else f"is larger than {max_bytes} bytes"
    return _bad(field, f"{said}; the limit is {max_bytes} bytes", "IMAGE_TOO_LARGE")


def check_image_bytes(data: bytes, limits: ImageLimits, field: str = "image") -> ImageHeader:
    """Check size, format and dimensions without decoding pixels."""
    if not data:
        raise _bad(field, "is empty: send the bytes of a JPEG, PNG or WEBP image", "IMAGE_MISSING")
    if len(data) > limits.max_bytes:
        raise too_large(field, limits.max_bytes, len(data))
    sniffed = sniff_format(data)
    if sniffed is None:
        raise _bad(field, "is not a JPEG, PNG or WEBP image", "UNSUPPORTED_IMAGE_FORMAT")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[sniffed]) as im:
                width, height = im.size
                tag = im.getexif().get(0x0112, 1)
                orientation = tag if isinstance(tag, int) else 1
    except Image.DecompressionBombError:
        raise _bad(
            field, f"is larger than {limits.max_side} pixels a side (refused before decoding)", "IMAGE_TOO_LARGE"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _bad(field, f"has a corrupt {sniffed} header ({exc})", "IMAGE_CORRUPT") from exc
    if width <= 0 or height <= 0:
        raise _bad(field, f"has invalid dimensions {width}x{height}", "IMAGE_CORRUPT")
    if width > limits.max_side or height > limits.max_side:
        raise _bad(
            field,
            f"is {width}x{height} pixels; the limit is {limits.max_side} pixels a side",
            "IMAGE_TOO_LARGE",
        )
    return ImageHeader(format=sniffed, width=width, height=height, orientation=orientation)


def decode_image(data: bytes, header: ImageHeader, field: str = "image") -> npt.NDArray[np.uint8]:
    """Decode checked bytes to an HxWx3 uint8 RGB array, EXIF orientation applied.

    Grayscale, palette, alpha (composited over white), 16-bit and CMYK images become RGB.
    Truncated or corrupt data raises InvalidArgument.
    """
    try:
        with warnings.catch_warnings():
            # The dimensions were checked against our own limit from the header already.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[header.format]) as im:
                im.load()
                oriented = ImageOps.exif_transpose(im)
                return _to_rgb(oriented)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad(field, f"could not be decoded as {header.format}: {exc}", "IMAGE_CORRUPT") from exc


def _to_rgb(im: Image.Image) -> npt.NDArray[np.uint8]:
    if im.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        im = _high_depth_to_l(im)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in {"LA", "La", "PA"}:
        im = im.convert("RGBA")
    if im.mode in {"RGBA", "RGBa"}:
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer / float) grayscale scaled to 8 bits over its full range."""
    values = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
    if im.mode == "F":
        top = max(float(values.max(initial=1.0)), 1.0)
    scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def load_image(data: bytes, limits: ImageLimits, field: str = "image") -> npt.NDArray[np.uint8]:
    """Check then decode: the whole path from request bytes to an RGB array."""
    header = check_image_bytes(data, limits, field)
    return decode_image(data, header, field)
