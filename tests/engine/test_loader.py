from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint
from samsvc.engine.loader import LoadedModel, ModelManager
from samsvc.engine.registry import Architecture, ModelRegistry, ModelSource, ModelSpec
from samsvc.errors import FailedPrecondition, NotFound

CPU = torch.device("cpu")


def spec(path: Path, sha256: str | None = None, arch: Architecture = TINY_ARCHITECTURE) -> ModelSpec:
    return ModelSpec("tiny", arch, ModelSource.REGISTERED, path, sha256=sha256)


def test_a_built_checkpoint_loads_through_the_user_path(tiny_checkpoint: tuple[Path, str]) -> None:
    path, digest = tiny_checkpoint
    sam = load_checkpoint(spec(path, digest), CPU)
    assert not sam.training
    reference = torch.load(path, map_location="cpu", weights_only=True)
    for name, tensor in sam.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_checksum_mismatch(tiny_checkpoint: tuple[Path, str]) -> None:
    path, _ = tiny_checkpoint
    with pytest.raises(FailedPrecondition) as caught:
        load_checkpoint(spec(path, "0" * 64), CPU)
    assert caught.value.reason == "CHECKSUM_MISMATCH"


def test_checkpoint_of_another_shape(tiny_checkpoint: tuple[Path, str]) -> None:
    path, _ = tiny_checkpoint
    other = Architecture(128, 2, 2, (1,))
    with pytest.raises(FailedPrecondition) as caught:
        load_checkpoint(spec(path, arch=other), CPU)
    assert caught.value.reason == "CHECKPOINT_INVALID"


def test_garbage_checkpoint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04not a checkpoint" * 100)
    with pytest.raises(FailedPrecondition) as caught:
        load_checkpoint(spec(garbage), CPU)
    assert caught.value.reason == "CHECKPOINT_INVALID"


def test_absent_weights(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        load_checkpoint(spec(tmp_path / "absent.pth"), CPU)
    assert caught.value.reason == "MODEL_WEIGHTS_MISSING"


class CountingManager(ModelManager):
    loads = 0

    def _load(self, spec: ModelSpec) -> LoadedModel:
        type(self).loads += 1
        return super()._load(spec)


def test_concurrent_first_requests_load_once(models_file: Path, tmp_path: Path) -> None:
    manager = CountingManager(ModelRegistry.load(tmp_path, models_file), device="cpu")
    barrier = threading.Barrier(6)
    results: list[LoadedModel] = []

    def worker() -> None:
        barrier.wait()
        results.append(manager.get("tiny"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert CountingManager.loads == 1
    assert len(results) == 6 and all(r is results[0] for r in results)
    state = manager.state("tiny")
    assert state.loaded and state.load_time_s > 0 and state.device == "cpu"
    assert not manager.state("vit_b").loaded


def test_unknown_model(models_file: Path, tmp_path: Path) -> None:
    manager = ModelManager(ModelRegistry.load(tmp_path, models_file), device="cpu")
    with pytest.raises(NotFound):
        manager.get("nope")


def test_auto_download_fetches_absent_weights(tmp_path: Path) -> None:
    source = tmp_path / "source.pth"
    digest = build_random_checkpoint(source, seed=1)
    fetched: list[str] = []

    def downloader(s: ModelSpec) -> Path:
        fetched.append(s.name)
        s.path.write_bytes(source.read_bytes())
        return s.path

    remote = ModelSpec(
        "remote", TINY_ARCHITECTURE, ModelSource.REGISTERED, tmp_path / "dir" / "r.pth", "http://x/r.pth", digest
    )
    (tmp_path / "dir").mkdir()
    manager = ModelManager(ModelRegistry([remote]), device="cpu", auto_download=True, downloader=downloader)
    assert manager.get("remote").spec.name == "remote"
    assert fetched == ["remote"]
    off = ModelManager(ModelRegistry([remote]), device="cpu")
    (tmp_path / "dir" / "r.pth").unlink()
    with pytest.raises(FailedPrecondition):
        off.get("remote")


def test_precision_is_part_of_the_model_identity(models_file: Path, tmp_path: Path) -> None:
    from samsvc.engine.amg_types import AmgOptions
    from samsvc.engine.sam.amg import generate_masks
    from tests.support import scene

    registry = ModelRegistry.load(tmp_path, models_file)
    full = ModelManager(registry, device="cpu").get("tiny")
    half = ModelManager(registry, device="cpu", default_dtype="bf16").get("tiny")
    assert (full.dtype, half.dtype) == ("fp32", "bf16")
    assert full.digest == half.digest and full.identity != half.identity
    with half.precision():
        masks = generate_masks(half.model, scene(48, 32), AmgOptions(points_per_side=1, pred_iou_thresh=0.0), fast=True)
    assert all(m.segmentation.shape == (32, 48) for m in masks)


def test_a_checkpoint_of_another_size_is_refused_before_it_is_read(
    tiny_checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    """A SAM 2.0 file saved under a SAM 2.1 name, or a truncated download, was loaded (or failed
    deep in torch) with the pinned config; its size alone now refuses it, checksums on or off."""
    path, digest = tiny_checkpoint
    pinned = ModelSpec(
        "tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest, size_bytes=path.stat().st_size + 1
    )
    for verify in (True, False):
        with pytest.raises(FailedPrecondition) as caught:
            load_checkpoint(pinned, CPU, verify=verify)
        assert caught.value.reason == "CHECKPOINT_SIZE_MISMATCH"
        assert str(path) not in caught.value.message and str(path) in caught.value.detail
    manager = ModelManager(ModelRegistry([pinned]), device="cpu")
    assert manager.state("tiny").problem == "CHECKPOINT_SIZE_MISMATCH"
    assert manager.state("tiny").weights_present


def test_a_failed_load_is_reported_past_its_retry_window(tiny_checkpoint: tuple[Path, str]) -> None:
    path, _ = tiny_checkpoint
    manager = ModelManager(ModelRegistry([spec(path, "0" * 64)]), device="cpu")
    assert manager.state("tiny").problem == ""
    with pytest.raises(FailedPrecondition):
        manager.get("tiny")
    manager.failure_ttl_s = 0.0
    assert manager.state("tiny").problem == "CHECKSUM_MISMATCH", "kept past the retry window"
