"""/docs and /redoc rendered by headless Chromium (Debian's chromium, driven by Playwright):
both show the operations, and Swagger UI's "Try it out" on GET /models gets 200."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.conftest import Stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        yield launched
        launched.close()


def test_swagger_ui_lists_operations_and_tries_one(stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
    page.goto(f"{stack.base}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/segment" in summaries and "/jobs/{job_id}/status" in summaries
    models = page.locator("#operations-SegmentationService-ListModels_get_api_v1_models")
    models.locator(".opblock-summary").click()
    models.locator("button.try-out__btn").click()
    models.locator("button.execute").click()
    status = models.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=30_000)
    assert status.inner_text().strip().startswith("200")
    assert outside == [], "the page loads nothing from outside (no CDN)"
    page.close()


def test_redoc_renders_operations(stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{stack.base}/redoc")
    page.wait_for_function("document.body.innerText.includes('ListModels')", timeout=30_000)
    text = page.inner_text("body")
    for operation in ("Segment", "SubmitBatch", "GetJobStatus", "CancelJob", "/api/v1/jobs/{job_id}/results"):
        assert operation in text
    page.close()
