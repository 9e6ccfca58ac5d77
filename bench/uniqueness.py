"""Uniqueness: ``uniqueness(index)`` on the rooms index (the 20 most redundant and most isolated as sheets in
docs/images) and its time on 10,000 vectors. Writes the ``uniqueness`` ("Uniqueness") section of BENCHMARKS.md;
results in bench/results/uniqueness.json.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.uniqueness [--report]
"""

from __future__ import annotations

import os

os.environ.setdefault("LOOKALIKE_CACHE", "/tmp/lookalike-cache")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.leaks import uniqueness_bench, uniqueness_report  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "uniqueness.json"


def main() -> None:
    if "--report" in sys.argv[1:]:
        uniqueness_report(json.loads(RESULTS.read_text()), measured=False)
        return
    u = uniqueness_bench()
    RESULTS.write_text(json.dumps(u, indent=1))
    uniqueness_report(u)


if __name__ == "__main__":
    main()
