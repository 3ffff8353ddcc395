"""The `samsvc` command as users run it."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.engine.checkpoints import build_random_checkpoint
from samsvc.engine.registry import ModelRegistry

pytestmark = pytest.mark.processes  # every test runs the `samsvc` command


def samsvc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "samsvc.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def checkpoint_server(
    tmp_path_factory: pytest.TempPathFactory, sam2_checkpoint: tuple[Path, str]
) -> Iterator[tuple[str, Path, str]]:
    """A loopback HTTP server publishing a tiny SAM checkpoint and a random-weight SAM 2.1 tiny
    (as sam2.1_hiera_tiny.pt): (base url, SAM file, its sha256)."""
    root = tmp_path_factory.mktemp("published")
    path = root / "published.pth"
    digest = build_random_checkpoint(path, seed=3)
    (root / "sam2.1_hiera_tiny.pt").symlink_to(sam2_checkpoint[0])

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", path, digest
    httpd.shutdown()
    httpd.server_close()


def test_models_list_shows_builtins_and_registered(models_file: Path, tmp_path: Path) -> None:
    result = samsvc("models", "list", "--model-dir", str(tmp_path), "--models-file", str(models_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "SOURCE", "FAMILY", "WEIGHTS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["vit_h"][1:4] == ["builtin", "sam", "absent"]
    assert rows["sam2.1_hiera_base_plus"][1:4] == ["builtin", "sam2", "absent"]
    assert rows["tiny"][1:4] == ["registered", "sam", "present"]


def test_models_download_verifies_and_places_the_file(checkpoint_server: tuple[str, Path, str], tmp_path: Path) -> None:
    base, _, digest = checkpoint_server
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.remote]\nurl = "{base}/published.pth"\nsha256 = "{digest}"\n'
        "encoder_embed_dim = 64\nencoder_depth = 2\nencoder_num_heads = 2\nencoder_global_attn_indexes = [1]\n"
        f'[models.tampered]\nurl = "{base}/published.pth"\nsha256 = "{"0" * 64}"\narchitecture = "vit_b"\n',
        encoding="utf-8",
    )
    weights = tmp_path / "weights"
    env = {"MODEL_DIR": str(weights), "MODELS_FILE": str(models)}

    ok = samsvc("models", "download", "remote", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "sha256 verified" in ok.stdout
    assert hashlib.sha256((weights / "published.pth").read_bytes()).hexdigest() == digest
    assert ModelRegistry.load(weights, models).get("remote").weights_present  # type: ignore[union-attr]

    again = samsvc("models", "download", "remote", env=env)
    assert again.returncode == 0 and "already present" in again.stdout

    bad = samsvc("models", "download", "tampered", "--force", "--model-dir", str(tmp_path / "other"), env=env)
    assert bad.returncode == 1
    assert "checksum mismatch" in bad.stderr
    assert not any((tmp_path / "other").iterdir())


def test_a_sam2_checkpoint_downloads_verified_and_serves(
    checkpoint_server: tuple[str, Path, str], sam2_checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    from samsvc.engine.loader import ModelManager

    base, _, _ = checkpoint_server
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.remote2]\nfamily = "sam2"\nurl = "{base}/sam2.1_hiera_tiny.pt"\nsha256 = "{sam2_checkpoint[1]}"\n'
        'config = "sam2.1_hiera_t"\n'
        f'[models.tampered2]\nfamily = "sam2"\nurl = "{base}/sam2.1_hiera_tiny.pt"\nsha256 = "{"1" * 64}"\n'
        'config = "sam2.1_hiera_t"\nfilename = "other.pt"\n',
        encoding="utf-8",
    )
    weights = tmp_path / "weights"
    env = {"MODEL_DIR": str(weights), "MODELS_FILE": str(models)}
    ok = samsvc("models", "download", "remote2", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "sha256 verified" in ok.stdout
    bad = samsvc("models", "download", "tampered2", env=env)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr
    assert not (weights / "other.pt").exists()
    manager = ModelManager(ModelRegistry.load(weights, models), device="cpu")
    loaded = manager.get("remote2")
    assert loaded.spec.family == "sam2" and loaded.digest == sam2_checkpoint[1]


def test_unknown_model_download(tmp_path: Path) -> None:
    result = samsvc("models", "download", "vit_zz", "--model-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown model" in result.stderr


def test_build_tiny_prints_a_working_models_file_entry(tmp_path: Path) -> None:
    result = samsvc("models", "build-tiny", str(tmp_path / "t.pth"), "--name", "mine")
    assert result.returncode == 0, result.stderr
    models = tmp_path / "models.toml"
    models.write_text(result.stdout, encoding="utf-8")
    spec = ModelRegistry.load(tmp_path, models).get("mine")
    assert spec is not None and spec.weights_present
    assert spec.sha256 == hashlib.sha256((tmp_path / "t.pth").read_bytes()).hexdigest()


def test_build_tiny_registers_a_relative_path_that_moves_with_its_file(tmp_path: Path) -> None:
    models = tmp_path / "models" / "models.toml"
    result = samsvc("models", "build-tiny", str(tmp_path / "models" / "t.pth"), "--register-in", str(models))
    assert result.returncode == 0, result.stderr
    assert 'checkpoint = "t.pth"' in models.read_text()
    moved = tmp_path / "elsewhere"
    (tmp_path / "models").rename(moved)  # as when ./models is mounted at /models in a container
    spec = ModelRegistry.load(moved, moved / "models.toml").get("tiny")
    assert spec is not None and spec.weights_present


def test_build_tiny_discs_writes_the_hand_weighted_model(tmp_path: Path) -> None:
    import torch

    from samsvc.engine.sam.disc_checkpoint import disc_sam

    models = tmp_path / "models.toml"
    result = samsvc("models", "build-tiny", str(tmp_path / "d.pth"), "--discs", "--register-in", str(models))
    assert result.returncode == 0, result.stderr
    spec = ModelRegistry.load(tmp_path, models).get("tiny")
    assert spec is not None and spec.weights_present
    saved = torch.load(tmp_path / "d.pth", weights_only=True)
    expected = disc_sam().state_dict()
    assert all(torch.equal(saved[name], expected[name]) for name in expected)


def test_keys_create_appends_only_the_digest(tmp_path: Path) -> None:
    keys_file = tmp_path / "secrets" / "api_keys"
    first = samsvc("keys", "create", "alice", "--file", str(keys_file))
    second = samsvc("keys", "create", "bob", "--file", str(keys_file))
    assert first.returncode == second.returncode == 0
    lines = keys_file.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob"]
    key = first.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert key.startswith("sk_") and key not in keys_file.read_text()
    assert lines[0] == f"alice:{hashlib.sha256(key.encode()).hexdigest()}"


def test_bad_setting_is_reported(tmp_path: Path) -> None:
    result = samsvc("models", "list", env={"GRPC_PORT": "70000"})
    assert result.returncode == 2 and "grpc_port" in result.stderr


def test_a_data_dir_url_of_unknown_scheme_stops_start_up(tmp_path: Path) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "samsvc.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "DATA_DIR": "s3x://bucket/prefix", "GATEWAY": "false"},
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "data_dir" in result.stderr and "DATA_DIR: unknown scheme 's3x'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named "s3x:"


def test_models_verify_names_each_bad_checkpoint(tmp_path: Path, sam2_checkpoint: tuple[Path, str]) -> None:
    """`samsvc models verify` checks what is present (built-in and MODELS_FILE) against the
    recorded size and sha256, with a progress bar, and exits 1 naming each file that fails. A
    SAM 2.0 file saved under a SAM 2.1 name (or a truncated copy) is one."""
    import shutil

    weights = tmp_path / "weights"
    weights.mkdir()
    good = tmp_path / "good.pth"
    digest = build_random_checkpoint(good, seed=1)
    tampered = tmp_path / "tampered.pth"
    shutil.copy(good, tampered)
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.good]\ncheckpoint = "{good}"\nsha256 = "{digest}"\narchitecture = "vit_b"\n'
        f'[models.tampered]\ncheckpoint = "{tampered}"\nsha256 = "{"0" * 64}"\narchitecture = "vit_b"\n'
        f'[models.unpinned]\ncheckpoint = "{good}"\narchitecture = "vit_b"\n',
        encoding="utf-8",
    )
    # Another release's file (a random SAM 2 here) where sam2.1_hiera_tiny's should be.
    shutil.copy(sam2_checkpoint[0], weights / "sam2.1_hiera_tiny.pt")
    env = {"MODEL_DIR": str(weights), "MODELS_FILE": str(models)}
    result = samsvc("models", "verify", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["good"].startswith("OK ") and "sha256 verified" in lines["good"]
    assert lines["tampered"].startswith("BAD ") and "expected " + "0" * 64 in lines["tampered"]
    assert lines["sam2.1_hiera_tiny"].startswith("BAD ") and "expected 156008466" in lines["sam2.1_hiera_tiny"]
    assert lines["unpinned"].startswith("no digest recorded; sha256 " + digest)
    assert str(tampered) in result.stderr and "sam2.1_hiera_tiny.pt" in result.stderr and "100%" in result.stderr
    only_good = samsvc("models", "verify", "good", "--quiet", env=env)
    assert only_good.returncode == 0 and "100%" not in only_good.stderr
    absent = samsvc("models", "verify", "vit_b", env=env)
    assert absent.returncode == 1 and "ABSENT" in absent.stdout
