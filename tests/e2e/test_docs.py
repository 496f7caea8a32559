"""The docs test: every ```bash block of the README and of docs/*.md runs, as a newcomer would.

The blocks run one by one, each in a fresh ``bash -euo pipefail``, in a copy of the project (so
``ml-platform init churn`` writes ``assets/churn`` there, not in this checkout) with its own
``ML_PLATFORM_HOME`` and ``HOME``. The README's "Add a model" walkthrough reads
``~/churn-data/*.parquet``: this test writes those files first. A block that cannot run here
carries ``<!-- docs-test: skip (why) -->`` on the line before it; ``SKIPPED`` lists every one, so
a new skip is a decision made in this file too. The same commands' output is the quiet-output
check: no warning of a third-party module (the ibis/DuckDB ``fetch_arrow_table`` deprecation
from Feast's offline store, Dagster's own ``InitResourceContext.dagster_run`` deprecation and
MLflow's signature notes were seen before).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GUIDES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"^<!-- docs-test: skip \((?P<reason>.+)\) -->$")
# A line Python's warnings module prints: "<file>.py:<line>: <Category>Warning: <message>".
WARNING_LINE = re.compile(r"(?P<file>\S+\.py):\d+: (?P<category>\w*Warning): ")

# Every block the test does not run: (file, its first line) -> why.
SKIPPED = {
    (
        "README.md",
        "make demo   # creates .venv with pip, installs, runs the example end to end, "
        "prints the champion",
    ): "make demo and make test: CI runs them",
    (
        "README.md",
        "make dev      # Dagster UI + daemon on the same instance: http://127.0.0.1:3000",
    ): "long-running servers",
    (
        "README.md",
        "make demo-drift   # = .venv/bin/ml-platform demo --drift; about 75 s at 100k "
        "payments (2 cores)",
    ): "make demo-drift: tests/e2e/test_drift_demo.py runs it; make dev is a long-running server",
    ("README.md", "make test                      # everything CI runs (.ci/run calls it)"): (
        "make test and the unit tests: CI runs them"
    ),
    (
        "docs/deployment.md",
        "make demo   # the example end to end on embedded engines; prints "
        "the champion and its gates",
    ): "make demo is run by CI; make dev is a long-running server",
    (
        "docs/deployment.md",
        "# 1. The agent, in its own namespace, with an agent token from "
        "Dagster+ (Organization settings -> Tokens).",
    ): "needs a Kubernetes cluster, a Dagster+ organization and an image registry",
    (
        "docs/kubernetes.md",
        "# 1. The image: code server, run worker and step worker in one (torch with CUDA 12.8).",
    ): "needs a Kubernetes cluster and an image registry",
    (
        "docs/kubernetes.md",
        ".venv/bin/python -m pytest tests/unit/test_compute.py tests/unit/test_k8s_manifests.py \\",
    ): "runs tests make test already runs; UPDATE_SNAPSHOTS=1 rewrites the snapshots",
    (
        "docs/ui_test.md",
        "sudo apt-get install -y --no-install-recommends chromium   # .ci/run does this in CI",
    ): "installs a system package with sudo; .ci/run runs the UI test",
    (
        "docs/serving.md",
        'export ML_PLATFORM_SERVING_API_KEYS="analyst:$(openssl rand -hex 16),'
        'checkout:$(openssl rand -hex 16)"',
    ): "a long-running server; tests/e2e/test_serving.py starts it on a free port",
    ("docs/serving.md", "KEY=...   # one of the keys of ML_PLATFORM_SERVING_API_KEYS"): (
        'needs the service of "Serve locally" running'
    ),
    (
        "README.md",
        'export ML_PLATFORM_SERVING_API_KEYS="checkout:$(openssl rand -hex 16)"',
    ): "a long-running server and calls to it; tests/e2e/test_serving.py runs them",
    (
        "docs/serving.md",
        "# The prerequisites of docs/kubernetes.md (namespace, ConfigMaps, "
        "ml-platform-secrets with",
    ): "needs a Kubernetes cluster, the image and the code location's ConfigMaps and Secrets",
    (
        "docs/serving.md",
        ".venv/bin/python bench/serving.py --rows 100000 --requests 2000 --concurrency 8",
    ): "runs the demo and a load test: minutes",
    (
        "docs/mlflow_auth.md",
        "pip install 'mlflow[auth]'                 # the auth app needs "
        "Flask-WTF (CSRF protection)",
    ): "starts a long-running MLflow server on a PostgreSQL database",
}


@dataclass(frozen=True)
class Block:
    """One fenced ```bash block of a guide."""

    guide: str
    line: int
    text: str
    skip_reason: str | None

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


@dataclass(frozen=True)
class Ran:
    """A block that ran: its exit status and everything it printed (stdout and stderr)."""

    block: Block
    returncode: int
    output: str


def bash_blocks(path: Path) -> list[Block]:
    """The ```bash blocks of a Markdown file, each with the skip reason marked before it."""
    blocks = []
    lines = path.read_text().splitlines()
    previous = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "```bash":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            mark = SKIP_MARK.match(previous.strip())
            blocks.append(
                Block(
                    guide=str(path.relative_to(PROJECT_ROOT)),
                    line=i + 1,
                    text="\n".join(lines[i + 1 : end]),
                    skip_reason=mark.group("reason") if mark else None,
                )
            )
            previous, i = lines[end], end
        elif line.strip():
            previous = line
        i += 1
    return blocks


def _write_churn_data(directory: Path, customers: int = 600, rows: int = 3000) -> None:
    """The walkthrough's own parquet files: customers (features) and monthly churn labels."""
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    profile = pd.DataFrame(
        {
            "customer_id": np.arange(customers, dtype=np.int64),
            "updated_at": start - pd.to_timedelta(rng.integers(1, 90, customers), "D"),
            "tenure_days": rng.integers(10, 2000, customers).astype(np.float64),
            "support_calls": rng.poisson(2, customers).astype(np.float64),
        }
    )
    customer = rng.integers(0, customers, rows)
    charges = rng.normal(60, 20, rows).clip(5)
    tenure = profile["tenure_days"].to_numpy()[customer]
    calls = profile["support_calls"].to_numpy()[customer]
    logit = -1.0 - tenure / 800 + 0.5 * calls + 0.02 * (charges - 60)
    labels = pd.DataFrame(
        {
            "customer_id": customer.astype(np.int64),
            "observed_at": start + pd.to_timedelta(rng.integers(0, 300 * 86400, rows), "s"),
            "monthly_charges": charges,
            "churned": (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )
    directory.mkdir(parents=True)
    profile.to_parquet(directory / "customers.parquet")
    labels.to_parquet(directory / "churn_labels.parquet")


def _project_copy(root: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) under root/main, as a fresh clone.

    ``.venv`` is linked, not copied; ``../shared`` (the workplace's tools, which the README's
    Development block calls) is linked next to the copy as it is next to this checkout.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = root / "main"
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    shared = PROJECT_ROOT.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared)
    return copy


@pytest.fixture(scope="module")
def ran_blocks(tmp_path_factory: pytest.TempPathFactory) -> list[Ran]:
    """Every runnable block of every guide, run in order in one copy of the project."""
    root = tmp_path_factory.mktemp("docs")
    copy = _project_copy(root)
    user_home = root / "user"
    _write_churn_data(user_home / "churn-data")
    platform_home = root / "ml_platform_home"
    (platform_home / "dagster").mkdir(parents=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ML_PLATFORM_", "MLFLOW_", "DAGSTER_", "PYTEST_"))
    }
    env.update(
        HOME=str(user_home),
        ML_PLATFORM_HOME=str(platform_home),
        DAGSTER_HOME=str(platform_home / "dagster"),
        # The copy's packages, not this checkout's (the editable install points here).
        PYTHONPATH=str(copy),
    )
    ran = []
    for guide in GUIDES:
        for block in bash_blocks(guide):
            if block.skip_reason is not None:
                continue
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.text],
                cwd=copy,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=600,
            )
            ran.append(Ran(block, done.returncode, done.stdout))
    return ran


def test_blocks_that_cannot_run_are_marked_and_listed() -> None:
    marked = {
        (block.guide, block.first_line): block.skip_reason
        for guide in GUIDES
        for block in bash_blocks(guide)
        if block.skip_reason is not None
    }
    assert marked == SKIPPED
    # What the test must never run itself: CI runs make demo and make test.
    runnable = [b for guide in GUIDES for b in bash_blocks(guide) if b.skip_reason is None]
    for block in runnable:
        commands = [line.split("#")[0].strip() for line in block.text.splitlines()]
        assert not {"make demo", "make test", "make dev", "make mlflow"} & set(commands), block


@pytest.mark.slow
def test_every_bash_block_of_the_readme_and_guides_runs(ran_blocks: list[Ran]) -> None:
    failed = [
        f"{ran.block.guide}:{ran.block.line} exited {ran.returncode}:\n{ran.block.text}\n"
        f"--- output (end) ---\n{ran.output[-3000:]}"
        for ran in ran_blocks
        if ran.returncode != 0
    ]
    assert not failed, "\n\n".join(failed)
    guides = {ran.block.guide for ran in ran_blocks}
    assert {"README.md", "docs/deployment.md"} <= guides
    # The walkthrough trained the user's model from their parquet files and promoted it.
    (walkthrough,) = [r for r in ran_blocks if "ml-platform init churn" in r.block.text]
    assert "ok: model 'churn'" in walkthrough.output
    assert "churn_training: succeeded" in walkthrough.output
    assert "champion       version 1, test roc_auc" in walkthrough.output


@pytest.mark.slow
def test_the_commands_print_no_third_party_warnings(ran_blocks: list[Ran]) -> None:
    seen = []
    for ran in ran_blocks:
        for line in ran.output.splitlines():
            match = WARNING_LINE.search(line)
            if match and "/site-packages/" in match.group("file"):
                seen.append(f"{ran.block.guide}:{ran.block.line}: {line.strip()[:200]}")
    assert not seen, "third-party warnings in the output:\n" + "\n".join(seen)


def test_feast_leaves_the_processs_warning_filters_as_they_were(tmp_path: Path) -> None:
    # Feast's modules call warnings.simplefilter("once", DeprecationWarning) when imported, which
    # showed every library's deprecations (Dagster's, ibis's) in the CLI's and the runs' output.
    script = (
        "import warnings\n"
        "before = list(warnings.filters)\n"
        "from ml_platform.core.settings import PlatformSettings\n"
        "from ml_platform.features.store import feature_store\n"
        "feature_store(PlatformSettings.from_env())\n"
        "assert 'feast' in __import__('sys').modules\n"
        "added = [f for f in warnings.filters if f not in before]\n"
        "print('added filters:', added)\n"
        "raise SystemExit(1 if added else 0)\n"
    )
    env = {**os.environ, "ML_PLATFORM_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(PROJECT_ROOT / ".venv/bin/python"), "-c", script],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
