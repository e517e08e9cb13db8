"""`make bench` cannot rot: its quick mode runs every benchmark with tiny sizes and writes the whole report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_bench_writes_the_report_with_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"accept", "delivery", "throttling", "memory", "latency", "storage", "headline", "meta"} <= set(report)
    assert report["accept"]["ratio"] > 0 and report["accept"]["door"]["messages"] > 0
    assert {r["workers"] for r in report["delivery"]["workers"]} >= {1, 2}
    assert all(r["delivered"] == r["scans"] and r["duplicates"] == 0 for r in report["delivery"]["concurrency"])
    assert report["throttling"]["scangw"]["delivered"] == report["throttling"]["scangw"]["scans"]
    assert all(p["byte_identical"] for p in report["memory"])
    assert report["latency"]["p50_ms"] > 0 and report["latency"]["cold_ms"]
    assert report["storage"].get("skipped") or report["storage"]["eight_mailboxes"]["requests_per_scan"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| figure | scangw | baseline | ratio | goal |" in markdown
    for plot in ("delivery_throughput.png", "accept_latency.png", "memory.png", "throttling.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
