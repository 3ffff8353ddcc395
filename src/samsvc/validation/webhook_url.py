"""Which webhook targets are allowed: http(s) only, and every address the host resolves to
must be public unless an allow-list names it (SSRF protection).

Refused unless allowed: loopback, private (RFC 1918, unique-local), link-local (cloud
metadata at 169.254.169.254 included), multicast, carrier-grade NAT, reserved, unspecified,
and the IPv6 forms of all of them: an IPv6 address carrying an IPv4 one (v4-mapped, 6to4
2002::/16, NAT64 64:ff9b::/96, Teredo 2001::/32) is judged by the IPv4 address too. A refusal
names the host, never the addresses it resolved to.
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
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
)
#: NAT64's well-known prefix: the last 32 bits are the IPv4 address (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
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
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return self._address_allowed(address.ipv4_mapped)
            if address in _NAT64:  # in ::/8 (reserved), yet it reaches the IPv4 address it carries
                return self._address_allowed(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            carried = _embedded_ipv4(address)
            if carried and not all(self._address_allowed(v4) for v4 in carried):
                return False
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

    def check(
        self, url: str, field: str = "webhook_url", resolve: bool = True, subject: str = "WEBHOOK_URL"
    ) -> WebhookTarget:
        """The target for `url`, resolved and vetted; InvalidArgument naming `field` otherwise,
        with reason INVALID_<subject> or, for a non-public address, <subject>_FORBIDDEN (the
        same rules vet other outbound URLs, such as task images: IMAGE_URL)."""

        def refuse(description: str, reason: str = f"INVALID_{subject}") -> InvalidArgument:
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
                # The addresses themselves are not named: they would map the server's network.
                raise refuse(
                    f"host {host!r} resolves to a non-public address; add it to WEBHOOK_ALLOWED_HOSTS to allow it",
                    reason=f"{subject}_FORBIDDEN",
                )
        return WebhookTarget(url, parts.scheme, host, port, path, addresses[0])


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a 6to4 or Teredo (server and client) address carries."""
    carried: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    return carried


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True
