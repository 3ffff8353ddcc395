"""A real S3 API server (moto) of the test's own, on a free loopback port."""

from __future__ import annotations

from typing import Any

from tests.support.ports import free_port
from tests.support.starts import expect_started


class S3Server:
    """A real S3 API (moto in server mode) on a loopback port, with one bucket. `stop` and
    `start` again keep the objects (they live in this process), as an S3 outage would."""

    REGION = "us-east-1"

    def __init__(self, bucket: str = "samsvc-test") -> None:
        import os

        from moto.server import ThreadedMotoServer

        expect_started("s3")
        # moto checks requests are signed; any key pair signs them. Set for this process's clients.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "samsvc-test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "samsvc-test")
        os.environ.setdefault("AWS_DEFAULT_REGION", self.REGION)
        self._factory = ThreadedMotoServer
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self._server: Any = None
        self.start()
        self.client().create_bucket(Bucket=bucket)

    def start(self) -> None:
        self._server = self._factory(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=self.REGION)

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(entry["Key"] for entry in listing.get("Contents", []))
