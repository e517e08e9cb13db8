"""Connection limits of the SMTP door, per client address and in total.

Behind Container Apps' TCP ingress every client has the proxy's address, so addresses listed in
SCANGW_SMTP_PROXY_CIDRS are not limited per address (one noisy device must not shut out every scanner);
the total limit still holds.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SmtpLimits:
    """Defaults sized for a site of scanners: bursts of a few sessions each, never thousands."""

    max_connections: int = 1000
    max_per_address: int = 50
    #: Slots only sessions that logged in may use: idle unauthenticated sessions can never fill the door.
    auth_reserve: int = 200
    #: From connect to login (AUTH, or MAIL for devices allowed by address); NOOP and RSET do not extend it.
    preauth_seconds: float = 60.0
    max_recipients: int = 100
    idle_timeout_seconds: float = 300.0
    #: On SIGTERM, sessions in DATA get this long to finish before they are cut (nothing half-stored).
    stop_deadline_seconds: float = 60.0
    #: A refused message (too large, storage down) is read to its final dot and dropped, so that clients still
    #: writing read the refusal instead of a reset (a reset is temporary: they would retry for days). Past
    #: these bounds the door answers and closes the connection instead.
    oversize_drain_bytes: int = 1024 * 1024 * 1024
    oversize_drain_seconds: float = 600.0
    #: A TLS client sends its ClientHello at once; silence means it expects plain SMTP (told so, then closed).
    tls_hello_seconds: float = 5.0
    tls_handshake_seconds: int = 30


def limits_from(settings: Settings) -> SmtpLimits:
    """The limits an admin sets (SCANGW_SMTP_MAX_CONNECTIONS, _MAX_PER_ADDRESS, _LOGIN_SECONDS); a fifth of the
    connections stays reserved for sessions that logged in."""
    total = settings.smtp_max_connections
    return SmtpLimits(
        max_connections=total,
        max_per_address=settings.smtp_max_per_address,
        auth_reserve=total // 5,
        preauth_seconds=settings.smtp_login_seconds,
        max_recipients=settings.max_recipients,
        idle_timeout_seconds=settings.smtp_idle_timeout_seconds,
    )


def address_in(address: str, networks: Iterable[Network]) -> bool:
    """True when `address` (IPv4, IPv6 or IPv4-mapped IPv6) lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def networks(cidrs: Iterable[str]) -> list[Network]:
    """Parse CIDRs as stored on a device; an unparsable entry matches nothing rather than everything."""
    found: list[Network] = []
    for cidr in cidrs:
        try:
            found.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            continue
    return found


class Waiting(Protocol):
    """What admission needs to know of an unauthenticated session."""

    peer_ip: str
    started: float
    authenticating: bool


W = TypeVar("W", bound=Waiting)


def idlest(waiting: Iterable[W]) -> W | None:
    """The unauthenticated session to close first: not one checking a password, from the address holding the
    most such sessions (a flood, not the one device behind it), the oldest of those."""
    candidates = [s for s in waiting if not s.authenticating]
    if not candidates:
        return None
    per_address = Counter(s.peer_ip for s in candidates)
    return min(candidates, key=lambda s: (-per_address[s.peer_ip], s.started))


class ConnectionLimiter:
    def __init__(self, limits: SmtpLimits, proxies: Iterable[Network]) -> None:
        self._limits = limits
        self._proxies = tuple(proxies)
        self._per_address: Counter[str] = Counter()
        self.total = 0

    def from_address(self, address: str) -> int:
        return self._per_address[address]

    def address_full(self, address: str) -> bool:
        """The address has its share of connections (never true for a proxy, where one address is many)."""
        return not address_in(address, self._proxies) and self._per_address[address] >= self._limits.max_per_address

    def acquire(self, address: str) -> str | None:
        """Count a new connection, or return the reply that refuses it."""
        if self.address_full(address):
            return "421 4.7.0 Too many connections from your address; close some and try again"
        if self.total >= self._limits.max_connections:
            return "421 4.3.2 Too many connections to the gateway; try again in a minute"
        self.total += 1
        self._per_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.total = max(0, self.total - 1)
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
