"""Credentials in a location (data root, artifact root, MLflow, audit log) are never shown: every
metadata builder, step log line and MLflow param or tag shows the location without them."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets.metadata import (
    drift_report_metadata,
    generated_source_metadata,
    model_metadata,
    predictions_metadata,
    training_set_metadata,
)
from ml_platform.core.helpers import redact_url, redact_urls
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import TrainingSetManifest, training_set_root
from ml_platform.lifecycle.records import (
    DriftReportRecord,
    ModelRecord,
    PredictionRecord,
    StepContext,
    model_root,
)
from ml_platform.lifecycle.scored_window import ScoredWindow
from ml_platform.registry.client import ModelRegistry

CANARY = "SECRETCANARY"
# The shapes a credential takes in a deployment's locations.
CREDENTIALED = {
    "s3": f"s3://AKIAKEY:{CANARY}@bucket/ml",
    "https": f"https://user:{CANARY}@host.example:8443/ml?token={CANARY}#{CANARY}",
    "gcs_query": f"gs://bucket/ml?access_token={CANARY}",
    "postgres": f"postgresql+psycopg2://audit:{CANARY}@postgres:5432/audit",
    "user_only": f"https://{CANARY}@host.example/ml",
}


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (CREDENTIALED["s3"], "s3://bucket/ml"),
        (CREDENTIALED["https"], "https://host.example:8443/ml"),
        (CREDENTIALED["gcs_query"], "gs://bucket/ml"),
        (CREDENTIALED["postgres"], "postgresql+psycopg2://postgres:5432/audit"),
        (CREDENTIALED["user_only"], "https://host.example/ml"),
        ("/var/data/ml/training_sets", "/var/data/ml/training_sets"),
        ("relative/dir?not-a-query", "relative/dir?not-a-query"),
        ("sqlite:////tmp/home/mlflow.db", "sqlite:////tmp/home/mlflow.db"),
        ("file:///tmp/home/mlartifacts", "file:///tmp/home/mlartifacts"),
        ("package.module:Class", "package.module:Class"),
        (f"https://user:{CANARY}@[::1", "https://<redacted>"),
    ],
)
def test_redact_url_drops_userinfo_query_and_fragment_and_keeps_paths(
    location: str, shown: str
) -> None:
    assert redact_url(location) == shown


def test_redact_urls_redacts_every_url_quoted_in_a_message() -> None:
    message = (
        f"cannot read '{CREDENTIALED['s3']}/x.parquet' (tried {CREDENTIALED['https']}), "
        "local copy at /tmp/x.parquet"
    )
    shown = redact_urls(message)
    assert CANARY not in shown
    assert "s3://bucket/ml/x.parquet" in shown
    assert "https://host.example:8443/ml" in shown
    assert "/tmp/x.parquet" in shown


# Roots carry credentials as userinfo (a query string belongs to one signed file, not a root).
CREDENTIALED_ROOTS = {
    "s3": CREDENTIALED["s3"],
    "https": f"https://user:{CANARY}@host.example:8443/ml",
    "user_only": CREDENTIALED["user_only"],
}


@pytest.fixture(params=sorted(CREDENTIALED_ROOTS))
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> PlatformSettings:
    """Settings whose data and artifact roots carry a credential, as an EnvVar would."""
    root = CREDENTIALED_ROOTS[request.param]
    return PlatformSettings.from_env(
        home=tmp_path, data_root=f"{root}/data", artifact_root=f"{root}/artifacts"
    )


def test_metadata_builders_show_no_credential(settings: PlatformSettings) -> None:
    directory = f"{training_set_root(settings, 'loans')}/abc123"
    manifest = TrainingSetManifest(
        model="loans",
        snapshot_id="abc123",
        directory=directory,
        rows={"train": 8, "validation": 1, "test": 1},
        label_balance={"train": 0.5},
        time_ranges={"train": ["2026-01-01", "2026-01-02"]},
        as_of="2026-01-03",
        excluded_immature_labels=0,
        features=["amount"],
        categorical=[],
        label="defaulted",
        timestamp_column="event_timestamp",
        created_at="2026-01-03T00:00:00",
    )
    predictions = settings.data_path("models", "loans", "predictions", "x.parquet")
    drift_dir = model_root(settings, "loans", "drift", "r1")
    drift = DriftReportRecord(
        model="loans",
        model_version="1",
        report_id="r1",
        status="ok",
        drift_share=0.0,
        drifted_features=[],
        prediction_drift=False,
        performance=None,
        rows=10,
        html_path=f"{drift_dir}/report.html",
        created_at="2026-01-03T00:00:00",
        retrain_reasons=[],
        predictions_path=predictions,
        report_path=f"{drift_dir}/report.json",
    )
    registry = ModelRegistry(
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_root=settings.mlflow_artifact_root,
        ui_url=settings.data_root,  # a UI URL with the same credential
    )
    record = ModelRecord(
        "loans", "1", "run1", registry.run_url("0", "run1"), "abc123", "code", 1, 1, None,
        10.0, "cpu", 0.5, "2026-01-03T00:00:00",
    )  # fmt: skip
    shown = [
        training_set_metadata(manifest),
        predictions_metadata(
            PredictionRecord("loans", "1", predictions, 10, "abc123", "2026-01-03", None)
        ),
        drift_report_metadata(drift),
        generated_source_metadata(10, settings.data_path("sources", "loans.parquet"), {}),
        model_metadata(record),
        ScoredWindow(predictions_path=predictions).describe(),
    ]
    for metadata in shown:
        assert CANARY not in repr(metadata), metadata
    assert str(shown[0]["path"]).endswith("/data/models/loans/training_set/abc123")  # still shown


def test_step_log_lines_show_no_credential(settings: PlatformSettings) -> None:
    lines: list[str] = []
    step = StepContext(
        settings=settings,
        registry=ModelRegistry(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_root=settings.mlflow_artifact_root,
        ),
        audit=None,  # type: ignore[arg-type]  # a log line needs no audit log
        log=lines.append,
    )
    step.log(f"wrote {settings.data_path('models', 'loans', 'x.parquet')}")
    assert lines and CANARY not in lines[0]
    assert lines[0].endswith("/data/models/loans/x.parquet")


def test_training_run_params_and_tags_show_no_credential(tmp_path: Path) -> None:
    registry = ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
        ui_url=CREDENTIALED["https"],
    )
    params = {"data.root": CREDENTIALED["s3"], "epochs": 3}
    tags = {"source": CREDENTIALED["gcs_query"], "dagster_run_id": "run-1"}
    with registry.start_training_run("loans", params, tags) as run:
        pass
    logged = registry.client.get_run(run.run_id).data
    assert CANARY not in repr(logged.params)
    assert CANARY not in repr(logged.tags)
    assert CANARY not in run.url
    assert logged.params["data.root"] == "s3://bucket/ml"
    assert logged.params["epochs"] == "3"
    assert logged.tags["source"] == "gs://bucket/ml"
