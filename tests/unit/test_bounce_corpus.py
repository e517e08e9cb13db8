"""Every report shape in tests/data/bounces/ (written by make_bounces.py): the job, each refused recipient
and its status code, and nothing at all for delays, auto-replies and other people's bounces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core.bounce import read_bounce

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bounces"
MANIFEST: dict[str, dict[str, object]] = json.loads((CORPUS / "manifest.json").read_text())


def test_the_corpus_is_the_one_its_generator_writes() -> None:
    from tests.data.bounces.make_bounces import reports

    written = reports()
    assert sorted(written) == sorted(MANIFEST)
    for name, (data, meta) in written.items():
        assert (CORPUS / name).read_bytes() == data, name
        assert MANIFEST[name] == json.loads(json.dumps(meta)), name


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_report_shape_yields_its_job_refused_recipients_and_codes(name: str) -> None:
    expected = MANIFEST[name]
    bounce = read_bounce((CORPUS / name).read_bytes())
    if expected["job"] is None:
        assert bounce is None, f"{expected['shape']}: taken for a bounce"
        return
    assert bounce is not None, f"{expected['shape']}: not read"
    assert bounce.job_id == expected["job"]
    assert [[r.recipient, r.status] for r in bounce.refused] == expected["refused"]
    for refusal in bounce.refused:
        assert refusal.recipient in bounce.reason()


@pytest.mark.parametrize("name", [n for n, m in sorted(MANIFEST.items()) if m["job"]])
def test_a_report_cut_anywhere_after_its_status_still_names_no_other_job(name: str) -> None:
    """The sweep reads only the head of a report: a cut report names its own job or none."""
    data = (CORPUS / name).read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        bounce = read_bounce(data[:cut])
        assert bounce is None or bounce.job_id == MANIFEST[name]["job"]
