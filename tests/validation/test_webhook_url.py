from __future__ import annotations

import pytest

from samsvc.errors import InvalidArgument
from samsvc.validation.webhook_url import WebhookPolicy


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/hook",
    ],
)
def test_non_public_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        WebhookPolicy().check(url)
    assert caught.value.reason == "WEBHOOK_URL_FORBIDDEN"
    assert caught.value.violations[0].field == "webhook_url"


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "file:///etc/passwd", "http://user:pw@8.8.8.8/", "http:///nohost", "gopher://x"]
)
def test_malformed_or_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        WebhookPolicy().check(url)
    assert caught.value.reason == "INVALID_WEBHOOK_URL"


def test_public_address_is_pinned() -> None:
    target = WebhookPolicy().check("https://8.8.8.8:8443/a/b?c=1")
    assert (target.scheme, target.host, target.port, target.path, target.address) == (
        "https", "8.8.8.8", 8443, "/a/b?c=1", "8.8.8.8",
    )  # fmt: skip


def test_allow_list_by_range_and_by_name() -> None:
    assert WebhookPolicy(["127.0.0.0/8"]).check("http://127.0.0.1:9/x").address == "127.0.0.1"
    assert WebhookPolicy(["localhost"]).check("http://localhost:9/x").host == "localhost"
    with pytest.raises(InvalidArgument):
        WebhookPolicy(["10.0.0.0/8"]).check("http://127.0.0.1/x")
