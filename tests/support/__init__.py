"""Helpers shared by the tests, one module per concern: synthetic images (`images`), polling with
a deadline (`waiting`; tests never sleep to wait), a server in this process (`server_thread`),
samsvc's own processes (`processes`), Redis and S3 servers of the test's own (`redis`, `s3`),
raw HTTP and a webhook receiver (`http`), rich gRPC errors (`grpc_errors`), and what a test
starts, which sets its markers (`starts`). The shared fixtures built on them live in
`tests/fixtures.py`.

Importing the package loads none of samsvc's server (or torch): that waits for the first server.
"""

from tests.support.grpc_errors import rich_status
from tests.support.http import RawAnswer, WebhookReceiver, closed_by_peer, raw_request
from tests.support.images import encode, scene
from tests.support.ports import free_port
from tests.support.processes import ServeProcess, WorkerProcess, settings_env
from tests.support.redis import RedisServer
from tests.support.s3 import S3Server
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for

__all__ = [
    "RawAnswer",
    "RedisServer",
    "S3Server",
    "ServeProcess",
    "ServerThread",
    "WebhookReceiver",
    "WorkerProcess",
    "closed_by_peer",
    "encode",
    "free_port",
    "raw_request",
    "rich_status",
    "scene",
    "settings_env",
    "wait_for",
]
