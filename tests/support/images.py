"""Synthetic images for the tests: a scene of flat shapes, and encoding to a format's bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def scene(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """An RGB picture of a few flat shapes on a gradient, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], -1)
    for _ in range(4):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(min(width, height) // 8, min(width, height) // 3))
        colour = rng.integers(0, 256, size=3)
        if rng.random() < 0.5:
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = colour
        else:
            image[(abs(xx - cx) < radius) & (abs(yy - cy) < radius // 2)] = colour
    noisy = image + rng.normal(0, 4, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = io.BytesIO()
    picture.save(out, format=fmt, **params)
    return out.getvalue()
