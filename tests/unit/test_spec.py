"""Model and feature-repo specs: defaults, discovery and precise errors for invalid specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ml_platform.cli.main import main as cli_main
from ml_platform.spec.errors import SpecError
from ml_platform.spec.loading import load_catalog, load_project, read_spec_file
from ml_platform.spec.values import parse_duration
from tests.unit.spec_examples import EXAMPLE, MINIMAL_MODEL


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE / "features.yaml", tmp_path / "features.yaml")
    return tmp_path


def load_with(spec_dir: Path, model: dict, name: str = "model.yaml"):
    write(spec_dir / name, model)
    return load_catalog(sorted(spec_dir.glob("*.yaml")))


def single_error(catalog) -> str:
    assert len(catalog.errors) == 1, catalog.errors
    return str(catalog.errors[0])


def test_example_project_loads_with_defaults() -> None:
    catalog = load_project(EXAMPLE.parent.parent)
    assert not catalog.errors
    spec = catalog.models["fraud_detection"]
    assert spec.split.method == "time"
    assert spec.primary_metric == "roc_auc"
    resolved = catalog.resolved["fraud_detection"]
    assert resolved.entity_columns == ["customer_id", "merchant_id"]
    assert "customer_activity:txn_count_7d" in resolved.feature_refs
    assert resolved.model_inputs[:2] == ["amount", "hour_of_day"]


def test_minimal_spec_gets_defaults(spec_dir: Path) -> None:
    catalog = load_with(spec_dir, MINIMAL_MODEL)
    assert not catalog.errors
    spec = catalog.models["churn"]
    assert spec.training.epochs == 20 and spec.compute.profile == "cpu-small"
    assert spec.retraining.schedule == "0 3 * * 1"
    assert catalog.resolved["churn"].entity_columns == ["customer_id"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"trainig": {"epochs": 3}},
            "trainig: unknown key 'trainig' (did you mean 'training'?)",
        ),
        (
            {"training": {"epochs": "ten"}},
            "training.epochs: Input should be a valid integer",
        ),
        (
            {"training": {"epoch": 3}},
            "training.epoch: unknown key 'epoch' (did you mean 'epochs'?)",
        ),
        (
            {"features": {"views": ["customer_actvity"]}},
            "features.views[0]: unknown feature view 'customer_actvity' "
            "(did you mean 'customer_activity'?)",
        ),
        (
            {"compute": {"profile": "gpu-a200"}},
            "compute.profile: unknown compute profile 'gpu-a200' (did you mean 'gpu-a100'?)",
        ),
        (
            {"label": {"source": "transactions", "column": "is_fruad"}},
            "label.column: 'is_fruad' is not a column of label source 'transactions'",
        ),
        (
            {"label": {"source": "transactons", "column": "is_fraud"}},
            "label.source: unknown source 'transactons' (did you mean 'transactions'?)",
        ),
        (
            {"task": "clustering"},
            "task: Input should be 'binary_classification', 'multiclass_classification' or "
            "'regression'",
        ),
        ({"name": "churn-model"}, "name: String should match pattern"),
        ({"retraining": {"schedule": "weekly"}}, "retraining.schedule: not a 5-field cron"),
        ({"evaluation": {"primary_metric": "rmse"}}, "does not apply to task"),
        ({"features": {"request": ["is_fraud"]}}, "the label 'is_fraud' cannot be a feature"),
    ],
)
def test_invalid_model_spec_names_file_field_and_fix(
    spec_dir: Path, change: dict, expected: str
) -> None:
    catalog = load_with(spec_dir, {**MINIMAL_MODEL, **change})
    message = single_error(catalog)
    assert str(spec_dir / "model.yaml") in message
    assert expected in message
    assert "churn" not in catalog.models


def test_missing_required_field(spec_dir: Path) -> None:
    model = {k: v for k, v in MINIMAL_MODEL.items() if k != "owner"}
    assert "owner: required field is missing; add it" in single_error(load_with(spec_dir, model))


def test_duplicate_model_names_are_reported_with_both_files(spec_dir: Path) -> None:
    write(spec_dir / "a.yaml", MINIMAL_MODEL)
    write(spec_dir / "b.yaml", MINIMAL_MODEL)
    catalog = load_catalog(sorted(spec_dir.glob("*.yaml")))
    message = single_error(catalog)
    assert "model 'churn' is also declared in" in message and "a.yaml" in message
    assert "b.yaml" in message and "model names must be unique" in message
    assert list(catalog.models) == ["churn"]


def test_feature_repo_errors(spec_dir: Path) -> None:
    document = yaml.safe_load((spec_dir / "features.yaml").read_text())
    document["feature_views"][1]["features"].append("txn_count_30d")
    document["feature_views"][1]["entities"] = ["custmer"]
    path = write(spec_dir / "features.yaml", document)
    with pytest.raises(SpecError) as raised:
        read_spec_file(path)
    message = str(raised.value)
    assert "feature_views[1] ('customer_activity').entities: unknown entity 'custmer'" in message
    assert (
        "unknown column 'txn_count_30d'" in message and "(did you mean 'txn_count_7d'?)" in message
    )


def test_files_without_kind_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("foo: bar\n")
    assert read_spec_file(tmp_path / "other.yaml") is None


def test_environment_interpolation(spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_EPOCHS", "7")
    text = yaml.safe_dump({**MINIMAL_MODEL, "training": {"epochs": 0}}).replace(
        "epochs: 0", "epochs: ${CHURN_EPOCHS}"
    )
    (spec_dir / "model.yaml").write_text(text + "description: ${UNSET_VAR:-default text}\n")
    catalog = load_catalog(sorted(spec_dir.glob("*.yaml")))
    assert catalog.models["churn"].training.epochs == 7
    assert catalog.models["churn"].description == "default text"


@pytest.mark.parametrize(("text", "days"), [("30d", 30), ("2w", 14), ("36h", 1.5)])
def test_parse_duration(text: str, days: float) -> None:
    assert parse_duration(text).total_seconds() == days * 86400


def test_cli_validate(
    spec_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(spec_dir)  # no project specs beside the ones under test
    good = write(spec_dir / "model.yaml", MINIMAL_MODEL)
    assert cli_main(["validate", str(spec_dir)]) == 0
    assert "ok: model 'churn'" in capsys.readouterr().out
    write(good, {**MINIMAL_MODEL, "compute": {"profile": "gpu-a200"}})
    assert cli_main(["validate", str(good)]) == 1
    assert "compute.profile: unknown compute profile 'gpu-a200'" in capsys.readouterr().err


def test_cli_init_scaffolds_a_valid_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(EXAMPLE.parent.parent)
    assert cli_main(["init", "loan_default", "--directory", str(tmp_path)]) == 0
    target = tmp_path / "loan_default" / "model.yaml"
    text = target.read_text().replace("column: label", "column: is_fraud")
    target.write_text(text)
    assert cli_main(["validate", str(target)]) == 0
    assert cli_main(["init", "loan_default", "--directory", str(tmp_path)]) == 1
    capsys.readouterr()
