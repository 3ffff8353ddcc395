"""Image encoders run by OpenVINO on CPUs (MODELS_FILE `encoder = "openvino"` or
`"openvino-int8"`, or MODEL_ENCODER for every model): SAM's ViT and SAM 2's Hiera alike.

The encoder is exported to ONNX once per checkpoint and compiled by OpenVINO's CPU plugin (the
ONNX route compiles to a faster graph here than converting the torch module directly:
docs/development/benchmarks.md). In fp32 its embeddings are torch's to about 1e-6 relative
error (the same masks), and it runs 1.2-1.6x faster on this project's CPUs; int8 is NNCF's
post-training quantization, calibrated on DEFAULT_CALIBRATION_IMAGES synthetic pictures (or on
the operator's images, MODELS_FILE `calibration_dir`): about 2x faster on vit_b, and approximate
(the benchmarks page gives its embedding error and the masks' IoU against fp32).

The compiled graph is kept under the cache folder by checkpoint digest, precision and
calibration, written atomically, so the export (and int8's quantization, a minute or more) runs
once per checkpoint, not once per start. Each family wraps the compiled encoder in the module
its model calls as `image_encoder` (samsvc.engine.sam.family, samsvc.engine.sam2.family), so
everything that encodes (embeddings, mask generators, prompts) runs it without knowing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from samsvc.engine.threads import cpu_count
from samsvc.errors import FailedPrecondition

log = logging.getLogger(__name__)

#: Synthetic pictures int8 calibrates on when the operator gives none.
DEFAULT_CALIBRATION_IMAGES = 8
#: Most of the operator's images int8 calibrates on.
MAX_CALIBRATION_IMAGES = 64
#: ONNX opset of the export (torch's TorchScript exporter).
DEFAULT_OPSET = 17
#: Image files a calibration folder is read for.
CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class CompiledEncoder:
    """A compiled OpenVINO encoder: N x 3 x H x W in, its outputs in export order out;
    thread-safe (each call has its own inference request)."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        request = self._compiled.create_infer_request()
        outputs = request.infer({0: x.detach().float().cpu().numpy()})
        return [torch.from_numpy(np.array(outputs[port])).to(x.device) for port in self._compiled.outputs]


def compile_encoder(
    encoder: torch.nn.Module,
    *,
    size: int,
    precision: str,
    digest: str,
    cache_dir: Path,
    model: str,
    to_input: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]],
    calibration_dir: Path | None = None,
) -> CompiledEncoder:
    """`encoder` (a module of one size x size image batch to a tensor or a tuple of tensors)
    compiled by OpenVINO in `precision` ("fp32" or "int8"; int8 calibrates on pictures made
    inputs by `to_input`), from the cache when this checkpoint was compiled before;
    FailedPrecondition (ENCODER_UNAVAILABLE) when OpenVINO (or NNCF, for int8) is not installed."""
    ov = _import("openvino", model)
    images = _calibration_files(calibration_dir) if precision == "int8" else []
    folder = cache_dir / _cache_key(digest, precision, images)
    graph_file = folder / "encoder.xml"
    if not graph_file.is_file():
        started = time.perf_counter()
        calibration = (lambda: [to_input(p) for p in _calibration_pictures(images)]) if precision == "int8" else None
        _build(ov, encoder, size, calibration, folder, model)
        log.info(
            "compiled the encoder of %s for OpenVINO %s in %.1f s", model, precision, time.perf_counter() - started
        )
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(graph_file),
        "CPU",
        {"INFERENCE_NUM_THREADS": cpu_count(), "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    return CompiledEncoder(compiled)


def _import(name: str, model: str) -> Any:
    if name == "nncf":
        # The service sends nothing anywhere: NNCF's NNCF_CI switch replaces its telemetry with its stub.
        os.environ.setdefault("NNCF_CI", "1")
    try:
        return __import__(name)
    except ImportError as exc:
        raise FailedPrecondition(
            f"model {model!r} runs its encoder with OpenVINO, which is not installed on this server: ask the "
            "operator (install samsvc with its openvino extra, or set the model's encoder to torch)",
            reason="ENCODER_UNAVAILABLE",
            metadata={"model": model},
            detail=f"import {name}: {exc}",
        ) from exc


def _cache_key(digest: str, precision: str, images: list[Path]) -> str:
    """The compiled graph's folder name: checkpoint, precision and (int8) what it calibrated on."""
    if precision != "int8":
        return f"{digest}-{precision}"
    material = "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in images) or "synthetic"
    return f"{digest}-int8-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def _build(
    ov: Any,
    encoder: torch.nn.Module,
    size: int,
    calibration: Callable[[], list[npt.NDArray[np.float32]]] | None,
    folder: Path,
    model: str,
) -> None:
    """Export, (quantize,) save under `folder`; written beside it first, then renamed into place,
    so a crash leaves no half graph and two processes building at once both end with a whole one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        onnx_file = work / "encoder.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                encoder.float().eval(),
                (torch.zeros(1, 3, size, size),),
                str(onnx_file),
                input_names=["image"],
                dynamic_axes={"image": {0: "batch"}},
                opset_version=DEFAULT_OPSET,
                dynamo=False,
            )
        graph = ov.Core().read_model(onnx_file)
        if calibration is not None:
            nncf = _import("nncf", model)
            inputs = calibration()
            graph = nncf.quantize(
                graph,
                nncf.Dataset(inputs),
                subset_size=len(inputs),
                model_type=nncf.ModelType.TRANSFORMER,
                fast_bias_correction=True,
            )
        ov.save_model(graph, work / "encoder.xml", compress_to_fp16=False)
        onnx_file.unlink()
        try:
            work.rename(folder)
        except OSError:
            if not (folder / "encoder.xml").is_file():
                raise  # not another process's graph in the way: a real failure
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _calibration_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES and p.is_file())
    return files[:MAX_CALIBRATION_IMAGES]


def _calibration_pictures(files: list[Path]) -> list[npt.NDArray[np.uint8]]:
    """The operator's images, else synthetic pictures: flat shapes on gradients with some texture
    (an input distribution near photographs', where noise would calibrate for noise)."""
    if files:
        from PIL import Image

        return [np.asarray(Image.open(path).convert("RGB")) for path in files]
    rng = np.random.default_rng(0)
    pictures = []
    for _ in range(DEFAULT_CALIBRATION_IMAGES):
        h, w = int(rng.integers(480, 1025)), int(rng.integers(480, 1025))
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.2, 0.2, (2, 3))
        picture = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
        for _ in range(int(rng.integers(3, 9))):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, max(21, min(h, w) // 3))
            picture[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        picture += rng.normal(0, 8, picture.shape)
        pictures.append(np.clip(picture, 0, 255).astype(np.uint8))
    return pictures
