"""samsvc.client against real servers (embedded mode and Redis mode with a worker process):
every call, every image input type, every mask format decoded back to the same masks, the
saved files, errors as typed exceptions, and gRPC's retry policy for UNAVAILABLE."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from samsvc.client import AsyncClient, InvalidArgumentError, NotFoundError, UnauthenticatedError
from samsvc.client.errors import UnavailableError
from samsvc.config import Settings
from samsvc.server.auth import digest, new_key
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.client.conftest import Target
from tests.clients import open_client
from tests.support import ServerThread, encode, scene

OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_segment_accepts_every_image_type(target: Target, tmp_path: Path, client_kind: str) -> None:
    pixels = scene(96, 64, seed=5)
    path = tmp_path / "scene.png"
    path.write_bytes(encode(pixels))
    with open_client(client_kind, target.address) as client:
        results = [
            client.segment(source, **OPTIONS)
            for source in (path, str(path), path.read_bytes(), Image.fromarray(pixels), pixels)
        ]
    reference = results[0].arrays()
    assert reference.shape[0] > 0 and reference.shape[1:] == (64, 96)
    for result in results[1:]:
        assert np.array_equal(result.arrays(), reference)
    first = results[0].masks[0]
    assert first.area == int(first.array.sum()) and len(first.bbox) == 4 and first.predicted_iou >= 0


def test_every_mask_format_and_file_decodes_to_the_same_masks(target: Target, tmp_path: Path, client_kind: str) -> None:
    pixels = scene(96, 64, seed=6)
    with open_client(client_kind, target.address) as client:
        png = client.segment(pixels, mask_format="png", **OPTIONS)
        rle = client.segment(pixels, mask_format="rle", **OPTIONS)
        polygons = client.segment(pixels, mask_format="polygons", **OPTIONS)
    assert np.array_equal(png.arrays(), rle.arrays())
    assert len(polygons) == len(png)
    assert all(iou(a, b) > 0.8 for a, b in zip(png.arrays(), polygons.arrays(), strict=True))

    saved = png.save_pngs(tmp_path / "pngs")
    reread = np.stack([np.asarray(Image.open(p).convert("L")) > 0 for p in saved])
    assert np.array_equal(reread, png.arrays())

    coco_file = rle.save_coco(tmp_path / "masks.json", file_name="scene.png")
    coco = json.loads(coco_file.read_text())
    assert coco["images"][0] == {"id": 1, "file_name": "scene.png", "width": 96, "height": 64}
    decoded = np.stack([coco_mask.decode(a["segmentation"]).astype(bool) for a in coco["annotations"]])
    assert np.array_equal(decoded, png.arrays())
    assert [a["area"] for a in coco["annotations"]] == [m.area for m in png.masks]

    overlay = Image.open(io.BytesIO(png.overlay(pixels)))
    assert overlay.size == (96, 64) and overlay.mode == "RGB"


def test_batch_status_results_cancel_and_listing(target: Target, client_kind: str) -> None:
    images = [encode(scene(64, 48, seed=s)) for s in range(3)]
    images.insert(1, b"not an image")
    with open_client(client_kind, target.address) as client:
        outcomes = {o.index: o for o in client.segment_batch(images, **OPTIONS)}
        assert sorted(outcomes) == [0, 1, 2, 3]
        assert all(outcomes[i].ok and outcomes[i].result is not None for i in (0, 2, 3))
        error = outcomes[1].error
        assert isinstance(error, InvalidArgumentError) and error.violations[0].field == "images[1]"
        job_id = outcomes[0].job_id

        job = client.status(job_id)
        assert job.job_id == job_id and job.processed_images == 4 and job.failed_images == 1
        paged = list(client.results(job_id, page_size=1))
        assert [o.index for o in paged] == [0, 1, 2, 3]
        assert np.array_equal(paged[2].result.arrays(), outcomes[2].result.arrays())  # type: ignore[union-attr]
        assert job_id in [j.job_id for j in client.list_jobs(page_size=1)]
        assert job_id in [j.job_id for j in client.list_jobs(status="completed", page_size=1)]
        assert job_id not in [j.job_id for j in client.list_jobs(status="failed")]
        with pytest.raises(ValueError, match="status must be one of"):
            list(client.list_jobs(status="done"))

        kinds = [update.kind for update in client.stream_batch([images[0]], **OPTIONS)]
        assert kinds[0] == "accepted" and kinds.count("image") == 1 and kinds[-1] == "finished"

        queued = client.submit_batch([encode(scene(160, 120, seed=9))] * 3, priority="low", points_per_side=8)
        cancelled = client.cancel(queued.job_id)
        finished = cancelled.status == job_pb2.JOB_STATUS_COMPLETED and cancelled.processed_images == 3
        assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED or finished, "cancelled, unless already done"

        assert any(m.name == "tiny" for m in client.list_models())
        health = client.health()
        assert health.jobs.mode == target.mode and health.limits.max_batch_images == 50


def test_errors_are_typed_with_their_details(target: Target, client_kind: str) -> None:
    with open_client(client_kind, target.address) as client:
        with pytest.raises(NotFoundError) as missing:
            client.status("job_does_not_exist")
        assert missing.value.reason == "JOB_NOT_FOUND"
        with pytest.raises(InvalidArgumentError) as bad:
            client.segment(scene(32, 32), points_per_side=0)
        assert [v.field for v in bad.value.violations] == ["points_per_side"]
        with pytest.raises(TypeError, match="unknown mask generation options"):
            client.segment(scene(32, 32), points_per_sides=4)


def test_api_key(base_settings: Settings, client_kind: str) -> None:
    key = new_key()
    server = ServerThread(base_settings.model_copy(update={"api_keys": [f"me:{digest(key)}"]}))
    try:
        with open_client(client_kind, server.address) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.list_models()
        with open_client(client_kind, server.address, api_key=key) as client:
            assert client.list_models()
    finally:
        server.stop()


class FlakyService(pb_grpc.SegmentationServiceServicer):
    """A real gRPC server that is UNAVAILABLE for its first calls, to exercise the retry policy."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        self.calls += 1
        if self.calls <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.ListModelsResponse()

    async def Segment(self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext) -> pb.SegmentResponse:
        self.calls += 1
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "never retried")
        return pb.SegmentResponse()  # pragma: no cover


def test_retries_unavailable_only() -> None:
    async def run() -> None:
        for failures, expect_ok in ((2, True), (10, False)):
            service = FlakyService(failures)
            server = grpc.aio.server()
            pb_grpc.add_SegmentationServiceServicer_to_server(service, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            async with AsyncClient(f"127.0.0.1:{port}") as client:
                if expect_ok:
                    assert await client.list_models() == []
                    assert service.calls == 3
                    with pytest.raises(InvalidArgumentError):
                        await client.segment(b"x")
                    assert service.calls == 4, "INVALID_ARGUMENT is not retried"
                else:
                    with pytest.raises(UnavailableError):
                        await client.list_models()
                    assert service.calls == 5, "gives up after the policy's attempts"
            await server.stop(0)

    asyncio.run(run())
