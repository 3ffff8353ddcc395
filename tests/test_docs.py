"""The documentation site: it builds with mkdocs-material in strict mode (a broken link, a page
missing from the navigation or a stale reference fails it), its configuration reference is the
settings object's own, and the README stays a front door whose links all lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: About 150 lines: what samsvc is, how to start, one example per way in, and links.
MAX_README_LINES = 160


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "operations/configuration/index.html", "integrations/label-studio/index.html"} <= pages


def test_the_configuration_reference_is_the_settings_own() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/docs_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    from samsvc.config import Settings

    page = (ROOT / "docs" / "operations" / "configuration.md").read_text(encoding="utf-8")
    assert all(f"| `{name.upper()}` |" in page for name in Settings.model_fields)


def test_the_error_reference_lists_what_the_code_raises() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/docs_errors.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    page = (ROOT / "docs" / "reference" / "errors.md").read_text(encoding="utf-8")
    for reason in ("IMAGE_TOO_LARGE", "TOO_MANY_STREAMS", "NOT_AN_EMBEDDING_JOB", "IMAGE_URL_FORBIDDEN", "INTERNAL"):
        assert f"| `{reason}` |" in page, reason


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= MAX_README_LINES
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert len(local) >= 15, "the README links into the site"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to nothing: {missing}"
