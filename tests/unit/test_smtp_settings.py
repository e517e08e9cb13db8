"""The SMTP door's limits an admin tunes are settings (issue 9: SmtpLimits were constants): an office whose
scanners share one NAT address needs more than 50 connections from it; a small box needs fewer in total."""

from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.core.errors import ConfigError
from gateway.intake.smtp_limits import SmtpLimits, limits_from


def test_defaults_are_the_documented_ones() -> None:
    limits = limits_from(load_settings({}))
    assert (limits.max_connections, limits.max_per_address, limits.preauth_seconds) == (1000, 50, 60)
    assert limits.auth_reserve == 200


def test_settings_size_the_door() -> None:
    settings = load_settings(
        {"SCANGW_SMTP_MAX_CONNECTIONS": "100", "SCANGW_SMTP_MAX_PER_ADDRESS": "80", "SCANGW_SMTP_LOGIN_SECONDS": "20"}
    )
    limits = limits_from(settings)
    assert isinstance(limits, SmtpLimits)
    assert (limits.max_connections, limits.max_per_address, limits.preauth_seconds) == (100, 80, 20)
    assert limits.auth_reserve == 20  # a fifth stays for devices that logged in


@pytest.mark.parametrize(
    ("name", "value"),
    [("SCANGW_SMTP_MAX_CONNECTIONS", "0"), ("SCANGW_SMTP_MAX_PER_ADDRESS", "x"), ("SCANGW_SMTP_LOGIN_SECONDS", "1")],
)
def test_bad_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({name: value})
    assert name in str(error.value)
