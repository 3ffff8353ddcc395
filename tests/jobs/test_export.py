"""Result export: a batch naming export_url gets each image's masks written there as COCO JSON
(RLE) plus an overlay PNG, and a manifest when it ends, to a real S3 API server (moto) or to a
folder, under the caller's own folder or prefix of a root EXPORT_BUCKETS or EXPORT_DIRS allows;
any other place is refused before anything is accepted, a link planted later is not followed,
and a write that fails is that image's EXPORT_FAILED, never a failed image or job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from samsvc.config import Settings
from samsvc.jobs import failpoints
from samsvc.server.auth import digest, new_key
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import S3Server, ServerThread, encode, rich_status, scene
from tests.support.options import FAST

#: A bucket the server's credentials reach but no export may touch.
FINANCE = "finance-reports"
#: The folder or prefix of exports without authentication.
ANONYMOUS = "anonymous"


@pytest.fixture(scope="module")
def s3(s3: S3Server) -> S3Server:
    """The shared S3 server, with the finance bucket no export may reach besides."""
    s3.client().create_bucket(Bucket=FINANCE)
    return s3


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings, s3: S3Server, export_root: Path) -> Settings:
    settings = base_settings.model_copy(
        update={
            "s3_endpoint_url": s3.url,
            "export_dirs": [export_root],
            "export_buckets": [f"{s3.bucket}/exports", f"{s3.bucket}/sdk", "no-such-bucket-here"],
        }
    )
    return settings


def run_batch(
    server: ServerThread, export_url: str, count: int = 2, key: str = ""
) -> tuple[job_pb2.Job, list[job_pb2.ImageResult]]:
    images = [encode(scene(64, 48, seed=90 + i)) for i in range(count)]
    auth = [("x-api-key", key)] if key else []
    request = pb.SubmitBatchRequest(images=images, options=FAST, export_url=export_url)
    submitted = server.stub.SubmitBatch(request, metadata=auth)
    events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=120, metadata=auth))
    job = server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=submitted.job_id), metadata=auth)
    results = server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=submitted.job_id), metadata=auth).results
    assert events[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED
    return job, sorted(results, key=lambda r: r.index)


def assert_coco_matches(document: dict[str, object], result: job_pb2.ImageResult) -> None:
    annotations = document["annotations"]
    assert isinstance(annotations, list) and len(annotations) == len(result.masks) > 0
    for annotation, mask in zip(annotations, result.masks, strict=True):
        rle = annotation["segmentation"]
        pixels = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        expected = np.array(Image.open(io.BytesIO(mask.segmentation))) > 0
        assert np.array_equal(pixels, expected)
        assert annotation["area"] == mask.area and annotation["bbox"] == list(mask.bbox)
        assert annotation["predicted_iou"] == pytest.approx(mask.predicted_iou)


def test_export_to_a_bucket(server: ServerThread, s3: S3Server) -> None:
    job, results = run_batch(server, f"s3://{s3.bucket}/exports/run1")
    prefix = f"exports/{ANONYMOUS}/run1/{job.job_id}/"
    assert s3.keys(prefix) == [
        prefix + "image_00000.json", prefix + "image_00000.png",
        prefix + "image_00001.json", prefix + "image_00001.png",
        prefix + "manifest.json",
    ]  # fmt: skip
    assert job.export_manifest == f"s3://{s3.bucket}/{prefix}manifest.json"
    client = s3.client()
    for result in results:
        stem = f"s3://{s3.bucket}/{prefix}image_{result.index:05d}"
        assert list(result.exported_objects) == [stem + ".json", stem + ".png"]
        assert not result.HasField("export_error") and not result.visualization  # none was asked for
        body = client.get_object(Bucket=s3.bucket, Key=f"{prefix}image_{result.index:05d}.json")["Body"].read()
        assert_coco_matches(json.loads(body), result)
        overlay = client.get_object(Bucket=s3.bucket, Key=f"{prefix}image_{result.index:05d}.png")["Body"].read()
        assert Image.open(io.BytesIO(overlay)).size == (64, 48)
    manifest = json.loads(client.get_object(Bucket=s3.bucket, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["status"] == "completed"
    assert [image["objects"] for image in manifest["images"]] == [list(r.exported_objects) for r in results]


def test_export_to_an_allowed_folder(server: ServerThread, export_root: Path) -> None:
    job, results = run_batch(server, str(export_root / "team-a"), count=1)
    folder = export_root / ANONYMOUS / "team-a" / job.job_id
    assert sorted(p.name for p in folder.iterdir()) == ["image_00000.json", "image_00000.png", "manifest.json"]
    assert_coco_matches(json.loads((folder / "image_00000.json").read_text()), results[0])
    assert list(results[0].exported_objects) == [str(folder / "image_00000.json"), str(folder / "image_00000.png")]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/etc/samsvc", "EXPORT_DIR_FORBIDDEN"),
        ("{root}/../escape", "EXPORT_DIR_FORBIDDEN"),
        ("{root}/a/../../escape", "EXPORT_DIR_FORBIDDEN"),
        (f"s3://{FINANCE}/q3/", "EXPORT_BUCKET_FORBIDDEN"),
        ("s3://no-bucket-of-that-name-exists/q3", "EXPORT_BUCKET_FORBIDDEN"),
        ("s3://samsvc-test/elsewhere", "EXPORT_BUCKET_FORBIDDEN"),
        ("s3://samsvc-test/exports/../elsewhere", "BAD_EXPORT_URL"),
        ("relative/folder", "BAD_EXPORT_URL"),
        ("gs://bucket/prefix", "BAD_EXPORT_URL"),
        ("s3:///no-bucket", "BAD_EXPORT_URL"),
    ],
)
def test_other_places_are_refused_before_anything_is_accepted(
    server: ServerThread, export_root: Path, url: str, reason: str
) -> None:
    before = len(server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs)
    request = pb.SubmitBatchRequest(
        images=[encode(scene(32, 32))], options=FAST, export_url=url.format(root=export_root)
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.SubmitBatch(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    assert details["ErrorInfo"].reason == reason
    assert [v.field for v in details["BadRequest"].field_violations] == ["export_url"]
    assert len(server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs) == before
    assert not (export_root.parent / "escape").exists()


def test_a_bucket_not_allowed_is_refused_whether_it_exists_or_not(server: ServerThread, s3: S3Server) -> None:
    """Buckets used to be held to nothing: a key exported into s3://finance-reports/q3/ next to
    the company's files, and success against EXPORT_FAILED told which buckets exist. Now both
    are refused alike before the job is accepted, and nothing is written."""
    messages = []
    for bucket in (FINANCE, "no-bucket-of-that-name-exists"):
        request = pb.SubmitBatchRequest(images=[encode(scene(32, 32))], options=FAST, export_url=f"s3://{bucket}/q3/")
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.SubmitBatch(request)
        messages.append(caught.value.details())
    assert messages[0] == messages[1], "the answer does not tell whether the bucket exists"
    assert s3.client().list_objects_v2(Bucket=FINANCE).get("KeyCount", 0) == 0


def test_a_link_planted_after_the_job_is_accepted_is_not_followed(
    server: ServerThread, export_root: Path, tmp_path: Path
) -> None:
    """The folder was checked only when the batch was submitted: a symbolic link made in between
    led the write out of EXPORT_DIRS. Now each write walks the folder from its root without
    following links: the export fails (EXPORT_FAILED), nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()

    def plant_link(**context: object) -> None:
        (export_root / ANONYMOUS).mkdir(exist_ok=True)
        link = export_root / ANONYMOUS / "planted"
        if not link.is_symlink():
            link.symlink_to(outside, target_is_directory=True)

    failpoints.install("jobs.image.before_export", plant_link)
    try:
        job, results = run_batch(server, str(export_root / "planted"), count=1)
    finally:
        failpoints.clear()
    assert job.status == job_pb2.JOB_STATUS_COMPLETED and len(results[0].masks) > 0
    assert "EXPORT_FAILED" in str(results[0].export_error.details[0].value)
    assert str(export_root) not in results[0].export_error.message
    assert list(outside.iterdir()) == [], "nothing was written through the link"


def test_each_key_exports_under_its_own_prefix(
    base_settings: Settings, s3: S3Server, export_root: Path, tmp_path: Path
) -> None:
    """Exports landed wherever the caller pointed: one key could write into another's folder or
    prefix. Now every export goes under ROOT/OWNER/, whatever path the key names."""
    alice, bob = new_key(), new_key()
    settings = base_settings.model_copy(
        update={
            "s3_endpoint_url": s3.url,
            "export_dirs": [tmp_path],
            "export_buckets": [f"{s3.bucket}/tenants"],
            "api_keys": [f"alice:{digest(alice)}", f"bob:{digest(bob)}"],
            "data_dir": str(tmp_path / "data"),
        }
    )
    running = ServerThread(settings)
    try:
        job, _ = run_batch(running, f"s3://{s3.bucket}/tenants/bob/reports", count=1, key=alice)
        assert job.export_manifest == f"s3://{s3.bucket}/tenants/alice/bob/reports/{job.job_id}/manifest.json"
        assert s3.keys("tenants/bob/") == [], "alice wrote nothing under bob's prefix"
        job, _ = run_batch(running, str(tmp_path / "bob"), count=1, key=alice)
        assert (tmp_path / "alice" / "bob" / job.job_id / "manifest.json").is_file()
        assert not (tmp_path / "bob").exists()
    finally:
        running.stop()


def test_a_failed_write_is_the_images_export_error_not_a_failed_job(server: ServerThread) -> None:
    # The bucket does not exist: every write fails.
    job, results = run_batch(server, "s3://no-such-bucket-here/exports")
    assert job.status == job_pb2.JOB_STATUS_COMPLETED and job.failed_images == 0
    for result in results:
        assert len(result.masks) > 0 and not result.HasField("error")
        assert result.export_error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "EXPORT_FAILED" in str(result.export_error.details[0].value)
        assert "no-such-bucket" not in result.export_error.message
        assert list(result.exported_objects) == []


def test_the_sdk_exports_and_reports_each_images_objects(server: ServerThread, s3: S3Server) -> None:
    from samsvc.client.sync import Client

    client = Client(server.address)
    try:
        outcomes = list(
            client.segment_batch(
                [scene(48, 40, seed=99)], export_url=f"s3://{s3.bucket}/sdk", points_per_side=2, pred_iou_thresh=0.0
            )
        )
        failed = list(
            client.segment_batch([scene(48, 40, seed=98)], export_url="s3://no-such-bucket-here/x", points_per_side=2)
        )
    finally:
        client.close()
    (outcome,) = outcomes
    assert outcome.ok and outcome.export_error is None
    assert [url.rsplit("/", 1)[1] for url in outcome.exported_objects] == ["image_00000.json", "image_00000.png"]
    (broken,) = failed
    assert broken.ok and broken.export_error is not None and broken.export_error.reason == "EXPORT_FAILED"
