"""`make bench` / `python -m bench [NAME...]`: run the benchmarks and print one line each, ratios first."""

from __future__ import annotations

import sys

from bench import intake


def main(argv: list[str]) -> int:
    benches = {"intake": intake.run}
    try:
        from bench import delivery

        benches["delivery"] = delivery.run
    except ImportError:  # the delivery bench needs the test fakes (tests/fakes)
        pass
    chosen = argv or list(benches)
    for name in chosen:
        for line in benches[name]():
            print(f"{name}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
