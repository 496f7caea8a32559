"""Shared fixtures: an isolated ML_PLATFORM_HOME per test and small generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet, deterministic libraries in tests.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A throwaway PostgreSQL server (``postgres_server``, ``postgres_url``, ``postgres_databases``).
pytest_plugins = ["tests.postgres"]


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ML_PLATFORM_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ML_PLATFORM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir()
    for name in (
        "MLFLOW_TRACKING_URI",
        "ML_PLATFORM_DATA_ROOT",
        "ML_PLATFORM_SPEC_PATH",
        "ML_PLATFORM_DEPLOYMENT",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def loans_spec(platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The small loans model (tests/e2e/loans.py) on the spec path, run from the project root."""
    from tests.e2e import loans

    spec_dir = loans.write_specs(tmp_path / "specs")
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(spec_dir))
    monkeypatch.chdir(PROJECT_ROOT)
    return spec_dir
