"""Interactive pieces of the client: image sessions, prompts (clicks and boxes), embeddings as
numpy arrays with their transform, and the served ONNX decoder; requests built here, answers
wrapped for use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from samsvc.client.channel import mask_format_value
from samsvc.client.images import ImageLike, image_bytes
from samsvc.client.results import Mask
from samsvc.v1 import interactive_pb2, segmentation_service_pb2

#: dtype names the client takes, and their wire values.
DTYPES = {"float32": interactive_pb2.TENSOR_DTYPE_FLOAT32, "float16": interactive_pb2.TENSOR_DTYPE_FLOAT16}
_NUMPY = {interactive_pb2.TENSOR_DTYPE_FLOAT32: "<f4", interactive_pb2.TENSOR_DTYPE_FLOAT16: "<f2"}

Point = tuple[float, float]


@dataclass(frozen=True)
class Embedding:
    """An image's embedding: `array()` gives its tensor (1 x 256 x 64 x 64 for SAM); `to_model(x,
    y)` places an image pixel on the model's input, as a decoder expects its clicks."""

    proto: interactive_pb2.ImageEmbedding

    @property
    def image_id(self) -> str:
        return self.proto.image_id

    @property
    def model(self) -> str:
        return self.proto.model_type

    @property
    def checkpoint_sha256(self) -> str:
        return self.proto.checkpoint_sha256

    @property
    def transform(self) -> interactive_pb2.ImageTransform:
        return self.proto.transform

    def array(self, index: int = 0) -> npt.NDArray[np.floating]:
        tensor = self.proto.tensors[index]
        return np.frombuffer(tensor.data, dtype=_NUMPY[tensor.dtype]).reshape(tuple(tensor.shape))

    def to_model(self, x: float, y: float) -> Point:
        t = self.proto.transform
        return x * t.resized_width / t.original_width, y * t.resized_height / t.original_height


@dataclass(frozen=True)
class PromptAnswer:
    """The masks of each prompt (one, or three with multimask), best first available via `best`."""

    proto: segmentation_service_pb2.SegmentPromptsResponse

    @property
    def masks(self) -> list[list[Mask]]:
        width, height = self.proto.image_width, self.proto.image_height
        return [[Mask(m, width, height) for m in result.masks] for result in self.proto.results]

    def best(self, prompt: int = 0) -> Mask:
        """The mask of `prompt` with the highest predicted IoU."""
        return max(self.masks[prompt], key=lambda m: m.predicted_iou)

    def logits(self, prompt: int = 0) -> npt.NDArray[np.float32]:
        """k x 256 x 256 low-resolution logits (asked for with return_logits)."""
        return np.frombuffer(self.proto.results[prompt].low_res_logits, dtype="<f4").reshape(-1, 256, 256)


def image_source(image: ImageLike | None, image_id: str | None) -> dict[str, object]:
    if (image is None) == (image_id is None):
        raise ValueError("give the image or an image_id, not both")
    return {"image": image_bytes(image)} if image is not None else {"image_id": image_id}


def prompt_request(
    image: ImageLike | None,
    image_id: str | None,
    points: Sequence[Point],
    negative: Sequence[Point],
    box: tuple[float, float, float, float] | None,
    multimask: bool,
    refine: bool,
    model: str | None,
    mask_format: str,
    return_logits: bool,
) -> segmentation_service_pb2.SegmentPromptsRequest:
    """One prompt of foreground `points`, background `negative` points and an optional box."""
    prompt = segmentation_service_pb2.Prompt(
        points=[segmentation_service_pb2.PointPrompt(x=x, y=y) for x, y in points]
        + [segmentation_service_pb2.PointPrompt(x=x, y=y, background=True) for x, y in negative],
        refine_previous=refine,
    )
    if box is not None:
        x0, y0, x1, y1 = box
        prompt.box.CopyFrom(segmentation_service_pb2.BoxPrompt(x0=x0, y0=y0, x1=x1, y1=y1))
    return segmentation_service_pb2.SegmentPromptsRequest(
        **image_source(image, image_id),  # type: ignore[arg-type]
        model_type=model or "",
        prompts=[prompt],
        multimask_output=multimask,
        mask_format=mask_format_value(mask_format),  # type: ignore[arg-type]
        return_logits=return_logits,
    )


def embedding_request(
    image: ImageLike | None, image_id: str | None, job_id: str | None, index: int, model: str | None, dtype: str
) -> interactive_pb2.GetImageEmbeddingRequest:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    request = interactive_pb2.GetImageEmbeddingRequest(model_type=model or "", dtype=DTYPES[dtype])
    if job_id is not None:
        request.job_image.CopyFrom(interactive_pb2.JobImage(job_id=job_id, index=index))
    elif image is not None:
        request.image = image_bytes(image)
    elif image_id is not None:
        request.image_id = image_id
    else:
        raise ValueError("give an image, an image_id or a job_id")
    return request
