"""Wall time and peak memory of ``ml-platform demo`` per asset, at several data sizes, fresh homes.

Each size runs in a new ML_PLATFORM_HOME (nothing cached). The baseline for the scaling ratio is
the smallest size measured in the same run: ratio = seconds at this size / seconds at the first.

Memory: the resident set of the demo's whole process tree (the demo, which executes the steps in
process, and its code server) is sampled every 0.2 s from ``/proc``; a step's peak is the largest
sum seen between its ``started`` and ``done`` lines. The demo also prints its own peak (its
``ru_maxrss`` and its children's). A watchdog kills the tree when it exceeds ``--max-rss-gib``
or when the machine's available memory falls below ``--min-available-gib``, so a size that does
not fit fails here instead of waking the kernel's OOM killer on a shared machine.

Usage: .venv/bin/python bench/demo_timing.py --rows 100000,1000000 [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^\s{2}(\S+)\s+([\d.]+)s$")
STARTED = re.compile(r"^\s{2}started\s+(\S+)")
DONE = re.compile(r"^\s{2}(?:done|FAILED)\s+(\S+)")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
GIB = 2**30
SAMPLE_SECONDS = 0.2


@dataclass
class DemoRun:
    """What one demo run did: wall time, per-step seconds and peak memory, its summary."""

    rows: int
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    step_peak: dict[str, int] = field(default_factory=dict)
    peak: int = 0
    summary: str = ""
    demo_peak_line: str = ""
    returncode: int | None = None
    killed: str = ""


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (0 once it is gone)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * PAGE_BYTES
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += rss.get(pid, 0)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total


def available_memory() -> int:
    """The machine's available memory in bytes (``MemAvailable``)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_demo(rows: int, max_rss: int, min_available: int, log_dir: Path | None) -> DemoRun:
    """Run the demo at ``rows`` in a fresh home, sample its memory, kill it when it gets too big.

    It is killed above ``max_rss`` bytes, or when the machine has under ``min_available`` bytes
    available.
    """
    result = DemoRun(rows)
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "ML_PLATFORM_HOME": home,
            "DAGSTER_HOME": f"{home}/dagster",
            "PYTHONUNBUFFERED": "1",  # step lines as they happen, for the memory per step
        }
        log = open(log_dir / f"demo_{rows}.log", "w") if log_dir else None  # noqa: SIM115
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "ml-platform"), "demo", "--rows", str(rows)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # one process group, so the watchdog can kill the tree
        )
        current = ["(start-up)"]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_SECONDS):
                used = tree_rss(process.pid)
                result.peak = max(result.peak, used)
                step = current[0]
                result.step_peak[step] = max(result.step_peak.get(step, 0), used)
                available = available_memory()
                if (used > max_rss or available < min_available) and not result.killed:
                    result.killed = (
                        f"killed in {step}: {used / GIB:.1f} GiB used (limit "
                        f"{max_rss / GIB:.1f}), {available / GIB:.1f} GiB available on the machine"
                    )
                    os.killpg(process.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            if log:
                log.write(f"[{time.perf_counter() - started:8.1f}s] {line}")
                log.flush()
            lines.append(line.rstrip("\n"))
            if match := STARTED.match(line):
                current[0] = match.group(1)
            elif DONE.match(line):
                current[0] = "(between steps)"
        result.returncode = process.wait()
        result.seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        if log:
            log.write(f"exit {result.returncode} {result.killed}\n")
            log.close()
    result.steps = {m.group(1): float(m.group(2)) for m in map(STEP.match, lines) if m}
    result.summary = "\n".join(line for line in lines if line.startswith("  test "))
    result.demo_peak_line = next((line for line in lines if line.startswith("peak memory")), "")
    if result.returncode != 0 and not result.killed:
        print("\n".join(lines[-40:]), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--max-rss-gib", type=float, default=18.0)
    parser.add_argument("--min-available-gib", type=float, default=1.5)
    parser.add_argument("--log-dir", type=Path, default=None, help="write each demo's output")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    limits = int(args.max_rss_gib * GIB), int(args.min_available_gib * GIB)
    results = {rows: run_demo(rows, *limits, args.log_dir) for rows in sizes}
    steps = list(dict.fromkeys(s for run in results.values() for s in run.steps))
    ratio_header = f"{'ratio':>8}" if len(sizes) > 1 else ""
    print(f"{'step':<40}" + "".join(f"{n:>13,} rows" for n in sizes) + ratio_header)
    for step in steps:
        values = [results[n].steps.get(step, 0.0) for n in sizes]
        peaks = [results[n].step_peak.get(step, 0) / GIB for n in sizes]
        ratio = f"{values[-1] / values[0]:>7.1f}x" if len(sizes) > 1 and values[0] else ""
        cells = "".join(
            f"{v:>8.1f}s " + (f"{p:>4.1f}G" if p else "   - ")  # "-": shorter than a sample
            for v, p in zip(values, peaks, strict=True)
        )
        print(f"{step:<40}" + cells + ratio)
    totals = [results[n].seconds for n in sizes]
    peaks = [results[n].peak / GIB for n in sizes]
    ratio = f"{totals[-1] / totals[0]:>7.1f}x" if len(sizes) > 1 else ""
    cells = "".join(f"{t:>8.1f}s {p:>4.1f}G" for t, p in zip(totals, peaks, strict=True))
    print(f"{'demo wall time (incl. start-up), peak':<40}" + cells + ratio)
    print("(each cell: seconds, peak resident GiB of the demo's process tree during the step)")
    for rows in sizes:
        run = results[rows]
        status = run.killed or f"exit {run.returncode}"
        print(f"\n{rows:,} payments ({status}); {run.demo_peak_line}\n{run.summary}")


if __name__ == "__main__":
    main()
