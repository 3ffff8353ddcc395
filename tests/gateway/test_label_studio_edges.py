"""The Label Studio adapter's edges, attacked through a real Envoy and directly: the caller is
checked before any task image is fetched, Label Studio's token goes only to its media paths, the
adapter answers the gateway only and within its call limits, and a malformed body is a JSON 400.
Each test's docstring says what the attack did before."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest

from tests.gateway.conftest import KEY, LIMITED_KEY, TOKEN, Tools
from tests.gateway.test_label_tools import keypoint, predict_request
from tests.support import raw_request, wait_for


def test_the_caller_is_checked_before_the_task_image_is_fetched(tools: Tools) -> None:
    """The sidecar fetched the task image (with Label Studio's token) before samsvc checked the
    key, its models or its limits: a request with no key at all, sent to the sidecar's port,
    made samsvc fetch with the token. Now the server fetches, after those checks."""
    tools.files.requests.clear()
    body = predict_request([keypoint(60, 45)])
    status, answer = tools.post("/label-studio/m/vit_h/predict", body, auth=LIMITED_KEY)
    assert status == 403 and answer["details"][0]["reason"] == "MODEL_NOT_ALLOWED"
    status, _ = tools.post("/label-studio/predict", body, auth="sk_not_a_key")
    assert status == 401
    # Straight to the sidecar, past Envoy, with the gateway's own secret even: no key, no fetch.
    secret = tools.gateway.envoy.config.sidecar_secret
    headers = {"Content-Type": "application/json", "x-samsvc-gateway": secret}
    direct = raw_json(tools.sidecar_port, "/label-studio/predict", body, headers)
    assert direct[0] == 401 and direct[1]["details"][0]["reason"] == "API_KEY_MISSING"
    assert tools.files.requests == [], "Label Studio was never asked for the image"
    status, _ = tools.post("/label-studio/predict", body)
    assert status == 200 and tools.files.requests == [("/data/upload/1/photo.png", f"Token {TOKEN}")]


@pytest.mark.parametrize(
    "image",
    [
        "/data/upload/../../api/users/",
        "/data/upload/%2e%2e/%2e%2e/api/users/",
        "/data/upload/1/..%2F..%2Fapi%2Fusers",
        "/data/upload//api/users/",
        "/api/projects/7/export",
        "/storage-data/uploaded/?filepath=../../../etc/passwd",
        "{files}/api/projects/7/export",
        "{files}/data/upload/1/../../../api/current-user/whoami",
    ],
)
def test_label_studios_token_goes_only_to_its_media_paths(tools: Tools, image: str) -> None:
    """The token was sent with any path on Label Studio's origin: `/data/upload/../../api/users/`
    and absolute URLs such as `/api/projects/7/export` were fetched with it. Now only normalised
    media paths are fetched (with it); every other path on that origin is refused unfetched."""
    tools.files.requests.clear()
    task = predict_request([keypoint(60, 45)], image=image.format(files=tools.files.url))
    status, answer = tools.post("/label-studio/predict", task)
    assert status == 400, answer
    assert answer["details"][0]["reason"] == "IMAGE_URL_FORBIDDEN"
    assert tools.files.requests == [], f"fetched {tools.files.requests}"


@pytest.mark.parametrize(
    "body",
    [
        {**predict_request([keypoint(5, 5)]), "tasks": ["x"]},
        {**predict_request([keypoint(5, 5)]), "tasks": [{"data": ["x"]}]},
        {"tasks": "x", "params": {"context": {"result": []}}},
        {"tasks": [{"data": "x"}], "label_config": "<View/>", "params": {"context": {"result": ["x"]}}},
        {"tasks": [{"data": {}}], "params": "x"},
        {"tasks": [{"data": {}}], "params": {"context": "x"}},
        {"tasks": [{"data": {}}], "params": {"context": {"result": [{"value": [], "type": "keypointlabels"}]}}},
        [1, 2, 3],
        b"{not json",
        b"\xff\xfe",
    ],
)
def test_a_malformed_body_is_a_json_400(tools: Tools, body: Any) -> None:
    """`"tasks": ["x"]` used to drop the connection with a traceback in the log."""
    status, answer = tools.post("/label-studio/predict", body)
    assert status == 400, answer
    assert answer["code"] == 3 and answer["message"]


def raw_json(port: int, path: str, body: Any, headers: dict[str, str]) -> tuple[int | None, Any]:
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(data)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1."):
        return None, None
    top, _, payload = answer.partition(b"\r\n\r\n")
    return int(top.split()[1]), json.loads(payload) if payload else None


def test_the_adapter_answers_the_gateway_only(tools: Tools) -> None:
    """The sidecar listened on a loopback port and answered anyone: a local process could skip
    Envoy's authorization check. Now a request without the gateway's secret is refused (403)
    before its body is read, whatever it carries."""
    basic = base64.b64encode(f"labelstudio:{KEY}".encode()).decode()
    for headers in ({}, {"Authorization": f"Basic {basic}"}, {"x-samsvc-gateway": "guessed"}):
        status, answer = raw_json(tools.sidecar_port, "/label-studio/predict", predict_request([]), headers)
        assert status == 403 and answer["code"] == 7, headers
    refused = raw_request(tools.sidecar_port, "GET", "/label-studio/health", {})
    assert refused.status == 403
    # Through Envoy the same calls work: Envoy adds the secret (and replaces one a caller sends).
    status, answer = tools.post("/label-studio/predict", predict_request([]))
    assert status == 200 and len(answer["results"]) == 1


def test_the_adapters_calls_are_bounded_per_key(tools: Tools) -> None:
    """Each adapter call took a thread with no bound: one key could hold as many as it opened.
    Now a key's calls past GATEWAY_ADAPTER_MAX_CALLS_PER_KEY are answered 429 at once."""
    secret = tools.gateway.envoy.config.sidecar_secret
    per_key = tools.gateway.sidecar.limits.per_key
    head = (
        f"POST /label-studio/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nx-samsvc-gateway: {secret}\r\n"
        f"x-api-key: {KEY}\r\n\r\n"
    )
    held = []
    try:
        for _ in range(per_key):  # bodies never finished: each call holds its place
            sock = socket.create_connection(("127.0.0.1", tools.sidecar_port), timeout=30)
            sock.sendall(head.encode() + b"{")
            held.append(sock)
        headers = {"x-samsvc-gateway": secret, "x-api-key": KEY}
        limits = tools.gateway.sidecar.limits
        wait_for(lambda: limits.running >= per_key, timeout=60, interval=0.05, what="the held calls to take places")
        seen: list[int | None] = []

        def refused() -> bool:
            seen.append(raw_request(tools.sidecar_port, "POST", "/label-studio/predict", headers, 2, timeout=5).status)
            return seen[-1] == 429

        try:
            wait_for(refused, timeout=60, interval=0.1, what="the key's next call to be refused")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the sidecar answered {seen}, {limits.running} calls running") from None
        other = {"x-samsvc-gateway": secret, "x-api-key": LIMITED_KEY, "Content-Type": "application/json"}
        status, _ = raw_json(tools.sidecar_port, "/label-studio/setup", {}, other)
        assert status == 200, "another key is served meanwhile"
    finally:
        for sock in held:
            sock.close()


def test_a_caller_leaving_mid_body_is_let_go(tools: Tools, caplog: pytest.LogCaptureFixture) -> None:
    """A caller that closed its connection half way through its body had the half parsed as JSON,
    answered 400 to a closed socket, and the broken pipe then failed the 500 boundary too: an
    ERROR with a traceback per call. Now the short body is seen for what it is: nothing is
    answered, the call's place is freed, one INFO line says the caller left."""
    secret = tools.gateway.envoy.config.sidecar_secret
    limits = tools.gateway.sidecar.limits
    head = (
        f"POST /label-studio/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nx-samsvc-gateway: {secret}\r\n"
        f"x-api-key: {KEY}\r\n\r\n"
    )
    caplog.set_level("INFO", logger="samsvc.gateway.sidecar")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", tools.sidecar_port), timeout=30) as sock:
            sock.sendall(head.encode() + b'{"tasks": [')

    def left() -> int:
        return sum("the caller left after 11 of 1000 bytes" in r.getMessage() for r in caplog.records)

    wait_for(lambda: left() >= 3, timeout=20, interval=0.05, what="the sidecar to see the three callers leave")
    wait_for(lambda: limits.running == 0, timeout=20, interval=0.05, what="the calls' places to be freed")
    assert left() == 3, [r.getMessage() for r in caplog.records]
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(60, 45)]))
    assert status == 200 and answer["results"], "the sidecar still serves"
