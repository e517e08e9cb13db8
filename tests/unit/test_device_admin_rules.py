"""The rules behind `scangw devices add/update`, in-process so mutation testing can judge them: which device
names and `--from-ip` ranges are refused and with what words, and how `--add-*`/`--remove-*` edit a list (the
`scangw devices` subprocess tests check the same through the real command, which mutmut cannot see)."""

from __future__ import annotations

import pytest

from gateway.core.devices import check_from_ip, check_name, edited, same_network, same_pattern
from gateway.core.errors import UsageError


@pytest.mark.parametrize("name", ["a", "7", "mfp1", "Floor-2_copier.A", "A" + "b" * 63])
def test_a_good_device_name_is_taken_as_given(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "bad name", "-lead", ".lead", "_lead", "A" + "b" * 64, "ünïcode", "a/b", "mfp1\n", "mfp1\r", "a:b"]
)
def test_a_bad_device_name_is_refused_saying_what_a_name_may_hold(name: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_name(name)
    assert str(refused.value) == (
        f"'{name}' is not a valid device name: use letters, digits, '.', '_' or '-' (at most 64 characters)."
    )


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("192.168.1.0/24", "192.168.1.0/24"),
        ("192.168.1.77/24", "192.168.1.0/24"),  # host bits dropped: the range the admin meant
        (" 10.1.2.3 ", "10.1.2.3/32"),  # a pasted address with blanks around it
        ("172.16.0.0/12", "172.16.0.0/12"),
        ("fd00::1/8", "fd00::/8"),
        ("::1", "::1/128"),
    ],
)
def test_a_private_from_ip_range_is_taken_and_stored_normalised(given: str, stored: str) -> None:
    assert check_from_ip(given) == stored


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "8.8.8.0/24", "8.8.8.8", "2a00:1450::/32", "192.168.0.0/15"])
def test_a_public_from_ip_range_is_refused_as_an_open_relay(cidr: str) -> None:
    """Security: every client in the range would send without a password, to anyone the device may mail."""
    with pytest.raises(UsageError) as refused:
        check_from_ip(cidr)
    assert str(refused.value) == (
        f"--from-ip {cidr} is not a private range: every client in it could send through the gateway without a "
        "password, an open relay for the internet. Use your LAN's private range (10.0.0.0/8, 172.16.0.0/12, "
        "192.168.0.0/16, fc00::/7), or add --i-understand-open-relay-risk if the range really is yours alone."
    )


def test_a_public_range_is_taken_only_when_the_admin_accepts_the_risk() -> None:
    assert check_from_ip("8.8.8.1/24", allow_public=True) == "8.8.8.0/24"
    assert check_from_ip("192.168.1.0/24", allow_public=True) == "192.168.1.0/24"
    with pytest.raises(UsageError):
        check_from_ip("8.8.8.0/24", allow_public=False)


@pytest.mark.parametrize("cidr", ["192.168.1.0/33", "lan", "", "192.168.1", "10.0.0.0/8/8"])
def test_a_from_ip_that_is_no_address_is_refused_with_an_example(cidr: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_from_ip(cidr, allow_public=True)
    assert str(refused.value) == f"--from-ip '{cidr}' is not an address or CIDR like 192.168.1.0/24."
    assert refused.value.__cause__ is None  # one line for the admin, not a chained ValueError


def test_adding_appends_in_order_and_keeps_what_was_there() -> None:
    current = ("*@contoso.com", "boss@fabrikam.com")
    assert edited(current, ["ann@example.com", "*@example.org"], [], same_pattern, "allow-to") == (
        "*@contoso.com",
        "boss@fabrikam.com",
        "ann@example.com",
        "*@example.org",
    )
    assert current == ("*@contoso.com", "boss@fabrikam.com")  # the device as read is not changed in place


def test_adding_an_entry_already_there_in_another_case_changes_nothing() -> None:
    current = ("*@contoso.com", "Boss@fabrikam.com")
    assert edited(current, ["*@CONTOSO.com", "boss@FABRIKAM.com"], [], same_pattern, "allow-to") == current
    assert edited((), ["a@b.com", "A@b.com"], [], same_pattern, "allow-to") == ("a@b.com",)


def test_removing_takes_out_that_entry_only_and_keeps_the_order() -> None:
    current = ("a@contoso.com", "B@contoso.com", "c@contoso.com")
    assert edited(current, [], ["b@CONTOSO.com"], same_pattern, "allow-to") == ("a@contoso.com", "c@contoso.com")
    assert edited(current, [], ["a@contoso.com", "c@contoso.com"], same_pattern, "allow-to") == ("B@contoso.com",)
    assert edited(current, ["B@contoso.com"], ["B@contoso.com"], same_pattern, "allow-to") == (
        "a@contoso.com",
        "c@contoso.com",
        "B@contoso.com",
    )


def test_removing_an_entry_the_device_does_not_hold_says_what_it_holds() -> None:
    with pytest.raises(UsageError) as refused:
        edited(("*@contoso.com", "boss@fabrikam.com"), [], ["nobody@contoso.com"], same_pattern, "allow-to")
    assert str(refused.value) == (
        "--remove-allow-to nobody@contoso.com: the device has no such entry (it holds *@contoso.com, boss@fabrikam.com)."
    )
    with pytest.raises(UsageError) as empty:
        edited((), ["10.0.0.0/8"], ["192.168.1.0/24"], same_network, "from-ip")
    assert str(empty.value) == "--remove-from-ip 192.168.1.0/24: the device has no such entry (it holds nothing)."


def test_a_range_is_removed_however_the_admin_writes_it() -> None:
    current = ("192.168.1.0/24", "10.0.0.0/8", "fd00::/8")
    assert edited(current, [], ["192.168.1.77/24"], same_network, "from-ip") == ("10.0.0.0/8", "fd00::/8")
    assert edited(current, ["10.9.9.9/8"], [], same_network, "from-ip") == current  # the same range: not twice
    with pytest.raises(UsageError):
        edited(current, [], ["192.168.1.0/25"], same_network, "from-ip")  # a narrower range is another entry


def test_two_ranges_are_the_same_only_when_they_cover_the_same_addresses() -> None:
    assert same_network("192.168.1.0/24", "192.168.1.200/24")
    assert same_network("192.168.1.200/24", "192.168.1.0/24")  # a range stored by hand or an older version
    assert not same_network("192.168.1.0/24", "192.168.1.0/25")
    assert not same_network("192.168.1.0/24", "192.168.2.0/24")
    assert same_pattern("*@Contoso.COM", "*@contoso.com") and not same_pattern("a@contoso.com", "b@contoso.com")
