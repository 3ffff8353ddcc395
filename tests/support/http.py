"""HTTP as the tests need it: a loopback server for a handler, a webhook receiver, and raw HTTP/1.1
exchanges sent as an abusive client would."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port in a thread: yields the base URL, stops on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class WebhookReceiver:
    """A webhook receiver on a loopback port: keeps (headers, body) of every POST; the first
    `failures` are answered 500, the rest 204."""

    def __init__(self, failures: int = 0, path: str = "/hook") -> None:
        import http.server

        received: list[tuple[dict[str, str], bytes]] = []
        left = {"failures": failures}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                failing = left["failures"] > 0
                left["failures"] -= failing
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.received = received
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class RawAnswer:
    """What a raw HTTP/1.1 exchange got: the status (None if the connection closed first), the
    body bytes read, the request body bytes sent before the answer, and the seconds it took."""

    status: int | None
    body: bytes
    sent: int
    seconds: float


def raw_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body_size: int = 0,
    *,
    send_at_most: int | None = None,
    chunk: int = 64 * 1024,
    pace: float = 0.0,
    timeout: float = 30.0,
) -> RawAnswer:
    """Send a request as an abusive client might: a body of `body_size` bytes (announced in
    Content-Length) in chunks, stopping as soon as an answer arrives, or after `send_at_most`
    bytes (then waiting for an answer without sending more). `pace`: seconds to wait for an
    answer before each chunk (a slow uploader; `sent` then tells what the gateway took in
    before answering, not what the kernel's buffers swallowed)."""
    import select
    import socket

    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Content-Length: {body_size}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        limit = body_size if send_at_most is None else min(send_at_most, body_size)
        piece = b"A" * chunk
        while sent < limit:
            if select.select([sock], [], [], pace)[0]:
                break  # answered before the body was all sent
            try:
                sock.sendall(piece[: min(chunk, limit - sent)])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += min(chunk, limit - sent)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < _content_end(data):
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, TimeoutError):
            pass
    seconds = time.monotonic() - started
    if not data.startswith(b"HTTP/1.1 "):
        return RawAnswer(None, b"", sent, seconds)
    head, _, body = data.partition(b"\r\n\r\n")
    return RawAnswer(int(head.split()[1]), body, sent, seconds)


def _content_end(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


def closed_by_peer(sock: Any) -> bool:
    """Whether the other end has closed `sock` (without waiting)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1) == b"")
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
