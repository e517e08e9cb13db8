"""`scangw doctor` against the fake Graph and identity endpoint: OK lines when all is well, a FAIL line with
the remedy and exit 1 when the identity may not use the mailbox, and a real test message with --send-test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.support import scangw

_FOREIGN_IDENTITY = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FakeGraph, dict[str, str]]]:
    with FakeIdentityEndpoint() as idp, FakeGraph(idp) as graph:
        graph.add_mailbox("scanner@contoso.com")
        graph.add_mailbox("locked@contoso.com", access_denied=True)
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_IDENTITY and not k.startswith("SCANGW_")}
        env.update(idp.env())
        env.update({"SCANGW_STORAGE": f"local:{tmp_path / 'spool'}", "SCANGW_GRAPH_URL": graph.url})
        yield graph, env


def test_doctor_all_ok_and_send_test_delivers(world: tuple[FakeGraph, dict[str, str]]) -> None:
    graph, env = world
    out = scangw("doctor", "--send-test", "alice@contoso.com", env={**env, "SCANGW_SENDER": "scanner@contoso.com"})
    assert out.returncode == 0, out.stdout + out.stderr
    names = [line.split()[1].rstrip(":") for line in out.stdout.splitlines()]
    assert names == ["settings", "storage", "identity", "mailbox", "send-test"]
    assert all(line.startswith("OK") for line in out.stdout.splitlines())
    [message] = graph.wait_for_sent(1, timeout=10)
    assert message.to == ["alice@contoso.com"] and message.from_address == "scanner@contoso.com"


def test_doctor_names_the_missing_mailbox_permission(world: tuple[FakeGraph, dict[str, str]]) -> None:
    _, env = world
    out = scangw("doctor", env={**env, "SCANGW_SENDER": "locked@contoso.com"})
    assert out.returncode == 1
    [line] = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL mailbox:") and "locked@contoso.com" in line and "Mail.Send" in line


def test_doctor_without_sender_says_what_to_set(world: tuple[FakeGraph, dict[str, str]]) -> None:
    _, env = world
    out = scangw("doctor", env=env)
    assert out.returncode == 1 and "FAIL sender: SCANGW_SENDER is not set" in out.stdout
