"""The least-privilege bucket policy in deploy/s3 is enough for samsvc and no more: with
credentials of an IAM user holding only that policy, against a real S3 API (moto in server mode,
which evaluates IAM policies once told to), samsvc's own code keeps its blob store, writes its
exports and downloads a model, and cannot read exports back, write models, or touch another
bucket, whatever EXPORT_BUCKETS says."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import settings as moto_settings

from samsvc.engine.download import download_model
from samsvc.engine.registry import ModelRegistry
from samsvc.infra.object_storage import S3Options, StorageLocation
from samsvc.jobs.blob_stores.s3 import S3BlobStore
from samsvc.jobs.export import ExportWriter
from samsvc.validation.export import ExportRoots
from tests.support import S3Server
from tests.support.starts import starts

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = b"weights" * 1000


@starts("s3", scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server(bucket="samsvc")
    admin = server.client()
    admin.create_bucket(Bucket="finance-reports")
    admin.put_object(Bucket="samsvc", Key="models/tiny.pth", Body=WEIGHTS)
    yield server
    server.stop()


@pytest.fixture
def least_privilege(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's S3 clients use a user holding deploy/s3/iam-policy.json only, enforced."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3.url, region_name=S3Server.REGION)
    name = f"samsvc-{id(s3)}"
    iam.create_user(UserName=name)
    policy = (ROOT / "deploy" / "s3" / "iam-policy.json").read_text()
    assert policy == (ROOT / "deploy" / "s3" / "minio-policy.json").read_text()
    iam.put_user_policy(UserName=name, PolicyName="samsvc-storage", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session resolves credentials once: a new one
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from now on, policies hold


def test_the_policy_lets_samsvc_do_its_work_and_nothing_else(
    s3: S3Server, least_privilege: None, tmp_path: Path
) -> None:
    from botocore.exceptions import ClientError

    options = S3Options(endpoint_url=s3.url, region=S3Server.REGION)
    blobs = S3BlobStore(StorageLocation(bucket="samsvc", prefix="data"), options)
    blobs.put("job_1", 0, b"image")
    assert blobs.get("job_1", 0) == b"image"
    blobs.delete_inputs("job_1")

    roots = ExportRoots.parse([], ["samsvc/exports", "finance-reports"])  # the second by mistake
    written = ExportWriter("s3://samsvc/exports/alice", options, roots).write("job_1", "a.json", b"{}", "text/plain")
    assert written == "s3://samsvc/exports/alice/job_1/a.json"
    with pytest.raises(ClientError):
        ExportWriter("s3://finance-reports/alice", options, roots).write("job_1", "a.json", b"{}", "text/plain")

    models = tmp_path / "models.toml"
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    models.write_text(
        f'[models.tiny]\nurl = "s3://samsvc/models/tiny.pth"\nsha256 = "{digest}"\narchitecture = "vit_b"\n',
        encoding="utf-8",
    )
    spec = ModelRegistry.load(tmp_path / "weights", models).get("tiny")
    assert spec is not None and download_model(spec, s3=options).read_bytes() == WEIGHTS

    client = s3.client()  # with the same (restricted) credentials
    for refused in (
        lambda: client.get_object(Bucket="samsvc", Key="exports/alice/job_1/a.json"),  # exports: write-only
        lambda: client.put_object(Bucket="samsvc", Key="models/tiny.pth", Body=b"swapped"),  # models: read-only
        lambda: client.get_object(Bucket="finance-reports", Key="anything"),
    ):
        with pytest.raises(ClientError) as caught:
            refused()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
