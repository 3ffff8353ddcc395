"""The container definitions: docker-compose.yml validates (no Docker engine runs here), the
Dockerfile keeps its promises, and the commands the compose services run work together as
plain processes: api, worker and envoy (the gateway) against a real Redis."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from samsvc.config import Settings
from tests.server.test_metrics import value
from tests.support import RedisServer, encode, free_port, scene, wait_for

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]])
def test_compose_files_validate(files: list[str]) -> None:
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    result = subprocess.run(["docker-compose", *args, "config", "-q"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    assert re.search(r"^USER app$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "samsvc.healthcheck" in text
    assert "uv sync --frozen" in text
    assert 'VOLUME ["/models", "/data"]' in text


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), value)


@pytest.mark.redis
def test_compose_commands_run_together_as_processes(base_settings: Settings, tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "envoy", "redis", "minio", "minio-bucket"}
    # Object storage is optional: a profile, and the services reach it only when told to.
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["minio"]
    assert "mc mb --ignore-existing local/samsvc" in services["minio-bucket"]["entrypoint"][-1]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert (env["DATA_DIR"], env["S3_ENDPOINT_URL"]) == ("${DATA_DIR:-/data}", "${S3_ENDPOINT_URL:-}")
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/aws_credentials"
    # Secrets are files, each container holding only those it uses; none in the environment.
    assert {name: set(services[name].get("secrets", [])) for name in ("api", "worker", "envoy")} == {
        "api": {"api_keys", "admin_jwt_key", "label_studio_api_key", "redis_password", "aws_credentials"},
        "worker": {"redis_password", "aws_credentials", "webhook_secret"},
        "envoy": set(),
    }
    for name in ("api", "worker", "envoy"):
        assert not set(services[name]["environment"]) & {"ADMIN_JWT_KEY", "LABEL_STUDIO_API_KEY", "WEBHOOK_SECRET"}
    assert not set(services["envoy"]["environment"]) & {"REDIS_URL", "REDIS_PASSWORD_FILE", "DATA_DIR"}
    assert "--appendonly yes --appendfsync always --requirepass" in services["redis"]["command"][-1]
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    # The deployment page's step: a Redis password in secrets/redis_password, read by Redis and the services.
    password_file = tmp_path / "secrets" / "redis_password"
    password_file.parent.mkdir()
    password_file.write_text(secrets.token_hex(32) + "\n")
    redis_server = RedisServer(redis_dir, password=password_file.read_text().strip())
    grpc_port, rest_port, api_metrics, worker_metrics = free_port(), free_port(), free_port(), free_port()
    # The deployment page's step: make a key; only its digest goes into the file the api reads.
    keys_file = tmp_path / "secrets" / "api_keys"
    created = subprocess.run(
        [sys.executable, "-m", "samsvc.cli", "keys", "create", "me", "--file", str(keys_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert keys_file.read_text().startswith("me:") and key not in keys_file.read_text()
    assert compose["secrets"]["api_keys"]["file"] == "./secrets/api_keys"
    assert compose["secrets"]["redis_password"]["file"] == "./secrets/redis_password"
    for empty in ("admin_jwt_key", "label_studio_api_key", "webhook_secret", "aws_credentials"):
        (tmp_path / "secrets" / empty).touch()  # the deployment page's step: an empty file, its feature off
    local = {
        **{f"/run/secrets/{name}": str(tmp_path / "secrets" / name) for name in compose["secrets"]},
        "/run/secrets/api_keys": str(keys_file),
        "/run/secrets/redis_password": str(password_file),
        "/run/secrets/aws_credentials": str(tmp_path / "secrets" / "aws_credentials"),
        "redis://redis:6379/0": redis_server.url,
        "/models": str(base_settings.model_dir),
        "/data": str(tmp_path / "data"),
        "api:50051": f"127.0.0.1:{grpc_port}",
        "50051": str(grpc_port),
        "8000": str(rest_port),
        "0.0.0.0": "127.0.0.1",
    }
    overrides = {"MODELS_FILE": str(base_settings.models_file), "DEFAULT_MODEL": "tiny"}
    processes: list[subprocess.Popen[bytes]] = []
    logs = (tmp_path / "services.log").open("w")
    try:
        for name in ("api", "worker", "envoy"):
            service: dict[str, Any] = services[name]
            env = {
                k: local.get(_expand(str(v), overrides), _expand(str(v), overrides))
                for k, v in service["environment"].items()
            }
            command = [local.get(part, part) for part in service["command"]]
            assert command[0] == "samsvc"
            ports = {"METRICS_PORT": str(api_metrics), "WORKER_METRICS_PORT": str(worker_metrics)}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "samsvc.cli", *command[1:]],
                    env={**os.environ, **env, **ports, "GATEWAY": "false" if name == "api" else "true"},
                    stdout=logs,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/health", timeout=2) as response:
                    return json.loads(response.read())["status"] == "SERVING_STATUS_SERVING"
            except OSError:
                return False

        wait_for(healthy, timeout=120, interval=0.5, what="the envoy service to answer /health")
        probe = subprocess.run(
            [sys.executable, "-m", "samsvc.healthcheck", f"127.0.0.1:{grpc_port}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode == 0 and "SERVING" in probe.stdout

        # As a new user would: curl without the key, then with it.
        image = tmp_path / "photo.png"
        image.write_bytes(encode(scene(64, 48, seed=7)))
        base = f"http://127.0.0.1:{rest_port}"
        anonymous = curl(f"{base}/api/v1/models")
        assert anonymous["status"] == 401 and anonymous["body"]["details"][0]["reason"] == "API_KEY_MISSING"
        auth = ["-H", f"Authorization: Bearer {key}"]
        masked = curl(
            f"{base}/api/v1/segment?points_per_side=2&pred_iou_thresh=0&stability_score_thresh=0",
            *auth, "-H", "Content-Type: image/png", "--data-binary", f"@{image}",
        )  # fmt: skip
        assert masked["status"] == 200 and masked["body"]["masks"], masked

        images = [base64.b64encode(encode(scene(64, 48, seed=s))).decode() for s in range(2)]
        body = json.dumps({"images": images, "options": {"points_per_side": 2}})
        submitted = curl(f"{base}/api/v1/segment/batch", *auth, "-H", "Content-Type: application/json", "-d", body)
        job_id = submitted["body"]["job_id"]

        def completed() -> bool:
            return bool(curl(f"{base}/jobs/{job_id}/status", *auth)["body"]["status"] == "JOB_STATUS_COMPLETED")

        wait_for(completed, timeout=180, interval=0.5, what="the worker service to finish the batch")
        with urllib.request.urlopen(f"http://127.0.0.1:{api_metrics}/metrics", timeout=10) as response:
            api_text = response.read().decode()
        assert value(api_text, "samsvc_requests_total", rpc="SegmentUpload", code="OK") == 1
        assert value(api_text, "samsvc_requests_total", rpc="ListModels", code="UNAUTHENTICATED") == 1
        assert value(api_text, "samsvc_jobs_submitted_total", type="batch") == 1
        worker_text = wait_for(lambda: scrape(worker_metrics), timeout=60, what="the worker's metrics endpoint")
        assert value(worker_text, "samsvc_images_total", model="tiny", outcome="succeeded") == 2
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        redis_server.stop()
        logs.close()


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def curl(url: str, *args: str) -> dict[str, Any]:
    """curl's answer: HTTP status and JSON body."""
    result = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args, url], capture_output=True, text=True, check=True, timeout=120
    )
    body, _, status = result.stdout.rpartition("\n")
    return {"status": int(status), "body": json.loads(body) if body else {}}


def test_the_build_context_keeps_what_the_dockerfile_copies_and_no_secrets() -> None:
    import fnmatch

    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert "README.md" in copied and "uv.lock" in copied
    for source in copied:
        parts = Path(source).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in ignored), source
    assert any(fnmatch.fnmatch("secrets", pattern) for pattern in ignored)


def test_every_compose_service_is_hardened() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("mem_limit"), name
        assert service.get("user") and not service["user"].startswith("0"), name
        if name.startswith("minio") or name == "envoy":
            continue  # object storage and the gateway: no Redis
        assert "redis_password" in service.get("secrets", []), name
        if name != "redis":
            assert service["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name


def test_every_kubernetes_container_is_hardened_and_redis_is_fenced() -> None:
    manifest = ROOT / "deploy" / "kubernetes" / "samsvc.yaml"
    documents = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc]
    pods = {
        doc["metadata"]["name"]: doc["spec"]["template"]
        for doc in documents
        if doc["kind"] in {"Deployment", "StatefulSet"}
    }
    assert set(pods) == {"samsvc-api", "samsvc-envoy", "samsvc-worker", "samsvc-redis"}
    for name, pod in pods.items():
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["spec"]["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"], name
    fences = [doc for doc in documents if doc["kind"] == "NetworkPolicy"]
    assert len(fences) == 1 and fences[0]["spec"]["podSelector"]["matchLabels"] == {"app": "samsvc-redis"}
    allowed = fences[0]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    clients = {name for name, pod in pods.items() if allowed.items() <= pod["metadata"]["labels"].items()}
    assert clients == {"samsvc-api", "samsvc-worker"}, "only the pods that use Redis reach it"
    redis_container = pods["samsvc-redis"]["spec"]["containers"][0]
    assert "--requirepass" in redis_container["command"][-1]
    assert redis_container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "samsvc-redis"


def test_kubernetes_manifests_validate_and_use_real_flags() -> None:
    from samsvc.cli import build_parser

    manifest = ROOT / "deploy" / "kubernetes" / "samsvc.yaml"
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", str(manifest)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [
        container["command"]
        for doc in yaml.safe_load_all(manifest.read_text())
        if doc and doc["kind"] in {"Deployment", "StatefulSet"}
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["command"][0] == "samsvc"
    ]
    assert len(commands) == 3
    for command in commands:
        build_parser().parse_args(command[1:])  # exits on an unknown flag
