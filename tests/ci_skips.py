"""No silent skips in CI: under `CI=true` a skipped test fails the run, with the reason it gave.

A skip is right on a laptop without Node.js or swaks; in CI it hides a whole group of tests that never ran
while the run still shows green. So in CI a skipped test is reported as failed ("skipped under CI=true: ...")
and a module skipped at collection fails the session. `.ci/run` installs what the suite needs; a test that
is legitimately optional even in CI is listed in ALLOWED_IN_CI with the reason, and only there.

Loaded from tests/conftest.py as a plugin.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

#: Test node ids (without parameters) that may skip even in CI, each with why that is not a hole.
ALLOWED_IN_CI: dict[str, str] = {
    "tests/infra/test_scripts.py::test_shell_fallback_prints_the_same_steps_without_pwsh": (
        "runs only where pwsh is absent: where it is installed the script would call Exchange for real, and "
        "the PowerShell path is checked by the other script tests"
    ),
}

_COLLECT_SKIPS: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _allowed(nodeid: str) -> bool:
    return nodeid.split("[", 1)[0] in ALLOWED_IN_CI


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail") or _allowed(item.nodeid):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true: {_reason(report.longrepr)}\n"
        "CI must run this test: install what it needs in .ci/run, or list it in tests/ci_skips.py "
        "ALLOWED_IN_CI with the reason it may skip."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not _allowed(collector.nodeid):
        _COLLECT_SKIPS.append(f"{collector.nodeid}: {_reason(report.longrepr)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _COLLECT_SKIPS:
        terminalreporter.write_line(f"FAILED (skipped at collection under CI=true) {line}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _COLLECT_SKIPS and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
