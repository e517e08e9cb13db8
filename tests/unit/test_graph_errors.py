"""The Graph error table: what is retried, what fails with which remedy, and how foreign errors are read."""

from __future__ import annotations

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from msgraph.generated.models.o_data_errors.main_error import MainError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from gateway.core.errors import PermanentDeliveryError, TransientDeliveryError
from gateway.delivery.graph.failures import GraphFailure, classify, failure_from_exception, parse_retry_after

MB = "scanner@contoso.com"
NOW = 1_700_000_000.0


def odata(status: int, code: str, message: str = "", **headers: str) -> ODataError:
    error = ODataError(error=MainError(code=code, message=message))
    error.response_status_code = status
    error.response_headers = {"request-id": "rid-1", **headers}
    return error


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (502, ""),
        (503, "ServiceUnavailable"),
        (504, ""),
        (500, "ErrorServerBusy"),
        (400, "ErrorTimeoutExpired"),
        (None, "ConnectionLost"),
    ],
)
def test_busy_and_unavailable_graph_is_retried(status: int | None, code: str) -> None:
    error = classify(GraphFailure(status=status, code=code, retry_after=7), MB)
    assert isinstance(error, TransientDeliveryError)
    assert error.retry_after == 7


@pytest.mark.parametrize(
    ("status", "code", "message", "remedy_part"),
    [
        (403, "ErrorAccessDenied", "Access to OData is disabled.", "grant-mailbox-access.ps1 -Mailbox " + MB),
        (403, "ErrorSendAsDenied", "", "grant-mailbox-access.ps1 -Mailbox " + MB),
        (404, "ErrorInvalidUser", "", "must be an Exchange Online mailbox"),
        (404, "ResourceNotFound", "", MB),
        (404, "MailboxNotEnabledForRESTAPI", "", MB),
        (413, "ErrorMessageSizeExceeded", "", f"Set-Mailbox {MB} -MaxSendSize 150MB"),
        (400, "ErrorInvalidRecipients", "", "addresses"),
        (507, "ErrorQuotaExceeded", "", "quota"),
        (403, "Authorization_RequestDenied", "", "Mail.ReadWrite"),
        (401, "InvalidAuthenticationToken", "audience is invalid", "SCANGW_CLOUD"),
    ],
)
def test_permanent_failures_carry_a_remedy_naming_the_mailbox(
    status: int, code: str, message: str, remedy_part: str
) -> None:
    error = classify(GraphFailure(status=status, code=code, message=message, request_id="rid-9"), MB)
    assert isinstance(error, PermanentDeliveryError)
    assert remedy_part in error.remedy
    assert MB in error.reason() or "recipients" in error.reason()
    assert error.request_id == "rid-9"


def test_access_denied_remedy_names_both_permissions() -> None:
    error = classify(GraphFailure(403, "ErrorAccessDenied", "Access to OData is disabled."), MB)
    assert "Mail.Send" in error.reason() and "Mail.ReadWrite" in error.reason()
    assert "Access to OData is disabled" in str(error)


def test_a_missing_draft_is_not_read_as_a_missing_mailbox() -> None:
    failure = GraphFailure(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    assert failure.item_not_found
    assert isinstance(classify(failure, MB), TransientDeliveryError)


def test_unknown_bad_request_fails_permanently_but_unknown_404_is_retried() -> None:
    assert isinstance(classify(GraphFailure(400, "ErrorInvalidProperty"), MB), PermanentDeliveryError)
    assert isinstance(classify(GraphFailure(404, "SomethingElse"), MB), TransientDeliveryError)


def test_only_answers_that_prove_nothing_happened_clear_a_pending_step() -> None:
    assert not GraphFailure(429).may_have_acted
    assert not GraphFailure(400).may_have_acted
    assert not GraphFailure(None, reached_server=False).may_have_acted
    assert GraphFailure(503).may_have_acted
    assert GraphFailure(None).may_have_acted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("2.2", 3.0),
        ("Tue, 14 Nov 2023 22:13:40 GMT", 20.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_in_seconds_or_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_odata_error_is_read_with_code_message_request_id_and_retry_after() -> None:
    failure = failure_from_exception(odata(429, "TooManyRequests", "slow down", **{"Retry-After": "12"}), NOW)
    assert failure == GraphFailure(429, "TooManyRequests", "slow down", "rid-1", 12.0)


def test_network_errors_say_whether_the_request_may_have_reached_graph() -> None:
    refused = failure_from_exception(httpx.ConnectError("refused"), NOW)
    lost = failure_from_exception(httpx.ReadTimeout("timed out"), NOW)
    assert refused is not None and refused.status is None and not refused.may_have_acted
    assert lost is not None and lost.status is None and lost.may_have_acted
    assert isinstance(classify(lost, MB), TransientDeliveryError)


def test_identity_errors_no_identity_is_permanent_an_endpoint_hiccup_is_transient() -> None:
    none = failure_from_exception(CredentialUnavailableError("no MSI endpoint"), NOW)
    hiccup = failure_from_exception(ClientAuthenticationError("endpoint said 500"), NOW)
    assert none is not None and isinstance(classify(none, MB), PermanentDeliveryError)
    assert hiccup is not None and isinstance(classify(hiccup, MB), TransientDeliveryError)


def test_bugs_are_not_mistaken_for_graph_failures() -> None:
    assert failure_from_exception(KeyError("x"), NOW) is None
