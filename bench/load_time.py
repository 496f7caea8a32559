"""Time to load the code location vs ``import dagster`` alone, in fresh interpreters.

Baseline, measured in the same run: ``python -c "import dagster"``. Goal: at most 2x.
Usage: .venv/bin/python bench/load_time.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "import dagster"
LOAD = (
    "import ml_platform.definitions as d\n"
    "repo = d.defs().get_repository_def()\n"
    "repo.get_all_jobs(); repo.asset_graph\n"
)


def seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    seconds(LOAD)  # warm the file cache and bytecode for both
    baseline, load = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        baseline.append(seconds(BASELINE))
        load.append(seconds(LOAD))
    b, m = statistics.median(baseline), statistics.median(load)
    print(f"import dagster (baseline): median {b:.2f}s over {args.repeats}")
    print(f"load code location:        median {m:.2f}s over {args.repeats}")
    print(f"ratio load/baseline: {m / b:.2f}x (goal <= 2.0x)")


if __name__ == "__main__":
    main()
