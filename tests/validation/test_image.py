from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samsvc.errors import InvalidArgument
from samsvc.validation.image import ImageLimits, check_image_bytes, decode_image, load_image, sniff_format
from tests.support import encode, scene

LIMITS = ImageLimits(max_bytes=1 << 20, max_side=512)


def test_sniffing_reads_content_not_names() -> None:
    assert sniff_format(encode(scene(8, 8), "PNG")) == "PNG"
    assert sniff_format(encode(scene(8, 8), "JPEG")) == "JPEG"
    assert sniff_format(encode(scene(8, 8), "WEBP")) == "WEBP"
    assert sniff_format(encode(scene(8, 8), "GIF")) is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVE") is None


def test_header_check_reads_dimensions_without_decoding() -> None:
    header = check_image_bytes(encode(scene(40, 30), "JPEG"), LIMITS)
    assert (header.format, header.width, header.height) == ("JPEG", 40, 30)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    rgb = load_image(encode(Image.fromarray(ramp)), LIMITS)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_transparency_is_composited_over_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)
    rgb = load_image(encode(Image.fromarray(rgba, "RGBA")), LIMITS)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[3, 3]) == (255, 255, 255)


def test_exif_rotation_changes_the_shape() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    rgb = load_image(encode(Image.fromarray(scene(40, 20)), "JPEG", exif=exif.tobytes()), LIMITS)
    assert rgb.shape == (40, 20, 3)


def test_decode_refuses_truncated_data() -> None:
    data = encode(scene(64, 64), "PNG")
    header = check_image_bytes(data, LIMITS)
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data[:-40], header)
    assert caught.value.reason == "IMAGE_CORRUPT"
    assert caught.value.violations[0].field == "image"


def test_field_name_is_carried(tmp_path: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_image_bytes(b"", LIMITS, field="images[3]")
    assert caught.value.violations[0].field == "images[3]"
