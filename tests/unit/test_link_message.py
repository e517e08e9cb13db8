"""What the recipient of a link-fallback message reads (the device's body, then each file with its size, link
and expiry, in the body's own format) and the Message-ID that keeps that message exactly-once. In-process, so
mutation testing can judge them (tests/integration/test_links.py drives them through `scangw`)."""

from __future__ import annotations

import pytest

from gateway.core.links import DownloadLink, body_with_links, human_size, links_message_id

EXPIRES = 1_800_000_000.0  # 2027-01-15 08:00 UTC
INTRO = "These files were too large to attach. Download them before 2027-01-15 08:00 UTC:"
BIG = DownloadLink("scan.pdf", 3 * 1024 * 1024 + 17, "https://scan.contoso.test/api/links/v1.a.b", EXPIRES)
SMALL = DownloadLink("notes.pdf", 12 * 1024, "https://scan.contoso.test/api/links/v1.c.d", EXPIRES)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 bytes"),
        (1, "1 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (1024 + 511, "1 KiB"),
        (1024 + 513, "2 KiB"),
        (12 * 1024, "12 KiB"),
        (1024 * 1024 - 1, "1024 KiB"),
        (1024 * 1024, "1.0 MiB"),
        (3 * 1024 * 1024 + 17, "3.0 MiB"),
        (int(2.25 * 1024 * 1024), "2.2 MiB"),
        (int(2.26 * 1024 * 1024), "2.3 MiB"),
        (150 * 1024 * 1024, "150.0 MiB"),
    ],
)
def test_a_file_size_is_shown_in_the_unit_a_person_reads(size: int, shown: str) -> None:
    assert human_size(size) == shown


def test_a_text_body_gets_one_line_per_file_after_a_blank_line() -> None:
    assert body_with_links("Scanned by mfp1.\n", "text", [BIG, SMALL]) == (
        "Scanned by mfp1.\n\n"
        f"{INTRO}\n"
        "- scan.pdf (3.0 MiB): https://scan.contoso.test/api/links/v1.a.b\n"
        "- notes.pdf (12 KiB): https://scan.contoso.test/api/links/v1.c.d\n"
    )


@pytest.mark.parametrize("body", ["Scan", "Scan\n", "Scan\n\n\n"])
def test_the_links_follow_the_text_after_exactly_one_blank_line(body: str) -> None:
    assert body_with_links(body, "Text", [SMALL]) == f"Scan\n\n{INTRO}\n- notes.pdf (12 KiB): {SMALL.url}\n"


@pytest.mark.parametrize("body", ["Scanned by XEROX", "Total: 12 \t", "Scanned by XEROX\n"])
def test_the_text_itself_is_kept_to_its_last_character(body: str) -> None:
    """Only the trailing line breaks make way for the blank line: the device's words stay as they were."""
    kept = body.rstrip("\n")
    assert body_with_links(body, "text", [SMALL]) == f"{kept}\n\n{INTRO}\n- notes.pdf (12 KiB): {SMALL.url}\n"


@pytest.mark.parametrize("body", ["", "\n", "\n\n"])
def test_an_empty_text_body_starts_with_the_links(body: str) -> None:
    assert body_with_links(body, "text", [SMALL]) == f"{INTRO}\n- notes.pdf (12 KiB): {SMALL.url}\n"


def test_the_earliest_expiry_is_the_one_promised() -> None:
    later = DownloadLink("b.pdf", 1, "https://x.test/b", EXPIRES + 7 * 86400)
    earlier = DownloadLink("a.pdf", 1, "https://x.test/a", EXPIRES)
    for links in ([later, earlier], [earlier, later]):
        assert INTRO in body_with_links("", "text", links)


def test_without_links_the_body_is_left_as_it_was() -> None:
    assert body_with_links("Scan\n", "text", []) == "Scan\n"
    assert body_with_links("<html><body>Scan</body></html>", "html", ()) == "<html><body>Scan</body></html>"


def test_an_html_body_gets_a_list_of_escaped_links_before_its_closing_body_tag() -> None:
    link = DownloadLink('Q3 <draft> & "final".pdf', 2048, "https://x.test/api/links/v1.p.m?a=1&b=2", EXPIRES)
    body = "<html><body><p>Scan</p></BODY></html>"
    assert body_with_links(body, "HTML", [link, SMALL]) == (
        "<html><body><p>Scan</p>"
        f"<hr><p>{INTRO}</p><ul>"
        '<li><a href="https://x.test/api/links/v1.p.m?a=1&amp;b=2">Q3 &lt;draft&gt; &amp; &quot;final&quot;.pdf</a>'
        " (2 KiB)</li>"
        f'<li><a href="{SMALL.url}">notes.pdf</a> (12 KiB)</li>'
        "</ul></BODY></html>"
    )


def test_the_links_go_before_the_last_closing_body_tag_or_at_the_end_without_one() -> None:
    section = f'<hr><p>{INTRO}</p><ul><li><a href="{SMALL.url}">notes.pdf</a> (12 KiB)</li></ul>'
    quoted = "<p>a quoted </body> tag</p></body>"
    assert body_with_links(quoted, "html", [SMALL]) == f"<p>a quoted </body> tag</p>{section}</body>"
    assert body_with_links("<p>Scan</p>", "html", [SMALL]) == f"<p>Scan</p>{section}"
    assert body_with_links("", "html", [SMALL]) == section
    assert body_with_links("</body>", "html", [SMALL]) == f"{section}</body>"  # a body that is only its end tag


def test_a_text_body_is_not_html_escaped() -> None:
    link = DownloadLink("a&b <1>.pdf", 10, "https://x.test/l?a=1&b=2", EXPIRES)
    assert body_with_links("", "text", [link]).endswith("- a&b <1>.pdf (10 bytes): https://x.test/l?a=1&b=2\n")


@pytest.mark.parametrize(
    ("original", "links"),
    [
        ("<20261201.ab12@scan.contoso.test>", "<20261201.ab12.links@scan.contoso.test>"),
        ("20261201.ab12@scan.contoso.test", "<20261201.ab12.links@scan.contoso.test>"),
        ("<no-domain>", "<no-domain.links>"),
        ("<X7@MAIL.BOX>", "<X7.links@MAIL.BOX>"),  # only the angle brackets are taken off, never a letter
    ],
)
def test_the_link_message_has_its_own_message_id_derived_from_the_scans(original: str, links: str) -> None:
    """Its own: the refused draft (same Message-ID as the scan) is never taken for it. Derived, never random:
    a retry after a crash finds the message it already sent instead of sending a second one."""
    assert links_message_id(original) == links
    assert links_message_id(original) == links_message_id(original)
