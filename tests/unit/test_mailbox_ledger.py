"""The shared per-mailbox budget's arithmetic: slots, lapsed and dead claims, Retry-After, send booking."""

from __future__ import annotations

from gateway.core.mailbox_ledger import Ledger


def test_a_fifth_claim_waits_until_a_slot_is_released_or_lapses() -> None:
    ledger = Ledger()
    for n in range(4):
        taken = ledger.claim(f"w{n}", now=100.0, lease=150.0, limit=4)
        assert taken is not None
        ledger = taken
    assert ledger.claim("w4", now=100.0, lease=150.0, limit=4) is None
    assert ledger.release("w0").claim("w4", now=100.0, lease=150.0, limit=4) is not None
    lapsed = ledger.live(now=250.0)
    assert lapsed.slots == {} and lapsed.claim("w4", now=250.0, lease=150.0, limit=4) is not None


def test_claims_of_a_dead_process_are_dropped_at_once() -> None:
    ledger = Ledger(slots={"host|41|a|0": 500.0, "host|42|b|0": 500.0})
    assert set(ledger.live(now=0.0, dead=lambda holder: holder.startswith("host|41|")).slots) == {"host|42|b|0"}


def test_a_retry_after_window_only_ever_grows() -> None:
    ledger = Ledger().block(130.0)
    assert ledger.block(110.0).blocked_until == 130.0
    assert ledger.block(160.0).blocked_until == 160.0


def test_sends_are_booked_two_seconds_apart_at_thirty_a_minute() -> None:
    ledger, times = Ledger(), []
    for now in (10.0, 10.0, 10.5, 30.0):
        ledger, at = ledger.reserve_send(now, interval=2.0)
        times.append(at)
    assert times == [10.0, 12.0, 14.0, 30.0]


def test_the_record_round_trips() -> None:
    ledger = Ledger(slots={"a": 1.5}, blocked_until=2.0, next_send=3.0)
    assert Ledger.from_record(ledger.to_record()) == ledger
    assert Ledger.from_record(None) == Ledger()
