"""Property-based tests (hypothesis) for what hostile input must never break: address validation, header
sanitising and MIME normalisation. Each property is a promise the doors make for every input, not a list
of cases someone thought of."""

from __future__ import annotations

import asyncio
import string
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP, default

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.addresses import MAX_ADDRESS, MAX_LOCAL_PART, AddressRefused, recipient_address
from gateway.core.errors import MalformedInput
from gateway.core.mime.headers import parse_header_block
from gateway.core.mime.partial import MAX_TOTAL, partial_info
from gateway.core.mime.splitter import MimeSplitter
from gateway.core.sanitise import (
    MAX_FILE_NAME,
    check_header_block,
    content_type,
    display_name,
    file_name,
    header_text,
    message_id,
)
from gateway.intake.smtp_data import DataReader

#: Characters hostile input is made of: controls, line and paragraph separators, bidi overrides, encoded-word
#: punctuation, non-ASCII letters and plain text.
HOSTILE = st.text(
    alphabet=st.sampled_from(
        list('\x00\x01\t\n\r\x0b\x0c\x1b\x7f\x85\u2028\u2029\u202e\u2066=?_:;<>@"\\/. ')
        + list("aZ09")
        + ["\u00fc", "\u65e5", "\U0001f600"]
    ),
    max_size=120,
)
ANY_TEXT = st.one_of(HOSTILE, st.text(max_size=300))
LINE_BREAKS = set("\r\n\x0b\x0c\x85\u2028\u2029")
WORDS = st.builds(
    lambda charset, kind, payload: f"=?{charset}?{kind}?{payload}?=",
    st.sampled_from(["utf-8", "iso-8859-1", "us-ascii", "x-bogus"]),
    st.sampled_from(["q", "Q", "b", "B"]),
    st.text(alphabet=string.ascii_letters + string.digits + "=_+/:", max_size=40),
)
VALUE = st.lists(st.one_of(ANY_TEXT, WORDS, st.just("=?utf-8?q?x=0D=0ABcc:_e@x.example?=")), max_size=4).map("".join)


# -- addresses -------------------------------------------------------------------------------------------------


@given(ANY_TEXT)
def test_an_accepted_address_is_ascii_bounded_and_clean(text: str) -> None:
    try:
        address = recipient_address(text)
    except AddressRefused as exc:
        assert not any(ord(c) < 32 or c in "\u2028\u2029" for c in str(exc))  # the reply line stays one line
        return
    local, _, domain = address.rpartition("@")
    assert address.isascii() and address.isprintable() and " " not in address
    assert len(local) <= MAX_LOCAL_PART and len(domain) <= 255 and len(address) <= MAX_ADDRESS
    assert domain == domain.lower() and "." in domain
    assert recipient_address(address) == address  # idempotent: what was accepted stays accepted


LOCAL = st.from_regex(r"\A[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10}){0,2}\Z")
LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")


@given(LOCAL, st.lists(LABEL, min_size=1, max_size=3), st.sampled_from(["com", "org", "example", "xn--p1ai"]))
def test_every_plain_address_within_the_limits_is_accepted_unchanged(local: str, labels: list[str], tld: str) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    assert recipient_address(address) == address
    assert recipient_address(f" <{address}> ") == address


@given(LOCAL, ANY_TEXT)
def test_a_control_character_anywhere_refuses_the_address(local: str, junk: str) -> None:
    for bad in ("\x00", "\r", "\n", "\x7f", "\x01", "\u2028"):
        try:
            recipient_address(f"{local}{bad}{junk}@example.com")
        except AddressRefused:
            continue
        raise AssertionError(f"accepted {local!r}{bad!r}")


# -- header sanitising -----------------------------------------------------------------------------------------


@given(VALUE)
def test_header_text_is_one_line_without_controls(value: str) -> None:
    text = header_text(value)
    assert not any(c in LINE_BREAKS or ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "=?" not in text
    assert header_text(text) == text  # idempotent


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(VALUE, VALUE, VALUE, VALUE)
def test_sanitised_values_stay_one_header_each_through_the_email_package(
    subject: str, name: str, filename: str, ident: str
) -> None:
    """Whatever the interpreter's email package does (CVE-2024-6923), the written block holds exactly the
    fields written: checked by the same function the outbox uses, and by the email parser."""
    head = EmailMessage(policy=SMTP)
    head["Subject"] = header_text(subject)
    head["From"] = f'"{(display_name(name) or "x").replace(chr(92), "").replace(chr(34), "")}" <a@example.com>'
    head["X-Original-Message-ID"] = message_id(ident) or "<none@example.com>"
    head.add_header("Content-Disposition", "attachment", filename=file_name(filename))
    block = b"".join(SMTP.fold_binary(n, v) for n, v in head.items()) + b"\r\n"
    check_header_block(block, 4)
    parsed = message_from_bytes(block, policy=default)
    assert sorted(k.lower() for k in parsed.keys()) == [
        "content-disposition",
        "from",
        "subject",
        "x-original-message-id",
    ]


@given(VALUE, st.sampled_from(["pdf", "jpeg", "tiff", "p7m"]))
def test_file_names_are_safe_bounded_and_keep_a_short_extension(stem: str, extension: str) -> None:
    name = file_name(stem + "x" * 300 + "." + extension)  # always over the limit: the cut must keep the extension
    assert len(name) <= MAX_FILE_NAME and name.endswith("." + extension)  # a long stem is cut before the x run
    assert not set(name) & set('/\\:*?"<>|\u202e\u2066') and name == name.strip(" .")
    assert not any(ord(c) < 32 or c in LINE_BREAKS for c in name)
    short = file_name(stem)
    assert len(short) <= MAX_FILE_NAME and not any(ord(c) < 32 or c in LINE_BREAKS for c in short)
    assert file_name(short) == short
    assert file_name(name) == name


@given(ANY_TEXT)
def test_content_types_are_one_bare_media_type(value: str) -> None:
    ctype = content_type(value, "scan.pdf")
    main, slash, sub = ctype.partition("/")
    assert slash and main and sub and ctype == ctype.lower() and ";" not in ctype and ctype.isprintable()
    assert " " not in ctype and ctype.isascii()


@given(ANY_TEXT)
def test_message_ids_are_kept_only_as_one_bracketed_token(value: str) -> None:
    kept = message_id(value)
    assert kept is None or (kept.startswith("<") and kept.endswith(">") and kept.isprintable() and " " not in kept)


# -- MIME normalisation ----------------------------------------------------------------------------------------


def _dot_stuffed(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


class _Feed:
    """A StreamReader fed with the SMTP DATA bytes in the chunk sizes given."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    async def reader(self) -> asyncio.StreamReader:
        reader = asyncio.StreamReader(limit=64)
        for i in range(0, len(self.data), self.cut):
            reader.feed_data(self.data[i : i + self.cut])
        reader.feed_eof()
        return reader


@settings(max_examples=150)
@given(
    st.lists(st.sampled_from([b"line", b".dot", b"..", b"", b"\n", b"\r", b"x\ny", b"\x00", b"." * 70]), max_size=30),
    st.integers(1, 50),
)
def test_data_normalisation_ends_only_at_crlf_dot_crlf_and_restores_the_lines(pieces: list[bytes], cut: int) -> None:
    body = b"\r\n".join(pieces) + b"\r\n"
    wire = _dot_stuffed(body) + b".\r\n" + b"QUIT\r\n"

    async def go() -> bytes:
        data = DataReader(await _Feed(wire, cut).reader(), limit=1 << 20)
        return b"".join([c async for c in data.chunks()])

    out = asyncio.run(go())
    expected = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert out == expected


@settings(max_examples=200)
@given(st.binary(max_size=2000), st.integers(1, 300))
def test_the_mime_splitter_takes_any_bytes_in_any_chunks_without_raising(data: bytes, cut: int) -> None:
    splitter = MimeSplitter()
    for i in range(0, len(data), cut):
        list(splitter.feed(data[i : i + cut]))
    list(splitter.close())


@given(ANY_TEXT, ANY_TEXT, ANY_TEXT)
def test_a_partial_fragment_never_claims_more_than_the_clamp(number: str, total: str, ident: str) -> None:
    raw = f'Content-Type: message/partial; id="{ident}"; number={number}; total={total}\r\n'.encode(
        "utf-8", "surrogatepass"
    )
    try:
        info = partial_info(parse_header_block(raw))
    except MalformedInput:
        return  # refused as malformed: the door answers 554
    if info is not None:
        assert 1 <= info.number <= MAX_TOTAL
        assert info.total is None or info.number <= info.total <= MAX_TOTAL
