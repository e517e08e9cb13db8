"""Every reason a job can fail for maps to a short stable class (the `reason` of scangw.scans.failed), so the
workbook groups failures and shows the remedy; a new Graph code without a class would show as `other`."""

from __future__ import annotations

import pytest

from gateway.core.bounce import BOUNCED
from gateway.delivery.graph.failures import PERMANENT, GraphFailure, classify
from gateway.telemetry.reasons import REMEDIES, failure_class

EXPECTED = {
    "erroraccessdenied": "permission",
    "authorization_requestdenied": "permission",
    "errorsendasdenied": "permission",
    "errorinvaliduser": "mailbox",
    "resourcenotfound": "mailbox",
    "mailboxnotenabledforrestapi": "mailbox",
    "errormessagesizeexceeded": "too_large",
    "errorinvalidrecipients": "recipients",
    "errorquotaexceeded": "quota",
    "invalidauthenticationtoken": "identity",
    "noidentity": "identity",
    "identityrejected": "identity",
}


@pytest.mark.parametrize("code", sorted(PERMANENT))
def test_every_permanent_graph_failure_has_its_class(code: str) -> None:
    error = classify(GraphFailure(status=404 if code == "resourcenotfound" else 403, code=code), "scan@contoso.com")
    assert failure_class(error.reason()) == EXPECTED[code]


def test_giving_up_bounces_and_the_unknown_have_classes_with_remedies() -> None:
    assert failure_class("Gave up after 50 attempts over 24.0 h. Last error: Graph is unavailable") == "gave_up"
    assert failure_class("Bounced: x@y refused", {BOUNCED: ["x@y"]}) == "bounced"
    assert failure_class("No sender mailbox for device mfp1. Set SCANGW_SENDER") == "setup"
    assert failure_class("something new") == "other"
    assert set(EXPECTED.values()) | {"gave_up", "bounced", "setup", "other"} <= set(REMEDIES)
