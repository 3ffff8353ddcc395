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
from typing import Any

from samsvc.config import Settings
from tests.gateway.conftest import Stack
from tests.support.stacks import gateway_stack
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
    with gateway_stack(settings) as (server, gateway):
        yield Stack(server, gateway, tmp_path)


def test_the_fuzzer_finds_no_server_error_and_no_schema_error(fuzzed: Stack, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the dev group"
    report = tmp_path / "events.ndjson"
    run = subprocess.run(
        [
            st, "run", f"{fuzzed.base}/openapi.json",
            "--checks", "not_a_server_error",
            "--phases", "examples,fuzzing,stateful",
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
    reached = answered(events)
    # The document's example image and required fields lead to the API's work, and its links
    # from an answer's id to the operations that take it lead to the resources made.
    assert {"POST /api/v1/segment", "POST /api/v1/images", "POST /api/v1/embeddings"} <= reached, reached
    assert {"GET /api/v1/images/{image_id}", "GET /api/v1/jobs/{job_id}/status"} <= reached, reached


def answered(events: list[dict[str, Any]]) -> set[str]:
    """The operations (as `METHOD /path/{template}`) that answered a generated request with 2xx."""
    labels = set()
    for event in events:
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        cases = finished["recorder"].get("cases", {})
        for case_id, interaction in (finished["recorder"].get("interactions") or {}).items():
            response = interaction.get("response") or {}
            if 200 <= response.get("status_code", 0) < 300 and case_id in cases:
                case = cases[case_id]["value"]
                labels.add(f"{case['method']} {case['path']}")  # the path as its template
    return labels
