"""Webhooks: which URLs a job may name (http or https, at most 2048 characters, no loopback, private or link-local
target unless its network is allowed), the address a delivery goes to (resolved and checked at each attempt, then
connected to as resolved, so a name that resolves elsewhere later gains nothing), and the Standard Webhooks signature
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``)."""

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from gateway import errors
from workers.config import allowed_networks, url_problem

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], list[str]]  # (host, port) → addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP)."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


IETF = ipaddress.ip_network("192.0.0.0/24")  # IETF protocol assignments: none is a webhook receiver
TUNNELS = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("2001::/32"))  # 6to4, Teredo: IPv4 inside


def public(address: Address) -> bool:
    """Whether an address is on the public internet (globally reachable: not loopback, private, shared, link-local,
    multicast, reserved or unspecified; an IPv4 address mapped into IPv6 is judged as itself, and the IPv6 tunnels
    that carry an IPv4 address inside are refused)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif any(address in tunnel for tunnel in TUNNELS):
            return False
    return address.is_global and not address.is_multicast and address not in IETF


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the URL's parts and the address to connect to."""

    scheme: str
    host: str  # the name in the URL (the Host header, and what TLS checks)
    port: int
    path: str  # with its query
    address: str  # the resolved address it connects to


class Targets:
    """The webhook targets allowed: any public address, and the configured networks."""

    def __init__(self, allowed: str = "", resolver: Resolve = resolve) -> None:
        self.allowed = allowed_networks(allowed)
        self.resolver = resolver

    def permitted(self, address: Address) -> bool:
        """Whether a delivery may go to ``address``."""
        return public(address) or any(address in network for network in self.allowed)

    def target(self, url: str) -> Target:
        """The URL's target, resolved now; InvalidWebhook if its form is wrong, its host does not resolve, or any
        address it resolves to is not permitted."""
        if problem := url_problem(url):
            raise errors.InvalidWebhook(f"the webhook is {problem}")
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        except (OSError, UnicodeError, ValueError) as exc:
            raise errors.InvalidWebhook(f"the webhook's host {host[:100]!r} does not resolve: {exc}") from None
        refused = [a for a in found if not self.permitted(a)]
        if refused or not found:
            raise errors.InvalidWebhook(f"the webhook's host {host[:100]!r} is "
                                        f"{refused[0] if refused else 'no address'}: loopback, private and link-local "
                                        f"targets are refused unless SM_WEBHOOK_ALLOW_NETWORKS allows them")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, port, path, str(found[0]))


def new_secret() -> str:
    """A new signing secret: whsec_ and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` under the
    secret's bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(signed).decode()
