"""Batches with DATA_DIR=s3://bucket/prefix against a real S3 API server (moto on loopback):
images are stored as objects and gone when the job ends; while the server is down a submit is
refused (UNAVAILABLE, nothing accepted), and an image that finds it down mid-job retries and
finishes once it is back: nothing is lost. Checkpoints are fetched from a bucket like a model
repository, checked by SHA-256."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from samsvc.config import Settings
from samsvc.engine.loader import ModelManager
from samsvc.jobs import failpoints
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import (
    S3Server,
    ServerThread,
    encode,
    rich_status,
    scene,
    wait_for,
)
from tests.support.options import FAST
from tests.support.stacks import job_stack
from tests.support.starts import starts


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings, s3: S3Server) -> Settings:
    settings = base_settings.model_copy(
        update={
            "data_dir": f"s3://{s3.bucket}/data",
            "s3_endpoint_url": s3.url,
            "s3_timeout_s": 1.0,
            "s3_max_attempts": 1,
            "job_min_backoff_ms": 200,
            "job_max_backoff_ms": 400,
        }
    )
    return settings


@starts("redis", "processes", scope="module")
def redis_mode(
    base_settings: Settings, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """The Redis runtime: a real `samsvc worker` process reads the images from the bucket."""
    settings = base_settings.model_copy(update={"data_dir": f"s3://{s3.bucket}/redis-mode", "s3_endpoint_url": s3.url})
    with job_stack("redis", settings, tmp_path_factory.mktemp("redis")) as running:
        yield running


def images(count: int) -> list[bytes]:
    return [encode(scene(64, 48, seed=70 + i)) for i in range(count)]


def test_a_batch_keeps_its_images_in_the_bucket_until_it_ends(server: ServerThread, s3: S3Server) -> None:
    submitted = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(2), options=FAST))
    events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=120))
    assert events[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED
    assert events[-1].finished.job.failed_images == 0
    wait_for(lambda: s3.keys(f"data/{submitted.job_id}/") == [], what="the job's objects to go")


def test_a_worker_process_reads_the_bucket_in_the_redis_mode(redis_mode: ServerThread, s3: S3Server) -> None:
    submitted = redis_mode.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(2), options=FAST))
    events = list(redis_mode.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=180))
    job = events[-1].finished.job
    assert job.status == job_pb2.JOB_STATUS_COMPLETED and (job.processed_images, job.failed_images) == (2, 0)
    wait_for(lambda: s3.keys(f"redis-mode/{submitted.job_id}/") == [], what="the job's objects to go")


def test_a_submit_while_storage_is_down_accepts_nothing(server: ServerThread, s3: S3Server) -> None:
    before = len(server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs)
    s3.stop()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(2), options=FAST), timeout=60)
    finally:
        s3.start()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    _, details = rich_status(caught.value)
    assert details["ErrorInfo"].reason == "STORE_UNAVAILABLE"
    assert "127.0.0.1" not in (caught.value.details() or "")
    assert len(server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs) == before


def test_storage_down_mid_job_retries_and_loses_nothing(
    server: ServerThread, s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    reached, release = threading.Event(), threading.Event()

    def hold(**context: object) -> None:
        if context.get("index") == 0 and not reached.is_set():
            reached.set()
            release.wait(60)

    caplog.set_level(logging.WARNING, logger="samsvc.jobs.worker.actors")
    failpoints.install("jobs.image.run", hold)
    try:
        submitted = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(3), options=FAST))
        assert reached.wait(60), "image 0 never started"
        s3.stop()
        release.set()  # image 0 now reads its object from a store that is down
        try:
            wait_for(
                lambda: any("will retry" in r.getMessage() for r in caplog.records),
                timeout=60,
                what="an image to meet the outage and schedule a retry",
            )
        finally:
            s3.start()
        events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=180))
    finally:
        failpoints.clear()
    job = events[-1].finished.job
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert (job.processed_images, job.failed_images) == (3, 0)
    finished = {e.image.index for e in events if e.WhichOneof("event") == "image"}
    assert finished == {0, 1, 2}


@pytest.mark.processes
def test_checkpoints_come_from_a_bucket_checked_by_sha256(
    s3: S3Server, tiny_checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = tiny_checkpoint
    s3.client().upload_file(str(path), s3.bucket, "models/tiny.pth")
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.bucketed]\nurl = "s3://{s3.bucket}/models/tiny.pth"\nsha256 = "{digest}"\n'
        "encoder_embed_dim = 64\nencoder_depth = 2\nencoder_num_heads = 2\nencoder_global_attn_indexes = [1]\n"
        f'[models.tampered]\nurl = "s3://{s3.bucket}/models/tiny.pth"\nsha256 = "{"0" * 64}"\n'
        'filename = "tampered.pth"\narchitecture = "vit_b"\n'
        f'[models.absent]\nurl = "s3://{s3.bucket}/models/none.pth"\nsha256 = "{digest}"\narchitecture = "vit_b"\n',
        encoding="utf-8",
    )
    settings = Settings(
        model_dir=tmp_path / "weights", models_file=models, auto_download=True, s3_endpoint_url=s3.url, device="cpu"
    )
    manager = ModelManager.from_options(settings.model_options())
    loaded = manager.get("bucketed")  # downloaded on first use, verified, then loaded
    assert loaded.digest == digest and (tmp_path / "weights" / "tiny.pth").is_file()

    from samsvc.errors import DownloadError

    for name, reason in (("tampered", "CHECKSUM_MISMATCH"), ("absent", "DOWNLOAD_FAILED")):
        with pytest.raises(DownloadError) as caught:
            manager.get(name)
        assert caught.value.reason == reason
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["tiny.pth"]  # no partial files

    # The command an operator runs, with its progress bar, into another MODEL_DIR.
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "cli"), "MODELS_FILE": str(models), "S3_ENDPOINT_URL": s3.url}
    done = subprocess.run(
        [sys.executable, "-m", "samsvc.cli", "models", "download", "bucketed"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sha256 verified" in done.stdout and "100%" in done.stderr
    assert (tmp_path / "cli" / "tiny.pth").read_bytes() == path.read_bytes()
