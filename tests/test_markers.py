"""Markers come from what a test starts (tests/support/starts.py). A test that starts something
without its marker fails at once, so the fast loop cannot quietly run a slow test; and the
in-process client tests, which start nothing, are in the fast loop (a search of module text
once counted `samsvc.client` as `samsvc.cli` and left them out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import RedisServer, S3Server
from tests.support.starts import kinds_of


def test_starting_what_the_test_is_not_marked_for_fails(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert kinds_of(request.node) == frozenset()
    with pytest.raises(AssertionError, match="starts redis but is not marked 'redis'"):
        RedisServer(tmp_path)
    with pytest.raises(AssertionError, match="starts s3 but is not marked 's3'"):
        S3Server()


@pytest.mark.redis
def test_a_marked_test_is_let_start_it(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert request.node.get_closest_marker("slow") is not None, "starting anything makes a test slow"
    server = RedisServer(tmp_path)
    server.stop()


def test_markers_follow_the_fixtures_and_their_parameters() -> None:
    """The client tests' `target` fixture starts Redis and a worker for its `redis` half only:
    the in-process half is in the fast loop, the Redis half is not."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider",
         "tests/client/test_client.py"],
        cwd=root, capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()  # fmt: skip
    fast = [line for line in listed if line.startswith("tests/client/test_client.py::")]
    assert not [line for line in fast if "[redis" in line], listed
    assert len([line for line in fast if "[in_process" in line]) >= 6, (
        "the in-process client tests are in the fast loop"
    )
