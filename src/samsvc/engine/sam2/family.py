"""The SAM 2 family (SAM 2 and 2.1 image models, the sam2 package) behind the engine
interface. Every answer is the sam2 package's own: SAM2AutomaticMaskGenerator for automatic
masks, SAM2ImagePredictor for embeddings and prompts; this module maps the service's options
onto them, adds a cancellation check between prompt batches and returns plain records.

Its image features are three tensors (the 1x256x64x64 embedding and two high-resolution maps
the decoder's upscaling reads); an ImageEmbedding carries all three.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from samsvc.engine.amg_types import (
    DEFAULT_BOX_NMS_THRESH,
    DEFAULT_CROP_N_LAYERS,
    DEFAULT_CROP_N_POINTS_DOWNSCALE_FACTOR,
    DEFAULT_CROP_NMS_THRESH,
    DEFAULT_CROP_OVERLAP_RATIO,
    DEFAULT_MIN_MASK_REGION_AREA,
    DEFAULT_POINTS_PER_BATCH,
    DEFAULT_STABILITY_SCORE_OFFSET,
    AmgOptions,
    CancelToken,
    MaskRecord,
)
from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.family import EncoderChoice, Precision, check_cpu_encoder
from samsvc.engine.generation import CancellableGeneration, amg_record
from samsvc.engine.prompt_types import PromptOutput, PromptSpec
from samsvc.engine.registry import ModelSpec
from samsvc.errors import ConfigurationError, FieldViolation

with warnings.catch_warnings():
    # sam2 warns at import that its optional CUDA extension is absent (only its video
    # predictor's hole filling uses it).
    warnings.simplefilter("ignore")
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

#: SAM2AutomaticMaskGenerator's own defaults where they differ from the design document's for SAM.
SAM2_POINTS_PER_SIDE = 32
SAM2_PRED_IOU_THRESH = 0.8
SAM2_STABILITY_SCORE_THRESH = 0.95
#: The names SAM 2's decoders give its three feature maps (sam2's ONNX exports use these).
SAM2_TENSOR_NAME = "image_embed"
SAM2_HIGH_RES_NAMES = ("high_res_feats_0", "high_res_feats_1")


def build_sam2_model(config: str) -> torch.nn.Module:
    """An untrained SAM 2 image model from the sam2 package's config, on the CPU."""
    model: torch.nn.Module = build_sam2(config, ckpt_path=None, device="cpu")
    return model


class _CancellableGenerator(CancellableGeneration, SAM2AutomaticMaskGenerator):  # type: ignore[misc]
    """sam2's generator, stopping between prompt batches when its token is cancelled."""

    def __init__(self, model: torch.nn.Module, cancel: CancelToken | None, **kwargs: Any) -> None:
        super().__init__(model, output_mode="uncompressed_rle", **kwargs)
        self._cancel = cancel


def _predictor(model: Any, embedding: ImageEmbedding) -> SAM2ImagePredictor:
    """A SAM2ImagePredictor primed with a stored embedding (no encoder run)."""
    predictor = SAM2ImagePredictor(model)
    predictor._features = {
        "image_embed": embedding.features,
        "high_res_feats": [tensor for _, tensor in embedding.extra],
    }
    predictor._orig_hw = [embedding.original_size]
    predictor._is_image_set = True
    return predictor


class Sam2Family:
    name = "sam2"
    exports_decoder = False

    def build(self, spec: ModelSpec) -> torch.nn.Module:
        if spec.config is None:
            raise ConfigurationError(f"model {spec.name!r} of family sam2 has no config")
        return build_sam2_model(spec.config)

    def amg_defaults(self) -> AmgOptions:
        return AmgOptions(
            points_per_side=SAM2_POINTS_PER_SIDE,
            points_per_batch=DEFAULT_POINTS_PER_BATCH,
            pred_iou_thresh=SAM2_PRED_IOU_THRESH,
            stability_score_thresh=SAM2_STABILITY_SCORE_THRESH,
            stability_score_offset=DEFAULT_STABILITY_SCORE_OFFSET,
            box_nms_thresh=DEFAULT_BOX_NMS_THRESH,
            crop_n_layers=DEFAULT_CROP_N_LAYERS,
            crop_nms_thresh=DEFAULT_CROP_NMS_THRESH,
            crop_overlap_ratio=DEFAULT_CROP_OVERLAP_RATIO,
            crop_n_points_downscale_factor=DEFAULT_CROP_N_POINTS_DOWNSCALE_FACTOR,
            min_mask_region_area=DEFAULT_MIN_MASK_REGION_AREA,
            use_m2m=False,
        )

    def option_violations(self, options: AmgOptions, prefix: str) -> list[FieldViolation]:
        return []

    def use_encoder(self, model: Any, choice: EncoderChoice, device: torch.device) -> None:
        check_cpu_encoder(choice, device.type)
        from samsvc.engine.sam2.openvino import use_openvino  # openvino: imported only when used

        use_openvino(model, choice)

    def accelerate(self, model: Any, *, compile_model: bool, encoder_batch: tuple[int, float]) -> bool:
        if compile_model:
            model.image_encoder = torch.compile(model.image_encoder)
            model.sam_mask_decoder = torch.compile(model.sam_mask_decoder, dynamic=True)
        # The encoder returns a feature pyramid, not one tensor: cross-thread batching is SAM's only.
        return False

    def generate_masks(
        self,
        model: Any,
        image: npt.NDArray[np.uint8],
        options: AmgOptions,
        cancel: CancelToken | None,
        *,
        fast: bool,
        precision: Precision,
    ) -> list[MaskRecord]:
        generator = _CancellableGenerator(model, cancel, **options.generator_kwargs(), use_m2m=options.use_m2m)
        with torch.inference_mode(), precision():
            raw = generator.generate(image)
        return [amg_record(item) for item in raw]

    def embed(self, model: Any, image: npt.NDArray[np.uint8], precision: Precision) -> ImageEmbedding:
        predictor = SAM2ImagePredictor(model)
        with torch.inference_mode(), precision():
            predictor.set_image(image)
        features = predictor._features
        high_res = tuple(
            (name, tensor.float()) for name, tensor in zip(SAM2_HIGH_RES_NAMES, features["high_res_feats"], strict=True)
        )
        side = int(model.image_size)
        h, w = image.shape[:2]
        return ImageEmbedding(
            features["image_embed"].float(), (side, side), (int(h), int(w)), extra=high_res, name=SAM2_TENSOR_NAME
        )

    def predict_prompts(
        self,
        model: Any,
        embedding: ImageEmbedding,
        prompts: list[PromptSpec],
        multimask: bool,
        precision: Precision,
        *,
        fast: bool,
    ) -> list[PromptOutput]:
        predictor = _predictor(model, embedding)
        outputs = []
        with torch.inference_mode():
            for prompt in prompts:
                coords = labels = box = None
                if prompt.points:
                    coords = np.array([[x, y] for x, y, _ in prompt.points], dtype=np.float32)
                    labels = np.array([label for _, _, label in prompt.points], dtype=np.int32)
                if prompt.box is not None:
                    box = np.array(prompt.box, dtype=np.float32)
                context: AbstractContextManager[Any] = precision()
                with context:
                    masks, scores, logits = predictor.predict(
                        point_coords=coords,
                        point_labels=labels,
                        box=box,
                        mask_input=prompt.mask_logits,
                        multimask_output=multimask,
                    )
                outputs.append(
                    PromptOutput(
                        masks=masks.astype(bool),
                        scores=scores.astype(np.float32),
                        low_res_logits=logits.astype(np.float32),
                    )
                )
        return outputs
