"""The blob store in an S3-compatible bucket (DATA_DIR=s3://bucket/prefix): one object per
image or output under `prefix/job_id/`, written with the configured server-side encryption and
storage class. A put is one PUT (atomic: readers see all of an object or none). An outage is
Unavailable (STORE_UNAVAILABLE): a submit is refused and nothing is accepted; a worker's image
retries with backoff like any transient failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from samsvc.infra.object_storage import S3Options, StorageLocation, is_missing, s3_client, unavailable
from samsvc.jobs.blobs import INPUT_SUFFIX, OUTPUT_SUFFIX, checked_id, missing_input, missing_output

#: Keys per DeleteObjects call (S3's limit).
_DELETE_BATCH = 1000


class S3BlobStore:
    def __init__(self, location: StorageLocation, options: S3Options, client: Any = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.location = location
        self.options = options
        self._client = client if client is not None else s3_client(options)
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def _key(self, job_id: str, name: str = "") -> str:
        return self.location.key(checked_id(job_id), name)

    def _put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=key, Body=data, **self.options.put_args())
        except self._errors as exc:
            raise unavailable("the blob store") from exc

    def _get(self, key: str) -> bytes | None:
        try:
            response = self._client.get_object(Bucket=self.location.bucket, Key=key)
            body: bytes = response["Body"].read()
        except self._errors as exc:
            if is_missing(exc):
                return None
            raise unavailable("the blob store") from exc
        return body

    def put(self, job_id: str, index: int, data: bytes) -> None:
        self._put(self._key(job_id, f"{index}{INPUT_SUFFIX}"), data)

    def get(self, job_id: str, index: int) -> bytes:
        data = self._get(self._key(job_id, f"{index}{INPUT_SUFFIX}"))
        if data is None:
            raise missing_input(job_id, index)
        return data

    def put_output(self, job_id: str, index: int, data: bytes) -> None:
        self._put(self._key(job_id, f"{index}{OUTPUT_SUFFIX}"), data)

    def get_output(self, job_id: str, index: int) -> bytes:
        data = self._get(self._key(job_id, f"{index}{OUTPUT_SUFFIX}"))
        if data is None:
            raise missing_output(job_id, index)
        return data

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])
        except self._errors as exc:
            raise unavailable("the blob store") from exc

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
            try:
                self._client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})
            except self._errors as exc:
                raise unavailable("the blob store") from exc

    def delete_inputs(self, job_id: str) -> None:
        """Remove the job's images (its outputs stay)."""
        keys = [o["Key"] for o in self._objects(self._key(job_id) + "/") if o["Key"].endswith(INPUT_SUFFIX)]
        self._delete(keys)

    def delete_job(self, job_id: str) -> None:
        self._delete([o["Key"] for o in self._objects(self._key(job_id) + "/")])

    def sweep(self, older_than_s: float) -> int:
        """Remove the objects of jobs whose newest object is older than `older_than_s` seconds;
        returns how many jobs."""
        horizon = time.time() - older_than_s
        root = self.location.key() + "/" if self.location.prefix else ""
        jobs: dict[str, tuple[float, list[str]]] = {}
        for entry in self._objects(root):
            job = entry["Key"][len(root) :].split("/", 1)[0]
            newest, keys = jobs.get(job, (0.0, []))
            keys.append(entry["Key"])
            jobs[job] = (max(newest, entry["LastModified"].timestamp()), keys)
        stale = [keys for newest, keys in jobs.values() if newest < horizon]
        self._delete([key for keys in stale for key in keys])
        return len(stale)
