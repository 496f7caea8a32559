"""Training governance on every launch path: run tags, a time budget, one training per model.

Runs are launched the way the UI materializes a selection: a run of the implicit asset job with
no tags of its own, on a real DagsterInstance (SQLite under DAGSTER_HOME), real MLflow, Feast and
audit databases under ML_PLATFORM_HOME. Nothing of the platform is mocked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.keys import MODEL_TAG, TRAINING_TAG, training_job_name
from ml_platform.compute.kubernetes import MAX_RUNTIME_TAG
from ml_platform.compute.profiles import load_profiles
from ml_platform.core.audit import AuditLog
from ml_platform.core.leases import Leases, training_lease
from ml_platform.core.settings import PlatformSettings
from ml_platform.definitions import build_definitions
from ml_platform.features.store import apply_feature_repo
from ml_platform.lifecycle.records import current_model
from ml_platform.lifecycle.training_inputs import training_budget_seconds, training_params
from ml_platform.registry.client import ModelRegistry
from ml_platform.spec.loading import load_project
from ml_platform.spec.model import ModelSpec
from ml_platform.training.budget import TrainingBudgetExceeded
from ml_platform.training.schema import FeatureSchema
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = loans.MODEL
TRAINING_SET = dg.AssetKey([MODEL, "training_set"])
MODEL_ASSET = dg.AssetKey([MODEL, "model"])
SCHEMA = FeatureSchema(numeric=("x",), categorical=(), label="label", task="binary_classification")
CHECKPOINT_FILES = {"torch": "last.pt", "xgboost": "xgboost-last.ubj"}


@dataclass
class World:
    specs: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance

    def launch(self, assets: Sequence[dg.AssetKey], **spec_changes: Any) -> dg.DagsterRun:
        """Materialize ``assets`` as the UI does: the implicit asset job, no run tags."""
        loans.write_specs(self.specs, **spec_changes)
        defs = build_definitions(PROJECT_ROOT, spec_path=str(self.specs))
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=self.instance, asset_selection=list(assets), raise_on_error=False
        )
        run = self.instance.get_run_by_id(result.run_id)
        assert run is not None
        return run

    def versions(self) -> list[str]:
        return ModelRegistry.for_settings(self.settings).registered_versions(MODEL)

    def trained(self) -> int:
        return len(AuditLog(self.settings.audit_url).events(MODEL, "trained"))

    def model_step_failures(self, run: dg.DagsterRun) -> list[str]:
        """The failure descriptions of the model step, one per attempt that failed."""
        messages = []
        for record in self.instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records:
            event = record.event_log_entry.dagster_event
            assert event is not None and event.step_key is not None
            if event.step_key.startswith(f"{MODEL}__model"):
                data = event.step_failure_data
                described = data.user_failure_data.description if data.user_failure_data else ""
                messages.append(f"{described} {data.error.message if data.error else ''}")
        return messages

    def retries(self, run: dg.DagsterRun) -> int:
        return len(
            self.instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
            ).records
        )


@pytest.fixture
def world(platform_home: Path, tmp_path: Path) -> Any:
    """The loans model's specs, data and Feast registry; a persistent DagsterInstance."""
    specs = loans.write_specs(tmp_path / "specs")
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    catalog = load_project(PROJECT_ROOT, str(specs))
    apply_feature_repo(catalog.feature_repos["lending"], settings)
    with dg.DagsterInstance.get() as instance:
        yield World(specs, settings, instance)


def test_a_ui_materialization_of_the_model_runs_with_the_training_run_tags(world: World) -> None:
    profile = load_profiles()[loans.model_spec().get("compute", {}).get("profile", "cpu-small")]

    run = world.launch([TRAINING_SET, MODEL_ASSET])

    assert run.status == dg.DagsterRunStatus.SUCCESS
    # `launch` reads the run back from storage, where run monitoring reads dagster/max_runtime.
    tags = run.tags
    assert tags[MAX_RUNTIME_TAG] == str(profile.max_runtime_seconds)
    assert tags[MODEL_TAG] == MODEL
    assert tags[TRAINING_TAG] == MODEL
    # The training job carries the training tag from the queue on (tag concurrency limits).
    defs = build_definitions(PROJECT_ROOT, spec_path=str(world.specs))
    assert defs.resolve_job_def(training_job_name(MODEL)).tags[TRAINING_TAG] == MODEL


def test_training_past_its_time_budget_fails_for_good_and_registers_nothing(world: World) -> None:
    assert world.launch([TRAINING_SET, MODEL_ASSET]).status == dg.DagsterRunStatus.SUCCESS
    before = current_model(world.settings, MODEL)
    # Far more epochs than one second allows: the budget, not the epochs, ends this training.
    slow = {"epochs": 10_000, "batch_size": 32, "early_stopping_patience": 10_000}

    run = world.launch([MODEL_ASSET], training={**slow, "max_duration": "1s"})

    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = world.model_step_failures(run)  # failed once: no retry can fix a budget
    assert world.retries(run) == 0
    assert f"model {MODEL}: training stopped after epoch" in failure
    assert "of 10000" in failure and "budget of 1 s" in failure
    assert "Raise training.max_duration" in failure and "resumes from that checkpoint" in failure
    assert world.versions() == [before.version]
    assert current_model(world.settings, MODEL) == before
    assert world.trained() == 1
    checkpoints = list(Path(world.settings.checkpoint_root, MODEL).glob("*/last.pt"))
    assert len(checkpoints) == 1, "the stopped training keeps its checkpoint"


def test_a_second_run_finds_the_model_being_trained_and_trains_nothing(world: World) -> None:
    holder = dg.DagsterRun(
        job_name=training_job_name(MODEL),
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
    )
    world.instance.add_run(holder)
    leases = Leases(world.settings.audit_url)
    lease = leases.acquire(training_lease(MODEL), holder.run_id, lambda _: True)

    run = world.launch([TRAINING_SET, MODEL_ASSET])

    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = world.model_step_failures(run)
    since = lease.acquired_at.isoformat(timespec="seconds")
    assert f"model {MODEL} is being trained by run {holder.run_id} since {since}" in failure
    assert "this run trains nothing" in failure
    assert world.retries(run) == 0
    assert world.versions() == [] and world.trained() == 0
    assert leases.current(training_lease(MODEL)) == lease, "the refused run left the lease alone"

    # The holder was killed; run monitoring marks its run failed: its lease blocks no more.
    world.instance.report_run_failed(holder)
    rerun = world.launch([MODEL_ASSET])

    assert rerun.status == dg.DagsterRunStatus.SUCCESS
    assert world.versions() == ["1"] and world.trained() == 1
    assert leases.current(training_lease(MODEL)) is None, "released when the step ended"


def _frame(rows: int, seed: int) -> pd.DataFrame:
    x = np.random.default_rng(seed).normal(size=rows)
    return pd.DataFrame({"x": x, "label": (x > 0).astype(int)})


@pytest.mark.parametrize("flavor", ["torch", "xgboost"])
def test_each_flavor_checkpoints_and_stops_past_its_budget_then_resumes_with_more(
    flavor: str, tmp_path: Path
) -> None:
    from ml_platform.training.config import TrainingConfig
    from ml_platform.training.flavors.registry import get_flavor

    params: dict[str, Any] = {"hidden_sizes": [4]} if flavor == "torch" else {"n_estimators": 5}
    # The budget's clock started an hour ago: spent after the first epoch or round, whatever
    # the machine's speed.
    config = TrainingConfig(
        epochs=5,
        batch_size=64,
        learning_rate=0.01,
        early_stopping_patience=0,
        device="cpu",
        max_seconds=60,
        started_at=time.time() - 3600,
    )
    frames = (_frame(200, 1), _frame(100, 2))
    checkpoints = tmp_path / "checkpoints"

    with pytest.raises(TrainingBudgetExceeded) as raised:
        get_flavor(flavor).fit(*frames, SCHEMA, params, config, checkpoint_dir=checkpoints)

    assert (raised.value.completed, raised.value.total) == (1, 5)
    assert (checkpoints / CHECKPOINT_FILES[flavor]).exists()
    # The fix the message names: a larger budget resumes from the checkpoint.
    result = get_flavor(flavor).fit(
        *frames, SCHEMA, params, replace(config, max_seconds=None), checkpoint_dir=checkpoints
    )
    assert (result.resumed_from_epoch, result.epochs_run) == (1, 5)


@pytest.mark.parametrize("value", ["0s", "0d", "-1h", "2 hours", 0])
def test_the_budget_must_be_a_positive_duration(value: Any) -> None:
    with pytest.raises(ValueError, match=r"training\.max_duration"):
        ModelSpec.model_validate(loans.model_spec(training={"max_duration": value}))


def test_the_budget_defaults_to_the_profile_and_is_not_part_of_the_training_key() -> None:
    profile = load_profiles()["cpu-small"]
    unbounded = ModelSpec.model_validate(loans.model_spec())
    training = {**loans.model_spec()["training"], "max_duration": "2h"}
    bounded = ModelSpec.model_validate(loans.model_spec(training=training))

    assert training_budget_seconds(bounded, profile) == 7200
    assert training_budget_seconds(unbounded, profile) == profile.max_runtime_seconds
    # A run stopped by its budget resumes from its checkpoint under a larger one.
    assert training_params(bounded) == training_params(unbounded)
