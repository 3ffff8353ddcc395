"""A third-party fuzzer against the API as its document describes it: schemathesis reads
/openapi.json through Envoy, generates requests for every operation (its examples and fuzzing
phases, a few cases each, bounded in time) and checks that no answer is a server error and that
the document itself is usable (a Schema Error once stopped it at the embedding routes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from samsvc.config import Settings
from samsvc.gateway.launcher import start_gateway
from tests.gateway.conftest import Stack
from tests.support import ServerThread
from tests.support.starts import starts

#: Cases per operation and phase: enough to reach every operation's bounds, small enough to
#: finish in a couple of minutes on 2 cores.
MAX_EXAMPLES = 4
#: Streaming answers (NDJSON) and the raw embedding body are not JSON documents a fuzzer checks.
EXCLUDED = r"(:stream|/events|:raw)$"


@starts("envoy")
def fuzzed(base_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """A server whose work per call is small (few prompts, small images), so every request the
    fuzzer makes is answered in moments; its limits are the document's only by settings."""
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "rest_port": 0,
            "envoy_admin_port": 0,
            "max_prompts_per_image": 64,
            "max_image_bytes": 256 * 1024,
            "max_batch_images": 4,
            "max_batch_bytes": 1024 * 1024,
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    yield Stack(server, gateway, tmp_path)
    gateway.stop()
    server.stop()


def test_the_fuzzer_finds_no_server_error_and_no_schema_error(fuzzed: Stack, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the dev group"
    report = tmp_path / "events.ndjson"
    run = subprocess.run(
        [
            st, "run", f"{fuzzed.base}/openapi.json",
            "--checks", "not_a_server_error",
            "--phases", "examples,fuzzing",
            "--max-examples", str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--exclude-path-regex", EXCLUDED,
            "--request-timeout", "60",
            "--report", "ndjson", "--report-ndjson-path", str(report),
        ],
        capture_output=True, text=True, timeout=480, cwd=tmp_path,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert "Schema Error" not in output, output[-4000:]
    assert run.returncode == 0, output[-4000:]
    events = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    assert events, "the fuzzer ran"
