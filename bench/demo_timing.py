"""Wall time of ``ml-platform demo`` per asset, at several data sizes, in fresh homes.

Each size runs in a new ML_PLATFORM_HOME (nothing cached). The baseline for the scaling ratio is
the smallest size measured in the same run: ratio = seconds at this size / seconds at the first.
Usage: .venv/bin/python bench/demo_timing.py --rows 100000,1000000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^\s{2}(\S+)\s+([\d.]+)s$")


def run_demo(rows: int) -> tuple[float, dict[str, float], str]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ML_PLATFORM_HOME": home, "DAGSTER_HOME": f"{home}/dagster"}
        started = time.perf_counter()
        output = subprocess.run(
            [str(Path(sys.executable).parent / "ml-platform"), "demo", "--rows", str(rows)],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        seconds = time.perf_counter() - started
    steps = {m.group(1): float(m.group(2)) for m in map(STEP.match, output.splitlines()) if m}
    summary = "\n".join(line for line in output.splitlines() if line.startswith("  test "))
    return seconds, steps, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="100000,1000000")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    results = {rows: run_demo(rows) for rows in sizes}
    steps = list(dict.fromkeys(s for _, by_step, _ in results.values() for s in by_step))
    header = f"{'step':<45}" + "".join(f"{n:>14,}" for n in sizes)
    print(header + (f"{'ratio':>10}" if len(sizes) > 1 else ""))
    for step in steps:
        values = [results[n][1].get(step, 0.0) for n in sizes]
        ratio = f"{values[-1] / values[0]:>9.1f}x" if len(sizes) > 1 and values[0] else ""
        print(f"{step:<45}" + "".join(f"{v:>13.1f}s" for v in values) + ratio)
    totals = [results[n][0] for n in sizes]
    ratio = f"{totals[-1] / totals[0]:>9.1f}x" if len(sizes) > 1 else ""
    print(
        f"{'demo wall time (incl. start-up)':<45}" + "".join(f"{t:>13.1f}s" for t in totals) + ratio
    )
    for rows in sizes:
        print(f"\nchampion metrics at {rows:,} payments:\n{results[rows][2]}")


if __name__ == "__main__":
    main()
