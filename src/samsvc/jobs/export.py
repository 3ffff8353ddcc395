"""Result export: each finished image's masks written where the batch asked (`export_url`,
already placed under the calling key's own folder or prefix of an allowed root by
samsvc.validation.export) as COCO JSON with RLE segmentations plus an overlay PNG, under
JOB_ID/; and a manifest of every image's objects when the job ends. A failed write is the
image's export error (EXPORT_FAILED): its masks are kept, the image and the job do not fail. S3
credentials are the server's (the standard AWS chain).

Each write checks the roots again (settings may have changed since the job was accepted) and
walks a folder from its allowed root one directory at a time without following symbolic links
(O_NOFOLLOW under the previous directory's descriptor), so a link planted after the job was
accepted fails the write instead of leading it out of EXPORT_DIRS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samsvc.encoding.masks import encode_rle_runs
from samsvc.errors import Unavailable
from samsvc.infra.object_storage import S3Options, StorageLocation, parse_location, s3_client
from samsvc.validation.export import ExportRoots

log = logging.getLogger(__name__)

#: The manifest's name under JOB_ID/.
MANIFEST_NAME = "manifest.json"
#: Results read per page while writing the manifest.
DEFAULT_MANIFEST_PAGE = 200


def export_failed(what: str) -> Unavailable:
    return Unavailable(f"the export of {what} could not be written", reason="EXPORT_FAILED")


#: Flags of each directory opened on the way to an export folder: never through a link.
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def url_of(location: StorageLocation, job_id: str, name: str) -> str:
    if location.path is not None:
        return str(location.path / job_id / name)
    return f"s3://{location.bucket}/{location.key(job_id, name)}"


class ExportWriter:
    """Writes named objects under `location`/JOB_ID/, inside `roots`."""

    def __init__(self, url: str, s3: S3Options, roots: ExportRoots) -> None:
        self.location: StorageLocation = parse_location(url, "export_url")
        self._s3 = s3
        self._roots = roots
        self._client: Any = None

    def url_of(self, job_id: str, name: str) -> str:
        return url_of(self.location, job_id, name)

    def write(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        """Write one object; returns its URL or path. Raises OSError (a folder outside the roots
        or reached through a link included) or botocore's errors."""
        if self.location.path is not None:
            self._write_file(self.location.path, job_id, name, data)
        else:
            if self._roots.bucket_root(self.location) is None:
                raise PermissionError(f"s3://{self.location.bucket}/{self.location.prefix} is not in EXPORT_BUCKETS")
            if self._client is None:
                self._client = s3_client(self._s3)
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=self.location.key(job_id, name),
                Body=data,
                ContentType=content_type,
                **self._s3.put_args(),
            )
        return self.url_of(job_id, name)

    def _write_file(self, folder: Path, job_id: str, name: str, data: bytes) -> None:
        root = self._roots.dir_root(folder)
        if root is None:
            raise PermissionError(f"{folder} is not in EXPORT_DIRS")
        descriptor = os.open(root, _DIRECTORY_FLAGS & ~os.O_NOFOLLOW)  # the operator's own root may be a link
        try:
            for part in (*folder.relative_to(root).parts, job_id):
                with contextlib.suppress(FileExistsError):  # made by an earlier image or another job
                    os.mkdir(part, 0o755, dir_fd=descriptor)
                inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)  # ELOOP / ENOTDIR on a link
                os.close(descriptor)
                descriptor = inner
            part_name = f".{name}.{os.urandom(6).hex()}.part"
            out = os.open(part_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=descriptor)
            try:
                with os.fdopen(out, "wb") as handle:
                    handle.write(data)
                os.replace(part_name, name, src_dir_fd=descriptor, dst_dir_fd=descriptor)  # a link there is replaced
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(part_name, dir_fd=descriptor)
                raise
        finally:
            os.close(descriptor)


def _write_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


def coco_document(index: int, width: int, height: int, masks: list[Any]) -> dict[str, Any]:
    """COCO instances for one image: `masks` are MaskRecords; segmentations are COCO RLE (the
    compressed counts pycocotools reads), plus SAM's scores."""
    annotations = []
    for number, record in enumerate(masks, start=1):
        h, w = record.rle["size"]
        rle = encode_rle_runs((int(h), int(w)), record.rle["counts"].tolist())
        annotations.append(
            {
                "id": number,
                "image_id": index,
                "category_id": 1,
                "segmentation": {"size": list(rle.size), "counts": rle.counts},
                "area": record.area,
                "bbox": list(record.bbox),
                "iscrowd": 0,
                "predicted_iou": record.predicted_iou,
                "stability_score": record.stability_score,
                "point_coords": [list(p) for p in record.point_coords],
                "crop_box": list(record.crop_box),
            }
        )
    return {
        "images": [{"id": index, "width": width, "height": height, "file_name": f"image_{index:05d}"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }


def export_image(
    writer: ExportWriter, job_id: str, index: int, width: int, height: int, masks: list[Any], overlay: bytes
) -> tuple[str, ...]:
    """Write the image's COCO JSON and overlay; EXPORT_FAILED if either write fails."""
    stem = f"image_{index:05d}"
    document = json.dumps(coco_document(index, width, height, masks), separators=(",", ":")).encode()
    try:
        return (
            writer.write(job_id, stem + ".json", document, "application/json"),
            writer.write(job_id, stem + ".png", overlay, "image/png"),
        )
    except _write_errors() as exc:
        # The cause names buckets, hosts or paths: it goes to the log, not to the caller.
        log.warning("export of image %d of job %s failed: %s", index, job_id, exc)
        raise export_failed(f"image {index}") from exc


def manifest_url(export_url: str, job_id: str) -> str:
    return url_of(parse_location(export_url, "export_url"), job_id, MANIFEST_NAME) if export_url else ""


def manifest(job_id: str, status: str, results: Iterator[Any]) -> bytes:
    """Every image's objects and export error, in index order."""
    images = []
    for result in results:
        entry: dict[str, Any] = {"index": result.index, "objects": list(result.exported)}
        if result.export_error is not None:
            entry["export_error"] = {"reason": result.export_error.reason, "message": result.export_error.message}
        if result.error is not None:
            entry["error"] = {"reason": result.error.reason, "message": result.error.message}
        images.append(entry)
    return json.dumps({"job_id": job_id, "status": status, "images": images}, indent=1).encode()


def write_manifest(writer: ExportWriter, job_id: str, status: str, results: Iterator[Any]) -> str | None:
    """Write the manifest; None (logged) when it cannot be written: every image's objects stay
    listed in its result."""
    try:
        return writer.write(job_id, MANIFEST_NAME, manifest(job_id, status, results), "application/json")
    except _write_errors() as exc:
        log.warning("export manifest of job %s could not be written: %s", job_id, exc)
        return None
