"""Which charset a file name is read in (issue 15: the boundaries mutation testing found unpinned).

Unlabelled 8-bit bytes are read as Shift-JIS (CP932) only when the result reads as Japanese, else as
Windows-1252: each row below sits at an end of the ranges `_looks_japanese` counts (U+3000..U+9FFF and
U+FF01..U+FF60 as Japanese; private use, half-width kana as "not really CP932"), or just outside them. A
declared charset wins over sniffing: each label a device uses is mapped to the superset that decodes what it
actually sends, and every row is one that sniffing would get wrong, so only the label can decide it.
"""

from __future__ import annotations

import base64

import pytest

from gateway.core.mime.charsets import decode_bytes, sniff
from gateway.core.mime.params import parse_structured
from gateway.core.mime.words import decode_text

KAIGI = "会議".encode("cp932")  # two kanji: Japanese on their own


def _pct(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


@pytest.mark.parametrize(
    ("data", "read_as"),
    [
        # The only Japanese character is the first of the CJK range: U+3000, the ideographic space.
        ("a\u3000b.pdf".encode("cp932"), "cp932"),
        # The last CJK character CP932 has (U+9FA0; U+9FA1..U+9FFF are not in CP932).
        ("\u9fa0.pdf".encode("cp932"), "cp932"),
        # The first full-width form, U+FF01 (!), and the last one CP932 has below U+FF60 (U+FF5E, ~).
        ("\uff01.pdf".encode("cp932"), "cp932"),
        ("\uff5e.pdf".encode("cp932"), "cp932"),
        # Just below U+3000: U+266F (sharp), the highest CP932 character outside the ranges; no Japanese.
        (b"\x81\xf2.pdf", "cp1252"),
        # Cyrillic through CP932 (0x84 0x41 is "B" in Cyrillic): valid CP932, nothing Japanese in it.
        (b"\x84\x41.pdf", "cp1252"),
        # Just above the full-width forms: U+FFE5 (full-width yen) alone is not Japanese enough.
        ("\uffe5.pdf".encode("cp932"), "cp1252"),
        # Kanji and one private-use character: U+E000 (0xF0 0x40), the first of the range.
        (KAIGI + b"\xf0\x40", "cp1252"),
        # Kanji and one half-width katakana, at each end of U+FF61..U+FF9F: Latin-1 letters read as kana.
        (KAIGI + b"\xa1", "cp1252"),
        (KAIGI + b"\xdf", "cp1252"),
    ],
    ids=["U+3000", "U+9FA0", "U+FF01", "U+FF5E", "U+266F", "cyrillic", "U+FFE5", "U+E000", "U+FF61", "U+FF9F"],
)
def test_unlabelled_bytes_read_as_shift_jis_only_when_they_read_as_japanese(data: bytes, read_as: str) -> None:
    expected = data.decode(read_as) if read_as == "cp932" else data.decode("cp1252", errors="replace")
    assert data.decode("cp932") != data.decode("cp1252", errors="replace")  # the row decides something
    assert sniff(data) == expected
    assert parse_structured(b"attachment; filename=" + data)[1]["filename"] == expected
    assert parse_structured(f"attachment; filename*=''{_pct(data)}".encode())[1]["filename"] == expected


@pytest.mark.parametrize(
    ("labels", "name", "encoded_as"),
    [
        # CP932's NEC specials (1 in a circle) with half-width kana: Shift_JIS proper has neither all.
        (("Shift_JIS", "shift-jis", "sjis", "x-sjis", "Windows-31J"), "①ｽｷｬﾝ.pdf", "cp932"),
        # JIS X 0213 kanji (the 2010 joyo additions) that EUC-JP proper lacks.
        (("EUC-JP", "x-euc-jp"), "剝離 頰.pdf", "euc_jis_2004"),
        # Hangul only in the Unified Hangul Code extension (CP949), which Outlook labels ks_c_5601-1987.
        (("ks_c_5601-1987", "EUC-KR"), "똠방각하 스캔.pdf", "cp949"),
        # A CJK extension A character only GB18030 has.
        (("GB2312", "GBK", "x-gbk"), "扫描件 䶮.pdf", "gb18030"),
        # Cantonese characters of the Hong Kong supplement.
        (("Big5",), "啱嘅文件.pdf", "big5hkscs"),
        # Labels sniffing would also get wrong, without any alias.
        (("windows-1251", "cp1251"), "Скан договора.pdf", "cp1251"),
        (("UTF-7", "unicode-1-1-utf-7"), "日本語.pdf", "utf-7"),
    ],
    ids=["shift_jis", "euc-jp", "ks_c_5601", "gb", "big5", "windows-1251", "utf-7"],
)
def test_a_declared_charset_decodes_what_devices_send_under_that_label(
    labels: tuple[str, ...], name: str, encoded_as: str
) -> None:
    data = name.encode(encoded_as)
    assert sniff(data) != name  # only the label can decide this one
    for label in labels:
        assert decode_bytes(data, label) == name, label
        raw = f"attachment; filename*={label}''{_pct(data)}".encode()
        assert parse_structured(raw)[1]["filename"] == name, label


@pytest.mark.parametrize("label", ["ISO-2022-JP", "iso-2022-jp-2", "CP50220", "iso2022_jp"])
@pytest.mark.parametrize("encoding", ["cp932", "utf-8"])
def test_eight_bit_bytes_labelled_iso_2022_jp_are_sniffed_not_replaced(label: str, encoding: str) -> None:
    """ISO-2022-JP is 7-bit: 8-bit bytes under that label are Shift-JIS or UTF-8 a device mislabelled, and
    decoding them as ISO-2022-JP turned every byte into U+FFFD (found by mutation testing)."""
    name = "スキャン 会議.pdf"
    data = name.encode(encoding)
    assert decode_bytes(data, label) == name
    assert parse_structured(f"attachment; filename*={label}''{_pct(data)}".encode())[1]["filename"] == name


def test_iso_2022_jp_text_is_decoded_by_the_first_variant_that_reads_it_and_never_raises() -> None:
    # JIS X 0213 kanji (ESC $ ( Q): ISO-2022-JP and its NEC/kana extension refuse them, ISO-2022-JP-2004 reads them.
    jis2004 = "剝離.pdf".encode("iso2022_jp_2004")
    assert decode_bytes(jis2004, "ISO-2022-JP") == "剝離.pdf"
    assert sniff(jis2004) == "剝離.pdf"
    # Bytes no variant reads: the generous variant with U+FFFD where it must, never an exception.
    broken = b"\x1b$B\x30\x7f\x46\x7c\x1b(B.pdf"
    expected = broken.decode("iso2022_jp_ext", errors="replace")
    assert "\ufffd" in expected and expected.endswith(".pdf")
    assert decode_bytes(broken, "ISO-2022-JP") == expected
    assert sniff(broken) == expected


def _b64_word(label: str, data: bytes) -> bytes:
    return f"=?{label}?B?{base64.b64encode(data).decode()}?=".encode()


CYRILLIC = "Скан договора.pdf"


@pytest.mark.parametrize(
    ("label", "data", "text"),
    [
        # RFC 2231 section 5: a language after the charset, on a charset only the label can decide.
        ("windows-1251*ru", CYRILLIC.encode("cp1251"), CYRILLIC),
        ("Shift_JIS*ja", "①ｽｷｬﾝ.pdf".encode("cp932"), "①ｽｷｬﾝ.pdf"),
        # A quoted label, and labels that start or end with a capital X.
        ('"Shift_JIS"', "①ｽｷｬﾝ.pdf".encode("cp932"), "①ｽｷｬﾝ.pdf"),
        ("X-SJIS", "①ｽｷｬﾝ.pdf".encode("cp932"), "①ｽｷｬﾝ.pdf"),
        ("X-GBK", "扫描件 䶮.pdf".encode("gb18030"), "扫描件 䶮.pdf"),
        # glibc's name for ASCII (a device in the C locale) on ISO-2022-JP escape sequences, and Latin-1 labels
        # (not the aliased spelling) on UTF-8: the label is no help, sniffing reads them.
        ("ANSI_X3.4-1968", "スキャン.pdf".encode("iso2022_jp"), "スキャン.pdf"),
        ("ISO_8859-1", "Grüße.pdf".encode(), "Grüße.pdf"),
        ("l1", "Grüße.pdf".encode(), "Grüße.pdf"),
    ],
)
def test_charset_labels_as_devices_spell_them_in_encoded_words(label: str, data: bytes, text: str) -> None:
    assert decode_text(_b64_word(label, data)) == text
    assert decode_bytes(data, label) == text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # An apostrophe inside an RFC 2231 value: only the first two quotes delimit charset and language.
        (b"attachment; filename*=UTF-8'en'O'Brien's%20scan.pdf", ("attachment", {"filename": "O'Brien's scan.pdf"})),
        # A plain (not %-encoded) section after an encoded one carries raw UTF-8 bytes: kept as bytes.
        (
            b"attachment; filename*0*=UTF-8''%C3%9Cbersicht; filename*1=\" f\xc3\xbcr Sie.pdf\"",
            ("attachment", {"filename": "Übersicht für Sie.pdf"}),
        ),
        # No space after the semicolons (many devices).
        (b'attachment;filename="scan.pdf";size=3', ("attachment", {"filename": "scan.pdf", "size": "3"})),
        # A type that ends in a capital X keeps it.
        (b"TEXT/X-TEX; name=a.tex", ("text/x-tex", {"name": "a.tex"})),
        # name*= and name*0*= both given: the first one wins, they are not joined.
        (
            b"attachment; filename*=UTF-8''%C3%9C.pdf; filename*0*=UTF-8''other.pdf",
            ("attachment", {"filename": "Ü.pdf"}),
        ),
    ],
    ids=["apostrophes", "raw-utf8-section", "no-spaces", "capital-x", "star-and-section"],
)
def test_parameters_devices_write_outside_the_rfc(raw: bytes, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_structured(raw) == expected


@pytest.mark.parametrize(
    "label",
    ["ISO-2022-JP", "iso-2022-jp-2", "ISO-2022-JP-3", "iso2022_jp", "CP50220", "cp50221", "CP50222", "iso-2022-jp*ja"],
)
def test_every_spelling_of_iso_2022_jp_reads_a_broken_escape_as_a_replacement_character(label: str) -> None:
    """An escape sequence no ISO-2022-JP variant knows: the label says ISO-2022-JP, so the reader sees U+FFFD
    where the broken sequence was, never the raw escape (which sniffing would pass through as ASCII)."""
    broken = b"\x1b$Zscan.pdf"
    assert sniff(broken) != "\ufffdscan.pdf"
    assert decode_bytes(broken, label) == "\ufffdscan.pdf"
    assert decode_text(_b64_word(label, broken)) == "\ufffdscan.pdf"
