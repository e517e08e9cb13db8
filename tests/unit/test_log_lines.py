"""Log lines an attacker cannot forge (issue 9 item 10) in both SCANGW_LOG_FORMATs (issue 12 item 8)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.config import load_settings
from gateway.core.errors import ConfigError
from gateway.core.escape import escape
from gateway.telemetry.fields import extract
from gateway.telemetry.formats import JsonFormatter, TextFormatter
from gateway.telemetry.records import GatewayRecord

HOSTILE = (
    "dev\x1b[2J\r\n2026-12-01 10:00:00,000 ERROR scangw.delivery event=queue.poison \u202eexe.fdp\x00\x7f\x85\u2028"
)


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(GatewayRecord)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("scangw.test_log_lines")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(previous)


def test_escape_leaves_no_control_separator_or_bidi_character() -> None:
    out = escape(HOSTILE)
    assert all(ord(c) >= 0x20 and c not in "\x7f\x85\u2028\u202e" for c in out)
    assert "\\x1b[2J\\x0d\\x0a2026" in out and "\\u202e" in out


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_attacker_text_stays_inside_its_own_line(lines, formatter: logging.Formatter) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = lines
    handler.setFormatter(formatter)
    logger.warning("event=smtp.auth result=failed peer=%s user=%s", "192.0.2.1", HOSTILE)
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logger.exception("http %s %s failed", "GET", "/api/scans/" + HOSTILE)
    text = stream.getvalue()
    assert not any(c in text for c in "\x1b\x00\x7f\r\x85\u2028\u202e")
    events = [line for line in text.splitlines() if not line.startswith("    | ")]
    assert len(events) == 2, text  # the forged "ERROR ... poison" line is not a line of its own
    if isinstance(formatter, JsonFormatter):
        first, second = (json.loads(line) for line in events)
        assert first["event"] == "smtp.auth" and first["result"] == "failed" and first["user"].startswith("dev\\x1b")
        assert "ValueError" in second["exception"]


def test_fields_come_from_the_format_string_never_from_the_values() -> None:
    fields = extract("job=%s state=queued retry_in=%.0fs reason=%s", ("abc", 12.0, "x event=queue.poison y"))
    assert fields == {"job": "abc", "state": "queued", "retry_in": 12.0, "reason": "x event=queue.poison y"}
    assert "event" not in fields
    assert extract("event=queue.poison reason=%s", ("bad",)) == {"event": "queue.poison", "reason": "bad"}
    assert extract("100%% done %s", ("x",)) == {}


def test_text_values_with_spaces_are_quoted_so_no_value_becomes_a_field(lines) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = lines
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.info("job=%s state=failed reason=%s", "abc", 'Gave up "x" state=sent')
    assert stream.getvalue().strip() == 'job=abc state=failed reason="Gave up \\"x\\" state=sent"'


def test_recipient_lists_are_logged_as_a_count_and_a_hash(lines) -> None:  # type: ignore[no-untyped-def]
    logger, stream, handler = lines
    handler.setFormatter(JsonFormatter())
    logger.info("job=%s state=queued to=%s", "abc", "alice@example.com,Bob@example.com")
    logger.info("job=%s state=queued to=%s", "def", "bob@example.com,alice@example.com")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "example.com" not in stream.getvalue()
    assert first["to"] == second["to"] and first["to"].startswith("2rcpt#")


def test_log_format_setting_is_text_or_json() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({"SCANGW_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="SCANGW_LOG_FORMAT"):
        load_settings({"SCANGW_LOG_FORMAT": "xml"})
