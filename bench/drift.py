"""Drift verdicts: ``detect_drift`` from stored reference statistics vs Evidently's DataDriftPreset.

Baseline, measured in the same run on the same data: Evidently 0.7
``Report([DataDriftPreset()], include_tests=True)`` with the columns' kinds declared, from raw
reference and current rows (what ``evidently_report.run_drift_report`` runs). Platform: the
reference statistics are computed once beforehand (timed separately: in production that happens
at training time) and read back from their JSON, the reference rows are dropped, then
``detect_drift`` runs on the current rows. Cases:

* ``numeric``: ROWS reference x ROWS current x 20 numeric columns (normal, log-normal,
  exponential, uniform, Student-t, integer), 6 of them shifted;
* ``mixed``: MIXED_ROWS x MIXED_ROWS x 100 columns (60 numeric, 40 categorical with 3 to 60
  categories), 30 of them shifted.

Each side runs in a fresh subprocess that builds the same data from the same seed, so one side's
memory cannot flatter or burden the other. Libraries are imported before timing on both sides
(Evidently; SciPy for the platform). Time and memory come from two separate passes. Peak memory
is the growth of the process's resident set over the measured step: Linux's high-water mark
(VmHWM) is reset through ``/proc/self/clear_refs`` just before it and read right after, in a
pass run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that buffers freed while building the data go
back to the kernel instead of being reused unseen by the measured step (with glibc's default,
growing threshold the platform's step showed +0 MiB). Goal: the platform at least 20x
faster, and at least 99% of column verdicts equal.
Usage: .venv/bin/python bench/drift.py [--rows N] [--mixed-rows N] [--cases numeric,mixed]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC_SHAPES = ("normal", "lognormal", "exponential", "uniform", "student_t", "integer")


def numeric_column(rng: np.random.Generator, shape: str, rows: int, shift: float) -> np.ndarray:
    """One numeric column; ``shift`` moves it by that many of its standard deviations."""
    if shape == "normal":
        return rng.normal(shift, 1.0, rows)
    if shape == "lognormal":
        return rng.lognormal(0.0, 0.5, rows) + shift * 0.6
    if shape == "exponential":
        return rng.exponential(1.0, rows) * (1 + shift)
    if shape == "uniform":
        return rng.uniform(0.0, 1.0, rows) + shift * 0.29
    if shape == "student_t":
        return rng.standard_t(5, rows) + shift * 1.29
    return (rng.poisson(30.0, rows) + round(shift * 5.5)).astype(np.int64)


def make_frames(case: str, rows: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Reference and current frames of a case (deterministic), and their column kinds."""
    numeric_count, categorical_count = (20, 0) if case == "numeric" else (60, 40)
    plan = np.random.default_rng(2024)
    total = numeric_count + categorical_count
    shifted = set(plan.choice(total, 6 if case == "numeric" else 30, replace=False).tolist())
    reference, current = {}, {}
    rng = np.random.default_rng(7)
    for i in range(numeric_count):
        shape = NUMERIC_SHAPES[i % len(NUMERIC_SHAPES)]
        shift = float(plan.choice([0.15, 0.3, 0.5])) if i in shifted else 0.0
        reference[f"num_{i}"] = numeric_column(rng, shape, rows, 0.0)
        current[f"num_{i}"] = numeric_column(rng, shape, rows, shift)
    for j in range(categorical_count):
        size = int(plan.integers(3, 61))
        categories = np.array([f"cat{j}_{k}" for k in range(size)], dtype=object)
        weights = plan.dirichlet(np.full(size, 2.0))
        moved = weights
        if numeric_count + j in shifted:
            moved = 0.6 * weights + 0.4 * plan.dirichlet(np.full(size, 2.0))
        reference[f"cat_{j}"] = categories[rng.choice(size, rows, p=weights)]
        current[f"cat_{j}"] = categories[rng.choice(size, rows, p=moved / moved.sum())]
    numeric = [f"num_{i}" for i in range(numeric_count)]
    categorical = [f"cat_{j}" for j in range(categorical_count)]
    return pd.DataFrame(reference), pd.DataFrame(current), numeric, categorical


def memory_kib(field: str) -> int:
    """A field (VmHWM, VmRSS) of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(step):
    """Run ``step()``: its result, seconds, and peak resident growth in MiB."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = memory_kib("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    return result, seconds, (memory_kib("VmHWM") - before) / 1024


def platform_worker(case: str, rows: int) -> dict:
    import scipy.spatial.distance  # imported before timing, as Evidently is
    import scipy.stats  # noqa: F401

    from ml_platform.monitoring.drift import detect_drift
    from ml_platform.monitoring.reference import ReferenceStatistics, compute_reference

    reference, current, numeric, categorical = make_frames(case, rows)
    start = time.perf_counter()
    statistics = compute_reference(reference, numeric, categorical)
    reference_seconds = time.perf_counter() - start
    stored = json.dumps(statistics.to_dict())
    del reference, statistics
    statistics = ReferenceStatistics.from_dict(json.loads(stored))
    result, seconds, peak = measure(lambda: detect_drift(statistics, current))
    return {
        "seconds": seconds,
        "peak_mib": peak,
        "reference_seconds": reference_seconds,
        "reference_json_mib": len(stored) / 2**20,
        "verdicts": {verdict.column: verdict.drifted for verdict in result.columns},
        "scores": {verdict.column: verdict.score for verdict in result.columns},
        "tests": sorted({verdict.test or "none" for verdict in result.columns}),
    }


def evidently_worker(case: str, rows: int) -> dict:
    from ml_platform.monitoring.evidently_report import quiet, run_drift_report

    with quiet():
        import evidently.presets  # noqa: F401  (imported before timing)

    reference, current, numeric, categorical = make_frames(case, rows)
    snapshot, seconds, peak = measure(
        lambda: run_drift_report(reference, current, numeric, categorical)
    )
    content = snapshot.dict()
    verdicts, scores = {}, {}
    for test in content["tests"]:
        parameters = test["metric_config"]["params"]
        if parameters.get("type") == "evidently:metric_v2:ValueDrift":
            verdicts[parameters["column"]] = test["status"] == "FAIL"
    for metric in content["metrics"]:
        if metric["config"].get("type") == "evidently:metric_v2:ValueDrift":
            scores[metric["config"]["column"]] = metric["value"]
    return {"seconds": seconds, "peak_mib": peak, "verdicts": verdicts, "scores": scores}


def run_worker(side: str, case: str, rows: int, memory_pass: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--cases", case, "--rows", str(rows)]
    environment = os.environ | ({"MALLOC_MMAP_THRESHOLD_": "131072"} if memory_pass else {})
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=environment
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(case: str, rows: int) -> None:
    platform = run_worker("platform", case, rows)
    evidently = run_worker("evidently", case, rows)
    platform["peak_mib"] = run_worker("platform", case, rows, memory_pass=True)["peak_mib"]
    evidently["peak_mib"] = run_worker("evidently", case, rows, memory_pass=True)["peak_mib"]
    columns = sorted(evidently["verdicts"])
    equal = sum(platform["verdicts"][c] == evidently["verdicts"][c] for c in columns)
    drifted = sum(evidently["verdicts"].values())
    gap = max(abs(platform["scores"][c] - evidently["scores"][c]) for c in columns)
    tests = ", ".join(platform["tests"])
    time_ratio = evidently["seconds"] / platform["seconds"]
    share = 100 * equal / len(columns)
    print(f"\ncase {case}: {rows:,} reference x {rows:,} current rows, {len(columns)} columns")
    print(f"  {drifted} drifted per Evidently; platform tests used: {tests}")
    print(
        f"  reference statistics (once, at training): {platform['reference_seconds']:.2f} s, "
        f"JSON {platform['reference_json_mib']:.1f} MiB"
    )
    for name, side in (
        ("Evidently DataDriftPreset", evidently),
        ("platform detect_drift", platform),
    ):
        print(f"  {name:26} {side['seconds']:8.2f} s   peak +{side['peak_mib']:.1f} MiB")
    memory = (
        f"peak memory {evidently['peak_mib'] / platform['peak_mib']:.0f}x"
        if platform["peak_mib"] >= 1
        else "peak memory: the platform's step grew by under 1 MiB"
    )
    print(f"  ratio (Evidently / platform): time {time_ratio:.1f}x, {memory}")
    print(f"  verdicts equal: {equal}/{len(columns)} ({share:.1f}%), largest score gap {gap:.2e}")
    disagreeing = [c for c in columns if platform["verdicts"][c] != evidently["verdicts"][c]]
    if disagreeing:
        print(f"  disagreeing columns: {disagreeing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mixed-rows", type=int, default=200_000)
    parser.add_argument("--cases", default="numeric,mixed")
    parser.add_argument("--worker", choices=["platform", "evidently"], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        work = platform_worker if arguments.worker == "platform" else evidently_worker
        print(json.dumps(work(arguments.cases, arguments.rows)))
        return
    for case in arguments.cases.split(","):
        compare(case, arguments.rows if case == "numeric" else arguments.mixed_rows)


if __name__ == "__main__":
    main()
