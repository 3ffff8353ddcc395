"""The documentation site as a reader sees it, in headless Chromium: built with mkdocs-material,
served on loopback, its data-flow diagrams drawn by the site's own mermaid (before, the theme
fetched mermaid from unpkg.com, so a reader offline saw the diagrams' source text), and no page
loads anything from another host."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.chromium import needs_chromium
from tests.support.http import serving

pytestmark = needs_chromium
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    built = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    with serving(functools.partial(QuietHandler, directory=str(built))) as base:
        yield base


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


#: Drawn: mermaid-material puts each diagram's SVG in a closed shadow root of a `div.mermaid`
#: that replaces the `pre.mermaid` holding its source; the source stays when mermaid never loads.
DRAWN = """() => window.mermaid !== undefined && document.querySelector('pre.mermaid') === null
    && document.querySelector('div.mermaid') !== null"""


@pytest.mark.parametrize("page", ["development/architecture/", ""])
def test_the_diagrams_draw_with_the_sites_own_mermaid(site: str, browser: Any, page: str) -> None:
    tab = browser.new_page()
    outside: list[str] = []
    loaded: list[str] = []
    tab.on("request", lambda r: (loaded if r.url.startswith(site) else outside).append(r.url))
    tab.goto(f"{site}/{page}")
    tab.wait_for_function(DRAWN, timeout=30_000)
    box = tab.locator("div.mermaid").first.bounding_box()
    assert box is not None and box["height"] > 40, box  # a drawing, not an empty frame
    assert any(url.endswith("/javascripts/mermaid.min.js") for url in loaded), loaded
    assert outside == [], f"loaded from another host: {outside}"
    tab.close()
