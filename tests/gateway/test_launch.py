"""`samsvc serve` starts Envoy and stops it when it stops; `samsvc gateway` fronts a remote
gRPC address; the rendered config passes `envoy --mode validate`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from samsvc.config import Settings
from samsvc.gateway.envoy_config import GatewayConfig, write_config
from samsvc.gateway.envoy_process import envoy_binary, validate
from samsvc.gateway.launcher import descriptor_set_path
from tests.support import ServeProcess, ServerThread, free_port, settings_env, wait_for

pytestmark = [pytest.mark.processes, pytest.mark.envoy]  # `samsvc serve` and `samsvc gateway` start Envoy


def test_rendered_config_validates(tmp_path: Path) -> None:
    config = GatewayConfig(
        descriptor_set=descriptor_set_path(),
        grpc_host="127.0.0.1",
        grpc_port=50051,
        sidecar_host="127.0.0.1",
        sidecar_port=50052,
        cors_origins=("https://a.example",),
        tls_cert_file=tmp_path / "c.pem",
        tls_key_file=tmp_path / "k.pem",
    )
    path = write_config(config, tmp_path / "envoy.json")
    rendered = json.loads(path.read_text())
    assert rendered["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (tmp_path / "c.pem").write_text("")
    (tmp_path / "k.pem").write_text("")
    without_tls = write_config(
        GatewayConfig(descriptor_set_path(), "127.0.0.1", 50051, "127.0.0.1", 50052), tmp_path / "plain.json"
    )
    validate(envoy_binary(), without_tls)


def envoy_children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if "envoy" in c.name()]


def test_serve_starts_envoy_and_stops_it(base_settings: Settings) -> None:
    rest_port = free_port()
    serve = ServeProcess(base_settings.model_copy(update={"gateway": True, "rest_port": rest_port}))
    try:
        banner = "".join(serve.process.stdout.readline() for _ in range(2))  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{rest_port}" in banner and "/docs" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/health", timeout=30) as response:
            assert json.loads(response.read())["status"] == "SERVING_STATUS_SERVING"
        envoys = envoy_children(serve.process.pid)
        assert len(envoys) == 1
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
        wait_for(lambda: not envoys[0].is_running() or envoys[0].status() == psutil.STATUS_ZOMBIE, what="envoy to stop")
    finally:
        serve.stop()


def test_a_killed_server_takes_its_envoy_with_it(base_settings: Settings) -> None:
    """SIGKILL (the OOM killer's way) gives the server no chance to stop Envoy; the kernel must,
    or an orphaned Envoy keeps the REST port and the restarted server cannot bind it."""
    rest_port = free_port()
    serve = ServeProcess(base_settings.model_copy(update={"gateway": True, "rest_port": rest_port}))
    envoys: list[psutil.Process] = []
    try:
        serve.process.stdout.readline()  # type: ignore[union-attr]  # the gateway's banner line
        envoys = envoy_children(serve.process.pid)
        assert len(envoys) == 1
        serve.process.kill()
        serve.process.wait(timeout=30)
        wait_for(lambda: not envoys[0].is_running() or envoys[0].status() == psutil.STATUS_ZOMBIE, what="envoy to die")
        with socket.socket() as probe:  # the port is free again
            probe.bind(("127.0.0.1", rest_port))
    finally:
        serve.stop()
        for envoy in envoys:  # left behind only when the test fails
            if envoy.is_running():
                envoy.kill()


def test_gateway_command_fronts_a_remote_server(base_settings: Settings) -> None:
    server = ServerThread(base_settings)
    rest_port = free_port()
    env = {
        **os.environ,
        **settings_env(base_settings),
        "GRPC_TARGET": server.address,
        "REST_PORT": str(rest_port),
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "samsvc.cli", "gateway"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = gateway.stdout.readline()  # type: ignore[union-attr]
        assert re.search(rf":{rest_port}\b", line), line
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/models", timeout=30) as response:
            assert len(json.loads(response.read())["models"]) == 8  # 3 SAM, 4 SAM 2.1, tiny
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()
        server.stop()


def test_example_config_is_current() -> None:
    root = Path(__file__).resolve().parents[2]
    rendered = subprocess.run(
        [sys.executable, "-m", "samsvc.gateway.envoy_config"], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert rendered == (root / "envoy" / "envoy.example.json").read_text(), "run the command in envoy/README.md"
    validate(envoy_binary(), root / "envoy" / "envoy.example.json")
