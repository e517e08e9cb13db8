"""Turn bytes in a declared (or undeclared) charset into text without ever failing.

Devices label Japanese text loosely (`Shift_JIS` for CP932, `ISO-2022-JP` with half-width kana or NEC
specials) and often send raw 8-bit header bytes with no label at all, so decoding tries the label's real-world
superset first, then sniffs, and finally falls back to a lossless single-byte reading.
"""

from __future__ import annotations

import codecs

#: Labels devices use, mapped to the superset codec that decodes what they actually send.
_ALIASES = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "cp932": "cp932",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
}

#: ISO-2022-JP variants, from strict to generous: CP50220-style kana and NEC row 13 need the later ones.
_ISO2022JP = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_2")

_ESC_JIS = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(I", b"\x1b$(D", b"\x1b$(Q", b"\x1b$(O")


def _codec(label: str) -> str | None:
    name = label.strip().strip('"').lower()
    if "*" in name:  # RFC 2231 language suffix inside RFC 2047: =?iso-2022-jp*ja?...
        name = name.split("*", 1)[0]
    name = _ALIASES.get(name, name)
    if name.startswith("iso-2022-jp") or name.startswith("iso2022_jp") or name in ("cp50220", "cp50221", "cp50222"):
        return "iso-2022-jp"
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in the label (a hostile or broken device)
        return None


def _try(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _iso2022jp(data: bytes) -> str:
    for codec in _ISO2022JP:
        text = _try(data, codec)
        if text is not None:
            return text
    return data.decode("iso2022_jp_ext", errors="replace")


def _looks_japanese(text: str) -> bool:
    """CP932 decodes many Latin-1 byte pairs too; accept it only when the result reads as Japanese."""
    wide = sum(1 for c in text if "\u3000" <= c <= "\u9fff" or "\uff01" <= c <= "\uff60")
    odd = sum(1 for c in text if "\ue000" <= c <= "\uf8ff" or "\uff61" <= c <= "\uff9f" or c == "\ufffd")
    return wide > 0 and odd == 0


def sniff(data: bytes) -> str:
    """Decode unlabelled bytes: ASCII, ISO-2022-JP (escape sequences), UTF-8, Shift-JIS, else Windows-1252."""
    if any(esc in data for esc in _ESC_JIS):
        return _iso2022jp(data)
    if data.isascii():
        return data.decode("ascii")
    text = _try(data, "utf-8")
    if text is not None:
        return text
    text = _try(data, "cp932")
    if text is not None and _looks_japanese(text):
        return text
    return data.decode("cp1252", errors="replace")


def decode_bytes(data: bytes, label: str | None) -> str:
    """Decode with the declared charset when it works, else sniff; never raises."""
    codec = _codec(label) if label else None
    if codec == "iso-2022-jp" and data.isascii():  # 7-bit by definition: 8-bit bytes are mislabelled, sniff them
        return _iso2022jp(data)
    if codec is not None and codec not in ("ascii", "cp1252", "latin-1", "iso8859-1"):
        text = _try(data, codec)
        if text is not None:
            return text
    # Latin-1 labels on UTF-8 or Shift-JIS bytes are a common device bug: sniffing settles those too.
    return sniff(data)
