"""A batch's export_url: empty, `s3://bucket/prefix` under one of EXPORT_BUCKETS, or a folder
under one of EXPORT_DIRS; anything else is refused before the job is accepted (both lists are
empty by default: exports are off until the operator names where they may go). Every export is
written under the calling key's own folder or prefix, right below the allowed root:
`ROOT/OWNER/REST`, so one key never writes among another's files, whatever path it names.

The same roots are checked again when each object is written (samsvc.jobs.export): a folder is
walked from its root without following a symbolic link, so a link made after the job was
accepted cannot lead the write elsewhere."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from samsvc.errors import ConfigurationError, InvalidArgument
from samsvc.infra.object_storage import StorageLocation, parse_location

#: Longest export_url accepted.
MAX_EXPORT_URL_CHARS = 1024
#: The folder or prefix of exports when authentication is off (no key names the caller).
ANONYMOUS_OWNER = "anonymous"


def owner_segment(owner: str) -> str:
    """The path segment of a key's exports (key names are [A-Za-z0-9_.-], never only dots)."""
    return owner or ANONYMOUS_OWNER


@dataclass(frozen=True)
class ExportRoots:
    """Where exports may go: folders (EXPORT_DIRS) and buckets with optional prefixes
    (EXPORT_BUCKETS, `bucket` or `bucket/prefix`)."""

    dirs: tuple[Path, ...] = ()
    buckets: tuple[StorageLocation, ...] = ()

    @classmethod
    def parse(cls, dirs: list[Path], buckets: list[str]) -> ExportRoots:
        parsed = []
        for entry in buckets:
            bucket, _, prefix = entry.removeprefix("s3://").strip("/").partition("/")
            if not bucket or _bad_segments(prefix):
                raise ConfigurationError(f"EXPORT_BUCKETS: {entry!r} is not a bucket or bucket/prefix")
            parsed.append(StorageLocation(bucket=bucket, prefix=prefix.strip("/")))
        return cls(tuple(dirs), tuple(parsed))

    def bucket_root(self, location: StorageLocation) -> StorageLocation | None:
        """The allowed bucket root that holds `location` (the longest prefix), or None."""
        holding = [
            root
            for root in self.buckets
            if root.bucket == location.bucket
            and (not root.prefix or location.prefix == root.prefix or location.prefix.startswith(root.prefix + "/"))
        ]
        return max(holding, key=lambda root: len(root.prefix), default=None)

    def dir_root(self, path: Path) -> Path | None:
        """The allowed folder that holds `path` by its written form (the longest), or None."""
        holding = [root for root in self.dirs if path == root or path.is_relative_to(root)]
        return max(holding, key=lambda root: len(root.parts), default=None)


def _bad_segments(key: str) -> bool:
    """Whether a bucket key or folder path has empty, `.` or `..` segments (or a backslash)."""
    parts = key.strip("/").split("/") if key.strip("/") else []
    return "\\" in key or any(part in {"", ".", ".."} for part in parts)


def _refused(field: str, description: str, reason: str = "BAD_EXPORT_URL") -> InvalidArgument:
    return InvalidArgument.for_field(field, description, reason=reason)


def check_export_url(value: str, roots: ExportRoots, owner: str, field: str = "export_url") -> str:
    """The URL the export is written to (`ROOT/OWNER/REST`), for a `value` under an allowed
    root; INVALID_ARGUMENT naming `field` otherwise. Buckets are judged by name alone, so the
    answer never tells whether a bucket exists."""
    if not value:
        return ""
    if len(value) > MAX_EXPORT_URL_CHARS:
        raise _refused(field, f"is longer than {MAX_EXPORT_URL_CHARS} characters")
    try:
        location = parse_location(value, field)
    except ConfigurationError as exc:
        raise _refused(field, exc.message) from None
    segment = owner_segment(owner)
    if location.path is None:
        if _bad_segments(location.prefix):
            raise _refused(field, "a bucket prefix must not have empty, '.' or '..' segments")
        bucket = roots.bucket_root(location)
        if bucket is None:
            allowed = "none are allowed (EXPORT_BUCKETS is empty)" if not roots.buckets else "it is not in them"
            raise _refused(
                field, f"exports to a bucket need one of EXPORT_BUCKETS; {allowed}", "EXPORT_BUCKET_FORBIDDEN"
            )
        rest = location.prefix[len(bucket.prefix) :].strip("/")
        return f"s3://{bucket.bucket}/" + "/".join(part for part in (bucket.prefix, segment, rest) if part)
    if not location.path.is_absolute():
        raise _refused(field, "a folder must be an absolute path")
    written = PurePosixPath(str(location.path))
    if ".." in written.parts:
        raise _refused(field, "a folder must not have '..' segments", "EXPORT_DIR_FORBIDDEN")
    path = Path(posixpath.normpath(str(written)))
    root = roots.dir_root(path)
    if root is None:
        allowed = "none are allowed (EXPORT_DIRS is empty)" if not roots.dirs else "it is outside EXPORT_DIRS"
        raise _refused(field, f"exports to a folder need a folder the server allows; {allowed}", "EXPORT_DIR_FORBIDDEN")
    target = root / segment / path.relative_to(root)
    # What exists of it now must not lead out of the root (the writer checks again, link by link).
    resolved, real_root = target.resolve(), root.resolve()
    if not (resolved == real_root or resolved.is_relative_to(real_root)):
        raise _refused(field, "the folder leads outside EXPORT_DIRS", "EXPORT_DIR_FORBIDDEN")
    return str(target)
