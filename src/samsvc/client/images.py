"""Images from whatever a caller has: a path, bytes, a PIL image or a numpy array."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image

#: What the client accepts as an image.
ImageLike: TypeAlias = "str | Path | bytes | bytearray | memoryview | Image.Image | npt.NDArray[np.generic]"


def image_bytes(image: ImageLike) -> bytes:
    """Encoded image bytes to send: files and bytes as they are (the server checks them), PIL
    images and arrays (HxW, HxWx3 or HxWx4, uint8) as PNG."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, Image.Image):
        return _png(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"an image array must be uint8, not {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise TypeError(f"an image array must be HxW, HxWx3 or HxWx4, not {image.shape}")
        return _png(Image.fromarray(image))
    raise TypeError(f"cannot send {type(image).__name__} as an image: give a path, bytes, a PIL image or an array")


def image_array(image: ImageLike) -> npt.NDArray[np.uint8]:
    """The image as HxWx3 uint8 RGB (for overlays), with its EXIF orientation applied."""
    from PIL import ImageOps

    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(image, dtype=np.uint8)
    with Image.open(io.BytesIO(image_bytes(image))) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"), dtype=np.uint8)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
