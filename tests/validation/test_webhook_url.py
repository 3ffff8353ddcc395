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
        "http://[2002:7f00:1::1]/hook",  # 6to4 carrying 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/hook",  # 6to4 carrying the cloud metadata address
        "http://[64:ff9b::a00:5]/hook",  # NAT64 carrying 10.0.0.5
        "http://[64:ff9b::7f00:1]/hook",  # NAT64 carrying 127.0.0.1
        "http://[64:ff9b:1::a00:5]/hook",  # local-use NAT64
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
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


def test_ipv6_carrying_a_public_ipv4_is_judged_by_it() -> None:
    assert WebhookPolicy().check("http://[2002:808:808::1]/hook").address == "2002:808:808::1"
    assert WebhookPolicy().check("http://[64:ff9b::808:808]/hook").address == "64:ff9b::808:808"


def test_a_refusal_names_the_host_not_its_addresses() -> None:
    with pytest.raises(InvalidArgument) as caught:
        WebhookPolicy().check("http://localhost:8080/hook")
    assert "'localhost'" in caught.value.message
    assert "127.0.0.1" not in caught.value.message and "::1" not in caught.value.message


def test_other_outbound_urls_are_refused_under_their_own_reasons() -> None:
    """The same rules vet task images: the reasons say what was refused."""
    with pytest.raises(InvalidArgument) as caught:
        WebhookPolicy().check("http://127.0.0.1/a.png", field="task.data", subject="IMAGE_URL")
    assert (caught.value.reason, caught.value.violations[0].field) == ("IMAGE_URL_FORBIDDEN", "task.data")
    with pytest.raises(InvalidArgument) as caught:
        WebhookPolicy().check("file:///etc/passwd", field="task.data", subject="IMAGE_URL")
    assert caught.value.reason == "INVALID_IMAGE_URL"
