"""The house rules that tools can check: ruff (lint and format) and mypy strict on src/, the
pre-commit hooks that run the same tools, and the size of source files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_hooks_are_valid_and_run_the_suites_checks() -> None:
    import yaml

    result = subprocess.run(
        [str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = {hook["id"]: hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}
    assert entries == {
        "ruff-check": "uv run ruff check --fix",
        "ruff-format": "uv run ruff format",
        "mypy": "uv run mypy",
        "generated": "uv run python scripts/generate.py --check",
        "contract": "uv run python scripts/check_contract.py",
    }


#: Longest source file (lines) before it must be split; generated code aside.
MAX_SOURCE_LINES = 420


def test_no_source_file_outgrows_one_job() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / "src").rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_SOURCE_LINES
    }
    assert not long, f"split these (over {MAX_SOURCE_LINES} lines): {long}"
