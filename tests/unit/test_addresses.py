"""Recipient addresses: one validator for both doors; nothing accepted may be undeliverable by construction.

Every bad address here is inside the device's allow-list (`*@example.com`), so only address validation can
refuse it: a test that passed through the recipient policy alone would prove nothing (issue 15).
"""

import time

import pytest

from gateway.core.addresses import MAX_ADDRESS, AddressRefused, recipient_address
from gateway.core.devices import Device, check_pattern, check_recipients
from gateway.core.errors import MalformedInput


def device(**kw: object) -> Device:
    return Device(name="mfp1", password_hash="x", allow_to=("*@example.com", "*@xn--bcher-kva.example"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "a\x00b@example.com",
        "a\x01@example.com",
        "a\x7f@example.com",
        "a@exam\x00ple.com",
        "a\u2028b@example.com",
        "x@example.com\r\nBcc: evil@example.com",
        "a" * 65 + "@example.com",
        "a" * 5000 + "@example.com",
        "a@" + "b" * 64 + ".example.com",
        "j\u00fcrgen@example.com",
        '"john doe"@example.com',
        "a b@example.com",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@[10.0.0.1]",
        "a@example..com",
        "a@-example.com",
        "a@example",
        "a@example.123",
        "a@b@example.com",
        "@example.com",
        "a@",
        "",
        "<>",
    ],
)
def test_undeliverable_addresses_are_refused_even_inside_the_allow_list(bad: str) -> None:
    with pytest.raises(MalformedInput) as err:
        check_recipients(device(), [bad], None)
    assert "deliverable" in str(err.value) or "recipient" in str(err.value).lower()


def test_the_refusal_names_the_address_with_control_characters_escaped() -> None:
    with pytest.raises(AddressRefused) as err:
        recipient_address("ev\x00il\r\n@example.com")
    message = str(err.value)
    assert "ev\\x00il\\x0d\\x0a@example.com" in message
    assert not any(ord(c) < 32 for c in message)


def test_the_refusal_shows_a_bidi_override_as_an_escape_so_the_address_reads_as_it_is() -> None:
    """A right-to-left override would make the address in the reply (and the log line) read backwards."""
    with pytest.raises(AddressRefused) as err:
        recipient_address("inv\u202efdp.exe@example.com")
    message = str(err.value)
    assert "inv\\u202efdp.exe@example.com" in message and "\u202e" not in message


def test_lengths_follow_rfc_5321() -> None:
    local = "l" * 64
    domain = ".".join(["d" * 63, "d" * 63, "d" * 57, "com"])  # 63+1+63+1+57+1+3 = 189
    assert recipient_address(f"{local}@{domain}") == f"{local}@{domain}"
    longest = "l" * 64 + "@" + ".".join(["d" * 63, "d" * 63, "d" * 58]) + ".co"  # 254 octets
    assert len(longest) == MAX_ADDRESS
    assert recipient_address(longest) == longest
    with pytest.raises(AddressRefused, match="longer than 254"):
        recipient_address(longest[:-3] + ".com")


def test_internationalised_domains_go_out_as_a_labels() -> None:
    assert recipient_address("Anna@B\u00fccher.example") == "Anna@xn--bcher-kva.example"
    assert check_recipients(device(), ["anna@b\u00fccher.example"], None) == ("anna@xn--bcher-kva.example",)


def test_an_allow_list_pattern_with_an_idn_domain_is_stored_as_its_a_label() -> None:
    assert check_pattern("*@b\u00fccher.example") == "*@xn--bcher-kva.example"


def test_angle_brackets_and_spaces_around_are_forgiven_and_the_local_part_keeps_its_case() -> None:
    assert recipient_address("  <O'Brien+scan@Example.COM>  ") == "O'Brien+scan@example.com"


def test_thirty_thousand_recipients_deduplicate_in_linear_time() -> None:
    d = Device(name="mfp1", password_hash="x", allow_to=("*@example.com",))
    many = [f"user{i}@example.com" for i in range(30_000)]
    started = time.perf_counter()
    result = check_recipients(d, many + [m.upper() for m in many[:100]], None)
    assert len(result) == 30_000
    assert time.perf_counter() - started < 3.0  # quadratic de-duplication took 33 s
