"""The served ONNX decoders (the folded graph and segment-anything's own): exported from the
model's own checkpoint, each decodes an embedding the service returned into the masks
SegmentPrompts gives for the same clicks; int8 too; built once and kept by checkpoint digest."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from samsvc.config import Settings
from samsvc.encoding.masks import decode_png
from samsvc.engine.loader import ModelManager
from samsvc.engine.sam.decoder_export import INPUT_NAMES, OUTPUT_NAMES, DecoderExports
from samsvc.errors import FailedPrecondition
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = base_settings.model_copy(
        update={"decoder_dir": tmp_path_factory.mktemp("onnx"), "data_dir": str(tmp_path_factory.mktemp("data"))}
    )
    return settings


def decoder(
    server: ServerThread, quantization: int, graph: int = ipb.DECODER_GRAPH_UNSPECIFIED
) -> tuple[ort.InferenceSession, dict[str, str], bytes]:
    body, call = server.stub.GetDecoder.with_call(ipb.GetDecoderRequest(quantization=quantization, graph=graph))
    assert body.content_type == "application/octet-stream"
    return ort.InferenceSession(body.data, providers=["CPUExecutionProvider"]), dict(call.initial_metadata()), body.data


def onnx_masks(
    session: ort.InferenceSession, embedding: ipb.ImageEmbedding, points: list[tuple[float, float, int]]
) -> tuple[np.ndarray, float]:
    """What a browser client does: clicks scaled onto the model's input, a padding point, the
    embedding as it came back."""
    t = embedding.transform
    coords = [[x * t.resized_width / t.original_width, y * t.resized_height / t.original_height] for x, y, _ in points]
    feeds = {
        "image_embeddings": np.frombuffer(embedding.tensors[0].data, dtype="<f4").reshape(1, 256, 64, 64),
        "point_coords": np.array([[*coords, [0.0, 0.0]]], dtype=np.float32),
        "point_labels": np.array([[*(label for *_, label in points), -1]], dtype=np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array([t.original_height, t.original_width], dtype=np.float32),
    }
    masks, scores, low_res = session.run(None, feeds)
    assert masks.shape == (1, 1, t.original_height, t.original_width) and low_res.shape == (1, 1, 256, 256)
    return masks[0, 0] > 0.0, float(scores[0, 0])


#: The int8 decoder's agreement with SegmentPrompts that the docs promise (float32: 0.99).
INT8_MIN_IOU = 0.95


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def service_mask(
    server: ServerThread, image_id: str, points: list[tuple[float, float, int]], multimask: bool
) -> tuple[np.ndarray, float]:
    answer = server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image_id=image_id,
            prompts=[pb.Prompt(points=[pb.PointPrompt(x=x, y=y, background=not label) for x, y, label in points])],
            multimask_output=multimask,
        )
    )
    best = max(answer.results[0].masks, key=lambda m: m.predicted_iou)
    return decode_png(best.segmentation), best.predicted_iou


@pytest.mark.parametrize(
    ("graph", "name"), [(ipb.DECODER_GRAPH_UNSPECIFIED, "folded"), (ipb.DECODER_GRAPH_REFERENCE, "reference")]
)
@pytest.mark.parametrize(
    "points",
    [
        [(60.0, 45.0, 1)],  # one click: the decoder picks the best of the three multimask outputs
        [(60.0, 45.0, 1), (120.0, 20.0, 0)],  # two clicks: the single-mask output
    ],
)
def test_the_onnx_decoder_gives_segment_prompts_masks(
    server: ServerThread, points: list[tuple[float, float, int]], graph: int, name: str
) -> None:
    image = encode(scene(160, 120, seed=41))
    image_id = server.stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image)).image_id
    embedding = server.stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image_id=image_id))
    session, headers, data = decoder(server, ipb.DECODER_QUANTIZATION_FP32, graph)
    assert headers["x-samsvc-decoder-graph"] == name
    assert headers["x-samsvc-checkpoint-sha256"] == embedding.checkpoint_sha256
    assert headers["x-samsvc-onnx-sha256"] == hashlib.sha256(data).hexdigest()
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    ours, score = onnx_masks(session, embedding, points)
    theirs, their_score = service_mask(server, image_id, points, multimask=len(points) == 1)
    assert iou(ours, theirs) >= 0.99
    assert score == pytest.approx(their_score, abs=1e-4)

    quantized, q_headers, q_data = decoder(server, ipb.DECODER_QUANTIZATION_INT8, graph)
    assert len(q_data) < len(data) / 2 and q_headers["x-samsvc-quantization"] == "int8"
    q_mask, _ = onnx_masks(quantized, embedding, points)
    assert q_mask.shape == theirs.shape
    # int8 trades agreement for size: 0.97-0.996 on these clicks (0.96 the worst seen on held-out
    # ones), which the docs state instead of the float32 graphs' figure.
    assert iou(q_mask, theirs) >= INT8_MIN_IOU


def test_decoder_info_describes_the_served_file(server: ServerThread) -> None:
    info = server.stub.GetDecoderInfo(ipb.GetDecoderRequest(model_type="tiny"))
    _, headers, data = decoder(server, ipb.DECODER_QUANTIZATION_FP32)
    assert info.onnx_sha256 == hashlib.sha256(data).hexdigest() == headers["x-samsvc-onnx-sha256"]
    assert (info.size_bytes, info.opset, info.quantization) == (len(data), 17, ipb.DECODER_QUANTIZATION_FP32)
    assert info.graph == ipb.DECODER_GRAPH_FOLDED
    assert list(info.input_names) == list(INPUT_NAMES)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetDecoderInfo(ipb.GetDecoderRequest(graph=7))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_status(caught.value)[1]["BadRequest"].field_violations[0].field == "graph"
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetDecoder(ipb.GetDecoderRequest(model_type="nope"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_status(caught.value)[1]["ErrorInfo"].reason == "UNKNOWN_MODEL"


def test_exports_are_made_once_and_kept_by_digest(base_settings: Settings, tmp_path: Path) -> None:
    loaded = ModelManager.from_options(base_settings.model_options()).get("tiny")
    exports = DecoderExports(tmp_path / "onnx")
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(exports.get(loaded.model, loaded.digest, "fp32")))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert files == [f"sam-decoder-{loaded.digest[:32]}-opset17-folded-fp32.onnx"]  # one file, no leftovers
    first = results[0]
    assert all(r == first for r in results)
    # A new process finds the file: no export.
    path = tmp_path / "onnx" / files[0]
    stamp = path.stat().st_mtime_ns
    again = DecoderExports(tmp_path / "onnx").get(loaded.model, loaded.digest, "fp32")
    assert path.stat().st_mtime_ns == stamp and again.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # A decoder directory that cannot be written is the operator's problem, named without a path.
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(FailedPrecondition) as caught:
        DecoderExports(blocked / "onnx").get(loaded.model, loaded.digest, "fp32")
    assert caught.value.reason == "DECODER_EXPORT_FAILED" and str(tmp_path) not in caught.value.message


def test_cvats_decoder_is_served_with_cvats_outputs(server: ServerThread) -> None:
    """DECODER_GRAPH_CVAT: what CVAT's SAM plugin loads as /assets/decoder.onnx (outputs by its
    names; tests/engine/test_decoder_cvat.py checks the values), kept apart from the others."""
    from samsvc.engine.sam.decoder_cvat import OUTPUT_NAMES as CVAT_OUTPUTS

    for quantization in (ipb.DECODER_QUANTIZATION_FP32, ipb.DECODER_QUANTIZATION_INT8):
        session, _, data = decoder(server, quantization, ipb.DECODER_GRAPH_CVAT)
        assert [o.name for o in session.get_outputs()] == list(CVAT_OUTPUTS)
        assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
        info = server.stub.GetDecoderInfo(
            ipb.GetDecoderRequest(quantization=quantization, graph=ipb.DECODER_GRAPH_CVAT)
        )
        assert info.graph == ipb.DECODER_GRAPH_CVAT and info.onnx_sha256 == hashlib.sha256(data).hexdigest()
    _, _, folded = decoder(server, ipb.DECODER_QUANTIZATION_FP32)
    assert hashlib.sha256(folded).hexdigest() != info.onnx_sha256
