"""Under CI=true a skipped test fails the run with its reason; locally it stays a skip; the allow-list holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest

pytest.importorskip("no_such_module_anywhere", reason="the frobnicator is not installed")
"""
TESTS = """
import pytest

def test_runs() -> None:
    assert True

def test_needs_azurite() -> None:
    pytest.skip("Azurite not found")

@pytest.mark.skipif(True, reason="swaks not installed")
def test_needs_swaks() -> None:
    pass

def test_optional() -> None:
    pytest.skip("no real relay here")

@pytest.mark.xfail(reason="known")
def test_known() -> None:
    assert False
"""
CONFTEST = """
import tests.ci_skips as ci

pytest_plugins = ["tests.ci_skips"]
ci.ALLOWED_IN_CI["test_it.py::test_optional"] = "a real relay is optional"
"""


def run(tmp: Path, ci: str | None, *files: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *files],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_skips_fail_the_run_in_ci_and_stay_skips_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(TESTS)
    local = run(tmp_path, None, "test_it.py")
    assert local.returncode == 0, local.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in local.stdout

    ci = run(tmp_path, "true", "test_it.py")
    assert ci.returncode == 1, ci.stdout
    # A skip in the test body fails the test; a skipif mark (decided at setup) makes a setup error.
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in ci.stdout and "1 error" in ci.stdout
    assert "skipped under CI=true: Azurite not found" in ci.stdout
    assert "skipped under CI=true: swaks not installed" in ci.stdout
    assert "test_optional" not in ci.stdout.split("short test summary info")[1].split("SKIPPED")[0]


def test_a_module_skipped_at_collection_fails_the_run_in_ci(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(TESTS)
    (tmp_path / "test_frob.py").write_text(SUITE)
    assert run(tmp_path, None, "test_frob.py", "test_it.py::test_runs").returncode == 0
    ci = run(tmp_path, "true", "test_frob.py", "test_it.py::test_runs")
    assert ci.returncode == 1, ci.stdout
    assert "the frobnicator is not installed" in ci.stdout and "under CI=true" in ci.stdout
