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
    with pytest.raises(MalformedInput) as err:
        check_recipients(device(), [], None)
    assert str(err.value).startswith("No recipient: add ?to=name@example.com")


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
        assert any(c.isdigit() for c in pw) and any(c.isalpha() for c in pw)  # some device UIs demand both


@pytest.mark.parametrize(
    "lookalike",
    [
        "x@evilcontoso.com",  # suffix match would pass it: an open relay to look-alike domains
        "x@contoso.com.evil.net",  # prefix match would pass it
        "x@sub.contoso.com",  # a subdomain is another domain (its own MX, often not ours)
        "x@contoso.co",
        "x@contoso.comm",
        "x@xn--contoso-k0a.com",
    ],
)
def test_domain_patterns_match_the_whole_domain_only(lookalike: str) -> None:
    allow_listed = device(allow_to=("*@contoso.com",))
    sender_domain = device(sender="scanner@contoso.com")
    for d in (allow_listed, sender_domain):
        assert check_recipients(d, ["Anyone@Contoso.COM"], None) == ("Anyone@contoso.com",)
        with pytest.raises(RecipientNotAllowed) as err:
            check_recipients(d, [lookalike], None)
        assert err.value.recipient == lookalike


def test_an_exact_allow_list_entry_is_not_a_domain_pattern() -> None:
    d = device(allow_to=("boss@partner.org",))
    assert check_recipients(d, ["boss@PARTNER.org"], None) == ("boss@partner.org",)
    for other in ("x@partner.org", "boss@partner.org.evil.net", "xboss@partner.org"):
        with pytest.raises(RecipientNotAllowed):
            check_recipients(d, [other], None)


@pytest.mark.parametrize(
    "bad",
    ["a b@y.com", "a..b@y.com", ".a@y.com", "a\x00b@y.com", '"a b"@y.com', "a@y..com", "a@-y.com", "a(b)@y.com"],
)
def test_malformed_addresses_inside_the_allowed_domain_are_refused_as_malformed(bad: str) -> None:
    """Inside the allow-listed domain, only address validation stands between these and Exchange."""
    with pytest.raises(MalformedInput) as err:
        check_recipients(device(allow_to=("*@y.com",)), [bad], None)
    assert not isinstance(err.value, RecipientNotAllowed)


def test_allow_list_patterns_are_checked_as_patterns_and_addresses_as_addresses() -> None:
    from gateway.core.devices import check_pattern

    assert check_pattern(" *@Contoso.COM ") == "*@contoso.com"
    assert check_pattern("Boss@Partner.ORG") == "Boss@partner.org"
    with pytest.raises(MalformedInput) as err:
        check_pattern("*@contoso..com")
    assert str(err.value) == "'*@contoso..com' is not an allowed-recipient pattern: use name@domain or *@domain."


def test_a_device_read_back_from_storage_keeps_its_allow_list_and_networks() -> None:
    d = device(allow_to=("*@contoso.com", "boss@partner.org"), from_ip=("10.0.0.0/8",), default_to="me@example.com")
    record = d.to_record()
    assert record["allow_to"] == ["*@contoso.com", "boss@partner.org"] and record["from_ip"] == ["10.0.0.0/8"]
    again = Device.from_record({**record, "unknown_future_field": 1})
    assert again == d
    assert check_recipients(again, ["x@contoso.com"], None) == ("x@contoso.com",)
    with pytest.raises(RecipientNotAllowed):
        check_recipients(again, ["x@example.com"], "scans@example.com")  # the allow-list, not the domain rule
    bare = Device.from_record({"name": "mfp2", "password_hash": "x", "allow_to": None, "from_ip": None})
    assert (bare.allow_to, bare.from_ip) == ((), ())


def test_the_domains_a_device_may_send_to() -> None:
    from gateway.core.devices import allowed_domains

    listed = device(allow_to=("*@contoso.com", "boss@partner.org"), default_to="me@Example.COM")
    assert allowed_domains(listed, "scans@fabrikam.com") == {"contoso.com", "partner.org", "example.com"}
    assert allowed_domains(device(sender="scanner@Fabrikam.com"), None) == {"fabrikam.com"}
    assert allowed_domains(device(), "scans@Fabrikam.com") == {"fabrikam.com"}
    assert allowed_domains(device(), None) == set()
