"""Label Studio's brush RLE: how its BrushLabels results carry a mask (`value.rle`, a list of
byte values).

The mask is laid out as an RGBA image (each pixel's value repeated over 4 channels, 255 inside,
0 outside), flattened row by row, and packed with thi.ng's rle-pack format, which Label
Studio's editor decodes: a 32-bit value count, a 5-bit word size minus one (8 bits), four 4-bit
run-length field sizes minus one (3, 4, 8, 16 bits), then per run a repeat flag, a 2-bit field
size index, the run length minus one in that many bits and the 8-bit value; the bits are
packed most significant first into bytes. Written here as Label Studio's own encoder writes it
(its padding included), so both produce the same bytes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Bits of a value, and the run-length field sizes.
WORD_BITS = 8
RUN_FIELDS = (3, 4, 8, 16)
#: Channels per pixel (RGBA).
CHANNELS = 4
_LONGEST = 1 << RUN_FIELDS[-1]


def _run(length: int, value: int) -> str:
    """One run's bits: a repeat with the smallest length field that holds it; longer than 2^16,
    whole 2^16 repeats first and the rest in the 16-bit field (as Label Studio splits them)."""
    if length == 1:
        return f"000000{value:08b}"  # a literal block of one value
    parts = []
    while length > _LONGEST:
        parts.append(f"111{_LONGEST - 1:016b}{value:08b}")
        length -= _LONGEST
    index = len(RUN_FIELDS) - 1 if parts else next(i for i, b in enumerate(RUN_FIELDS) if length <= 1 << b)
    parts.append(f"1{index:02b}{length - 1:0{RUN_FIELDS[index]}b}{value:08b}")
    return "".join(parts)


def encode_brush_rle(mask: npt.NDArray[np.bool_]) -> list[int]:
    """The `rle` list of a BrushLabels value for a boolean H x W mask."""
    flat = mask.reshape(-1)
    count = flat.size * CHANNELS
    if flat.size:
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], changes))
        lengths = np.diff(np.concatenate((starts, [flat.size]))) * CHANNELS
        values = np.where(flat[starts], 255, 0)
    else:
        lengths = values = np.zeros(0, dtype=np.int64)
    header = f"{count:032b}{WORD_BITS - 1:05b}" + "".join(f"{bits - 1:04b}" for bits in RUN_FIELDS)
    body = "".join(_run(int(length), int(value)) for length, value in zip(lengths, values, strict=True))
    bits = header + body
    bits += "0" * (8 - len(bits) % 8)  # Label Studio pads a whole zero byte when already aligned
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def decode_brush_rle(rle: list[int], height: int, width: int) -> npt.NDArray[np.bool_]:
    """The mask of a BrushLabels `rle` (its alpha channel above 0), as Label Studio's editor
    reads the format."""
    bits = "".join(f"{byte:08b}" for byte in rle)
    position = 0

    def read(size: int) -> int:
        nonlocal position
        value = int(bits[position : position + size], 2)
        position += size
        return value

    count = read(32)
    word = read(5) + 1
    fields = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeat = read(1)
        end = i + 1 + read(fields[read(2)])
        if repeat:
            out[i:end] = read(word)
            i = end
        else:
            while i < end:
                out[i] = read(word)
                i += 1
    return out.reshape(height, width, CHANNELS)[:, :, 3] > 0
