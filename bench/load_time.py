"""Time to load the code location vs ``import dagster`` alone, in fresh interpreters.

Baseline, measured in the same run: ``python -c "import dagster"``. Loading is timed as Dagster
loads a code location: ``defs()``, ``get_repository_def()``, every job resolved, the asset graph.
With ``--models N`` it is timed twice, with the shipped example alone (1 model) and with N - 1
copies of it (``examples/many_models.py``) on ``ML_PLATFORM_SPEC_PATH``. Goals: 1 model within
1.2x, 100 models within 2x.

``--floor`` adds three cases: the platform's N models with their assets and checks alone (no
job, schedule or sensor), and bare Dagster definitions in the platform's numbers for N models
(``bench/dagster_floor.py``): the assets and their checks alone, and everything (jobs,
schedules, sensors too). The last two are what Dagster itself costs.

``--sensors`` evaluates every sensor of the N-model code location once, as the daemon's tick
would, on a fresh ``ML_PLATFORM_HOME`` with a real (temporary) Dagster instance, and prints the
total against the daemon's 30 s tick.

Usage: .venv/bin/python bench/load_time.py --models 100 --repeats 7 [--floor]
       .venv/bin/python bench/load_time.py --models 100 --sensors
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from examples.many_models import write_model_specs  # noqa: E402

if TYPE_CHECKING:
    from dagster import RepositoryDefinition, SensorDefinition

BASELINE = "import dagster"
LOAD = (
    "import ml_platform.definitions as d\n"
    "repo = d.defs().get_repository_def()\n"
    "repo.get_all_jobs(); repo.asset_graph\n"
)
# The platform's own assets and checks for the same specs, without any job, schedule or sensor:
# what the load would cost if every per-model job, schedule and sensor were gone.
LOAD_ASSETS_ONLY = (
    "import gc\n"
    "import dagster as dg\n"
    "gc.freeze()\n"  # as defs() does
    "import ml_platform.definitions as d\n"
    "from assets.deployment import build_deployment_assets\n"
    "from assets.feature_views import build_feature_views, build_freshness_checks\n"
    "from assets.models import build_model_assets\n"
    "from assets.sources import build_sources\n"
    "from ml_platform.spec.loading import load_project\n"
    "from resources import resources_for_deployment\n"
    "catalog = load_project(d.PROJECT_ROOT)\n"
    "defs = dg.Definitions(\n"
    "    assets=[*build_sources(catalog), *build_feature_views(catalog),\n"
    "            *build_model_assets(catalog), *build_deployment_assets(catalog)],\n"
    "    asset_checks=build_freshness_checks(catalog),\n"
    "    resources=resources_for_deployment(), executor=d.executor())\n"
    "gc.freeze()\n"
    "repo = defs.get_repository_def()\n"
    "repo.get_all_jobs(); repo.asset_graph\n"
)
DAEMON_TICK_SECONDS = 30.0


def seconds(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``python -c code`` in a fresh interpreter.

    The interpreter ends with ``os._exit`` right after ``code``: tearing down what ``import
    dagster`` built takes about a quarter of the import itself here, and it is not loading (a
    process whose objects sit in the collector's permanent generation skips most of it, which
    would flatter the platform's ``defs()``). CPU seconds are what the load costs; on a shared
    machine they vary far less than the wall.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"{code}\nimport os\nos._exit(0)\n"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def environment(spec_path: str, home: str) -> dict[str, str]:
    """The process environment with this spec path and an empty ``ML_PLATFORM_HOME``.

    Without ``PYTHONDONTWRITEBYTECODE`` (set on this machine), so that the warm-up run writes the
    platform's bytecode and the timed runs read it, as an installed platform (the image's ``pip
    install``) does; compiling its modules from source would add about 65 ms to every load.
    """
    env = {**os.environ, "ML_PLATFORM_SPEC_PATH": spec_path, "ML_PLATFORM_HOME": home}
    env.pop("ML_PLATFORM_COMPUTE_PROFILES", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure_loads(spec_dir: Path, home: str, models: int, repeats: int, floor: bool) -> None:
    """Interleave the baseline with loading 1 and ``models`` models; print medians and ratios."""
    write_model_specs(spec_dir, models - 1)
    cases: dict[str, tuple[str, dict[str, str]]] = {
        "1 model": (LOAD, environment("", home)),
        f"{models} models": (LOAD, environment(str(spec_dir), home)),
    }
    if floor:
        cases[f"{models} models' assets+checks only"] = (
            LOAD_ASSETS_ONLY,
            environment(str(spec_dir), home),
        )
        script = str(PROJECT_ROOT / "bench" / "dagster_floor.py")
        for what, label in (("assets", "assets+checks"), ("all", "everything")):
            argv = [script, "--models", str(models), "--what", what]
            cases[f"Dagster floor, {models} models' {label}"] = (
                f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_path(sys.argv[0], "
                "run_name='__main__')",
                environment("", home),
            )
    for code, env in cases.values():  # warm the file cache and bytecode
        seconds(code, env)
    baseline: list[tuple[float, float]] = []
    loads: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
    for _ in range(repeats):  # interleaved, so machine noise hits all alike
        for case, (code, env) in cases.items():
            baseline.append(seconds(BASELINE, env))
            loads[case].append(seconds(code, env))
    b_wall, b_cpu = (statistics.median(t[i] for t in baseline) for i in (0, 1))
    print(
        f"import dagster (baseline): median {b_wall:.2f}s wall, {b_cpu:.2f}s CPU "
        f"over {len(baseline)}"
    )
    goals = {"1 model": " (goal <= 1.2x)", f"{models} models": " (goal <= 2.0x)"}
    for case, times in loads.items():
        wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
        print(
            f"load, {case}: median {wall:.2f}s wall, {cpu:.2f}s CPU over {repeats}; "
            f"ratio {wall / b_wall:.2f}x wall, {cpu / b_cpu:.2f}x CPU{goals.get(case, '')}"
        )


def _required_resources(repo: RepositoryDefinition, sensor: SensorDefinition) -> dict:
    """The resources the code server builds for a sensor's tick: those it needs, transitively."""
    from dagster._core.execution.resources_init import get_transitive_required_resource_keys

    top_level = repo.get_top_level_resources()
    needed = get_transitive_required_resource_keys(sensor.required_resource_keys, top_level)
    return {key: value for key, value in top_level.items() if key in needed}


def measure_sensors(spec_dir: Path, home: Path, models: int) -> None:
    """Evaluate every sensor once, as one daemon tick would; print the total and the slowest."""
    write_model_specs(spec_dir, models - 1)
    os.environ.update(environment(str(spec_dir), str(home)))
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from ml_platform.definitions import build_definitions

    defs = build_definitions(PROJECT_ROOT)
    repo = defs.get_repository_def()
    timings: list[tuple[float, str, str]] = []
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        started = time.perf_counter()
        for sensor in repo.sensor_defs:
            began = time.perf_counter()
            if isinstance(sensor, dg.AutomationConditionSensorDefinition):
                # The daemon evaluates these itself, over the selected assets' conditions.
                evaluated = dg.evaluate_automation_conditions(
                    defs=defs, instance=instance, asset_selection=sensor.asset_selection
                )
                outcome = f"{evaluated.total_requested} assets requested"
                timings.append((time.perf_counter() - began, sensor.name, outcome))
                continue
            with dg.build_sensor_context(
                instance=instance,
                cursor=None,
                repository_def=repo,
                sensor_name=sensor.name,
                resources=_required_resources(repo, sensor),
            ) as context:
                result = sensor.evaluate_tick(context)
            outcome = result.skip_message or f"{len(result.run_requests or [])} run requests"
            timings.append((time.perf_counter() - began, sensor.name, outcome))
        total = time.perf_counter() - started
    timings.sort(reverse=True)
    print(
        f"{len(timings)} sensors of {models} models evaluated once in {total:.2f}s "
        f"({total / DAEMON_TICK_SECONDS:.2f} of a {DAEMON_TICK_SECONDS:.0f} s daemon tick)"
    )
    for took, name, outcome in timings[:3]:
        print(f"  slowest: {name} {took:.3f}s: {outcome[:100]}")
    by_kind: dict[str, list[float]] = {}
    for took, name, _ in timings:  # a model's sensors by kind: <M>_drift_sensor, canary_<M>, ...
        by_kind.setdefault(re.sub(r"fraud_detection(_\d{3})?", "<M>", name), []).append(took)
    for kind, times in sorted(by_kind.items()):
        print(
            f"  {kind}: {len(times)} sensors, median {statistics.median(times) * 1000:.1f} ms, "
            f"total {sum(times):.2f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", type=int, default=100, help="models in the large case")
    parser.add_argument(
        "--floor", action="store_true", help="also time bare Dagster in the same numbers"
    )
    parser.add_argument(
        "--sensors", action="store_true", help="time one evaluation of every sensor instead"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load_time_") as tmp:
        spec_dir, home = Path(tmp) / "specs", Path(tmp) / "home"
        home.mkdir()
        if args.sensors:
            measure_sensors(spec_dir, home, args.models)
        else:
            measure_loads(spec_dir, str(home), args.models, args.repeats, args.floor)


if __name__ == "__main__":
    main()
