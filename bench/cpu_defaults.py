"""The CPU defaults the engine's docstrings justify with a figure, each swept over its range on
this machine, side by side in one run, so the curve (and whether the default still sits at its
bottom) is measured rather than remembered:

- DEFAULT_CPU_UPSAMPLE_GROUP (samsvc.engine.sam.fast_amg): masks upsampled to the image at a time;
- DEFAULT_CPU_PROMPT_BATCH (fast_amg): prompts per decoder pass of the automatic generator;
- DEFAULT_UPSCALE_CHUNK (samsvc.engine.sam.fast_decoder): image tokens upscaled at a time;
- DEFAULT_LOGITS_BUDGET (samsvc.engine.sam.fast_encoder): attention logits computed per slice.

Each row is the median of `--rounds` timings, the values of one constant alternating within each
round, and its ratio to the default's time (below 1.00: faster than the default). The outputs do
not depend on any of them (each docstring says why; the engine's tests check it), so only time
is compared. Random weights: time does not depend on them. Caches play no part (nothing is
cached across calls here).

    uv run python -m bench.cpu_defaults [--rounds 3] [--only prompt_batch] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, Architecture
from samsvc.engine.sam import fast_amg, fast_decoder, fast_encoder
from samsvc.engine.sam.family import build_sam

#: Constant -> (module, attribute, values swept).
SWEEPS: dict[str, tuple[Any, str, list[int]]] = {
    "upsample_group": (fast_amg, "DEFAULT_CPU_UPSAMPLE_GROUP", [1, 2, 4, 8, 16, 64]),
    "prompt_batch": (fast_amg, "DEFAULT_CPU_PROMPT_BATCH", [1, 2, 4, 8, 16, 64]),
    "upscale_chunk": (fast_decoder, "DEFAULT_UPSCALE_CHUNK", [128, 256, 512, 1024, 2048, 4096]),
    "logits_budget": (fast_encoder, "DEFAULT_LOGITS_BUDGET", [1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 22, 1 << 24]),
}


@contextmanager
def constant(module: Any, name: str, value: int) -> Iterator[None]:
    """The engine reads these module constants at call time: set one for the duration."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def photo(height: int = 872, width: int = 1000) -> np.ndarray:
    """A photo-sized image with some structure (gradients and blocks), fixed by its seed."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // width), (y * 255 // height), ((x // 125 + y // 109) % 2) * 200], axis=-1)
    return (image + rng.integers(0, 40, image.shape)).clip(0, 255).astype(np.uint8)


def workloads(only: str | None) -> dict[str, Callable[[], object]]:
    """One call per constant, exercising the code that reads it on realistic shapes."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    sam = build_sam(TINY_ARCHITECTURE).eval()  # the full-size decoder (transformer 256 wide) and upsampling
    calls: dict[str, Callable[[], object]] = {}
    if only in (None, "upsample_group"):
        low_res = torch.randn(16, 1, 256, 256, generator=generator)
        calls["upsample_group"] = lambda: fast_amg.upsample_masks(sam, low_res, (1024, 893), (1000, 872))
    if only in (None, "prompt_batch"):
        image = photo()
        options = AmgOptions(points_per_side=16, points_per_batch=64)
        calls["prompt_batch"] = lambda: fast_amg.FastMaskGenerator(sam, options).generate(image)
    if only in (None, "upscale_chunk"):
        decoder = sam.mask_decoder
        keys = torch.randn(4, 64 * 64, 256, generator=generator)
        hyper_in = torch.randn(4, 4, 32, generator=generator)
        calls["upscale_chunk"] = lambda: fast_decoder._masks_from_tokens(decoder, keys, hyper_in, 64, 64)
    if only in (None, "logits_budget"):
        # vit_b's width and heads, one windowed and one global block: what the budget slices.
        base = BUILTIN_ARCHITECTURES["vit_b"]
        two_blocks = Architecture(base.encoder_embed_dim, 2, base.encoder_num_heads, (1,))
        encoder = build_sam(two_blocks).eval().image_encoder
        x = torch.randn(1, 3, 1024, 1024, generator=generator)
        calls["logits_budget"] = lambda: fast_encoder.encode(encoder, x)
    return calls


def sweep(name: str, call: Callable[[], object], rounds: int) -> list[dict[str, Any]]:
    module, attribute, values = SWEEPS[name]
    default = getattr(module, attribute)
    times: dict[int, list[float]] = {value: [] for value in values}
    with torch.inference_mode():
        call()  # warm-up: first-call allocations and lazy initialisation
        for _ in range(rounds):
            for value in values:
                with constant(module, attribute, value):
                    started = time.perf_counter()
                    call()
                    times[value].append(time.perf_counter() - started)
    base = statistics.median(times[default]) if default in times else None
    rows = []
    for value in values:
        median = statistics.median(times[value])
        rows.append(
            {
                "value": value,
                "median_ms": round(median * 1000, 2),
                "vs_default": round(median / base, 2) if base else None,
                "default": value == default,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SWEEPS))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict[str, Any] = {}
    for name, call in workloads(args.only).items():
        _, attribute, _ = SWEEPS[name]
        rows = sweep(name, call, args.rounds)
        results[attribute] = rows
        print(f"\n{attribute}")
        print(f"{'value':>10} {'median ms':>10} {'vs default':>10}")
        for row in rows:
            mark = "  <- default" if row["default"] else ""
            print(f"{row['value']:>10} {row['median_ms']:>10.2f} {row['vs_default']:>10.2f}{mark}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
