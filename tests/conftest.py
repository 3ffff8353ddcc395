from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.config import Settings
from samsvc.engine.checkpoints import (
    TINY_ARCHITECTURE,
    build_random_checkpoint,
    build_random_sam2_checkpoint,
    models_file_entry,
    sam2_models_file_entry,
)
from tests.clients import KINDS
from tests.support import ServerThread

#: What a test module's source shows it starts, and the marker that says so.
STARTS = {
    "redis": ("RedisServer(", "redis_server", "redis_settings"),
    "envoy": ("start_gateway(", '"gateway": True', "gateway=True"),
    "browser": ("chromium",),
    "s3": ("S3Server(",),
    "processes": ("WorkerProcess(", "ServeProcess(", "samsvc.cli"),
}
#: Modules slow for what they compute (torch.compile).
SLOW_MODULES = ("tests/engine/test_compile.py",)


@functools.cache
def _starts(path: Path) -> frozenset[str]:
    source = path.read_text(encoding="utf-8")
    return frozenset(kind for kind, signs in STARTS.items() if any(sign in source for sign in signs))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it starts besides the in-process server (redis, envoy, browser),
    and `slow` when it starts anything, or is slow by itself: `uv run pytest -m "not slow"` is
    the fast loop (unit and single-server tests), `uv run pytest` everything."""
    for item in items:
        kinds = set(_starts(item.path))
        if "[redis" in item.nodeid:
            kinds.add("redis")
        if item.path.parent.name == "gateway":  # every gateway test runs Envoy (tests/gateway/conftest.py)
            kinds.add("envoy")
        for kind in kinds - {"processes"}:
            item.add_marker(getattr(pytest.mark, kind))
        if kinds or str(item.path).endswith(SLOW_MODULES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny SAM made by segment-anything's builder: (checkpoint path, sha256)."""
    path = tmp_path_factory.mktemp("checkpoints") / "tiny.pth"
    return path, build_random_checkpoint(path, TINY_ARCHITECTURE, seed=0)


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A random-weight SAM 2.1 hiera-tiny made by sam2's builder from its config, saved as the
    official checkpoints are ({"model": state dict}): (checkpoint path, sha256)."""
    path = tmp_path_factory.mktemp("checkpoints") / "sam2_tiny.pt"
    return path, build_random_sam2_checkpoint(path, seed=0)


@pytest.fixture(scope="session")
def sam2_models_file(
    tiny_checkpoint: tuple[Path, str], sam2_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A MODELS_FILE registering the tiny SAM as `tiny` and the SAM 2.1 tiny as `tiny2`."""
    models = tmp_path_factory.mktemp("config") / "models.toml"
    models.write_text(
        models_file_entry("tiny", *tiny_checkpoint) + "\n" + sam2_models_file_entry("tiny2", *sam2_checkpoint),
        encoding="utf-8",
    )
    return models


@pytest.fixture(scope="session")
def models_file(tiny_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODELS_FILE registering the tiny checkpoint as `tiny`."""
    path, digest = tiny_checkpoint
    models = tmp_path_factory.mktemp("config") / "models.toml"
    models.write_text(models_file_entry("tiny", path, digest), encoding="utf-8")
    return models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MODEL_DIR: the built-in models are registered but their weights are absent."""
    return tmp_path_factory.mktemp("model_dir")


@pytest.fixture(scope="session")
def base_settings(models_file: Path, model_dir: Path) -> Settings:
    return Settings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        model_dir=model_dir,
        models_file=models_file,
        default_model="tiny",
        max_image_bytes=2 * 1024 * 1024,
        max_image_side=1024,
        max_workers=2,
        max_queue=8,
        shutdown_grace=5.0,
        gateway=False,
        rest_port=0,
        # Tests that time or count inferences need each call to run; the cache tests turn it on.
        result_cache_ttl_s=0,
        metrics_port=-1,
        worker_metrics_port=-1,
    )


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[ServerThread]:
    """A real server on a loopback port, shared by a test module."""
    running = ServerThread(base_settings)
    yield running
    running.stop()


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """Which client a client test drives: the sync Client or the AsyncClient (tests/clients.py)."""
    kind: str = request.param
    return kind
