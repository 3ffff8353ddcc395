"""The documentation's examples run as written. Every fenced block marked `<!-- example -->`
(python or bash) on a page of the site or in the README runs against a real stack (the gRPC
server, Envoy, the in-process job workers, a SAM and a SAM 2.1 model of random or hand-set
weights) in a folder holding the files the examples name (photo.jpg, a.jpg, b.jpg, photos/),
and must exit 0; `<!-- example: expects TEXT -->` also requires TEXT in its output. Every guide
page has at least one.

What is mapped from the page to the test's stack, and only this: the addresses
(127.0.0.1:50051 is the gRPC server, localhost:8000 the gateway) and the model names the
examples use (their weights are not on this machine: models of the same families stand in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from samsvc.config import Settings
from samsvc.gateway.launcher import Gateway
from tests.support import ServerThread, encode, scene
from tests.support.stacks import gateway_stack
from tests.support.starts import starts

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE = re.compile(
    r"<!-- example(?:: expects (?P<expects>.+?))? -->\n```(?P<lang>python|bash)\n(?P<code>.*?)```", re.S
)
#: Guide pages without a runnable example, and why.
NO_EXAMPLE = {"console.md": "a page in the browser: its screenshot, and tests/gateway/test_console_browser.py"}
#: The model names examples use -> the test stack's models of the same family: SAM's is the
#: hand-weighted disc model (every click and grid point gives masks at the default thresholds, so
#: the examples show masks), SAM 2.1's a random-weight hiera-tiny built by sam2's builder.
MODELS = {"sam2.1_hiera_tiny": "tiny2", "vit_b": "discs"}
#: One example's longest run (a batch of two images on the tiny models takes seconds).
TIMEOUT_S = 240


@dataclass(frozen=True)
class Example:
    page: str
    lang: str
    code: str
    expects: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.lang}"


def examples() -> list[Example]:
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(DOCS if page.is_relative_to(DOCS) else ROOT).as_posix()
        for match in EXAMPLE.finditer(text):
            found.append(Example(name, match["lang"], match["code"], match["expects"] or ""))
    return found


EXAMPLES = examples()


def test_every_guide_page_has_a_runnable_example() -> None:
    pages = {example.page for example in EXAMPLES}
    missing = [
        page.name
        for page in sorted((DOCS / "guides").glob("*.md"))
        if f"guides/{page.name}" not in pages and page.name not in NO_EXAMPLE
    ]
    assert not missing, f"guide pages without a runnable example: {missing}"
    assert {"getting-started.md", "README.md"} <= pages


@dataclass
class Stack:
    server: ServerThread
    gateway: Gateway
    folder: Path


@starts("envoy", scope="module")
def stack(
    base_settings: Settings, sam2_checkpoint: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from samsvc.engine.checkpoints import models_file_entry, sam2_models_file_entry
    from samsvc.engine.sam.disc_checkpoint import build_disc_checkpoint

    tmp = tmp_path_factory.mktemp("doc_examples")
    discs = tmp / "discs.pth"
    models = tmp / "models.toml"
    models.write_text(
        models_file_entry("discs", discs, build_disc_checkpoint(discs))
        + "\n"
        + sam2_models_file_entry("tiny2", *sam2_checkpoint),
        encoding="utf-8",
    )
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp / "data"),
            "models_file": models,
            "default_model": "discs",
            "rest_port": 0,
            "envoy_admin_port": 0,
        }
    )
    folder = tmp / "work"
    (folder / "photos").mkdir(parents=True)
    (folder / "photo.jpg").write_bytes(encode(scene(160, 120, seed=5), "JPEG"))
    for i, name in enumerate(("a.jpg", "b.jpg")):
        (folder / name).write_bytes(encode(scene(128, 96, seed=10 + i), "JPEG"))
        (folder / "photos" / name).write_bytes(encode(scene(128, 96, seed=20 + i), "JPEG"))
    with gateway_stack(settings) as (server, gateway):
        yield Stack(server, gateway, folder)


def as_run_here(code: str, stack: Stack) -> str:
    code = code.replace("127.0.0.1:50051", stack.server.address)
    code = code.replace("localhost:8000", f"127.0.0.1:{stack.gateway.rest_port}")
    for name, stand_in in MODELS.items():
        code = code.replace(name, stand_in)
    return code


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_the_example_runs(example: Example, stack: Stack) -> None:
    code = as_run_here(example.code, stack)
    command = [sys.executable, "-c", code] if example.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "SAMSVC_SERVER": stack.server.address,
    }
    ran = subprocess.run(command, cwd=stack.folder, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert ran.returncode == 0, (
        f"{example.page}\n{code}\n--- stdout\n{ran.stdout[-3000:]}\n--- stderr\n{ran.stderr[-3000:]}"
    )
    assert ran.stdout.strip(), f"{example.page}: the example printed nothing"
    assert example.expects in ran.stdout, f"{example.page}: expected {example.expects!r} in\n{ran.stdout[-3000:]}"
