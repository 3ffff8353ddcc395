"""Helpers shared by the tests: synthetic images, a server running in a background thread,
and polling with a deadline (tests never sleep to wait)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from PIL import Image

from samsvc.config import Settings
from samsvc.server.app import RunningServer, start_server
from samsvc.v1 import segmentation_service_pb2_grpc

T = TypeVar("T")


def scene(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """An RGB picture of a few flat shapes on a gradient, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], -1)
    for _ in range(4):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(min(width, height) // 8, min(width, height) // 3))
        colour = rng.integers(0, 256, size=3)
        if rng.random() < 0.5:
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = colour
        else:
            image[(abs(xx - cx) < radius) & (abs(yy - cy) < radius // 2)] = colour
    noisy = image + rng.normal(0, 4, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = io.BytesIO()
    picture.save(out, format=fmt, **params)
    return out.getvalue()


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ServerThread:
    """A real samsvc gRPC server on a loopback port, run by an event loop in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(settings), self.loop)
        self.running: RunningServer = future.result(timeout=120)
        self.address = self.running.address
        self.channel = grpc.insecure_channel(
            self.address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        )
        self.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(self.channel)

    def stop(self, grace: float | None = 0) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.running.stop(grace), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def rich_status(error: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, Any]]:
    """The google.rpc.Status of a failed call, and its details unpacked by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error}"
    details: dict[str, Any] = {}
    for packed in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details[kind.DESCRIPTOR.name] = message
    return status, details


class ServeProcess:
    """`samsvc serve` as a real process on a free port; the port is read from its banner."""

    def __init__(self, settings: Settings, *extra: str, env: dict[str, str] | None = None) -> None:
        import os
        import re
        import subprocess
        import sys

        command = [sys.executable, "-m", "samsvc.cli", "serve", "--grpc-port", "0", *extra]
        environment = {**os.environ, **settings_env(settings), **(env or {})}
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()  # blocks until the server prints it, or exits
        found = re.search(r"gRPC on [^:]+:(\d+)", banner)
        if found is None:
            self.process.kill()
            self.log.seek(0)
            raise AssertionError(f"server did not start: {banner!r}\n{self.log.read()}")
        self.port = int(found.group(1))
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


def settings_env(settings: Settings) -> dict[str, str]:
    from samsvc.config import settings_environment

    return settings_environment(settings)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A real redis-server on a free loopback port with AOF on (fsync always unless told), which
    tests may kill and restart on the same port and data directory."""

    def __init__(self, directory: Any, appendfsync: str = "always", password: str = "") -> None:
        import shutil

        self.binary = shutil.which("redis-server")
        assert self.binary, "redis-server is not installed (apt-get install redis-server)"
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendfsync = appendfsync
        self.password = password
        self.process: Any = None
        self.start()

    def start(self) -> None:
        import subprocess

        import redis

        self.process = subprocess.Popen(
            [
                str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--dir", str(self.directory),
                "--protected-mode", "no", "--loglevel", "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password or None)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout=20, what="redis-server to answer")
        client.close()

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class WorkerProcess:
    """`samsvc worker` (Dramatiq's CLI underneath) as a real process group."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        self.log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log", delete=False)  # noqa: SIM115 (closed in stop)
        environment = {**os.environ, **settings_env(settings), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "samsvc.cli", "worker"],
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def children(self) -> list[int]:
        """Pids of the processes under `samsvc worker` (Dramatiq's main process and its workers)."""
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as handle:
            return handle.read()

    def stop(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except Exception:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


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


class S3Server:
    """A real S3 API (moto in server mode) on a loopback port, with one bucket. `stop` and
    `start` again keep the objects (they live in this process), as an S3 outage would."""

    REGION = "us-east-1"

    def __init__(self, bucket: str = "samsvc-test") -> None:
        import os

        from moto.server import ThreadedMotoServer

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
