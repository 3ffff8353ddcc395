"""The web console in Firefox (Debian's firefox-esr, driven over WebDriver BiDi by
puppeteer-core from tests/gateway/firefox/, installed by `npm ci` there): the key prompt, an
uploaded image's masks (one per mask of the API's own answer) and a click's candidates, with
no script or console errors and nothing loaded from elsewhere."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gateway.test_console_browser import ARTIFACTS, KEY, api, base, images  # noqa: F401 (fixtures)

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
DRIVER = Path(__file__).resolve().parent / "firefox"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(FIREFOX is None, reason="firefox is not installed (apt-get install firefox-esr)"),
    pytest.mark.skipif(
        not (DRIVER / "node_modules" / "puppeteer-core").is_dir(), reason="run `npm ci` in tests/gateway/firefox"
    ),
]


def test_the_console_works_in_firefox(base: str, images: list[Path]) -> None:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["node", str(DRIVER / "console_check.mjs"), base, KEY, str(images[1])],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "FIREFOX": str(FIREFOX), "SCREENSHOT": str(ARTIFACTS / "firefox.png"),
             "HOME": str(ARTIFACTS)},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["outside"] == []
    assert "needs an API key" in report["prompt"]
    expected = api(
        base,
        "POST",
        "/api/v1/segment",
        {
            "image": base64.b64encode(images[1].read_bytes()).decode(),
            "points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1,
            "mask_format": "MASK_FORMAT_RLE",
        },
    )  # fmt: skip
    assert report["masks"] == len(expected["masks"]) > 1
    assert report["answers"] == 3
