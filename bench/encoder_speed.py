"""Image encoder: segment-anything's attention against samsvc's sliced attention
(samsvc.engine.sam.fast_encoder), same model and input, alternating in one run; also each one's
peak resident memory, the median of a few fresh processes per encoder (allocator arenas make
one process's peak vary by a few hundred MB).

    uv run python -m bench.encoder_speed [--model vit_b] [--rounds 2] [--memory-runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch

from samsvc.engine.registry import BUILTIN_ARCHITECTURES
from samsvc.engine.sam.family import build_sam
from samsvc.engine.sam.fast_encoder import encode


def peak_rss_mb(model: str, sliced: bool) -> float:
    """Peak resident memory of a fresh process that builds the model and encodes one image."""
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
    code = (
        "import torch\n"
        "from samsvc.engine.sam.fast_encoder import encode\n"
        "from samsvc.engine.sam.family import build_sam\n"
        "from samsvc.engine.registry import BUILTIN_ARCHITECTURES\n"
        f"encoder = build_sam(BUILTIN_ARCHITECTURES[{model!r}]).eval().image_encoder\n"
        "x = torch.randn(1, 3, 1024, 1024)\n"
        "with torch.inference_mode():\n"
        f"    encode(encoder, x) if {sliced} else encoder(x)\n"
        "status = open('/proc/self/status').read()\n"
        "print(next(line.split()[1] for line in status.splitlines() if line.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory-runs", type=int, default=3)
    args = parser.parse_args()
    encoder = build_sam(BUILTIN_ARCHITECTURES[args.model]).eval().image_encoder
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    reference_s, sliced_s = [], []
    with torch.inference_mode():
        for _ in range(args.rounds):
            started = time.perf_counter()
            reference = encoder(x)
            reference_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            sliced = encode(encoder, x)
            sliced_s.append(time.perf_counter() - started)
    result = {
        "machine": {"cpu": platform.machine(), "python": platform.python_version(), "torch": torch.__version__},
        "model": f"{args.model} (random weights), 1024 x 1024 input",
        "bit_identical": torch.equal(reference, sliced),
        "max_abs_difference": (reference - sliced).abs().max().item(),
        "reference_median_s": statistics.median(reference_s),
        "sliced_median_s": statistics.median(sliced_s),
        "speedup_reference_over_sliced": statistics.median(reference_s) / statistics.median(sliced_s),
        "reference_peak_rss_mb": statistics.median(
            peak_rss_mb(args.model, sliced=False) for _ in range(args.memory_runs)
        ),
        "sliced_peak_rss_mb": statistics.median(peak_rss_mb(args.model, sliced=True) for _ in range(args.memory_runs)),
    }
    print(json.dumps(result, indent=2))
    print(f"encoder reference / sliced: {result['speedup_reference_over_sliced']:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
