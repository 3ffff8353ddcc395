"""HTTP connections to addresses checked by samsvc.validation.webhook_url: the connection goes
to the vetted address (not to whatever the host resolves to a moment later), TLS still
verifies the host's name, and one attempt is bounded in time however slowly the peer answers.
Webhook deliveries (samsvc.jobs.webhooks) and the server's image fetches (`image_url`,
samsvc.server.image_fetch) use it."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping

from samsvc.errors import FailedPrecondition, Unavailable
from samsvc.validation.image import too_large
from samsvc.validation.webhook_url import WebhookPolicy, WebhookTarget


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: WebhookTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: WebhookTarget, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def pinned_connection(
    target: WebhookTarget, timeout: float, ssl_context: ssl.SSLContext | None = None
) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPSConnection(target, timeout, ssl_context or ssl.create_default_context())
    return _PinnedHTTPConnection(target, timeout)


@contextlib.contextmanager
def bounded(connection: http.client.HTTPConnection, timeout: float) -> Iterator[threading.Event]:
    """Cut `connection` off `timeout` seconds from now (the socket timeout bounds each read;
    this bounds the whole attempt); the event tells whether it was cut."""
    expired = threading.Event()
    watchdog = threading.Timer(timeout, _cut_off, args=(connection, expired))
    watchdog.start()
    try:
        yield expired
    finally:
        watchdog.cancel()
        connection.close()


def _cut_off(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """End an attempt past its time: shutting the socket down wakes the blocked read."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def fetch(
    url: str,
    policy: WebhookPolicy,
    *,
    max_bytes: int,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    field: str = "url",
    subject: str = "URL",
) -> bytes:
    """GET `url` (checked by `policy`) and return its body: INVALID_ARGUMENT when the policy
    refuses it (reasons INVALID_<subject>, <subject>_FORBIDDEN) or the body passes
    `max_bytes`, UNAVAILABLE when the peer fails. Errors name the host, never an address or
    path of this side."""
    target = policy.check(url, field=field, subject=subject)
    return fetch_target(target, max_bytes=max_bytes, timeout=timeout, headers=headers, field=field)


def fetch_target(
    target: WebhookTarget,
    *,
    max_bytes: int,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    field: str = "url",
    method: str = "GET",
    body: bytes | None = None,
) -> bytes:
    """Request a target already vetted (samsvc.validation.webhook_url), as `fetch` does. A peer
    that refuses (HTTP 4xx) is FAILED_PRECONDITION, reason SOURCE_REFUSED, with its status in the
    message and in metadata `source_status` (retrying cannot help until something changes there);
    one unreachable, too slow or failing (5xx) is UNAVAILABLE, reason FETCH_FAILED."""
    connection = pinned_connection(target, timeout)
    with bounded(connection, timeout) as expired:
        try:
            connection.request(method, target.path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            answer = response.read(max_bytes + 1)
            status, phrase = response.status, response.reason
        except (OSError, http.client.HTTPException) as exc:
            what = f"took longer than {timeout:g} s" if expired.is_set() else "was unreachable"
            raise Unavailable(f"{field}: {target.host} {what}", reason="FETCH_FAILED") from exc
    if 400 <= status < 500:
        raise FailedPrecondition(
            f"{field}: {target.host} answered HTTP {status} ({phrase})",
            reason="SOURCE_REFUSED",
            metadata={"source_status": str(status)},
        )
    if not 200 <= status < 300:
        raise Unavailable(
            f"{field}: {target.host} answered HTTP {status} ({phrase})",
            reason="FETCH_FAILED",
            metadata={"source_status": str(status)},
        )
    if len(answer) > max_bytes:
        raise too_large(field, max_bytes)
    return answer
