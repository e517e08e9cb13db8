"""Contract section 6: From, display name, Reply-To, recipient placement and Message-ID."""

from gateway.core.devices import Device
from gateway.core.jobs import FileRef, Job, JobKind
from gateway.core.message import Address, ParsedMessage, compose, parsed_from_json, parsed_to_json


def job(**kw: object) -> Job:
    base = dict(
        id="0123456789abcdef0123",
        device="mfp1",
        sender="scanner@contoso.com",
        to=("a@contoso.com",),
        size=1,
        kind=JobKind.MIME,
        created="2026-11-23T00:00:00.000000Z",
        updated="2026-11-23T00:00:00.000000Z",
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


DEVICE = Device(name="mfp1", password_hash="x", sender_name="Floor 2 MFP", reply_to="helpdesk@contoso.com")


def test_scanning_user_from_allowed_domain_becomes_name_and_reply_to() -> None:
    parsed = ParsedMessage(from_=Address("alice@contoso.com", "Alice Smith"), message_id="<dev-1@mfp>")
    msg = compose(job(), parsed, DEVICE, None)
    assert msg.from_ == Address("scanner@contoso.com", "Alice Smith")
    assert msg.reply_to == (Address("alice@contoso.com"),)
    assert msg.internet_message_id == "<scan.0123456789abcdef0123@contoso.com>"
    assert ("X-Original-Message-ID", "<dev-1@mfp>") in msg.headers


def test_foreign_from_falls_back_to_device_name_and_reply_to() -> None:
    parsed = ParsedMessage(from_=Address("scanner@printer.local", "scanner@printer.local"))
    msg = compose(job(), parsed, DEVICE, None)
    assert msg.from_ == Address("scanner@contoso.com", "Floor 2 MFP")
    assert msg.reply_to == (Address("helpdesk@contoso.com"),)


def test_no_reply_to_anywhere_gives_none_and_device_name() -> None:
    msg = compose(job(), ParsedMessage(), Device(name="mfp1", password_hash="x"), None)
    assert msg.from_.name == "mfp1" and msg.reply_to == ()


def test_envelope_recipients_keep_header_place_rest_bcc() -> None:
    j = job(to=("a@contoso.com", "b@contoso.com", "c@contoso.com"))
    msg = compose(j, ParsedMessage(to=("A@contoso.com",), cc=("b@contoso.com", "x@contoso.com")), DEVICE, None)
    assert [a.address for a in msg.to] == ["a@contoso.com"]
    assert [a.address for a in msg.cc] == ["b@contoso.com"]
    assert [a.address for a in msg.bcc] == ["c@contoso.com"]


def test_no_to_or_cc_header_puts_everyone_in_to() -> None:
    msg = compose(job(to=("a@contoso.com", "b@contoso.com")), ParsedMessage(), DEVICE, None)
    assert [a.address for a in msg.to] == ["a@contoso.com", "b@contoso.com"] and not msg.bcc


def test_parsed_message_round_trips_through_the_job_record() -> None:
    parsed = ParsedMessage(
        subject="S",
        from_=Address("a@b.com", "A"),
        to=("x@y.com",),
        attachments=(FileRef("j/part-0", "scan.pdf", "application/pdf", 3),),
    )
    assert parsed_from_json(parsed_to_json(parsed)) == parsed
