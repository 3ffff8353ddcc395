"""A model's prompt decoder as ONNX, for clients that decode clicks themselves (the browser with
onnxruntime-web, CVAT's SAM plugin, Meta's demo).

Two graphs of the same function and interface (`decoder_graph`): "folded", the default, the
decoder rewritten for one image and a few clicks (about half the reference's time in
onnxruntime on a CPU; outputs equal to float rounding), and "reference", segment-anything's own
`SamOnnxModel` (with its repository's crop fix); and "cvat", the folded graph with the outputs
CVAT's SAM plugin reads (`decoder_cvat`: the mask cropped to its box, the box, uint8). All are
exported as segment-anything's `scripts/export_onnx_model.py` does: opset 17, the number of
points dynamic, constant folding on, the best mask only (`--return-single-mask`, as the demo
and CVAT run it). The int8 variant
is onnxruntime's dynamic quantization of a graph with the script's settings (QUInt8 weights,
per tensor, full range). Exports are built on first request and kept in `DECODER_DIR`, named by
the checkpoint's digest, so a decoder always comes from the same checkpoint as the embeddings
it decodes and survives restarts.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from segment_anything.modeling import Sam
from torch.jit import TracerWarning  # type: ignore[attr-defined]

from samsvc.engine.download import sha256_of
from samsvc.engine.sam import decoder_cvat, decoder_graph
from samsvc.errors import FailedPrecondition

log = logging.getLogger(__name__)

#: segment-anything's export script's default opset.
DEFAULT_OPSET = 17
#: The export model's inputs and outputs, in order.
INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
#: The export script's dynamic axes: any number of points (and the padding point).
DYNAMIC_AXES = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
QUANTIZATIONS = ("fp32", "int8")
#: The graph served unless another is asked for: "folded" (`decoder_graph.FoldedOnnxModel`);
#: "reference" is segment-anything's own; "cvat" CVAT's plugin's interface (`decoder_cvat`).
DEFAULT_GRAPH = "folded"
GRAPHS = ("folded", "reference", "cvat")


@dataclass(frozen=True)
class DecoderFile:
    """One exported decoder on disk."""

    path: Path
    checkpoint_sha256: str
    quantization: str
    sha256: str
    size_bytes: int
    opset: int = DEFAULT_OPSET
    graph: str = DEFAULT_GRAPH

    def read(self) -> bytes:
        return self.path.read_bytes()


def graph_for(sam: Sam, graph: str) -> str:
    """The graph `sam` gets when `graph` is asked for: the reference one for a decoder whose
    layout the folded graph does not rewrite (CVAT's interface keeps its name: it wraps either)."""
    return graph if graph in {"reference", "cvat"} or decoder_graph.foldable(sam) else "reference"


def export_decoder(sam: Sam, path: Path, opset: int = DEFAULT_OPSET, graph: str = DEFAULT_GRAPH) -> None:
    """Write `sam`'s prompt decoder as ONNX to `path` (the `graph_for` `graph`), as
    segment-anything's export script does."""
    model: torch.nn.Module
    served = graph_for(sam, graph)
    if served != "reference" and decoder_graph.foldable(sam):
        model = decoder_graph.FoldedOnnxModel(sam)
    else:
        model = decoder_graph.ReferenceOnnxModel(model=sam, return_single_mask=True)
    output_names: tuple[str, ...] = OUTPUT_NAMES
    if served == "cvat":
        model, output_names = decoder_cvat.CvatOnnxModel(model), decoder_cvat.OUTPUT_NAMES
    device = next(sam.mask_decoder.parameters()).device
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    generator = torch.Generator().manual_seed(0)
    dummy = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, generator=generator),
        "point_coords": torch.randint(0, 1024, size=(1, 5, 2), generator=generator).float(),
        "point_labels": torch.randint(0, 4, size=(1, 5), generator=generator).float(),
        "mask_input": torch.randn(1, 1, *mask_input_size, generator=generator),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    inputs = tuple(tensor.to(device) for tensor in dummy.values())
    with warnings.catch_warnings():
        # The tracer's notes on Python values in the graph (the script silences them too).
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            inputs,
            str(path),
            export_params=True,
            verbose=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=list(INPUT_NAMES),
            output_names=list(output_names),
            dynamic_axes=DYNAMIC_AXES,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def quantize_decoder(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization, with the export script's settings."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8)


class DecoderExports:
    """Exported decoders by checkpoint digest and quantization, built once (concurrent requests
    for the same one wait for the first) and kept on disk; files are written atomically."""

    def __init__(self, directory: Path, opset: int = DEFAULT_OPSET) -> None:
        self.directory = directory
        self.opset = opset
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._known: dict[tuple[str, str, str], DecoderFile] = {}

    def _path(self, digest: str, quantization: str, graph: str) -> Path:
        return self.directory / f"sam-decoder-{digest[:32]}-opset{self.opset}-{graph}-{quantization}.onnx"

    def known(self, digest: str, quantization: str, graph: str = DEFAULT_GRAPH) -> DecoderFile | None:
        """The decoder if this process has it ready (no export, no disk read)."""
        return self._known.get((digest, quantization, graph))

    def get(self, sam: Sam, digest: str, quantization: str, graph: str = DEFAULT_GRAPH) -> DecoderFile:
        """The decoder of the model whose checkpoint has `digest`, exporting it if needed
        (blocking); `graph` is what was asked for, the file's `graph` what it holds."""
        key = (digest, quantization, graph)
        known = self._known.get(key)
        if known is not None:
            return known
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            known = self._known.get(key)
            if known is None:
                served = graph_for(sam, graph)
                path = self._path(digest, quantization, served)
                if not path.is_file():
                    self._build(sam, digest, quantization, served, path)
                size = path.stat().st_size
                known = DecoderFile(path, digest, quantization, sha256_of(path), size, self.opset, served)
                self._known[key] = known
        return known

    def _build(self, sam: Sam, digest: str, quantization: str, graph: str, path: Path) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if quantization == "int8":
                source = self.get(sam, digest, "fp32", graph).path
                self._atomic(path, lambda tmp: quantize_decoder(source, tmp))
            else:
                self._atomic(path, lambda tmp: export_decoder(sam, tmp, self.opset, graph))
        except OSError as exc:
            # The folder is the operator's: name the setting, not the path.
            log.error("cannot write the ONNX decoder to %s: %s", path, exc)
            raise FailedPrecondition(
                "the ONNX decoder cannot be stored (DECODER_DIR is not writable); see the server log",
                reason="DECODER_EXPORT_FAILED",
            ) from exc
        log.info("exported the %s %s ONNX decoder of checkpoint %s to %s", graph, quantization, digest[:12], path)

    def _atomic(self, path: Path, write: Callable[[Path], None]) -> None:
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".part")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
