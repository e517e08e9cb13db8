"""Properties of the bounce reader over generated reports: it never names a job whose id is not in the
report, never takes a delay or an auto-reply for a bounce, and never raises on any input."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.bounce import read_bounce

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bounces"
#: Corpus reports whose job id is written in clear (not inside a base64 part), so it can be replaced.
CLEAR = [
    n
    for n, m in json.loads((CORPUS / "manifest.json").read_text()).items()
    if m["job"] and str(m["job"]).encode() in (CORPUS / n).read_bytes()
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hex_ids = st.text("0123456789abcdef", min_size=24, max_size=24)
filler = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
recipients = st.sampled_from(["a@fabrikam.com", "b@fabrikam.com", "|/bin/true", "@mx.fabrikam.com", "c@x.io"])
actions = st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded", "Failed", ""])
statuses = st.sampled_from(["5.1.1", "4.4.7", "2.0.0", "5.0.0 (permanent failure)", "5.7.515", "x", ""])


def _ids_in(data: bytes) -> set[str]:
    return {m.lower() for m in re.findall(rb"(?i)scan\.([0-9a-f]{24})", data) for m in [m.decode()]}


@given(
    carrier=st.sampled_from(["returned", "headers", "prose", "in-reply-to", "none"]),
    ours=hex_ids,
    decoy=hex_ids,
    blocks=st.lists(st.tuples(recipients, actions, statuses), max_size=4),
    words=filler,
    eol=st.sampled_from(["\r\n", "\n"]),
)
@SETTINGS
def test_a_report_names_only_a_job_whose_id_it_carries(
    carrier: str, ours: str, decoy: str, blocks: list[tuple[str, str, str]], words: str, eol: str
) -> None:
    """The decoy id appears only where no original's Message-ID is (a notice id, the body of the text):
    whatever the report's shape, the job it names is one written in it, and never the decoy."""
    mid = f"<scan.{ours}@contoso.com>"
    status = (
        "".join(f"Final-Recipient: rfc822; {r}\nAction: {a}\nStatus: {s}\n\n" for r, a, s in blocks)
        or "Reporting-MTA: dns; mx\n\n"
    )
    text = f"Delivery has failed. {words}\nSee <notice.{decoy}@contoso.com> and scan.{decoy} in the log.\n\n" + (
        "Original message headers:\n\nMessage-ID: " + mid + "\n" if carrier == "prose" else ""
    )
    report = (
        "From: postmaster@fabrikam.com\nSubject: Undeliverable: Scan\n"
        + (f"In-Reply-To: {mid}\n" if carrier == "in-reply-to" else "")
        + 'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        + f"--B\nContent-Type: text/plain; charset=utf-8\n\n{text}\n--B\nContent-Type: message/delivery-status\n\n"
        + status
        + (f"--B\nContent-Type: message/rfc822\n\nMessage-ID: {mid}\n\nbody\n" if carrier == "returned" else "")
        + (f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {mid}\n" if carrier == "headers" else "")
        + "--B--\n"
    ).replace("\n", eol)
    bounce = read_bounce(report.encode())
    if bounce is not None:
        assert bounce.job_id in _ids_in(report.encode())
        assert carrier != "none" and bounce.job_id == ours
        if blocks:  # the fields decide; without recipient blocks, the words ("Delivery has failed") do
            assert any(a.lower() == "failed" or (not a and s.startswith("5.")) for _, a, s in blocks)


@given(name=st.sampled_from(CLEAR), new=hex_ids)
@SETTINGS
def test_replacing_the_original_id_moves_the_bounce_with_it(name: str, new: str) -> None:
    data = (CORPUS / name).read_bytes()
    old = json.loads((CORPUS / "manifest.json").read_text())[name]["job"]
    bounce = read_bounce(data.replace(old.encode(), new.encode()))
    assert bounce is not None and bounce.job_id == new
    gone = read_bounce(data.replace(old.encode(), b"not-one-of-ours-at-all!!"))
    assert gone is None


@given(data=st.binary(max_size=2000))
@SETTINGS
def test_any_bytes_are_read_without_an_error_and_name_only_a_carried_job(data: bytes) -> None:
    bounce = read_bounce(data)
    assert bounce is None or bounce.job_id in _ids_in(data)


@given(
    ours=hex_ids,
    words=filler,
    header=st.sampled_from(
        ["Auto-Submitted: auto-replied", "X-Autoreply: yes", "Precedence: auto_reply", "Subject: Automatic reply: x"]
    ),
)
@SETTINGS
def test_an_auto_reply_is_never_a_bounce_whatever_it_says(ours: str, words: str, header: str) -> None:
    """Out-of-office text may say "could not be delivered" or quote the original; without an address paired
    with a 5.x.x code (what only a relay's report writes) it is not a report."""
    reply = (
        f"From: desk@fabrikam.com\n{header}\nIn-Reply-To: <scan.{ours}@contoso.com>\n\n"
        f"I am away; mail could not be delivered to my desk. {words}\n"
        f"-----Original Message-----\nMessage-ID: <scan.{ours}@contoso.com>\n"
    )
    assert read_bounce(reply.encode()) is None


@given(ours=hex_ids, blocks=st.lists(st.tuples(recipients, st.sampled_from(["delayed", "Delayed"])), min_size=1))
@SETTINGS
def test_a_delay_notice_is_never_a_bounce(ours: str, blocks: list[tuple[str, str]]) -> None:
    status = "".join(f"Final-Recipient: rfc822; {r}\nAction: {a}\nStatus: 4.4.7\n\n" for r, a in blocks)
    for outer in ("multipart/report; report-type=delivery-status", "multipart/mixed"):
        notice = (
            f"Subject: Delivery delayed\nContent-Type: {outer}; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
            f"Could not be delivered yet; 5.0.0 is not final here.\n--B\nContent-Type: message/delivery-status\n\n"
            f"{status}--B\nContent-Type: message/rfc822\n\nMessage-ID: <scan.{ours}@contoso.com>\n\n--B--\n"
        )
        assert read_bounce(notice.encode()) is None
