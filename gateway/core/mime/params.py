"""Structured header values (`type/subtype; name=value; ...`) with every parameter encoding devices use.

RFC 2231 continuations (`filename*0*=`, `filename*1=`) with a charset, RFC 2047 encoded-words inside quoted
values (forbidden, common), unquoted values with spaces, and raw 8-bit bytes all end up as plain text.
Values are handled as Latin-1 strings until the end so raw bytes survive for charset decoding.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from gateway.core.mime.charsets import decode_bytes, sniff
from gateway.core.mime.words import decode_words

_SECTION = re.compile(r"^(?P<base>[^*]+)\*(?P<n>\d+)(?P<enc>\*?)$")


def _split(value: str) -> list[str]:
    """Split at semicolons outside quoted strings; an unterminated quote runs to the end."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if c == '"':
            quoted = not quoted
        elif c == "\\" and quoted and i + 1 < len(value) and value[i + 1] in '"\\':
            current.append(c)
            i += 1
            c = value[i]
        elif c == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if not value.startswith('"'):
        return value
    body = value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:]
    # Only \" and \\ are escapes: Windows paths in file names keep their backslashes.
    return re.sub(r'\\(["\\])', r"\1", body)


def _plain(latin: str) -> str:
    return decode_words(sniff(latin.encode("latin-1", errors="replace")))


def _rfc2231(sections: dict[int, tuple[bool, str]]) -> str:
    charset: str | None = None
    data = bytearray()
    for index in sorted(sections):
        encoded, value = sections[index]
        if encoded:
            if index == min(sections) and value.count("'") >= 2:
                charset, _lang, value = value.split("'", 2)
            data.extend(unquote_to_bytes(value))
        else:
            data.extend(value.encode("latin-1", errors="replace"))
    text = decode_bytes(bytes(data), charset) if charset else sniff(bytes(data))
    return decode_words(text)


def parse_structured(raw: bytes | None) -> tuple[str, dict[str, str]]:
    """`(main value lower-cased, {param name lower-cased: decoded text})`; never raises."""
    if raw is None:
        return "", {}
    pieces = _split(raw.decode("latin-1"))
    main = pieces[0].strip().strip('"').lower()
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[bool, str]]] = {}
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        value = _unquote(value)
        section = _SECTION.match(name)
        if section:
            parts = extended.setdefault(section["base"], {})
            parts.setdefault(int(section["n"]), (bool(section["enc"]), value))
        elif name.endswith("*"):
            extended.setdefault(name[:-1], {}).setdefault(0, (True, value))
        else:
            plain.setdefault(name, value)
    params = {name: _plain(value) for name, value in plain.items()}
    for name, sections in extended.items():
        params[name] = _rfc2231(sections)  # RFC 2231 values win over plain ones of the same name
    return main, params
