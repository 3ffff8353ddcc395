"""ENCODER_BATCH_SIZE: threads encoding at once share one encoder pass, each getting its own
image's features (equal to a single pass to float rounding), and masks come out the same."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.encoder_batching import BatchingEncoder
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.engine.sam.amg import generate_masks
from samsvc.engine.sam.family import build_sam
from tests.engine.test_fast_amg import assert_same_answer
from tests.support import scene


def encode_together(encoder: torch.nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    start = threading.Barrier(len(inputs))

    def one(x: torch.Tensor) -> torch.Tensor:
        start.wait()
        with torch.no_grad():
            return encoder(x)

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, inputs))


@pytest.mark.parametrize("threads,max_batch,passes", [(4, 4, 1), (3, 4, 1), (4, 2, 2)])
def test_one_pass_for_concurrent_images(threads: int, max_batch: int, passes: int) -> None:
    encoder = build_sam(TINY_ARCHITECTURE).eval().image_encoder
    batching = BatchingEncoder(encoder, max_batch, max_wait_s=2.0 if threads >= max_batch else 0.3)
    inputs = [torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(i)) for i in range(threads)]
    outputs = encode_together(batching, inputs)
    assert (batching.passes, batching.images) == (passes, threads)
    with torch.no_grad():
        for x, y in zip(inputs, outputs, strict=True):
            assert torch.allclose(encoder(x), y, atol=1e-4), "each thread gets its own image's features"
    assert batching.img_size == encoder.img_size, "the encoder's attributes pass through"


def test_errors_reach_every_waiting_thread() -> None:
    class Broken(torch.nn.Module):
        img_size = 1024

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("device lost")

    batching = BatchingEncoder(Broken(), 2, max_wait_s=2.0)
    start = threading.Barrier(2)

    def one(_: int) -> str:
        start.wait()
        try:
            batching(torch.zeros(1, 3, 8, 8))
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(one, range(2))) == ["device lost", "device lost"]


def test_concurrent_mask_generation_batches_and_keeps_the_answer(models_file: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.load(tmp_path, models_file)
    eager = ModelManager(registry, device="cpu").get("tiny")
    batched = ModelManager(registry, device="cpu", encoder_batch_size=2, encoder_batch_wait_s=2.0).get("tiny")
    assert batched.batched and batched.identity != eager.identity
    images = [scene(96, 64, seed=s) for s in (21, 22)]
    options = AmgOptions(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    start = threading.Barrier(2)

    def run(image: object) -> list:
        start.wait()
        return generate_masks(batched.model, image, options)  # type: ignore[arg-type]

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, images))
    encoder = batched.model.image_encoder
    assert isinstance(encoder, BatchingEncoder) and (encoder.passes, encoder.images) == (1, 2)
    for image, masks in zip(images, together, strict=True):
        assert_same_answer(generate_masks(eager.model, image, options), masks)
