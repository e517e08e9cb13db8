"""Download links: what a browser saves the file as, when a link stops working, and which tokens are refused
(found unguarded by mutation testing: docs/mutation.md)."""

from __future__ import annotations

import re

import pytest

from gateway.core.links import (
    LinkClaim,
    LinkExpired,
    LinkInvalid,
    content_disposition,
    sign_token,
    utc_text,
    verify_token,
)

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("scan 1.pdf", "attachment; filename=\"scan 1.pdf\"; filename*=UTF-8''scan%201.pdf"),
        ('a"b\\c%d.pdf', "attachment; filename=\"a_b_c_d.pdf\"; filename*=UTF-8''a%22b%5Cc%25d.pdf"),
        ("Überweisung/März\x7f.pdf", "attachment; filename=\"_berweisung/M_rz_.pdf\"; filename*=UTF-8''%C3%9Cberweisung%2FM%C3%A4rz%7F.pdf"),
        ("\x1f", "attachment; filename=\"_\"; filename*=UTF-8''%1F"),
        ("", "attachment; filename=\"scan\"; filename*=UTF-8''"),
    ],
)  # fmt: skip
def test_a_download_is_saved_under_the_scans_own_name(name: str, header: str) -> None:
    assert content_disposition(name) == header


def test_expiry_is_shown_in_utc_to_the_minute() -> None:
    assert utc_text(1_800_000_000.0) == "2027-01-15 08:00 UTC"


def test_a_link_works_until_the_second_it_expires() -> None:
    claim = LinkClaim("job/scan.pdf", "Scan ü.pdf", 1_800_000_000.0)
    token = sign_token(KEY, claim)
    assert verify_token(KEY, token, 1_799_999_999.0) == claim
    with pytest.raises(LinkExpired) as expired:
        verify_token(KEY, token, 1_800_000_000.0)
    assert str(expired.value) == "expired at 2027-01-15 08:00 UTC"
    assert "." not in token.split(".", 1)[1].split(".")[0]  # the payload never holds the separator


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.rsplit(".", 1)[0],  # no MAC
        lambda t: t.rsplit(".", 1)[0] + ".",  # empty MAC
        lambda t: "v1.." + t.rsplit(".", 1)[1],  # empty payload
        lambda t: "v2" + t[2:],  # another version
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # another MAC
        lambda t: t + ".extra",
        lambda t: t.replace(".", "é.", 1),
    ],
)
def test_tampered_or_malformed_tokens_are_invalid(mangle: object) -> None:
    token = sign_token(KEY, LinkClaim("job/scan.pdf", "scan.pdf", 1_800_000_000.0))
    with pytest.raises(LinkInvalid):
        verify_token(KEY, mangle(token), 0.0)  # type: ignore[operator]
    with pytest.raises(LinkInvalid):
        verify_token(b"other key" * 4, token, 0.0)


def test_the_signature_covers_the_payload_so_a_link_cannot_be_pointed_at_another_scan() -> None:
    mine = sign_token(KEY, LinkClaim("job1/file-0", "mine.pdf", 1_800_000_000.0))
    theirs = sign_token(KEY, LinkClaim("job2/file-0", "theirs.pdf", 1_800_000_000.0))
    version, payload, _ = theirs.split(".")
    forged = f"{version}.{payload}.{mine.split('.')[2]}"  # their blob, my valid signature
    with pytest.raises(LinkInvalid):
        verify_token(KEY, forged, 0.0)


def test_expiry_text_is_utc_whatever_the_hosts_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert utc_text(1_800_000_000.0) == "2027-01-15 08:00 UTC"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_capital_x_is_kept_in_the_ascii_file_name() -> None:
    assert content_disposition("XREF.pdf").startswith('attachment; filename="XREF.pdf"')


def test_every_genuine_link_opens_whatever_the_length_of_its_file_name() -> None:
    """Every length of payload, so every amount of base64 padding, round-trips:
    a genuine link refused is a scan the recipient cannot fetch."""
    tokens = []
    for length in range(1, 81):
        claim = LinkClaim(f"0123456789abcdef01234567/file-{length % 3}", "s" * length + ".pdf", 1_800_000_000.0)
        token = sign_token(KEY, claim)
        assert verify_token(KEY, token, 0.0) == claim
        tokens.append(token)
    assert {len(t.split(".")[1]) % 4 for t in tokens} == {0, 2, 3}  # every padding case was met


def test_a_link_is_made_only_of_characters_no_mail_client_or_url_mangles() -> None:
    """Letters, digits, `-`, `_` and the dots: no `=` padding (quoted-printable and link detection both break on
    it), nothing to percent-encode."""
    for name in ("scan.pdf", "Überweisung März.pdf", "a" * 7, "b" * 8, "c" * 9):
        token = sign_token(KEY, LinkClaim("job/file-0", name, 1_800_000_000.0))
        assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token), token
