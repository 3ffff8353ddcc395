from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.config import Settings
from tests.clients import KINDS
from tests.support import ServerThread
from tests.support import starts as started

pytest_plugins = ["tests.fixtures"]

#: Modules slow for what they compute (torch.compile), not for what they start.
SLOW_MODULES = ("tests/engine/test_compile.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it starts besides the in-process server (redis, envoy, browser, s3,
    processes), read from the fixtures it uses and its own markers (tests/support/starts.py),
    and `slow` when it starts anything, or is slow by itself: `uv run pytest -m "not slow"` is
    the fast loop (unit and single-server tests), `uv run pytest` everything."""
    for item in items:
        kinds = started.kinds_of(item)
        for kind in kinds:
            item.add_marker(getattr(pytest.mark, kind))
        if kinds or str(item.path).endswith(SLOW_MODULES):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before its fixtures start: what the test may start (a helper starting anything else fails it)."""
    started.running(item, started.kinds_of(item))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    started.running(None)


def pytest_configure(config: pytest.Config) -> None:
    """Envoy is started by the project's own launcher, so the check sits on its process class."""
    from samsvc.gateway.envoy_process import EnvoyProcess

    start = EnvoyProcess.start

    def checked_start(self: EnvoyProcess, *args: object, **kwargs: object) -> EnvoyProcess:
        started.expect_started("envoy")
        return start(self, *args, **kwargs)  # type: ignore[arg-type]

    EnvoyProcess.start = checked_start  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny SAM made by segment-anything's builder: (checkpoint path, sha256)."""
    from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint

    path = tmp_path_factory.mktemp("checkpoints") / "tiny.pth"
    return path, build_random_checkpoint(path, TINY_ARCHITECTURE, seed=0)


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A random-weight SAM 2.1 hiera-tiny made by sam2's builder from its config, saved as the
    official checkpoints are ({"model": state dict}): (checkpoint path, sha256)."""
    from samsvc.engine.checkpoints import build_random_sam2_checkpoint

    path = tmp_path_factory.mktemp("checkpoints") / "sam2_tiny.pt"
    return path, build_random_sam2_checkpoint(path, seed=0)


@pytest.fixture(scope="session")
def sam2_models_file(
    tiny_checkpoint: tuple[Path, str], sam2_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A MODELS_FILE registering the tiny SAM as `tiny` and the SAM 2.1 tiny as `tiny2`."""
    from samsvc.engine.checkpoints import models_file_entry, sam2_models_file_entry

    models = tmp_path_factory.mktemp("config") / "models.toml"
    models.write_text(
        models_file_entry("tiny", *tiny_checkpoint) + "\n" + sam2_models_file_entry("tiny2", *sam2_checkpoint),
        encoding="utf-8",
    )
    return models


@pytest.fixture(scope="session")
def models_file(tiny_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODELS_FILE registering the tiny checkpoint as `tiny`."""
    from samsvc.engine.checkpoints import models_file_entry

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
def server_settings(base_settings: Settings) -> Settings:
    """The `server` fixture's settings: a module that needs others overrides this fixture only."""
    return base_settings


@pytest.fixture(scope="module")
def server(server_settings: Settings) -> Iterator[ServerThread]:
    """A real server on a loopback port, shared by a test module."""
    running = ServerThread(server_settings)
    yield running
    running.stop()


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """Which client a client test drives: the sync Client or the AsyncClient (tests/clients.py)."""
    kind: str = request.param
    return kind
