"""What a call costs, told before and after: each model's figures measured on the server
(ListModels), the expected cost of a batch's images (SubmitBatch), the work and seconds of each
answer, and a call whose deadline cannot cover its work refused before it starts."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from samsvc.config import Settings
from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoints import models_file_entry
from samsvc.engine.costs import CostBook, WorkCost, encoder_passes, grid_work
from samsvc.v1 import model_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene

#: A grid no deadline of a few seconds covers (4096 points: over a minute on these machines, so
#: still well over the deadline on a CPU ten times faster).
BIG_GRID = {"points_per_side": 64, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def server_settings(
    base_settings: Settings, tiny_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """`tiny` preloaded and probed at start; `twin` and `late`, the same checkpoint, loaded by
    their first call (so measured only by the calls they serve)."""
    path, digest = tiny_checkpoint
    models_file = tmp_path_factory.mktemp("costs") / "models.toml"
    models_file.write_text("".join(models_file_entry(name, path, digest) for name in ("tiny", "twin", "late")))
    return base_settings.model_copy(update={"models_file": models_file, "preload": ["tiny"], "result_cache_ttl_s": 600})


def listed(server: ServerThread) -> dict[str, model_pb2.Model]:
    return {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest(page_size=100)).models}


def test_list_models_gives_each_model_its_cost_measured_at_start(server: ServerThread) -> None:
    models = listed(server)
    tiny = models["tiny"].cost
    assert tiny.measured and tiny.encode_seconds > 0 and tiny.grid_point_seconds > 0
    # A Segment call at SAM's defaults: a 64x64 grid on one encoder pass.
    assert tiny.default_grid_points == 64 * 64
    assert tiny.default_segment_seconds == pytest.approx(tiny.encode_seconds + 4096 * tiny.grid_point_seconds)
    # Not loaded, not measured: the work of a default call is known, its seconds are not.
    for name in ("twin", "late", "vit_h", "sam2.1_hiera_tiny"):
        assert not models[name].cost.measured and models[name].cost.default_segment_seconds == 0
    assert models["vit_h"].cost.default_grid_points == 4096
    assert models["sam2.1_hiera_tiny"].cost.default_grid_points == 32 * 32


def test_each_answer_reports_what_it_ran(server: ServerThread) -> None:
    image = encode(scene(96, 64, seed=3))
    quick = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    first = server.stub.Segment(pb.SegmentRequest(image=image, points_per_side=4, **quick))
    assert (first.cost.encoder_passes, first.cost.prompts_decoded) == (1, 16)
    assert first.cost.compute_seconds == first.processing_time > 0 and first.cost.queued_seconds >= 0
    # One crop layer: the image and its 4 crops, 16 points each.
    cropped = server.stub.Segment(pb.SegmentRequest(image=image, points_per_side=4, crop_n_layers=1, **quick))
    assert (cropped.cost.encoder_passes, cropped.cost.prompts_decoded) == (5, 80)
    # The same call again comes from the result cache: nothing ran.
    again = server.stub.Segment(pb.SegmentRequest(image=image, points_per_side=4, **quick))
    assert again.cache_hit and (again.cost.encoder_passes, again.cost.prompts_decoded) == (0, 0)
    assert again.cost.compute_seconds == 0

    clicks = [pb.Prompt(points=[pb.PointPrompt(x=10 + i, y=20)]) for i in range(3)]
    prompted = server.stub.SegmentPrompts(pb.SegmentPromptsRequest(image=image, prompts=clicks))
    assert (prompted.cost.encoder_passes, prompted.cost.prompts_decoded) == (1, 3)
    cached = server.stub.SegmentPrompts(pb.SegmentPromptsRequest(image=image, prompts=clicks[:1]))
    assert cached.embedding_cache_hit and (cached.cost.encoder_passes, cached.cost.prompts_decoded) == (0, 1)


def test_a_batch_is_told_what_each_image_will_cost(server: ServerThread) -> None:
    figures = listed(server)["tiny"].cost
    options = pb.SegmentOptions(points_per_side=4, crop_n_layers=1)
    submitted = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=[encode(scene(64, 48))] * 2, options=options))
    expected = submitted.estimated_image_cost
    assert (expected.encoder_passes, expected.prompts_decoded) == (5, 80)
    # Before any image has run: this server's figures for the model times the job's work.
    assert expected.compute_seconds == pytest.approx(
        5 * figures.encode_seconds + 80 * figures.grid_point_seconds, rel=0.25
    )
    assert submitted.estimated_time >= 1
    # Once its images have run, the job's own mean replaces the figures.
    events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=120))
    ran = [e.image for e in events if e.WhichOneof("event") == "image"]
    assert [(r.cost.encoder_passes, r.cost.prompts_decoded) for r in ran] == [(5, 80), (5, 80)]
    mean = sum(r.cost.compute_seconds for r in ran) / 2
    replayed = server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=120)
    assert next(iter(replayed)).accepted.estimated_image_cost.compute_seconds == pytest.approx(mean)


def test_a_call_its_deadline_cannot_cover_is_refused_before_it_starts(server: ServerThread) -> None:
    image = encode(scene(64, 48, seed=5))
    # On `twin`, never measured, the caller learns nothing until the deadline passes.
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as waited:
        server.stub.Segment(pb.SegmentRequest(image=image, model_type="twin", **BIG_GRID), timeout=2)
    assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started >= 2

    # On `tiny`, measured at start, the same call is refused at once, saying why and what to do.
    expected = listed(server)["tiny"].cost
    expected_s = expected.encode_seconds + 4096 * expected.grid_point_seconds
    assert expected_s > 3, "the test's grid must exceed its deadline by the margin"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        server.stub.Segment(pb.SegmentRequest(image=image, model_type="tiny", **BIG_GRID), timeout=2)
    assert time.monotonic() - started < 1.5
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status, details = rich_status(refused.value)
    info = details["ErrorInfo"]
    assert info.reason == "DEADLINE_TOO_SHORT"
    assert float(info.metadata["expected_seconds"]) == pytest.approx(expected_s, rel=0.25)
    assert 0 < float(info.metadata["deadline_seconds"]) <= 2
    assert "SubmitBatch" in status.message and "4096 points" in status.message
    # A deadline that covers the work (within the margin) is no reason to refuse.
    small = server.stub.Segment(pb.SegmentRequest(image=image, points_per_side=2), timeout=60)
    assert small.cost.prompts_decoded == 4


def test_a_model_loaded_by_its_first_call_is_measured_by_the_calls_it_serves(server: ServerThread) -> None:
    image = encode(scene(80, 60, seed=7))
    server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(image=image, model_type="late", prompts=[pb.Prompt(points=[pb.PointPrompt(x=5, y=5)])])
    )
    assert not listed(server)["late"].cost.measured  # an encoder pass, but no grid yet
    server.stub.Segment(pb.SegmentRequest(image=image, model_type="late", points_per_side=3), timeout=120)
    twin = listed(server)["late"].cost
    assert twin.measured and twin.encode_seconds > 0 and twin.default_segment_seconds > 0


def test_work_follows_from_the_options_before_anything_runs() -> None:
    assert encoder_passes(AmgOptions(crop_n_layers=0)) == 1
    assert encoder_passes(AmgOptions(crop_n_layers=2)) == 1 + 4 + 16
    options = AmgOptions(points_per_side=8, crop_n_layers=1, crop_n_points_downscale_factor=2)
    assert grid_work(options) == WorkCost(5, 64 + 4 * 16)


def test_the_figures_follow_the_calls() -> None:
    book = CostBook()
    work = WorkCost(1, 100)
    book.observe_grid("m", work, 3.0)
    assert book.figures("m") is None  # a grid alone cannot be split into encoder and points
    book.observe_encode("m", 1.0)
    book.observe_grid("m", work, 3.0)
    figures = book.figures("m")
    assert figures is not None and figures.encode_s == 1.0 and figures.point_s == pytest.approx(0.02)
    assert book.seconds("m", WorkCost(2, 50)) == pytest.approx(3.0)
    book.observe_encode("m", 2.0)  # a running mean: one slow pass moves it a fifth of the way
    assert book.figures("m").encode_s == pytest.approx(1.2)  # type: ignore[union-attr]
