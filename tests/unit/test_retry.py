import random

from gateway.core.retry import CAP_SECONDS, backoff, next_delay


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff(n, rng) for n in range(1, 20)]
    assert delays[0] < delays[4] < CAP_SECONDS + 1
    assert max(delays) <= CAP_SECONDS


def test_retry_after_is_never_undercut() -> None:
    rng = random.Random(2)
    for attempt in range(1, 30):
        assert next_delay(attempt, 42.0, rng) >= 42.0
