"""What one API key learns of the server and of other keys: model lists and errors name no file,
digest or address; a key sees only the models it may use; caches and sessions are per key; and
model loads are inference work, held to the inference slots and the key's limits.

Each test first shows what was possible (in its docstring, and by failing on the code before),
then that it is refused."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.engine import checkpoint_reader, loader
from samsvc.engine.checkpoints import models_file_entry
from samsvc.server.auth import digest, new_key
from samsvc.v1 import admin_service_pb2 as admin_pb
from samsvc.v1 import admin_service_pb2_grpc, health_pb2, interactive_pb2, model_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene, wait_for

ADMIN_SECRET = "tenancy-admin-secret-that-is-long-enough-for-hs256"
#: What no caller may read in an error or a list.
SECRET_URL = "http://operator:hunter2@127.0.0.1:9/weights/remote.pth?X-Amz-Signature=deadbeef"


@dataclass
class Tenants:
    server: ServerThread
    alice: str  # may use every model
    bob: str  # may use `tiny` only
    root: Path

    def call(self, key: str) -> list[tuple[str, str]]:
        return [("x-api-key", key)]


@pytest.fixture(scope="module")
def tenants(
    tiny_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, base_settings: Settings
) -> Iterator[Tenants]:
    root = tmp_path_factory.mktemp("tenancy")
    path, sha = tiny_checkpoint
    corrupt = root / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 1000)
    models = root / "models.toml"
    models.write_text(
        models_file_entry("tiny", path, sha)
        + models_file_entry("tampered", path, "0" * 64)
        + models_file_entry("corrupt", corrupt, hashlib.sha256(corrupt.read_bytes()).hexdigest())
        + models_file_entry("absent", root / "absent.pth", "1" * 64)
        + f'[models.remote]\nurl = "{SECRET_URL}"\nsha256 = "{"2" * 64}"\narchitecture = "vit_b"\n',
        encoding="utf-8",
    )
    alice, bob = new_key(), new_key()
    settings = base_settings.model_copy(
        update={
            "models_file": models,
            "model_dir": root / "weights",
            "auto_download": True,
            "api_keys": [f"alice:{digest(alice)}", f"bob:{digest(bob)}:tiny"],
            "admin_jwt_key": SecretStr(ADMIN_SECRET),
            "data_dir": str(root / "data"),
            "result_cache_ttl_s": 3600,
            "max_workers": 2,
            "max_queue": 4,
            "max_inferences_per_key": 3,
        }
    )
    server = ServerThread(settings)
    yield Tenants(server, alice, bob, root)
    server.stop()


def leaks(text: str, tenants: Tenants, *, digests: bool = True) -> list[str]:
    """The server's secrets found in `text`: paths, addresses, credentials and (in errors) the
    digests compared (a list shows a model's expected digest: that is what it serves)."""
    secrets = [str(tenants.root), "hunter2", "deadbeef", "127.0.0.1", "/tmp/", *(["0" * 64] if digests else [])]
    return [secret for secret in secrets if secret in text]


def error_text(error: grpc.RpcError) -> str:
    status, details = rich_status(error)
    info = details["ErrorInfo"]
    return f"{status.message} {dict(info.metadata)} {error.details()}"


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("tampered", "CHECKSUM_MISMATCH"),
        ("corrupt", "CHECKPOINT_INVALID"),
        ("absent", "MODEL_WEIGHTS_MISSING"),
        ("remote", "DOWNLOAD_FAILED"),
    ],
)
def test_model_errors_name_the_model_and_the_operator_not_the_files(
    tenants: Tenants, model: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """These errors used to carry the checkpoint's path, both digests, the download URL with its
    credentials and signature, and the network error. The caller now reads the model's name and
    what to ask the operator; the detail is in the server's log."""
    stub, key = tenants.server.stub, tenants.alice
    image = encode(scene(64, 48))
    calls = [
        lambda: stub.GetDecoderInfo(interactive_pb2.GetDecoderRequest(model_type=model), metadata=tenants.call(key)),
        lambda: stub.Segment(
            pb.SegmentRequest(image=image, model_type=model, points_per_side=2), metadata=tenants.call(key)
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        status, details = rich_status(caught.value)
        assert details["ErrorInfo"].reason == reason
        assert dict(details["ErrorInfo"].metadata) == {"model": model}
        assert model in status.message and "operator" in status.message
        assert not leaks(error_text(caught.value), tenants), error_text(caught.value)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"model {model} cannot be loaded" in logged, "the operator's log has the cause"
    # The health report and the list say the model cannot be loaded, and why (no more).
    listed = stub.ListModels(pb.ListModelsRequest(page_size=100), metadata=tenants.call(key))
    state = next(m for m in listed.models if m.name == model)
    assert not state.loadable and state.load_problem == reason
    assert "hunter2" not in logged and "deadbeef" not in logged, "credentials stay out of the log too"


def test_a_key_sees_only_its_models_and_checkpoints_by_file_name(tenants: Tenants) -> None:
    """ListModels and a keyed CheckHealth used to show every model, with absolute checkpoint
    paths and registered URLs, to every key; UNKNOWN_MODEL listed models the key may not use."""
    stub = tenants.server.stub
    everything = stub.ListModels(pb.ListModelsRequest(page_size=100), metadata=tenants.call(tenants.alice))
    names = [m.name for m in everything.models]
    assert {"tiny", "tampered", "remote", "vit_h"} <= set(names)
    for model in everything.models:
        assert "/" not in model.checkpoint, model.checkpoint
        assert not leaks(str(model), tenants, digests=False), model
        if model.source == model_pb2.MODEL_SOURCE_REGISTERED:
            assert model.url == ""
    assert next(m for m in everything.models if m.name == "vit_h").url.startswith("https://dl.fbaipublicfiles.com/")

    limited = stub.ListModels(pb.ListModelsRequest(page_size=100), metadata=tenants.call(tenants.bob))
    assert [m.name for m in limited.models] == ["tiny"]
    health = stub.CheckHealth(health_pb2.CheckHealthRequest(), metadata=tenants.call(tenants.bob))
    assert [m.name for m in health.models] == ["tiny"]
    request = pb.SegmentRequest(image=encode(scene(64, 48)), model_type="nonesuch")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Segment(request, metadata=tenants.call(tenants.bob))
    message = rich_status(caught.value)[0].message
    assert rich_status(caught.value)[1]["ErrorInfo"].reason == "UNKNOWN_MODEL"
    assert "tiny" in message and "vit_h" not in message and "tampered" not in message

    # The operator's view (AdminService) keeps the path and the URL, without credentials.
    admin = admin_service_pb2_grpc.AdminServiceStub(tenants.server.channel)
    token = jwt.encode({"sub": "ops", "exp": int(time.time() + 300), "samsvc_admin": True}, ADMIN_SECRET)
    loaded = admin.LoadModel(admin_pb.LoadModelRequest(name="tiny"), metadata=[("authorization", f"Bearer {token}")])
    assert loaded.checkpoint.startswith("/") and loaded.loaded
    unloaded = admin.UnloadModel(
        admin_pb.UnloadModelRequest(name="remote"), metadata=[("authorization", f"Bearer {token}")]
    )
    assert unloaded.url.startswith("http://127.0.0.1:9/weights/remote.pth") and "hunter2" not in unloaded.url
    assert "deadbeef" not in unloaded.url


def test_caches_answer_only_the_key_that_filled_them(tenants: Tenants) -> None:
    """The embedding and result caches ignored the key: bob sending alice's image got
    `embedding_cache_hit: true` (and a 2 ms answer instead of seconds), telling him alice had
    sent it. Each key now has its own entries."""
    stub = tenants.server.stub
    image = encode(scene(96, 64, seed=7))
    session = interactive_pb2.CreateImageSessionRequest(image=image, model_type="tiny")
    assert not stub.CreateImageSession(session, metadata=tenants.call(tenants.alice)).embedding_cache_hit
    assert stub.CreateImageSession(session, metadata=tenants.call(tenants.alice)).embedding_cache_hit
    assert not stub.CreateImageSession(session, metadata=tenants.call(tenants.bob)).embedding_cache_hit
    prompts = pb.SegmentPromptsRequest(
        image=image, model_type="tiny", prompts=[pb.Prompt(points=[pb.PointPrompt(x=5, y=5)])]
    )
    assert stub.SegmentPrompts(prompts, metadata=tenants.call(tenants.alice)).embedding_cache_hit

    segment = pb.SegmentRequest(image=image, model_type="tiny", points_per_side=2)
    assert not stub.Segment(segment, metadata=tenants.call(tenants.alice)).cache_hit
    assert stub.Segment(segment, metadata=tenants.call(tenants.alice)).cache_hit
    assert not stub.Segment(segment, metadata=tenants.call(tenants.bob)).cache_hit


def test_a_failing_model_is_loaded_once_under_the_inference_slots(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetDecoderInfo loaded its model in the shared I/O pool, outside the inference slots and
    the key's limits, and a failed load was not remembered: 70 concurrent calls on a model whose
    checkpoint fails its checksum read it 70 times and held another key's calls for seconds.
    Now a load holds an inference slot and one of the key's inferences, one runs per model, its
    waiters share its error, and the error is remembered briefly."""
    reads: list[float] = []
    real = checkpoint_reader.sha256_of

    def slow_hash(path: Path, *args: Any) -> str:
        reads.append(time.monotonic())
        time.sleep(1.0)  # reading a checkpoint of some GB
        return real(path, *args)

    monkeypatch.setattr(checkpoint_reader, "sha256_of", slow_hash)
    manager = tenants.server.running.models
    getattr(manager, "_failures", {}).pop("tampered", None)  # a failure from an earlier test
    stub = tenants.server.stub
    request = interactive_pb2.GetDecoderRequest(model_type="tampered")
    outcomes: list[str] = []

    def one() -> None:
        try:
            stub.GetDecoderInfo(request, metadata=tenants.call(tenants.alice), timeout=60)
            outcomes.append("OK")
        except grpc.RpcError as error:
            outcomes.append(rich_status(error)[1]["ErrorInfo"].reason)

    with ThreadPoolExecutor(max_workers=30) as pool:
        for _ in range(30):
            pool.submit(one)
        wait_for(lambda: reads, timeout=30, what="the load to begin")
        started = time.monotonic()
        session = interactive_pb2.GetImageSessionRequest(image_id="img_" + "0" * 32 + "_tiny")
        with pytest.raises(grpc.RpcError) as other:
            stub.GetImageSession(session, metadata=tenants.call(tenants.bob), timeout=30)
        other_took = time.monotonic() - started
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    assert other_took < 1.0, f"another key's call waited {other_took:.1f} s behind the loads"
    assert len(reads) == 1, f"the checkpoint was read {len(reads)} times"
    assert len(outcomes) == 30 and "OK" not in outcomes
    assert set(outcomes) <= {"CHECKSUM_MISMATCH", "KEY_INFERENCE_LIMIT", "SERVER_OVERLOADED"}
    assert "KEY_INFERENCE_LIMIT" in outcomes, "the load counted against the key's inferences"

    # Remembered: the next call is answered at once, without a slot or a read.
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as again:
        stub.GetDecoderInfo(request, metadata=tenants.call(tenants.alice), timeout=30)
    assert rich_status(again.value)[1]["ErrorInfo"].reason == "CHECKSUM_MISMATCH"
    assert time.monotonic() - started < 0.4 and len(reads) == 1
    # Past the memory, a new call tries again (the operator may have fixed the file).
    manager.failure_ttl_s = 0.0
    try:
        with pytest.raises(grpc.RpcError):
            stub.GetDecoderInfo(request, metadata=tenants.call(tenants.alice), timeout=30)
        assert len(reads) == 2
    finally:
        manager.failure_ttl_s = loader.DEFAULT_LOAD_FAILURE_TTL_S


def test_knocking_without_a_key_is_counted_but_not_logged_line_by_line(
    tenants: Tenants, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refused call without a key wrote a warning: anyone could flood the log. Each is
    still counted in the metrics; the log gets a few lines per reason and window, the last
    saying how many were held back."""
    import logging

    from prometheus_client import REGISTRY

    from samsvc.infra.logs import DEFAULT_SAMPLE_BURST, LogSampler
    from samsvc.server import auth

    monkeypatch.setattr(auth, "REFUSALS", LogSampler(window_s=3600))
    labels = {"rpc": "ListModels", "code": "UNAUTHENTICATED"}
    before = REGISTRY.get_sample_value("samsvc_requests_total", labels) or 0.0
    caplog.set_level(logging.WARNING)
    for _ in range(200):
        with pytest.raises(grpc.RpcError):
            tenants.server.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert REGISTRY.get_sample_value("samsvc_requests_total", labels) == before + 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ListModels")]
    assert len(lines) == DEFAULT_SAMPLE_BURST, lines
