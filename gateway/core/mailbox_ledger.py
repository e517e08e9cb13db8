"""One sender mailbox's shared Graph budget, as a record every worker and Function instance reads and writes.

Exchange counts concurrent requests, Retry-After windows and the send rate per app per mailbox, not per
process, so the budget lives in storage: the holders of its 4 request slots (each with an expiry, so a dead
process's slot frees itself), the end of the current Retry-After window, and the earliest next send. Every
change is an etag-conditional replace of this record; these functions only compute the next record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Ledger:
    slots: Mapping[str, float] = field(default_factory=dict)  # holder → epoch seconds when its claim lapses
    blocked_until: float = 0.0
    next_send: float = 0.0

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> Ledger:
        if not data:
            return cls()
        slots = data.get("slots") or {}
        return cls(
            slots={str(k): float(v) for k, v in slots.items()},
            blocked_until=float(data.get("blocked_until") or 0.0),
            next_send=float(data.get("next_send") or 0.0),
        )

    def to_record(self) -> dict[str, Any]:
        return {"slots": dict(self.slots), "blocked_until": self.blocked_until, "next_send": self.next_send}

    def live(self, now: float, dead: Callable[[str], bool] = lambda _: False) -> Ledger:
        """Drop claims that lapsed, or whose holder is known to be gone (a killed worker on this host)."""
        kept = {h: t for h, t in self.slots.items() if t > now and not dead(h)}
        return self if len(kept) == len(self.slots) else replace(self, slots=kept)

    def claim(self, holder: str, now: float, lease: float, limit: int) -> Ledger | None:
        """The ledger with one more slot for `holder`, or None while all `limit` slots are held."""
        if len(self.slots) >= limit and holder not in self.slots:
            return None
        return replace(self, slots={**self.slots, holder: now + lease})

    def release(self, holder: str) -> Ledger:
        return replace(self, slots={h: t for h, t in self.slots.items() if h != holder})

    def block(self, until: float) -> Ledger:
        return self if until <= self.blocked_until else replace(self, blocked_until=until)

    def reserve_send(self, now: float, interval: float) -> tuple[Ledger, float]:
        """Book the next send slot at least `interval` after the last booking; returns (ledger, when)."""
        at = max(now, self.next_send)
        return replace(self, next_send=at + interval), at
