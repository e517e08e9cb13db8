"""How long a job's bytes outlive its download links: the margin is kept to the second, then they go."""

from __future__ import annotations

from gateway.core.links import KEEP_MARGIN_SECONDS, LINKS_UNTIL, kept_after_send, links_pending, links_until


def test_bytes_behind_links_are_kept_until_the_margin_after_expiry_and_not_a_moment_longer() -> None:
    until = 1_800_000_000.0
    progress = {LINKS_UNTIL: until}
    assert links_pending(progress, until)
    assert links_pending(progress, until + KEEP_MARGIN_SECONDS - 0.001)
    assert not links_pending(progress, until + KEEP_MARGIN_SECONDS)
    assert not links_pending({}, 0.0)


def test_a_sent_job_keeps_only_what_retention_and_the_sweep_need() -> None:
    progress = {LINKS_UNTIL: 5.0, "superseded_drafts": ["d1"], "delivery": {"x": 1}, "links_all": True}
    assert kept_after_send(progress) == {LINKS_UNTIL: 5.0, "superseded_drafts": ["d1"]}
    assert kept_after_send({LINKS_UNTIL: None}) == {}


def test_link_expiry_is_whole_seconds_so_the_job_and_every_link_agree() -> None:
    assert links_until(1000.2, 1.0) == 4601.0
    assert links_until(1000.0, 0.5) == 2800.0
