"""Escape what could forge or hide a log line: attacker text (URL paths, usernames, `?to=`) is logged verbatim
otherwise, and a CR LF starts a fake line, an ESC sequence repaints a terminal, a bidi override reorders text.

Pure and dependency-free so every formatter (text, JSON, Azure Monitor) and every reply that quotes what a
client sent (gateway.core.addresses.shown) share one rule.
"""

from __future__ import annotations

#: C0 and C1 controls, DEL, the Unicode line/paragraph separators and the bidirectional formatting characters.
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029]
_UNSAFE += [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_TABLE = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _UNSAFE}


def escape(text: str) -> str:
    """`text` with every unsafe character written as a visible `\\xNN` / `\\uNNNN` escape."""
    return text.translate(_TABLE)
