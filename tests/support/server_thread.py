"""A real samsvc gRPC server in this process, on a loopback port."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import grpc

from samsvc.config import Settings
from samsvc.v1 import segmentation_service_pb2_grpc

if TYPE_CHECKING:
    from samsvc.server.app import RunningServer


class ServerThread:
    """A real samsvc gRPC server on a loopback port, run by an event loop in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.thread.start()
        from samsvc.server.app import start_server  # the server's imports (torch) load with the first server

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
