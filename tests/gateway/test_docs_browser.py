"""/docs and /redoc rendered by headless Chromium (Debian's chromium, driven by Playwright):
both show the operations under a policy that allows no inline script and no framing (the
browser reports no violation), and Swagger UI's "Try it out" on GET /models gets 200."""

from __future__ import annotations

from typing import Any

from tests.gateway.chromium import needs_chromium
from tests.gateway.conftest import Stack

pytestmark = needs_chromium


def watched(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page opened at `url` whose policy the server set, with the browser's complaints about it."""
    page = browser.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto(url)
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    return page, refused


def test_swagger_ui_lists_operations_and_tries_one(stack: Stack, browser: Any) -> None:
    outside: list[str] = []
    page, refused = watched(browser, f"{stack.base}/docs")
    page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
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
    assert refused == [], "nothing on the page needed what the policy forbids"
    page.close()


def test_redoc_renders_operations(stack: Stack, browser: Any) -> None:
    page, refused = watched(browser, f"{stack.base}/redoc")
    page.get_by_text("ListModels").first.wait_for(state="attached", timeout=30_000)
    text = page.inner_text("body")
    for operation in ("Segment", "SubmitBatch", "GetJobStatus", "CancelJob", "/api/v1/jobs/{job_id}/results"):
        assert operation in text
    # Only ReDoc's footer logo from its CDN is refused (the policy keeps the page offline).
    assert all("img-src" in text and "https://cdn.redoc.ly/" in text for text in refused), refused
    # An injected inline script does not run.
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.pwned = 1';
        document.body.appendChild(s); }""")
    assert page.evaluate("() => window.pwned") is None
    page.close()
