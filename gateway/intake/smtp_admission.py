"""Who gets a slot at the SMTP door (issue 9: idle unauthenticated sessions starved devices).

Every connection counts against its client address and the total (SmtpLimits), implicit-TLS ones from their
first byte. Sessions that have not logged in may use all but `auth_reserve` of the slots; when they hold them
all, or the door is full, the idlest of them is closed (421 4.7.0) to let the newcomer in rather than refusing
it, so a flood of sessions that only send NOOP cannot keep a scanner out. Sessions that logged in are never
evicted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.intake.smtp_limits import ConnectionLimiter, Network, SmtpLimits, address_in, idlest

if TYPE_CHECKING:
    from gateway.intake.smtp_session import ScanSMTP

log = logging.getLogger("scangw.smtp")


class Admission:
    def __init__(
        self, limits: SmtpLimits, proxies: Sequence[Network], connections: ConnectionLimiter, sessions: set[ScanSMTP]
    ) -> None:
        self.limits = limits
        self.proxies = proxies
        self.connections = connections
        self.sessions = sessions
        self.handshakes: Counter[str] = Counter()  # implicit-TLS connections not yet sessions, per address

    def admit(self, session: ScanSMTP) -> str | None:
        """Count a new session, or return the reply that refuses it (evicting the idlest unauthenticated
        session first when that makes room)."""
        if not self.connections.address_full(session.peer_ip):
            waiting = [s for s in self.sessions if s.device is None]
            reserve = min(self.limits.auth_reserve, self.limits.max_connections // 2)
            cap = self.limits.max_connections - reserve
            if len(waiting) >= cap or self.connections.total >= self.limits.max_connections:
                victim = idlest(waiting)
                if victim is not None:
                    log.warning("event=smtp.evicted peer=%s reason=unauthenticated sessions full", victim.peer_ip)
                    victim.evict("421 4.7.0 Closing a connection that did not log in: the gateway needs the slot")
        return self.connections.acquire(session.peer_ip)

    def handshake_started(self, peer_ip: str) -> bool:
        """An implicit-TLS connection counts against its address's share from its first byte, before it is a
        session: stalled handshakes (up to tls_handshake_seconds each) cannot pile up without limit."""
        pending = self.handshakes[peer_ip] + self.connections.from_address(peer_ip)
        if not address_in(peer_ip, self.proxies) and pending >= self.limits.max_per_address:
            log.warning("event=smtp.refused peer=%s reason=too many connections from the address (TLS)", peer_ip)
            return False
        if self.handshakes.total() >= self.limits.max_connections:
            log.warning("event=smtp.refused peer=%s reason=too many TLS handshakes at once", peer_ip)
            return False
        self.handshakes[peer_ip] += 1
        return True

    def handshake_ended(self, peer_ip: str) -> None:
        self.handshakes[peer_ip] -= 1
        if self.handshakes[peer_ip] <= 0:
            del self.handshakes[peer_ip]
