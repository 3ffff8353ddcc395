"""The web console at / in headless Chromium (Debian's chromium, driven by Playwright), against
a real server and Envoy with API keys on: a missing key gets a clear prompt; an uploaded image's
masks are drawn, one per mask of the API's own answer; a click gives a mask from an image
session; a batch of three streams three results in, and a reload resumes the stream after its
cursor; the jobs list opens a job's results. Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samsvc.config import Settings
from samsvc.gateway.launcher import start_gateway
from samsvc.server.auth import digest, new_key
from tests.gateway.chromium import needs_chromium
from tests.support import ServerThread, encode, scene
from tests.support.starts import starts

pytestmark = needs_chromium
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
KEY = new_key()
OPTIONS = {"pps": "4", "iou": "0", "stability": "0", "nms": "1"}


@starts("envoy", scope="module")
def base(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp_path_factory.mktemp("data")),
            "rest_port": 0,
            "envoy_admin_port": 0,
            "api_keys": [f"console:{digest(KEY)}"],
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    yield f"http://127.0.0.1:{gateway.rest_port}"
    gateway.stop()
    server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for i in range(3):
        path = folder / f"picture{i}.png"
        path.write_bytes(encode(scene(160, 120, seed=40 + i)))
        paths.append(path)
    return paths


class Page:
    """A console tab, recording script errors and console errors."""

    def __init__(self, browser: Any, base: str) -> None:
        # The test evaluates its own scripts in the page; the console's CSP forbids that to pages.
        self.page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.outside: list[str] = []
        self.page.on("request", lambda r: self.outside.append(r.url) if not r.url.startswith(base) else None)
        self.page.goto(base + "/")

    def sign_in(self) -> None:
        self.page.fill("#api-key", KEY)
        self.page.press("#api-key", "Enter")
        self.page.dispatch_event("#api-key", "change")
        self.page.wait_for_function("document.querySelector('#model').options.length > 0", timeout=30_000)

    def script_errors(self) -> list[str]:
        # The browser logs every refused request (the 401s a missing key gets) as a console error.
        return [e for e in self.errors if "401" not in e and "Unauthorized" not in e]


def api(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_missing_key_gets_a_clear_prompt(browser: Any, base: str) -> None:
    tab = Page(browser, base)
    notice = tab.page.locator("#notice")
    notice.wait_for(state="visible", timeout=30_000)
    assert "needs an API key" in notice.inner_text()
    tab.sign_in()
    assert tab.page.locator("#notice").is_hidden()
    assert tab.page.locator("#model").input_value() == "tiny"
    assert tab.script_errors() == []
    assert tab.outside == [], "the console loads nothing from elsewhere (no CDN)"
    tab.page.close()


def test_the_files_are_served_without_a_key_and_locked_down(base: str) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ):
        with urllib.request.urlopen(base + path, timeout=30) as response:
            assert response.headers["Content-Type"].startswith(kind)
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    for path in ("/console/../pyproject.toml", "/console/secret.py", "/console/%2e%2e/sidecar.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=30)
        assert refused.value.code in {401, 404}


def test_segment_draws_every_mask_and_a_click_gives_one(browser: Any, base: str, images: list[Path]) -> None:
    tab = Page(browser, base)
    tab.sign_in()
    page = tab.page
    for field, value in OPTIONS.items():
        page.fill(f"#{field}", value)
    page.set_input_files("#file", str(images[0]))
    page.wait_for_function("!document.querySelector('#run-segment').disabled", timeout=30_000)
    page.click("#run-segment")
    page.wait_for_selector("#segment-status[data-masks]", timeout=120_000)
    expected = api(
        base,
        "POST",
        "/api/v1/segment",
        {
            "image": base64.b64encode(images[0].read_bytes()).decode(),
            "points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1,
            "mask_format": "MASK_FORMAT_RLE",
        },
    )  # fmt: skip
    assert page.locator("#mask-list li").count() == len(expected["masks"]) > 1
    # The canvas shows the image with masks painted over it (not a blank or unpainted canvas).
    painted = page.evaluate(
        """() => { const c = document.querySelector('#segment-canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   return [c.width, c.height, d.some((v, i) => i % 4 === 0 && v > 0)]; }"""
    )
    assert painted == [160, 120, True]
    page.hover("#segment-canvas", position={"x": 80, "y": 60})
    shoot(page, "segment.png")

    page.click("#tab-click")
    page.click("#click-canvas", position={"x": 60, "y": 40})
    page.wait_for_selector("#click-status[data-answers]", timeout=60_000)
    assert page.locator("#choices button").count() == 3  # multimask: three candidates to choose from
    page.locator("#choices button").nth(1).click()
    page.click("#undo")
    shoot(page, "click.png")
    assert tab.script_errors() == []
    page.close()


def test_a_batch_streams_three_results_resumes_after_reload_and_lists(
    browser: Any, base: str, images: list[Path]
) -> None:
    tab = Page(browser, base)
    tab.sign_in()
    page = tab.page
    for field, value in OPTIONS.items():
        page.fill(f"#{field}", value)
    page.click("#tab-batch")
    page.set_input_files("#batch-files", [str(p) for p in images])
    page.click("#submit-batch")
    page.wait_for_selector("#batch-status[data-finished]", timeout=180_000)
    assert page.locator("#batch-status").get_attribute("data-finished") == "JOB_STATUS_COMPLETED"
    assert sorted(page.locator("#batch-results li").evaluate_all("l => l.map(e => e.dataset.index)")) == ["0", "1", "2"]
    shoot(page, "batch.png")
    job_id = page.locator("#batch-status").inner_text().split()[1].rstrip(":")

    # A reload mid-stream: the tab resumes after the last event it had seen (here, the first image's).
    first_image = api_first_image_cursor(base, job_id)
    page.evaluate(
        "([job, cursor]) => sessionStorage.setItem('samsvc.watchedJob', JSON.stringify({jobId: job, cursor}))",
        [job_id, first_image],
    )
    page.reload()
    page.wait_for_selector("#batch-status[data-finished]", timeout=60_000)
    assert page.locator("#batch-results li").count() == 2, "only the images after the cursor arrive again"

    page.click("#tab-jobs")
    page.wait_for_selector(f"#jobs tbody tr:has-text('{job_id}')", timeout=30_000)
    page.locator(f"#jobs tbody tr:has-text('{job_id}') button").click()
    page.wait_for_function("document.querySelectorAll('#job-results li').length === 3", timeout=30_000)
    assert page.locator("#more-results").is_hidden()  # one page holds them all
    page.select_option("#job-filter", "JOB_STATUS_FAILED")
    page.wait_for_function(f"!document.querySelector('#jobs tbody').innerText.includes('{job_id}')", timeout=30_000)
    shoot(page, "jobs.png")
    assert tab.script_errors() == []
    page.close()


def api_first_image_cursor(base: str, job_id: str) -> str:
    request = urllib.request.Request(f"{base}/api/v1/jobs/{job_id}/events")
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, timeout=60) as response:
        for line in response.read().decode().splitlines():
            event = json.loads(line)
            event = event.get("result", event)
            if event.get("image"):
                return str(event["cursor"])
    raise AssertionError("no image event")


def test_a_batch_can_be_cancelled(browser: Any, base: str, images: list[Path]) -> None:
    tab = Page(browser, base)
    tab.sign_in()
    page = tab.page
    page.fill("#pps", "48")  # slow enough to cancel: 2304 prompts an image
    page.click("#tab-batch")
    page.set_input_files("#batch-files", [str(p) for p in images])
    page.click("#submit-batch")
    page.wait_for_function("!document.querySelector('#cancel-batch').disabled", timeout=60_000)
    page.click("#cancel-batch")
    page.wait_for_selector("#batch-status[data-finished]", timeout=120_000)
    assert page.locator("#batch-status").get_attribute("data-finished") == "JOB_STATUS_CANCELLED"
    assert tab.script_errors() == []
    page.close()
