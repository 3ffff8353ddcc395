"""Webhooks never hold up image work, and one attempt is bounded: its own threads (in both
runtimes), at most WEBHOOK_TIMEOUT_S per attempt however slowly the receiver answers, and at
most MAX_RESPONSE_BYTES of its answer read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.config import Settings
from samsvc.errors import Unavailable
from samsvc.jobs.webhooks import deliver
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.validation.webhook_url import WebhookPolicy
from tests.faults import wait_ended
from tests.support import RedisServer, ServerThread, WorkerProcess, encode, scene, wait_for
from tests.support.options import FAST
from tests.support.stacks import MODES
from tests.support.starts import starts

POLICY = WebhookPolicy(["127.0.0.1"])


class SlowReceiver:
    """A receiver that reads the request, then answers `answer` one byte every `drip_s` seconds
    (or never, with no answer), counting its connections."""

    def __init__(self, answer: bytes = b"", drip_s: float = 1.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.connections = 0
        self.closed = threading.Event()
        self.answer, self.drip_s = answer, drip_s
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in self.answer:
                if self.closed.wait(self.drip_s):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
            self.closed.wait(120)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_an_attempt_is_bounded_however_slowly_the_receiver_answers() -> None:
    dripping = SlowReceiver(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, drip_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            deliver(dripping.url, {"job_id": "job_x"}, secret="", policy=POLICY, timeout=2.0)
        assert refused.value.reason == "WEBHOOK_TIMEOUT"
        assert time.monotonic() - started < 4, "each read was within the socket timeout; the attempt was not"
    finally:
        dripping.close()


def test_only_the_start_of_a_huge_answer_is_read() -> None:
    import http.server

    class Huge(http.server.BaseHTTPRequestHandler):
        written = 0
        cut_off = threading.Event()  # the deliverer closed the connection before the answer's end

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(1 << 14):  # 1 GiB announced; the deliverer stops reading long before
                    self.wfile.write(b"x" * 65536)
                    type(self).written += 65536
            except OSError:
                type(self).cut_off.set()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert deliver(url, {"job_id": "job_x"}, secret="", policy=POLICY, timeout=10.0) == 200
        # What the receiver manages to write beyond MAX_RESPONSE_BYTES is what the loopback socket
        # buffers hold (several MiB, set by the kernel), so the bound is the connection being closed
        # long before the 1 GiB announced, not a byte count near MAX_RESPONSE_BYTES.
        wait_for(Huge.cut_off.is_set, what="the deliverer to close the connection")
        assert Huge.written < (1 << 30) // 16, "the answer was read far beyond its start"
    finally:
        server.shutdown()
        server.server_close()


@starts("redis", "processes", when_param="redis", params=MODES)
def settings(request: pytest.FixtureRequest, base_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "worker_threads": 1,
            "webhook_allowed_hosts": ["127.0.0.1"],
            "webhook_timeout_s": 60.0,
            "webhook_max_retries": 0,
        }
    )
    if request.param == "in_process":
        yield settings
        return
    redis_server = RedisServer(tmp_path)
    yield settings.model_copy(update={"redis_url": redis_server.url})
    redis_server.stop()


def test_a_hanging_webhook_does_not_hold_up_images(settings: Settings) -> None:
    """One image thread; a webhook receiver that never answers (60 s allowed). A batch sent
    right after the first job ended still runs at once: before, it waited for the webhook."""
    hanging = SlowReceiver()
    worker = WorkerProcess(settings) if settings.redis_url else None
    server = ServerThread(settings)
    try:
        image = [encode(scene(48, 32, seed=3))]
        first = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=image, options=FAST, webhook_url=hanging.url))
        wait_ended(server.stub, first.job_id)
        wait_for(lambda: hanging.connections >= 1, timeout=60, what="the webhook attempt to start")
        started = time.monotonic()
        second = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=image, options=FAST))
        assert wait_ended(server.stub, second.job_id, timeout=50).status == job_pb2.JOB_STATUS_COMPLETED
        assert time.monotonic() - started < 30, "the image ran while the webhook attempt was still hanging"
        assert hanging.connections == 1 and not hanging.closed.is_set()
    finally:
        hanging.close()
        server.stop()
        if worker is not None:
            worker.stop()
