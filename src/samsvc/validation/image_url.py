"""An image given by address (`image_url`): which addresses the server fetches, and which of
them it may fetch with Label Studio's token.

- Any public http(s) address, judged like a webhook target (samsvc.validation.webhook_url: no
  loopback, private, link-local or metadata address unless WEBHOOK_ALLOWED_HOSTS names it).
- An address on LABEL_STUDIO_URL's origin only when its path is one of Label Studio's media
  paths (MEDIA_PREFIXES under the base path), normalised: no `.` or `..` segment, raw or
  percent-encoded, no empty segment, no backslash. Only those are fetched with Label Studio's
  token; any other path there (its API: `/api/users/`, `/api/projects/7/export`) is refused,
  so the token is never lent beyond the task images it exists for.

Refusals are INVALID_ARGUMENT with reasons INVALID_IMAGE_URL and IMAGE_URL_FORBIDDEN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from samsvc.errors import InvalidArgument
from samsvc.validation.webhook_url import MAX_URL_LENGTH, WebhookPolicy, WebhookTarget

#: Where Label Studio serves task media: uploads (`/data/upload/<project>/<file>` and, in newer
#: releases, `/storage-data/uploaded/?filepath=upload/...`) and local-files storage
#: (`/data/local-files/?d=<path>`).
MEDIA_PREFIXES = ("/data/upload/", "/storage-data/uploaded/", "/data/local-files/")
#: Query parameters whose values are paths inside Label Studio's storage (checked like paths).
MEDIA_PATH_PARAMETERS = ("filepath", "d")


@dataclass(frozen=True)
class ImageSource:
    """A vetted image address: where to connect, and whether Label Studio's token goes with it."""

    target: WebhookTarget
    label_studio: bool


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _clean_path(path: str) -> bool:
    """Whether a path has no `.`, `..` or empty segment, raw or percent-encoded, nor a backslash."""
    for text in (path, unquote(path)):
        if "\\" in text or "\x00" in text:
            return False
        segments = text.strip("/").split("/")
        if any(segment in {"", ".", ".."} for segment in segments):
            return False
    return True


class ImageUrlPolicy:
    def __init__(self, allowed_hosts: Sequence[str] = (), label_studio_url: str = "") -> None:
        """`allowed_hosts`: WEBHOOK_ALLOWED_HOSTS; `label_studio_url`: LABEL_STUDIO_URL."""
        self._public = WebhookPolicy(allowed_hosts)
        self._studio_base = label_studio_url.rstrip("/")
        studio_host = urlsplit(self._studio_base).hostname or ""
        # Label Studio runs on the operator's network: its own host is reachable although private.
        self.studio = WebhookPolicy((*allowed_hosts, *([studio_host] if studio_host else [])))
        self._studio_path = urlsplit(self._studio_base).path.rstrip("/")

    def is_label_studio(self, url: str) -> bool:
        return bool(self._studio_base) and _origin(url) == _origin(self._studio_base)

    def check(self, url: str, field: str = "image_url", *, resolve: bool = True) -> ImageSource:
        """The vetted source of `url`; INVALID_ARGUMENT naming `field` otherwise. Without
        `resolve` only the address's form is judged (no DNS: before any spending)."""
        if len(url) > MAX_URL_LENGTH:
            raise InvalidArgument.for_field(
                field, f"is longer than {MAX_URL_LENGTH} characters", reason="INVALID_IMAGE_URL"
            )
        if not self.is_label_studio(url):
            return ImageSource(self._public.check(url, field, resolve=resolve, subject="IMAGE_URL"), False)
        parts = urlsplit(url)
        inner = parts.path[len(self._studio_path) :] if parts.path.startswith(self._studio_path + "/") else ""
        values = [value for name, value in parse_qsl(parts.query) if name in MEDIA_PATH_PARAMETERS]
        media = (
            inner.startswith(MEDIA_PREFIXES)
            and _clean_path(inner)
            and all(_clean_path(value) for value in values)
            and not parts.fragment
        )
        if not media:
            raise InvalidArgument.for_field(
                field,
                "is on Label Studio but not one of its media paths "
                f"({', '.join(prefix + '...' for prefix in MEDIA_PREFIXES)}); only those are fetched with its token",
                reason="IMAGE_URL_FORBIDDEN",
            )
        return ImageSource(self.studio.check(url, field, resolve=resolve, subject="IMAGE_URL"), True)
