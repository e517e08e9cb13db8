"""The failed-login limiter (issue 9 items 5-6, issue 15): an injected clock and several client addresses, so
each test fails against a planted bug: a limiter keyed by address only, one whose window never expires, one
that counts nothing behind a proxy, one keyed by username only (the office-NAT and other-address lockouts)."""

from __future__ import annotations

import pytest

from gateway.core import login_limiter
from gateway.core.login_limiter import LoginLimiter, LoginLimits

OFFICE = "203.0.113.10"
HOME = "198.51.100.7"
ATTACKER = "192.0.2.66"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**kw: float) -> tuple[LoginLimiter, Clock]:
    clock = Clock()
    return LoginLimiter(LoginLimits(**kw), clock), clock  # type: ignore[arg-type]


def fail(lim: LoginLimiter, user: str, address: str | None, times: int, known: bool = True) -> None:
    for _ in range(times):
        lim.failed(user, address, known)


def test_five_wrong_passwords_stop_that_username_from_that_address() -> None:
    lim, _ = limiter()
    fail(lim, "mfp1", ATTACKER, 4)
    assert not lim.blocked("mfp1", ATTACKER)
    fail(lim, "mfp1", ATTACKER, 1)
    assert lim.blocked("mfp1", ATTACKER)


def test_the_window_expires_and_retry_after_says_when() -> None:
    lim, clock = limiter()
    fail(lim, "mfp1", ATTACKER, 5)
    clock.now += 20
    assert 39 < lim.retry_after("mfp1", ATTACKER) <= 40
    clock.now += 40.5
    assert not lim.blocked("mfp1", ATTACKER)
    assert lim.retry_after("mfp1", ATTACKER) == 0


def test_one_address_failing_does_not_lock_the_device_out_of_its_other_addresses() -> None:
    lim, _ = limiter()
    fail(lim, "mfp1", ATTACKER, 20)
    assert lim.blocked("mfp1", ATTACKER)
    assert not lim.blocked("mfp1", OFFICE)  # keyed by username only: 454 from every address


def test_one_misconfigured_scanner_behind_the_office_nat_does_not_lock_out_the_others() -> None:
    lim, _ = limiter()
    lim.succeeded("mfp2", OFFICE)
    fail(lim, "mfp1", OFFICE, 20)  # mfp1 has an old password
    assert lim.blocked("mfp1", OFFICE)
    assert not lim.blocked("mfp2", OFFICE)  # keyed by address only: the whole office locked out


def test_a_spray_of_unknown_names_stops_that_address_guessing_names() -> None:
    lim, _ = limiter()
    for n in range(5):
        lim.failed(f"guess{n}", ATTACKER, known=False)
    assert lim.blocked("guess99", ATTACKER)
    assert lim.blocked("mfp1", ATTACKER)  # a known name it never logged in from reads the same: no enumeration
    assert not lim.blocked("guess99", OFFICE)


def test_the_usual_address_with_the_right_password_is_never_locked_out_by_others() -> None:
    lim, _ = limiter(user_failures=30)
    lim.succeeded("mfp1", OFFICE)
    for n in range(40):  # guessing from many addresses reaches the per-username ceiling
        lim.failed("mfp1", f"192.0.2.{n}")
    for n in range(5):
        lim.failed(f"guess{n}", OFFICE, known=False)  # and someone sprays names from the office NAT
    assert lim.blocked("mfp1", "192.0.2.200")  # a new address is refused: the ceiling holds
    assert not lim.blocked("mfp1", OFFICE)


def test_the_per_username_ceiling_is_higher_and_slower() -> None:
    lim, clock = limiter(failures=5, window=60, user_failures=12, user_window=600)
    for n in range(12):
        lim.failed("mfp1", f"192.0.2.{n}")  # 1 per address: no pair reaches 5
    assert lim.blocked("mfp1", HOME)
    clock.now += 120  # past the pair window, within the ceiling's
    assert lim.blocked("mfp1", HOME)
    clock.now += 500
    assert not lim.blocked("mfp1", HOME)


def test_behind_a_proxy_the_username_still_counts() -> None:
    lim, clock = limiter()
    fail(lim, "mfp1", None, 5)
    assert lim.blocked("mfp1", None)  # a limiter that counts nothing behind a proxy protects nothing
    assert not lim.blocked("mfp2", None)
    fail(lim, "guess0", None, 5, known=False)
    assert lim.blocked("guess0", None)
    for n in range(1, 30):
        lim.failed(f"guess{n}", None, known=False)
    assert not lim.blocked("mfp2", None)  # a spray behind the proxy must not lock out every scanner behind it
    clock.now += 61
    assert not lim.blocked("mfp1", None)


def test_a_success_forgives_the_pairs_earlier_failures() -> None:
    lim, _ = limiter()
    fail(lim, "mfp1", OFFICE, 4)
    lim.succeeded("mfp1", OFFICE)
    fail(lim, "mfp1", OFFICE, 4)
    assert not lim.blocked("mfp1", OFFICE)


def test_memory_stays_bounded_under_a_spray_of_addresses() -> None:
    import gateway.core.login_limiter as module

    lim, clock = limiter()
    old = module.MAX_KEYS
    module.MAX_KEYS = 1000
    try:
        for n in range(5000):
            clock.now += 0.001
            lim.failed(f"u{n}", f"10.0.{n // 256}.{n % 256}", known=bool(n % 2))
        assert len(lim._seen) <= 1000
    finally:
        module.MAX_KEYS = old


def test_a_full_table_still_counts_the_attackers_it_tracks_and_forgets_only_what_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the key table full (a spray of addresses), a pair already counted keeps counting, keys whose failures
    left every window make room for new ones, and the table never grows past its bound."""
    monkeypatch.setattr(login_limiter, "MAX_KEYS", 10)
    lim, clock = limiter()
    fail(lim, "mfp1", ATTACKER, 2)  # two keys: the pair and the username's ceiling
    for n in range(8):
        lim.failed(f"guess{n}", f"10.0.0.{n}", known=False)  # eight more: full
    fail(lim, "mfp1", ATTACKER, 3)
    assert lim.blocked("mfp1", ATTACKER)  # a full table must not stop counting a tracked attacker
    lim.failed("guess", "10.0.1.1", known=False)
    assert len(lim._seen) == 10  # nothing had expired: the newcomer is not tracked
    clock.now += 901  # past the longest window (the username ceiling's)
    fail(lim, "guess", HOME, 5, known=False)
    assert lim.blocked("mfp2", HOME)  # expired keys were dropped, so the new address is counted
    assert len(lim._seen) == 1


def test_a_device_is_remembered_at_its_eight_latest_addresses() -> None:
    lim, _ = limiter()
    addresses = [f"198.51.100.{n}" for n in range(10)]
    for address in addresses[:9]:
        lim.succeeded("mfp1", address)
    lim.succeeded("mfp1", addresses[1])  # a return to an older address keeps it
    lim.succeeded("mfp1", addresses[9])
    usual = [a for a in addresses if lim.is_usual("MFP1", a)]
    assert usual == [addresses[1], *addresses[3:10]]


def test_the_devices_remembered_are_the_latest_to_log_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_limiter, "MAX_KEYS", 3)
    lim, _ = limiter()
    for name in ("mfp0", "mfp1", "mfp2"):
        lim.succeeded(name, OFFICE)
    lim.succeeded("mfp0", HOME)  # mfp0 logged in again: now mfp1 is the least recent
    lim.succeeded("mfp3", OFFICE)
    assert [n for n in ("mfp0", "mfp1", "mfp2", "mfp3") if lim.is_usual(n, OFFICE)] == ["mfp0", "mfp2", "mfp3"]


def test_usernames_match_as_the_registry_matches_them() -> None:
    """Case and surrounding blanks do not make a new name; a name that only upper-cases like another one does
    (ß and SS) is another name, so a spray of it behind a proxy does not lock out the device."""
    lim, _ = limiter()
    fail(lim, " MFP1 ", ATTACKER, 5)
    assert lim.blocked("mfp1", ATTACKER)
    fail(lim, "mfp\u00df", None, 5, known=False)
    assert lim.blocked("mfp\u00df", None)
    assert not lim.blocked("mfpss", None)


def test_retry_after_counts_from_the_failure_that_will_leave_the_window_first() -> None:
    lim, clock = limiter()
    for step in (0, 10, 20, 30, 40, 50):  # six failures, ten seconds apart
        clock.now = 1000.0 + step
        lim.failed("mfp1", ATTACKER)
    assert lim.retry_after("mfp1", ATTACKER) == 20.0  # the 2nd failure (at +10) leaves at +70; now is +50
    clock.now = 1070.0
    assert not lim.blocked("mfp1", ATTACKER)  # four left in the window
