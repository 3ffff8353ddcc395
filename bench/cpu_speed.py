"""CPU speed of the first click: SAM's image encoder in each precision and runtime a CPU offers,
side by side in one run, each row against the exact fp32 encoder samsvc runs today (its sliced
attention, the same embedding as segment-anything's), with what the row costs in agreement.

Rows (each in a fresh process, so its peak memory is its own; a runtime that is not installed
is reported as such):
- torch fp32: the reference (samsvc.engine.sam.fast_encoder.encode);
- torch bf16: the same under CPU autocast (bfloat16 matrix products);
- torch int8: dynamic quantization of the Linear layers (int8 weights, VNNI products);
- onnxruntime fp32: the encoder exported to ONNX (opset 17), run by onnxruntime's CPU provider;
- OpenVINO fp32 and bf16: the same ONNX file compiled by OpenVINO for this CPU
  (INFERENCE_PRECISION_HINT f32 or bf16);
- OpenVINO int8: the ONNX file quantized by NNCF's post-training quantization (8-bit weights and
  activations, transformer preset), calibrated on CALIBRATION_IMAGES random inputs (the time
  to quantize is reported apart: it is paid once per checkpoint).

Agreement, for each row: the embedding's relative error (||e - e_fp32|| / ||e_fp32||), and the
masks' IoU against fp32's for the same clicks (a grid of single clicks through segment-anything's
own predictor on each embedding): the mean and the worst. On random weights (time does not
depend on them; agreement does, so the docs say which weights gave it).

    uv run python -m bench.cpu_speed [--model vit_b] [--rounds 2] [--threads 2] [--write-docs]

(OpenVINO and NNCF come with the dev group, as the served encoders' `openvino` extra.)
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "development" / "benchmarks.md"
#: Each model's table sits between its own markers on the page.
MARKERS = "<!-- cpu_encoder_{model}:start -->", "<!-- cpu_encoder_{model}:end -->"
#: Row name -> what runs it (the child's code below dispatches on it).
ROWS = (
    "torch fp32", "torch bf16", "torch int8", "onnxruntime fp32", "OpenVINO fp32", "OpenVINO bf16", "OpenVINO int8",
)  # fmt: skip
#: Inputs NNCF calibrates the int8 encoder's activation ranges on.
CALIBRATION_IMAGES = 4
#: Clicks per side of the grid the masks are compared on (single foreground clicks).
CLICKS_PER_SIDE = 4

CHILD = r"""
import json, sys, time
import numpy as np, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
from samsvc.engine.registry import BUILTIN_ARCHITECTURES
from samsvc.engine.sam.family import build_sam
from samsvc.engine.sam.fast_encoder import encode
row, x = args["row"], torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
encoder = build_sam(BUILTIN_ARCHITECTURES[args["model"]]).eval().image_encoder
quantize_s = 0.0
if row == "torch fp32":
    run = lambda: encode(encoder, x)
elif row == "torch bf16":
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encode(encoder, x).float()
elif row == "torch int8":
    quantized = torch.ao.quantization.quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8)
    run = lambda: encode(quantized, x)
elif row == "onnxruntime fp32":
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = args["threads"]
    session = ort.InferenceSession(args["onnx"], options, providers=["CPUExecutionProvider"])
    run = lambda: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
else:
    import openvino as ov
    hint = "bf16" if row.endswith("bf16") else "f32"
    graph = ov.Core().read_model(args["onnx"])
    if row.endswith("int8"):
        import nncf
        generator = np.random.default_rng(2)
        calibration = [generator.standard_normal((1, 3, 1024, 1024)).astype(np.float32)
                       for _ in range(args["calibration"])]
        started = time.perf_counter()
        graph = nncf.quantize(graph, nncf.Dataset(calibration), subset_size=len(calibration),
                              model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=True)
        quantize_s = time.perf_counter() - started
    compiled = ov.Core().compile_model(
        graph, "CPU", {"INFERENCE_NUM_THREADS": args["threads"], "INFERENCE_PRECISION_HINT": hint}
    )
    request = compiled.create_infer_request()
    run = lambda: torch.from_numpy(request.infer({0: x.numpy()})[compiled.output(0)].copy())
times = []
with torch.inference_mode():
    for _ in range(args["rounds"] + 1):  # the first run warms up (allocations, kernel choice)
        started = time.perf_counter()
        embedding = run()
        times.append(time.perf_counter() - started)
np.save(args["out"], embedding.float().numpy())
status = open("/proc/self/status").read()
peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_mb": peak,
                  "quantize_s": quantize_s}))
"""


def export_onnx(model: str, path: Path) -> None:
    """The encoder of `model` (random weights, seed 0: the children's) as ONNX at 1024 x 1024."""
    code = (
        "import torch\n"
        "torch.manual_seed(0)\n"
        "from samsvc.engine.registry import BUILTIN_ARCHITECTURES\n"
        "from samsvc.engine.sam.family import build_sam\n"
        f"encoder = build_sam(BUILTIN_ARCHITECTURES[{model!r}]).eval().image_encoder\n"
        f"torch.onnx.export(encoder, (torch.randn(1, 3, 1024, 1024),), {str(path)!r}, input_names=['image'],\n"
        "    output_names=['embedding'], opset_version=17, dynamo=False)\n"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True)


def available(row: str) -> bool:
    modules = {"onnxruntime fp32": "onnxruntime", "OpenVINO int8": "openvino, nncf"}.get(row)
    if modules is None:
        modules = "openvino" if row.startswith("OpenVINO") else ""
    if not modules:
        return True
    found = subprocess.run([sys.executable, "-c", f"import {modules}"], capture_output=True)
    return found.returncode == 0


def mask_agreement(model: str, reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean and worst IoU of the masks of single clicks on a grid, from `other` against `reference`
    (segment-anything's predictor, the embedding set directly)."""
    import torch
    from segment_anything import SamPredictor

    from samsvc.engine.registry import BUILTIN_ARCHITECTURES
    from samsvc.engine.sam.family import build_sam

    torch.manual_seed(0)
    predictor = SamPredictor(build_sam(BUILTIN_ARCHITECTURES[model]).eval())
    masks = []
    for embedding in (reference, other):
        predictor.reset_image()
        predictor.features = torch.from_numpy(embedding)
        predictor.original_size = predictor.input_size = (1024, 1024)
        predictor.is_image_set = True
        step = 1024 / CLICKS_PER_SIDE
        clicks = [((i + 0.5) * step, (j + 0.5) * step) for i in range(CLICKS_PER_SIDE) for j in range(CLICKS_PER_SIDE)]
        masks.append([predictor.predict(np.array([c]), np.array([1]), multimask_output=False)[0][0] for c in clicks])
    ious = []
    for a, b in zip(*masks, strict=True):
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    return float(np.mean(ious)), float(np.min(ious))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "encoder.onnx"
        export_onnx(args.model, onnx_path)
        for row in ROWS:
            if not available(row):
                results[row] = {"missing": True}
                print(f"{row}: not installed", file=sys.stderr)
                continue
            out = Path(folder) / f"{len(results)}.npy"
            spec = {"row": row, "model": args.model, "threads": args.threads, "rounds": args.rounds,
                    "onnx": str(onnx_path), "out": str(out), "calibration": CALIBRATION_IMAGES}  # fmt: skip
            ran = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", CHILD, json.dumps(spec)], capture_output=True, text=True
            )
            if ran.returncode != 0:
                results[row] = {"failed": ran.stderr.strip().splitlines()[-1]}
                continue
            results[row] = {**json.loads(ran.stdout.strip().splitlines()[-1]), "embedding": np.load(out)}
            print(f"{row}: {results[row]['seconds']:.2f} s", file=sys.stderr)
    reference = results["torch fp32"]
    rows = []
    for row, measured in results.items():
        if "seconds" not in measured:
            rows.append({"row": row, "status": "not installed" if measured.get("missing") else measured["failed"]})
            continue
        error = float(
            np.linalg.norm(measured["embedding"] - reference["embedding"]) / np.linalg.norm(reference["embedding"])
        )
        mean_iou, worst_iou = mask_agreement(args.model, reference["embedding"], measured["embedding"])
        rows.append({
            "row": row, "seconds": measured["seconds"], "speedup": reference["seconds"] / measured["seconds"],
            "peak_mb": measured["peak_mb"], "relative_error": error, "mean_iou": mean_iou, "worst_iou": worst_iou,
            "quantize_s": measured.get("quantize_s", 0.0),
        })  # fmt: skip
    report = {
        "machine": {"cpu": platform.machine(), "threads": args.threads, "python": platform.python_version()},
        "model": f"{args.model} image encoder, random weights (seed 0), one 1024 x 1024 input",
        "rows": rows,
    }
    print(json.dumps(report, indent=2))
    table = render(report)
    print(table)
    if args.write_docs:
        text = PAGE.read_text(encoding="utf-8")
        start, end = (marker.format(model=args.model) for marker in MARKERS)
        block = f"{start}\n{table}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        PAGE.write_text(text, encoding="utf-8")
    return 0


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Measured by `uv run python -m bench.cpu_speed` on {report['machine']['threads']} CPU threads "
        f"({report['machine']['cpu']}): {report['model']}; each row in a fresh process, the median of its runs "
        f"after a warm-up; masks of {CLICKS_PER_SIDE * CLICKS_PER_SIDE} single clicks compared with fp32's.",
        "",
        "| encoder | s | vs torch fp32 | peak MB | embedding rel. error | mask IoU mean | worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "seconds" not in row:
            lines.append(f"| {row['row']} | {row['status']} | | | | | |")
            continue
        once = f" (quantized once in {row['quantize_s']:.0f} s)" if row.get("quantize_s") else ""
        lines.append(
            f"| {row['row']}{once} | {row['seconds']:.2f} | {row['speedup']:.2f}x | {row['peak_mb']:.0f} | "
            f"{row['relative_error']:.1e} | {row['mean_iou']:.4f} | {row['worst_iou']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
