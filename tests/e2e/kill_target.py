"""Entry points for the kill test: a reconstructable training job and a script that runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def training_job() -> dg.JobDefinition:
    from ml_platform.definitions import build_definitions

    defs = build_definitions(PROJECT_ROOT, spec_path=os.environ["ML_PLATFORM_SPEC_PATH"])
    return defs.resolve_job_def("loan_default_training")


if __name__ == "__main__":
    instance = dg.DagsterInstance.get()
    result = dg.execute_job(dg.reconstructable(training_job), instance=instance)
    sys.exit(0 if result.success else 1)
