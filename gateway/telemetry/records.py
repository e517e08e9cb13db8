"""The log record every handler sees: message escaped, recipient lists summarised, fields as attributes.

Installed as logging's record factory, so the stderr line, the JSON line and the Azure Monitor trace all carry
the same safe text, and Application Insights gets each `key=value` of a gateway line as a custom dimension
(alerts match `customDimensions.event`, never the free text).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.core.escape import escape
from gateway.telemetry.fields import extract, quote_args, redact_args

#: Attributes a LogRecord already has (and names formatters add): a field never overwrites one of them.
RESERVED = frozenset(vars(logging.LogRecord("x", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class GatewayRecord(logging.LogRecord):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.msg, str) and isinstance(self.args, tuple) and self.args:
            self.args = redact_args(self.msg, self.args)
        if self.name.startswith("scangw"):
            for key, value in self.fields().items():
                if key not in RESERVED:
                    setattr(self, key, value)

    def fields(self) -> dict[str, str | int | float | bool]:
        return extract(self.msg, self.args)

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        if not (isinstance(self.msg, str) and isinstance(self.args, tuple) and self.args):
            return escape(super().getMessage())
        plain = self.args
        self.args = quote_args(self.msg, plain)
        try:
            return escape(super().getMessage())
        finally:
            self.args = plain


def install() -> None:
    """Idempotent; records made by other libraries get the same escaping (they log attacker text too)."""
    if logging.getLogRecordFactory() is not GatewayRecord:
        logging.setLogRecordFactory(GatewayRecord)
