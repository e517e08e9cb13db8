"""No open relay: a device sends only where its policy allows."""

import pytest

from gateway.core.devices import Device, check_recipients, generate_password
from gateway.core.errors import MalformedInput, RecipientNotAllowed


def device(**kw: object) -> Device:
    return Device(name="mfp1", password_hash="x", **kw)  # type: ignore[arg-type]


def test_without_allow_list_only_default_and_sender_domain() -> None:
    d = device(default_to="boss@partner.org", sender="scanner@contoso.com")
    assert check_recipients(d, ["Boss@partner.org", "anyone@contoso.com"], None) == (
        "Boss@partner.org",
        "anyone@contoso.com",
    )
    with pytest.raises(RecipientNotAllowed) as err:
        check_recipients(d, ["x@partner.org"], None)
    assert "not allowed" in str(err.value) and err.value.recipient == "x@partner.org"


def test_default_sender_domain_applies_when_device_has_none() -> None:
    assert check_recipients(device(), ["a@fabrikam.com"], "scans@fabrikam.com") == ("a@fabrikam.com",)
    with pytest.raises(RecipientNotAllowed):
        check_recipients(device(), ["a@contoso.com"], "scans@fabrikam.com")


def test_allow_list_patterns_replace_the_domain_rule() -> None:
    d = device(sender="scanner@contoso.com", allow_to=("*@example.com", "one@other.net"))
    assert check_recipients(d, ["a@EXAMPLE.com", "one@other.net"], None) == ("a@example.com", "one@other.net")
    with pytest.raises(RecipientNotAllowed):
        check_recipients(d, ["a@contoso.com"], None)


def test_missing_recipient_uses_default_or_says_what_to_do() -> None:
    assert check_recipients(device(default_to="me@example.com"), [], None) == ("me@example.com",)
    with pytest.raises(MalformedInput, match="No recipient"):
        check_recipients(device(), [], None)


@pytest.mark.parametrize("bad", ["", "no-at", "a@b", "x@y.com\r\nBcc: evil@z.com", "a b@c.com"])
def test_malformed_addresses_are_refused(bad: str) -> None:
    with pytest.raises((MalformedInput, RecipientNotAllowed)):
        check_recipients(device(allow_to=("*@y.com",)), [bad], None)


def test_duplicates_collapse() -> None:
    assert check_recipients(device(default_to="me@example.com"), ["me@example.com", "ME@example.com"], None) == (
        "me@example.com",
    )


def test_generated_passwords_fit_device_fields() -> None:
    for _ in range(200):
        pw = generate_password()
        assert len(pw) <= 20
        assert all(33 <= ord(c) <= 126 for c in pw)
        assert not set(pw) & set("\"'\\~ ")
