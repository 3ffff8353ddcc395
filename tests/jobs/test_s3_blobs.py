"""The S3 blob store against a real S3 API server (moto on loopback): what the local store does,
with the configured encryption and storage class on every object, NotFound for what is gone,
and STORE_UNAVAILABLE (a retryable error) while the server is down, then working again."""

from __future__ import annotations

from pathlib import Path

import pytest

from samsvc.errors import ConfigurationError, NotFound, Unavailable
from samsvc.infra.object_storage import S3Options, parse_location
from samsvc.jobs.blob_stores.s3 import S3BlobStore
from samsvc.jobs.wiring import open_blob_store
from tests.support import S3Server


def store_for(s3: S3Server, prefix: str, **options: object) -> S3BlobStore:
    store = open_blob_store(
        f"s3://{s3.bucket}/{prefix}", S3Options(endpoint_url=s3.url, timeout_s=1, max_attempts=1, **options)
    )  # type: ignore[arg-type]
    assert isinstance(store, S3BlobStore)
    return store


def test_objects_round_trip_and_go_when_the_job_ends(s3: S3Server) -> None:
    store = store_for(s3, "blobs/a", sse="AES256", storage_class="STANDARD_IA")
    store.put("job_1", 0, b"image zero")
    store.put("job_1", 1, b"image one")
    store.put_output("job_1", 1, b"an embedding")
    assert s3.keys("blobs/a/") == ["blobs/a/job_1/0.img", "blobs/a/job_1/1.img", "blobs/a/job_1/1.out"]
    head = s3.client().head_object(Bucket=s3.bucket, Key="blobs/a/job_1/0.img")
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    assert store.get("job_1", 1) == b"image one" and store.get_output("job_1", 1) == b"an embedding"
    with pytest.raises(NotFound) as missing:
        store.get("job_1", 7)
    assert missing.value.reason == "IMAGE_BLOB_MISSING"

    store.delete_inputs("job_1")
    assert s3.keys("blobs/a/") == ["blobs/a/job_1/1.out"]
    with pytest.raises(NotFound):
        store.get("job_1", 0)
    store.delete_job("job_1")
    assert s3.keys("blobs/a/") == []


def test_sweep_removes_only_old_jobs(s3: S3Server) -> None:
    store = store_for(s3, "blobs/sweep")
    store.put("job_old", 0, b"x")
    store.put("job_new", 0, b"y")
    assert store.sweep(older_than_s=3600) == 0
    assert store.sweep(older_than_s=-60) == 2  # everything is older than a minute from now
    assert s3.keys("blobs/sweep/") == []


def test_an_outage_is_store_unavailable_then_passes(s3: S3Server) -> None:
    store = store_for(s3, "blobs/outage")
    store.put("job_2", 0, b"kept")
    s3.stop()
    try:
        for call in (lambda: store.get("job_2", 0), lambda: store.put("job_2", 1, b"z"), lambda: store.sweep(1)):
            with pytest.raises(Unavailable) as caught:
                call()
            assert caught.value.reason == "STORE_UNAVAILABLE"
            assert "127.0.0.1" not in caught.value.message  # no internal address in a caller's error
    finally:
        s3.start()
    assert store.get("job_2", 0) == b"kept"


def test_a_data_dir_with_an_unknown_scheme_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from samsvc.config import Settings
    from samsvc.jobs.blob_stores.local import LocalBlobStore

    monkeypatch.chdir(tmp_path)
    # What a path-only setting did with an object-store URL: a folder named "s3:" appeared here.
    LocalBlobStore(Path("s3://bucket/prefix"))
    assert (tmp_path / "s3:").is_dir()
    (tmp_path / "s3:" / "bucket" / "prefix").rmdir()

    with pytest.raises(ValidationError) as caught:
        Settings(data_dir="gs://bucket/prefix")
    assert "DATA_DIR" in str(caught.value) and "unknown scheme 'gs'" in str(caught.value)
    with pytest.raises(ConfigurationError):
        parse_location("s3:///no-bucket", "DATA_DIR")
    assert parse_location("s3://b/p/q/", "DATA_DIR").key("job", "0.img") == "p/q/job/0.img"
    assert parse_location(str(tmp_path), "DATA_DIR").path == tmp_path
    assert Settings(data_dir="s3://bucket/prefix").data_dir == "s3://bucket/prefix"
