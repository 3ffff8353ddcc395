"""Interactive messages (embeddings, image sessions, served decoders) to and from domain
values, and the response headers of the raw answers. No judgement of input happens here."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from samsvc.engine.sam.decoder_export import INPUT_NAMES, OUTPUT_NAMES, DecoderFile
from samsvc.inference.interactive import EmbeddedImage
from samsvc.sessions.store import ImageSessionRecord
from samsvc.v1 import interactive_pb2
from samsvc.validation.enums import known_value

_DTYPES: dict[int, str] = {
    interactive_pb2.TENSOR_DTYPE_UNSPECIFIED: "float32",
    interactive_pb2.TENSOR_DTYPE_FLOAT32: "float32",
    interactive_pb2.TENSOR_DTYPE_FLOAT16: "float16",
}
_DTYPE_VALUES = {"float32": interactive_pb2.TENSOR_DTYPE_FLOAT32, "float16": interactive_pb2.TENSOR_DTYPE_FLOAT16}
_QUANTIZATIONS: dict[int, str] = {
    interactive_pb2.DECODER_QUANTIZATION_UNSPECIFIED: "fp32",
    interactive_pb2.DECODER_QUANTIZATION_FP32: "fp32",
    interactive_pb2.DECODER_QUANTIZATION_INT8: "int8",
}
_QUANTIZATION_VALUES = {
    "fp32": interactive_pb2.DECODER_QUANTIZATION_FP32,
    "int8": interactive_pb2.DECODER_QUANTIZATION_INT8,
}

_GRAPHS: dict[int, str] = {
    interactive_pb2.DECODER_GRAPH_UNSPECIFIED: "folded",
    interactive_pb2.DECODER_GRAPH_FOLDED: "folded",
    interactive_pb2.DECODER_GRAPH_REFERENCE: "reference",
    interactive_pb2.DECODER_GRAPH_CVAT: "cvat",
}
_GRAPH_VALUES = {
    "folded": interactive_pb2.DECODER_GRAPH_FOLDED,
    "reference": interactive_pb2.DECODER_GRAPH_REFERENCE,
    "cvat": interactive_pb2.DECODER_GRAPH_CVAT,
}


def tensor_dtype(value: int, field: str = "dtype") -> str:
    result: str = known_value(_DTYPES, value, field)
    return result


def decoder_quantization(value: int, field: str = "quantization") -> str:
    result: str = known_value(_QUANTIZATIONS, value, field)
    return result


def decoder_graph(value: int, field: str = "graph") -> str:
    result: str = known_value(_GRAPHS, value, field)
    return result


def embedding_to_proto(embedded: EmbeddedImage, dtype: str) -> interactive_pb2.ImageEmbedding:
    """An embedding with its tensors in `dtype`."""
    embedding = embedded.embedding
    t = embedding.transform()
    (oh, ow), (rh, rw) = t.original_size, t.resized_size
    return interactive_pb2.ImageEmbedding(
        image_id=embedded.image_id,
        model_type=embedded.model,
        checkpoint_sha256=embedded.digest,
        tensors=[
            interactive_pb2.EmbeddingTensor(name=name, shape=list(shape), dtype=_DTYPE_VALUES[dtype], data=raw)
            for name, shape, raw in embedding.tensors(dtype)
        ],
        transform=interactive_pb2.ImageTransform(
            original_width=ow,
            original_height=oh,
            resized_width=rw,
            resized_height=rh,
            scale=t.scale,
            input_size=t.input_size,
            mask_input_size=t.mask_input_size,
            scale_x=t.scale_x,
            scale_y=t.scale_y,
        ),
        embedding_cache_hit=embedded.reused,
        processing_time=embedded.processing_time_s,
    )


def embedding_headers(message: interactive_pb2.ImageEmbedding) -> list[tuple[str, str]]:
    """The raw tensors' description as response headers (GetImageEmbeddingRaw): names and
    shapes of each tensor in body order, separated by ';' (SAM has one, SAM 2 three)."""
    tensors, t = message.tensors, message.transform
    return [
        ("x-samsvc-tensor", ";".join(tensor.name for tensor in tensors)),
        ("x-samsvc-shape", ";".join(",".join(str(v) for v in tensor.shape) for tensor in tensors)),
        ("x-samsvc-dtype", "float16" if tensors[0].dtype == interactive_pb2.TENSOR_DTYPE_FLOAT16 else "float32"),
        ("x-samsvc-model", message.model_type),
        ("x-samsvc-checkpoint-sha256", message.checkpoint_sha256),
        ("x-samsvc-image-id", message.image_id),
        ("x-samsvc-original-size", f"{t.original_height},{t.original_width}"),
        ("x-samsvc-resized-size", f"{t.resized_height},{t.resized_width}"),
        ("x-samsvc-scale", repr(t.scale)),
        ("x-samsvc-scale-xy", f"{t.scale_x!r},{t.scale_y!r}"),
        ("x-samsvc-input-size", str(t.input_size)),
    ]


def session_to_proto(record: ImageSessionRecord, reused: bool, seconds: float) -> interactive_pb2.ImageSession:
    height, width = record.embedding.original_size
    expire = timestamp_pb2.Timestamp()
    expire.FromMilliseconds(int(record.expires_at * 1000))
    return interactive_pb2.ImageSession(
        image_id=record.image_id,
        model_type=record.model,
        image_width=width,
        image_height=height,
        expire_time=expire,
        embedding_cache_hit=reused,
        processing_time=seconds,
    )


def decoder_info(decoder: DecoderFile, model: str) -> interactive_pb2.DecoderInfo:
    return interactive_pb2.DecoderInfo(
        model_type=model,
        checkpoint_sha256=decoder.checkpoint_sha256,
        quantization=_QUANTIZATION_VALUES[decoder.quantization],
        onnx_sha256=decoder.sha256,
        size_bytes=decoder.size_bytes,
        opset=decoder.opset,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        graph=_GRAPH_VALUES[decoder.graph],
    )


def decoder_headers(info: interactive_pb2.DecoderInfo) -> list[tuple[str, str]]:
    quantization, graph = _QUANTIZATIONS[info.quantization], _GRAPHS[info.graph]
    return [
        ("x-samsvc-model", info.model_type),
        ("x-samsvc-checkpoint-sha256", info.checkpoint_sha256),
        ("x-samsvc-onnx-sha256", info.onnx_sha256),
        ("x-samsvc-quantization", quantization),
        ("x-samsvc-decoder-graph", graph),
        ("x-samsvc-opset", str(info.opset)),
        ("etag", f'"{info.onnx_sha256}"'),
        ("content-disposition", f'attachment; filename="{info.model_type}-decoder-{graph}-{quantization}.onnx"'),
    ]
