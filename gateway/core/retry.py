"""Retry maths: pure functions of the attempt count and an injected random source."""

from __future__ import annotations

import random

BASE_SECONDS = 15.0
CAP_SECONDS = 30 * 60.0


def backoff(
    attempt: int, rng: random.Random | None = None, base: float = BASE_SECONDS, cap: float = CAP_SECONDS
) -> float:
    """Exponential backoff with 'full jitter' on the upper half, so a burst of failures spreads out."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter = float((rng or random).random())
    return ceiling / 2 + jitter * ceiling / 2


def next_delay(
    attempt: int, retry_after: float | None, rng: random.Random | None = None, base: float = BASE_SECONDS
) -> float:
    """Never earlier than the server asked (Retry-After), never a busy loop."""
    delay = backoff(attempt, rng, base=base)
    if retry_after is not None:
        delay = max(delay, retry_after) if attempt > 3 else max(retry_after, 1.0)
    return delay
