"""`make bench` / `python -m bench [--quick] [--out DIR]`: every benchmark in one run, written as
DIR/report.md, DIR/report.json and PNG plots (DIR defaults to bench/). `--quick` uses tiny sizes (the test
suite runs it so the report cannot rot); the full run takes a few minutes on two cores.

The older one-line benchmarks stay available: `python -m bench intake` / `python -m bench delivery`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LATENCY = 0.02  # the fake Graph's latency per request, seconds


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def collect(quick: bool, log: Any = print) -> dict[str, Any]:
    from bench import accept, latency, storage, throughput
    from bench.delivery import memory_curve

    started = time.time()
    load_before = _load()
    results: dict[str, Any] = {}
    scans, size = (12, 50_000) if quick else (200, 200_000)
    sweep = [1, 4] if quick else [1, 2, 4, 8, 16]
    workers = [1, 2] if quick else [1, 2, 4]
    headline_c = 4 if quick else 8

    log("accept: door vs null Sink")
    results["accept"] = accept.run(quick)
    log("delivery: concurrency sweep")
    concurrency = [throughput.deliver(1, c, 8, scans, size, LATENCY) for c in sweep]
    log("delivery: worker processes")
    by_workers = [throughput.deliver(w, 4, boxes, scans, size, LATENCY) for boxes in (8, 1) for w in workers]
    log("delivery: naive relay")
    naive = throughput.naive(headline_c, 8, scans, size, LATENCY)
    results["delivery"] = {
        "latency_ms": LATENCY * 1000,
        "scan_kb": size // 1000,
        "headline_concurrency": headline_c,
        "concurrency": concurrency,
        "workers": by_workers,
        "naive": naive,
        "ceiling": 4 / (2 * LATENCY),
        "worker_rss_mib": max(r["rss_mib"] for r in concurrency),
    }
    log("throttling")
    throttled = 10 if quick else 100
    results["throttling"] = {
        "rate": 0.2,
        "scangw": throughput.deliver(1, 8, 8, throttled, 50_000, LATENCY, throttle_rate=0.2, timeout=300),
        "naive": throughput.naive(8, 8, throttled, 50_000, LATENCY, throttle_rate=0.2),
    }
    log("memory vs scan size")
    results["memory"] = memory_curve([1, 4] if quick else [1, 10, 50, 110])
    log("latency")
    results["latency"] = latency.run(quick, LATENCY)
    log("storage on Azurite")
    results["storage"] = storage.run(quick, LATENCY)
    results["meta"] = {
        "command": "python -m bench" + (" --quick" if quick else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.time() - started,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        "quick": quick,
        "note": "The machine was shared with other work during the run (see the load averages), so absolute "
        "figures are noisy; the ratios compare runs made minutes apart under the same load.",
    }
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the whole report")
    parser.add_argument("--out", type=Path, default=HERE, help="where report.md/.json and the plots go")
    parser.add_argument("legacy", nargs="*", help="intake | delivery: one of the older one-line benchmarks instead")
    args = parser.parse_args(argv)
    unknown = set(args.legacy) - {"intake", "delivery"}
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}: use intake or delivery, or no name")
    if args.legacy:
        from bench import delivery, intake

        for name in args.legacy:
            for line in {"intake": intake.run, "delivery": delivery.run}[name]():
                print(f"{name}: {line}", flush=True)
        return 0
    from bench.report import write

    results = collect(args.quick, lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    write(results, args.out)
    print(f"bench: wrote {args.out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
