"""Image bytes of batch jobs, kept out of messages: messages carry (job id, index) only; and
the outputs a job keeps beside its records (an embedding job's embeddings).

Inputs go when the job ends; outputs stay until the sweep after JOB_RETENTION_S (or a purge).
`DATA_DIR` picks the backend: a directory shared by servers and workers (a volume;
samsvc.jobs.blob_stores.local) or an S3-compatible bucket (`s3://bucket/prefix`;
samsvc.jobs.blob_stores.s3), both behind BlobStore.
"""

from __future__ import annotations

import re
from typing import Protocol

from samsvc.errors import NotFound

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: Name suffixes of a job's images and of its outputs.
INPUT_SUFFIX, OUTPUT_SUFFIX = ".img", ".out"


class BlobStore(Protocol):
    """Raises NotFound (IMAGE_BLOB_MISSING, OUTPUT_BLOB_MISSING) for what is not stored and
    Unavailable (STORE_UNAVAILABLE) when the store does not answer: workers retry those."""

    def put(self, job_id: str, index: int, data: bytes) -> None: ...

    def get(self, job_id: str, index: int) -> bytes: ...

    def put_output(self, job_id: str, index: int, data: bytes) -> None: ...

    def get_output(self, job_id: str, index: int) -> bytes: ...

    def delete_inputs(self, job_id: str) -> None: ...

    def delete_job(self, job_id: str) -> None: ...

    def sweep(self, older_than_s: float) -> int: ...


def checked_id(job_id: str) -> str:
    if not SAFE_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def missing_input(job_id: str, index: int) -> NotFound:
    return NotFound(f"image {index} of job {job_id} is no longer stored", reason="IMAGE_BLOB_MISSING")


def missing_output(job_id: str, index: int) -> NotFound:
    return NotFound(f"the output of image {index} of job {job_id} is no longer stored", reason="OUTPUT_BLOB_MISSING")
