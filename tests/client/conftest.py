from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from samsvc.config import Settings
from tests.support import ServerThread
from tests.support.stacks import HEALTH_MODES, MODES, job_stack
from tests.support.starts import starts


@dataclass
class Target:
    """A running server (in-process mode, or Redis mode with a worker process) to point clients at."""

    #: As CheckHealth reports it: "embedded" (the in-process mode) or "redis".
    mode: str
    server: ServerThread

    @property
    def address(self) -> str:
        return self.server.address


@starts("redis", "processes", when_param="redis", scope="module", params=MODES)
def target(
    request: pytest.FixtureRequest, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    settings = base_settings.model_copy(update={"data_dir": str(tmp_path_factory.mktemp("data"))})
    with job_stack(request.param, settings, tmp_path_factory.mktemp("redis")) as server:
        yield Target(HEALTH_MODES[request.param], server)
