"""The failed-login limiter both doors share (SMTP `454 4.7.0`, HTTP `429` + `Retry-After`).

Keyed the way that protects devices (issue 9 item 6), in the spirit of Postfix's smtpd_client_auth_rate_limit:

- a known username is counted per (username, client address) pair: five wrong passwords for `mfp1` from one
  address stop `mfp1` from that address only, never from the others;
- an unknown username is counted per client address: a spray of invented names from one address stops that
  address guessing names (and guessing known ones it never logged in from, so the answer does not tell which
  names exist);
- each known username also has a higher, slower ceiling over all addresses, against guessing from many;
- an address a device logged in from (its usual address) is judged by the pair alone: the right password
  from there is never refused because of anyone else's failures, from other addresses or other names.

`address` is None behind a known TCP proxy (every client has the proxy's address): then the username alone is
the key, known or not (an unknown name never blocks anyone else there), which still counts, because a limiter
that counts nothing behind a proxy protects nothing.
Pure logic with an injected clock; memory is bounded by MAX_KEYS.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

#: Keys tracked at most: a spray of random usernames cannot grow memory without bound.
MAX_KEYS = 100_000
#: Usual addresses remembered per username (a device moves between a few networks at most).
USUAL_PER_USER = 8
#: The key standing for "behind a proxy": all clients share it.
PROXIED = "proxy"


def _pair(user: str, where: str) -> str:
    """The key of one (username, client address) pair; `where` is PROXIED behind a proxy."""
    return f"pair:{user}\0{where}"


@dataclass(frozen=True)
class LoginLimits:
    """Per pair or unknown-name address: `failures` within `window` seconds; per username: `user_failures`
    within `user_window` seconds (the higher, slower ceiling)."""

    failures: int = 5
    window: float = 60.0
    user_failures: int = 50
    user_window: float = 900.0


class LoginLimiter:
    def __init__(self, limits: LoginLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._usual: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    @staticmethod
    def _user(username: str) -> str:
        return username.strip().lower()

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int, float]]:
        """(key, failures allowed, window) of every count that applies to this attempt."""
        user, where = self._user(username), address or PROXIED
        limits = self.limits
        pair = (_pair(user, where), limits.failures, limits.window)
        ceiling = (f"user:{user}", limits.user_failures, limits.user_window)
        if address is None:  # behind a proxy every client shares the address: only the username can be a key
            return [pair, ceiling]
        if self.is_usual(username, address):
            return [pair]
        return [
            pair,
            (f"addr:{where}", limits.failures, limits.window),
            ceiling,
        ]

    def _recent(self, key: str, window: float, now: float) -> deque[float] | None:
        times = self._seen.get(key)
        if times is None:
            return None
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            del self._seen[key]
            return None
        return times

    def retry_after(self, username: str, address: str | None) -> float:
        """Seconds until this attempt may be checked; 0 when it may be checked now (not blocked)."""
        now = self._clock()
        wait = 0.0
        for key, allowed, window in self._keys(username, address):
            times = self._recent(key, window, now)
            if times is not None and len(times) >= allowed:
                wait = max(wait, times[len(times) - allowed] + window - now)
        return wait

    def blocked(self, username: str, address: str | None) -> bool:
        return self.retry_after(username, address) > 0

    def failed(self, username: str, address: str | None, known: bool = True) -> None:
        """Count a wrong password (`known`: the username exists) or an unknown username."""
        now = self._clock()
        user, where = self._user(username), address or PROXIED
        if known:
            keys = [_pair(user, where), f"user:{user}"]
        else:  # per address, or per (unknown) username behind a proxy, where the address is everyone's
            keys = [f"addr:{where}"] if address is not None else [_pair(user, where)]
        if len(self._seen) >= MAX_KEYS:
            longest = max(self.limits.window, self.limits.user_window)
            for key in list(self._seen):
                self._recent(key, longest, now)
        for key in keys:
            if len(self._seen) < MAX_KEYS or key in self._seen:
                self._seen.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, address: str | None) -> None:
        """Remember the address as the device's usual one; its earlier failures from there are forgiven."""
        user, where = self._user(username), address or PROXIED
        self._seen.pop(_pair(user, where), None)
        if address is None:
            return
        usual = self._usual.setdefault(user, OrderedDict())
        usual[address] = None
        usual.move_to_end(address)
        self._usual.move_to_end(user)
        while len(usual) > USUAL_PER_USER:
            usual.popitem(last=False)
        while len(self._usual) > MAX_KEYS:
            self._usual.popitem(last=False)

    def is_usual(self, username: str, address: str) -> bool:
        return address in self._usual.get(self._user(username), ())
