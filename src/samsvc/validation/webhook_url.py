"""Which webhook targets are allowed: http(s) only, and every address the host resolves to
must be public unless an allow-list names it (SSRF protection).

Refused unless allowed: loopback, private (RFC 1918, unique-local), link-local (cloud
metadata at 169.254.169.254 included), multicast, carrier-grade NAT, reserved, unspecified,
and the IPv6 forms of all of them (v4-mapped addresses are judged as IPv4).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from samsvc.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Ranges refused beyond what `ipaddress` flags as private/reserved.
_EXTRA_BLOCKED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class WebhookTarget:
    """A checked target: where to connect (a vetted address) and what to call it (Host/SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


class WebhookPolicy:
    def __init__(self, allowed: Sequence[str] = ()) -> None:
        """`allowed`: host names, addresses or CIDR ranges exempt from the address checks."""
        self._hosts = {a.lower() for a in allowed if not _is_network(a)}
        self._networks = [ipaddress.ip_network(a, strict=False) for a in allowed if _is_network(a)]

    def _address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self._networks):
            return True
        blocked = (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or any(address in net for net in _EXTRA_BLOCKED)
        )
        return not blocked

    def check(self, url: str, field: str = "webhook_url", resolve: bool = True) -> WebhookTarget:
        """The target for `url`, resolved and vetted; InvalidArgument naming `field` otherwise."""

        def refuse(description: str, reason: str = "INVALID_WEBHOOK_URL") -> InvalidArgument:
            return InvalidArgument.for_field(field, description, reason=reason)

        if len(url) > MAX_URL_LENGTH:
            raise refuse(f"is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise refuse(f"is not a valid URL ({exc})") from None
        if parts.scheme not in {"http", "https"}:
            raise refuse("must be an http or https URL")
        host = (parts.hostname or "").lower()
        if not host:
            raise refuse("has no host")
        if parts.username or parts.password:
            raise refuse("must not carry credentials")
        port = port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not resolve:
            return WebhookTarget(url, parts.scheme, host, port, path, "")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise refuse(f"host {host!r} does not resolve ({exc})") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        if not addresses:
            raise refuse(f"host {host!r} does not resolve")
        if host not in self._hosts:
            bad = [a for a in addresses if not self._address_allowed(ipaddress.ip_address(a.split("%")[0]))]
            if bad:
                raise refuse(
                    f"host {host!r} resolves to a non-public address ({', '.join(bad)}); "
                    "add it to WEBHOOK_ALLOWED_HOSTS to allow it",
                    reason="WEBHOOK_URL_FORBIDDEN",
                )
        return WebhookTarget(url, parts.scheme, host, port, path, addresses[0])


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True
