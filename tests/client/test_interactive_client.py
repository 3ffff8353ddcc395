"""The client's interactive calls over both clients and both runtimes: a session and clicks,
refinement, the embedding as an array with its transform, embedding jobs, the ONNX decoder, and
the `samsvc embed` and `samsvc decoder` commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from samsvc.client import NotFoundError
from samsvc.v1 import interactive_pb2
from tests.client.conftest import Target
from tests.clients import open_client
from tests.support import encode, scene


def test_a_session_answers_clicks_and_refines(target: Target, client_kind: str) -> None:
    pixels = scene(120, 80, seed=81)
    with open_client(client_kind, target.address) as client:
        session = client.create_session(pixels)
        assert (session.image_width, session.image_height) == (120, 80)
        first = client.prompt(image_id=session.image_id, points=[(40, 30)], multimask=True)
        assert len(first.masks[0]) == 3 and first.best().array.shape == (80, 120)
        refined = client.prompt(image_id=session.image_id, points=[(40, 30)], negative=[(100, 70)], refine=True)
        plain = client.prompt(image_id=session.image_id, points=[(40, 30)], negative=[(100, 70)])
        direct = client.prompt(pixels, points=[(40, 30)], negative=[(100, 70)], mask_format="rle")
        # The previous answer's logits reached the decoder; without them, the sent image's answer.
        assert refined.best().predicted_iou != plain.best().predicted_iou
        assert np.array_equal(plain.best().array, direct.best().array)
        boxed = client.prompt(image_id=session.image_id, box=(10, 10, 90, 60), return_logits=True)
        assert boxed.logits().shape == (1, 256, 256)
        client.delete_session(session.image_id)
        with pytest.raises(NotFoundError):
            client.prompt(image_id=session.image_id, points=[(40, 30)])


def test_embedding_and_decoder(target: Target, client_kind: str) -> None:
    pixels = scene(100, 100, seed=82)
    with open_client(client_kind, target.address) as client:
        embedding = client.embedding(pixels)
        assert embedding.array().shape == (1, 256, 64, 64) and embedding.array().dtype == np.float32
        assert embedding.to_model(50, 25) == (512.0, 256.0)
        half = client.embedding(pixels, dtype="float16")
        assert half.array().dtype == np.float16 and np.allclose(half.array(), embedding.array(), atol=1e-2)
        data, info = client.decoder(int8=True)
        assert hashlib.sha256(data).hexdigest() == info.onnx_sha256
        assert info.checkpoint_sha256 == embedding.checkpoint_sha256
        assert info.graph == interactive_pb2.DECODER_GRAPH_FOLDED
        reference, reference_info = client.decoder(reference_graph=True)
        assert reference_info.graph == interactive_pb2.DECODER_GRAPH_REFERENCE
        assert hashlib.sha256(reference).hexdigest() == reference_info.onnx_sha256 != info.onnx_sha256


def test_embedding_jobs_from_the_client(target: Target, client_kind: str) -> None:
    images = [scene(64, 48, seed=83), scene(48, 64, seed=84)]
    with open_client(client_kind, target.address) as client:
        job = client.submit_embeddings(images)
        updates = [u for u in client.watch(job.job_id) if u.kind == "image"]
        assert sorted(u.image.index for u in updates) == [0, 1] and all(u.image.image_id for u in updates)
        stored = client.embedding(job_id=job.job_id, index=1)
        assert stored.image_id == client.embedding(images[1]).image_id
        session = client.create_session(job_id=job.job_id, index=0)
        assert session.embedding_cache_hit and client.prompt(image_id=session.image_id, points=[(5, 5)]).masks


@pytest.mark.processes
def test_the_embed_and_decoder_commands(target: Target, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(encode(scene(64, 48, seed=85)))
    (folder / "sub" / "b.png").write_bytes(encode(scene(40, 60, seed=86)))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "embeddings"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "samsvc.cli", *args, "--server", target.address, "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    first = run("embed", str(folder), "--out", str(out))
    assert first.returncode == 1, first.stderr  # bad.png failed alone
    summary = json.loads(first.stdout.splitlines()[-1])["summary"]
    assert (summary["total"], summary["embedded"], summary["failed"]) == (3, 2, 1)
    index = json.loads((out / "embeddings.json").read_text())
    assert np.load(out / index["sub/b.png"]["npy"]).shape == (1, 256, 64, 64)
    assert index["a.png"]["transform"]["original_width"] == 64 and index["a.png"]["image_id"].startswith("img_")
    again = run("embed", str(folder), "--out", str(out))
    assert json.loads(again.stdout.splitlines()[-1])["summary"]["skipped"] == 2

    decoder = run("decoder", "--out", str(tmp_path / "decoder.onnx"))
    assert decoder.returncode == 0, decoder.stderr
    described = json.loads(decoder.stdout)
    assert described["checkpoint_sha256"] == index["a.png"]["checkpoint_sha256"]
    assert described["graph"] == "DECODER_GRAPH_FOLDED"
    reference = run("decoder", "--reference-graph", "--out", str(tmp_path / "reference.onnx"))
    assert reference.returncode == 0, reference.stderr
    assert json.loads(reference.stdout)["graph"] == "DECODER_GRAPH_REFERENCE"
    assert onnx.load(str(tmp_path / "decoder.onnx")).graph.input[0].name == "image_embeddings"


def test_a_session_from_an_address_is_judged_by_the_server(target: Target, client_kind: str) -> None:
    """`create_session(url=...)` has the server fetch the image; an address on this side of the
    network is refused by the server's rules, named, before anything is fetched."""
    from samsvc.client import InvalidArgumentError

    with open_client(client_kind, target.address) as client:
        with pytest.raises(InvalidArgumentError) as refused:
            client.create_session(url="http://127.0.0.1:9/photo.png")
        assert refused.value.reason == "IMAGE_URL_FORBIDDEN"
        assert [v.field for v in refused.value.violations] == ["image_url"]
