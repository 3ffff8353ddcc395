"""An image session from an address (`image_url`): the server fetches it only for a caller it has
authenticated, charged and allowed the model, only from public addresses (or hosts the operator
allows), and with Label Studio's token only for Label Studio's media paths."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.server.auth import digest, new_key
from samsvc.v1 import interactive_pb2 as ipb
from tests.support import ServerThread, encode, rich_status, scene

IMAGE = encode(scene(80, 60, seed=5))
TOKEN = "studio-token"


@dataclass
class Files:
    """An image server on loopback, recording each (path, Authorization) it was asked for."""

    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization", "")))
                body = IMAGE if self.path.endswith(".png") else b"missing"
                big = self.path.endswith("big.png")
                self.send_response(200 if self.path.endswith(".png") else 404)
                self.send_header("Content-Length", str(len(body) + (3 << 20 if big else 0)))
                self.end_headers()
                self.wfile.write(body + (b"\0" * (3 << 20) if big else b""))

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


KEY, LIMITED = new_key(), new_key()


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    served = Files()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings, files: Files) -> Settings:
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"caller:{digest(KEY)}", f"limited:{digest(LIMITED)}:tiny"],
            # Label Studio lives on loopback; other loopback hosts stay forbidden.
            "label_studio_url": files.url,
            "label_studio_api_key": SecretStr(TOKEN),
        }
    )
    return settings


def session(server: ServerThread, url: str, key: str = KEY, model: str = "") -> ipb.ImageSession:
    request = ipb.CreateImageSessionRequest(image_url=url, model_type=model)
    answer: ipb.ImageSession = server.stub.CreateImageSession(request, metadata=[("x-api-key", key)], timeout=60)
    return answer


def refusal(server: ServerThread, url: str, key: str = KEY, model: str = "") -> str:
    with pytest.raises(grpc.RpcError) as caught:
        session(server, url, key, model)
    reason: str = rich_status(caught.value)[1]["ErrorInfo"].reason
    return reason


def test_a_media_path_is_fetched_with_the_token_and_becomes_a_session(server: ServerThread, files: Files) -> None:
    files.requests.clear()
    made = session(server, f"{files.url}/data/upload/3/photo.png")
    assert (made.image_width, made.image_height) == (80, 60) and made.model_type == "tiny"
    assert files.requests == [("/data/upload/3/photo.png", f"Token {TOKEN}")]
    files.requests.clear()
    again = session(server, f"{files.url}/storage-data/uploaded/?filepath=upload/3/photo.png")
    assert again.image_id == made.image_id
    assert files.requests == [("/storage-data/uploaded/?filepath=upload/3/photo.png", f"Token {TOKEN}")]


def test_nothing_is_fetched_before_the_caller_is_known_and_allowed(server: ServerThread, files: Files) -> None:
    files.requests.clear()
    assert refusal(server, f"{files.url}/data/upload/3/photo.png", key="sk_unknown") == "API_KEY_INVALID"
    assert refusal(server, f"{files.url}/data/upload/3/photo.png", key=LIMITED, model="vit_h") == "MODEL_NOT_ALLOWED"
    assert refusal(server, f"{files.url}/data/upload/3/photo.png", model="nonesuch") == "UNKNOWN_MODEL"
    assert files.requests == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("{files}/api/users/", "IMAGE_URL_FORBIDDEN"),
        ("{files}/data/upload/../../api/users/", "IMAGE_URL_FORBIDDEN"),
        ("{files}/data/local-files/?d=../../etc/passwd", "IMAGE_URL_FORBIDDEN"),
        ("http://127.0.0.1:1/x.png", "IMAGE_URL_FORBIDDEN"),
        ("http://169.254.169.254/latest/meta-data/", "IMAGE_URL_FORBIDDEN"),
        ("file:///etc/passwd", "INVALID_IMAGE_URL"),
        ("http://user:pw@example.com/x.png", "INVALID_IMAGE_URL"),
        ("http://" + "a" * 3000 + ".com/", "INVALID_IMAGE_URL"),
    ],
)
def test_addresses_outside_the_rules_are_refused_unfetched(
    server: ServerThread, files: Files, url: str, reason: str
) -> None:
    files.requests.clear()
    assert refusal(server, url.format(files=files.url)) == reason
    assert files.requests == []


def test_a_source_that_fails_or_sends_too_much_is_named(server: ServerThread, files: Files) -> None:
    assert refusal(server, f"{files.url}/data/upload/3/absent.jpg") == "SOURCE_REFUSED"
    assert refusal(server, f"{files.url}/data/upload/3/big.png") == "IMAGE_TOO_LARGE"
    assert session(server, f"{files.url}/data/upload/3/photo.png").image_id, "the server keeps serving"
