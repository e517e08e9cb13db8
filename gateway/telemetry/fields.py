"""Structured fields of a log line, read from its *format string*: `log.info("job=%s state=sent", job_id)`
yields {"job": job_id, "state": "sent"}.

Keys come only from the constant text a developer wrote, never from the arguments, so attacker text cannot add
or overwrite a field (an alert matching `event == "queue.poison"` cannot be triggered by a username). Values
are escaped; recipient lists (`to=`) become a count and a short hash (issue 11: no recipient list in telemetry).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from gateway.core.escape import escape

#: A printf conversion as logging's %-formatting reads it (group 1: mapping key, group 2: conversion).
_CONVERSION = re.compile(r"%(?:\((\w+)\))?[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")
_KEY_BEFORE = re.compile(r"(?:^|[\s(\[,])([a-z_][a-z0-9_.]*)=$")
_LITERAL = re.compile(r"(?:^|(?<=[\s(\[,]))([a-z_][a-z0-9_.]*)=([^\s%=()\[\],]+)(?=[\s)\],]|$)")
#: Keys whose value is a recipient list: logged as a count and a hash, never as addresses.
RECIPIENT_KEYS = frozenset({"to", "rcpt", "recipients"})
#: Longest value kept in a field (a whole MIME header pasted into a username stays readable, not huge).
MAX_VALUE = 300


@functools.lru_cache(maxsize=2048)
def layout(fmt: str) -> tuple[tuple[tuple[int, str, str], ...], tuple[tuple[str, str], ...]]:
    """((argument index, key, conversion), (literal key, value)) of one format string, parsed once."""
    keyed: list[tuple[int, str, str]] = []
    index = 0
    for match in _CONVERSION.finditer(fmt):
        if match.group(2) == "%":
            continue
        if match.group(1) is None:
            key = _KEY_BEFORE.search(fmt, 0, match.start())
            if key is not None:
                keyed.append((index, key.group(1), match.group(2)))
            index += 1
    literal = tuple((m.group(1), m.group(2)) for m in _LITERAL.finditer(fmt) if "%" not in m.group(2))
    return tuple(keyed), literal


def recipients_summary(value: object) -> str:
    """`n recipient(s) #hash`: enough to tell two scans' recipient lists apart without naming anyone."""
    text = str(value)
    addresses = sorted({a.strip().lower() for a in text.replace(";", ",").split(",") if a.strip()})
    digest = hashlib.sha256("\n".join(addresses).encode("utf-8", "replace")).hexdigest()[:8]
    return f"{len(addresses)}rcpt#{digest}"


def redact_args(fmt: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments with every recipient list replaced by its summary (same positions, so %-formatting holds)."""
    keyed, _ = layout(fmt)
    if not any(key in RECIPIENT_KEYS for _, key, _ in keyed):
        return args
    out = list(args)
    for index, key, _ in keyed:
        if key in RECIPIENT_KEYS and index < len(out):
            out[index] = recipients_summary(out[index])
    return tuple(out)


def quote_args(fmt: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Keyed `%s` values holding a space, quote or `=` written as a quoted string (logfmt), so text after
    `key=` in a value cannot pass for another field of the line."""
    keyed, _ = layout(fmt)
    out: list[Any] | None = None
    for index, _, conversion in keyed:
        if conversion != "s" or index >= len(args):
            continue
        text = str(args[index])
        if text and not any(c.isspace() or c in '"=' for c in text):
            continue
        out = out if out is not None else list(args)
        out[index] = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return tuple(out) if out is not None else args


def _value(value: object) -> str | int | float | bool:
    if isinstance(value, bool | int | float):
        return value
    return escape(str(value))[:MAX_VALUE]


def extract(fmt: object, args: object) -> dict[str, str | int | float | bool]:
    """The line's fields; empty when the format is not a string or uses a mapping."""
    if not isinstance(fmt, str) or "=" not in fmt or isinstance(args, Mapping):
        return {}
    keyed, literal = layout(fmt)
    fields: dict[str, str | int | float | bool] = {key: escape(value) for key, value in literal}
    values = args if isinstance(args, tuple) else ()
    for index, key, _ in keyed:
        if index < len(values):
            fields[key] = _value(values[index])
    return fields
