"""`ml-platform init --from-parquet`: a features file and a model spec from parquet files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ml_platform.cli.main import main
from tests.e2e import loans

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loan_files(platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The loans data as a user's own parquet files, outside the data root; run from the root."""
    monkeypatch.chdir(PROJECT_ROOT)
    data = tmp_path / "my_data"
    data.mkdir()
    paths = []
    for name, frame in loans.good_frames(rows=600).items():
        frame.to_parquet(data / f"{name}.parquet")
        paths.append(data / f"{name}.parquet")
    return paths


def _specs(folder: Path) -> tuple[dict, dict]:
    features = yaml.safe_load((folder / "features.yaml").read_text())
    model = yaml.safe_load((folder / "model.yaml").read_text())
    return features, model


def test_init_from_parquet_writes_specs_that_validate(
    loan_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = tmp_path / "specs"
    argv = ["init", "credit", "--directory", str(specs), "--from-parquet", *map(str, loan_files)]
    assert main(argv) == 0
    features, model = _specs(specs / "credit")
    sources = {source["name"]: source for source in features["sources"]}
    # Columns and types from the schemas; the one timestamp column of each file is its event time.
    assert sources["bureau_reports"]["timestamp_field"] == "reported_at"
    assert sources["loan_outcomes"]["timestamp_field"] == "applied_at"
    assert sources["loan_outcomes"]["columns"] == loans.FEATURES["sources"][1]["columns"]
    assert sources["bureau_reports"]["path"] == str(loan_files[0].resolve())  # absolute
    # The id-like column the label file shares with the other file is the entity.
    assert features["entities"] == [{"name": "applicant", "join_keys": ["applicant_id"]}]
    (view,) = features["feature_views"]
    assert (view["source"], view["features"]) == ("bureau_reports", ["credit_score", "debt_ratio"])
    # The 0/1 column (by the file's statistics) is the label; the other numbers are features.
    assert model["task"] == "binary_classification"
    assert model["label"] == {"source": "loan_outcomes", "column": "defaulted"}
    assert model["features"] == {"views": ["bureau_reports"], "request": ["amount"]}
    output = capsys.readouterr().out
    assert "ok: feature repo 'credit_features'" in output
    assert "ok: model 'credit'" in output
    # The same loader, run again by the user, agrees.
    assert main(["validate", str(specs / "credit")]) == 0


def test_init_asks_which_timestamp_when_a_file_has_several(
    loan_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = pd.read_parquet(loan_files[1])
    outcomes["label_known_at"] = outcomes["applied_at"] + pd.Timedelta(days=30)
    outcomes.to_parquet(loan_files[1])
    specs = tmp_path / "specs"
    argv = ["init", "credit", "--directory", str(specs), "--from-parquet", *map(str, loan_files)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "several timestamp columns (applied_at, label_known_at)" in error
    assert "--timestamp COLUMN" in error
    assert not (specs / "credit").exists()
    assert main([*argv, "--timestamp", "applied_at", "--timestamp", "reported_at"]) == 0
    features, _ = _specs(specs / "credit")
    assert [s["timestamp_field"] for s in features["sources"]] == ["reported_at", "applied_at"]


def test_init_prefers_a_label_named_like_one_and_notes_unsupported_columns(
    platform_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    table = pa.table(
        {
            "customer_id": pa.array([1, 2, 3, 4], pa.int32()),
            "event_timestamp": pa.array(pd.date_range("2026-01-01", periods=4, tz="UTC")),
            "spend": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
            "premium": [True, False, True, False],
            "is_churned": pa.array([0, 1, 0, 1], pa.int8()),
            "tags": [["a"], [], ["b"], []],
        }
    )
    path = tmp_path / "churn.parquet"
    pq.write_table(table, path)
    specs = tmp_path / "specs"
    argv = ["init", "churn", "--directory", str(specs), "--from-parquet", str(path)]
    assert main(argv) == 0
    features, model = _specs(specs / "churn")
    assert features["sources"][0]["columns"] == {
        "customer_id": "int32",
        "event_timestamp": "timestamp",
        "spend": "float32",
        "premium": "bool",
        "is_churned": "int32",
    }
    assert model["label"]["column"] == "is_churned"  # named like a label, before 'premium'
    assert model["features"] == {"request": ["spend", "premium"]}
    output = capsys.readouterr().out
    assert "skipped churn.tags: type list<element: string> has no spec column type" in output
    assert "label: churn.is_churned (other candidates: churn.premium" in output


def test_init_refuses_a_file_without_a_timestamp(
    platform_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"id": [1, 2], "label": [0, 1]}).to_parquet(path)
    assert main(["init", "rows", "--directory", str(tmp_path), "--from-parquet", str(path)]) == 2
    assert "no timestamp column" in capsys.readouterr().err
