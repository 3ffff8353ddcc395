"""A client's batch stream (sync and asyncio clients alike) survives its server: the API process
is killed mid-batch and started again on the same port (Redis mode: the worker keeps going),
and `segment_batch` resumes after the last image it yielded, each image exactly once. And the
README's five-line notebook snippet runs as written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from samsvc.config import Settings
from tests.clients import open_client
from tests.support import RedisServer, ServeProcess, ServerThread, WorkerProcess, encode, free_port, scene

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`


def test_segment_batch_resumes_when_the_server_restarts(
    redis_settings: tuple[Settings, RedisServer], client_kind: str
) -> None:

    settings = redis_settings[0]
    port = free_port()
    worker = WorkerProcess(settings)
    server = ServeProcess(settings, "--no-gateway", "--grpc-port", str(port))
    replacement: ServeProcess | None = None
    try:
        images = [encode(scene(128, 96, seed=s)) for s in range(5)]
        seen: list[int] = []
        with open_client(client_kind, f"127.0.0.1:{port}") as client:
            for outcome in client.segment_batch(
                images, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, resume_for_s=120
            ):
                assert outcome.ok, outcome.error
                seen.append(outcome.index)
                if len(seen) == 1:
                    server.stop()  # SIGKILL: the stream drops mid-batch
                    replacement = ServeProcess(settings, "--no-gateway", "--grpc-port", str(port))
            assert sorted(seen) == [0, 1, 2, 3, 4], "every image once, none repeated"
            assert client.status(outcome.job_id).processed_images == 5
    finally:
        if replacement is not None:
            replacement.stop()
        server.stop()
        worker.stop()


def test_readme_notebook_snippet(server: ServerThread, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("<!-- notebook:start -->")[1].split("<!-- notebook:end -->")[0]
    code = snippet.split("```python")[1].split("```")[0]
    assert len([line for line in code.strip().splitlines() if line.strip()]) == 5
    (tmp_path / "photo.jpg").write_bytes(encode(scene(96, 64, seed=3), "JPEG"))
    script = code.replace("127.0.0.1:50051", server.address).replace(
        'client.segment("photo.jpg"', 'client.segment("photo.jpg", pred_iou_thresh=0, stability_score_thresh=0'
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert ", 64, 96)" in result.stdout and "bool" in result.stdout
