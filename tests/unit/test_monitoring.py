"""Drift monitoring: verdicts from reference statistics agree with Evidently's, hostile windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ml_platform.monitoring.drift import (
    ColumnDriftSettings,
    DriftResult,
    DriftSettings,
    detect_drift,
)
from ml_platform.monitoring.evidently_report import (
    evidently_column_results,
    evidently_column_verdicts,
    write_evidently_report,
)
from ml_platform.monitoring.performance import performance_drift
from ml_platform.monitoring.reference import (
    EXACT_VALUES_LIMIT,
    ReferenceStatistics,
    compute_reference,
    sample_rows,
)
from ml_platform.monitoring.statistical_tests import wasserstein

NUMERIC = ["amount", "age", "balance", "score", "visits"]
CATEGORICAL = ["merchant", "channel"]
MERCHANTS = ["grocery", "travel", "online", "fuel"]


def payments(rows: int, seed: int, shifts: dict[str, float] | None = None) -> pd.DataFrame:
    """Payment-like rows; ``shifts`` moves a column's distribution by the given amount."""
    shift = dict.fromkeys([*NUMERIC, *CATEGORICAL], 0.0) | (shifts or {})
    rng = np.random.default_rng(seed)
    moved = min(shift["merchant"], 0.35)
    merchant_weights = np.array([0.4 - moved, 0.3, 0.2, 0.1 + moved])
    online = min(max(0.5 + shift["channel"], 0.0), 1.0)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0 + shift["amount"], 1.0, rows),
            "age": rng.integers(18, 80, rows) + round(shift["age"] * 17),
            "balance": rng.normal(1000.0 + shift["balance"] * 300, 300.0, rows),
            "score": rng.beta(2.0 + shift["score"] * 4, 5.0, rows),
            "visits": rng.poisson(2.0 + shift["visits"] * 2, rows).clip(0, 4).astype(float),
            "merchant": rng.choice(MERCHANTS, rows, p=merchant_weights / merchant_weights.sum()),
            "channel": rng.choice(["online", "store"], rows, p=[online, 1 - online]),
        }
    )


def verdicts(result: DriftResult) -> dict[str, bool]:
    return {verdict.column: verdict.drifted for verdict in result.columns}


@pytest.mark.parametrize(
    ("reference_rows", "numeric_test", "categorical_test"),
    [(600, "ks", "chisquare"), (5000, "wasserstein", "jensenshannon")],
)
def test_shifted_columns_are_flagged_and_the_others_not(
    reference_rows: int, numeric_test: str, categorical_test: str
) -> None:
    # Below 1,000 reference rows Evidently's p-value tests also flag chance differences in
    # some seeds (chi-squared takes the reference shares as exact); these seeds have none.
    reference = payments(reference_rows, seed=26)
    window = payments(2000, seed=27, shifts={"balance": 0.6, "merchant": 0.25})
    statistics = compute_reference(reference, NUMERIC, CATEGORICAL)

    result = detect_drift(statistics, window)

    assert result.drifted_columns == ["balance", "merchant"]
    assert result.status == "ok"  # 2 of 7 columns: below the 0.5 drift share
    assert result.drift_share == pytest.approx(2 / 7)
    tested = {verdict.column: verdict.test for verdict in result.columns}
    assert tested["balance"] == numeric_test
    assert tested["merchant"] == categorical_test
    assert tested["channel"] == ("z" if reference_rows <= 1000 else "jensenshannon")
    assert verdicts(result) == evidently_column_verdicts(reference, window, NUMERIC, CATEGORICAL)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_verdicts_and_scores_agree_with_evidently_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    agreed = total = 0
    for reference_rows in (300, 1000, 1001, 8000, 40000):
        # Shifts near the tests' thresholds as well as far from them; some columns unshifted.
        shifts = {
            column: float(rng.choice([0.0, 0.0, 0.03, 0.08, 0.1, 0.12, 0.2, 0.5]))
            for column in [*NUMERIC, *CATEGORICAL]
        }
        reference = payments(reference_rows, seed=seed * 100 + reference_rows)
        window = payments(int(rng.integers(150, 6000)), seed=seed, shifts=shifts)
        statistics = compute_reference(reference, NUMERIC, CATEGORICAL)
        ours = {verdict.column: verdict for verdict in detect_drift(statistics, window).columns}
        theirs = evidently_column_results(reference, window, NUMERIC, CATEGORICAL)
        for column, evidently in theirs.items():
            total += 1
            agreed += ours[column].drifted == evidently.drifted
            sketched = statistics.columns[column].kind == "numeric" and not getattr(
                statistics.columns[column], "exact", True
            )
            tolerance = 2e-4 if sketched else 1e-9
            assert ours[column].score == pytest.approx(evidently.score, rel=1e-6, abs=tolerance)
            assert ours[column].threshold == evidently.threshold
    assert agreed == total


def test_configured_tests_and_thresholds_agree_with_evidently() -> None:
    reference = payments(3000, seed=3)
    window = payments(2000, seed=4, shifts={"amount": 0.05, "merchant": 0.1, "channel": 0.04})
    methods = {"amount": "ks", "balance": "psi", "age": "jensenshannon", "merchant": "psi"}
    thresholds = {"channel": 0.02, "score": 0.01}
    settings = DriftSettings(
        columns={
            column: ColumnDriftSettings(test=methods.get(column), threshold=thresholds.get(column))
            for column in {*methods, *thresholds}
        }
    )
    statistics = compute_reference(reference, NUMERIC, CATEGORICAL)

    ours = {v.column: v for v in detect_drift(statistics, window, settings=settings).columns}
    theirs = evidently_column_results(
        reference, window, NUMERIC, CATEGORICAL, methods=methods, thresholds=thresholds
    )

    for column, evidently in theirs.items():
        assert ours[column].drifted == evidently.drifted, column
        assert ours[column].score == pytest.approx(evidently.score, rel=1e-9, abs=1e-12)
    assert ours["channel"].threshold == 0.02
    with pytest.raises(ValueError, match="'chisquare' configured for column 'amount'"):
        detect_drift(
            statistics,
            window,
            settings=DriftSettings(columns={"amount": ColumnDriftSettings(test="chisquare")}),
        )
    with pytest.raises(ValueError, match="unknown drift test 'anderson'"):
        ColumnDriftSettings(test="anderson")


@pytest.mark.parametrize("window_rows", [10_000, 100_000])
def test_no_false_alarm_on_the_training_distribution(window_rows: int) -> None:
    statistics = compute_reference(payments(100_000, seed=5), NUMERIC, CATEGORICAL)

    result = detect_drift(statistics, payments(window_rows, seed=6))

    assert result.status == "ok"
    assert result.drifted_columns == []
    assert max(verdict.score for verdict in result.columns) < 0.05  # threshold 0.1


def test_no_false_alarm_at_a_million_rows() -> None:
    rng = np.random.default_rng(7)
    columns = {"normal": rng.normal, "exponential": rng.exponential}
    reference = pd.DataFrame({name: draw(size=1_000_000) for name, draw in columns.items()})
    window = pd.DataFrame({name: draw(size=1_000_000) for name, draw in columns.items()})
    statistics = compute_reference(reference, list(columns), [])

    result = detect_drift(statistics, window)

    assert result.status == "ok" and result.drifted_columns == []
    for verdict in result.columns:
        exact = stats.wasserstein_distance(reference[verdict.column], window[verdict.column])
        normed = exact / reference[verdict.column].std(ddof=0)
        # Without drift the window's quantiles cross the reference's inside every sketch bin,
        # where the sketch is least exact; still 100x below the 0.1 threshold.
        assert verdict.score == pytest.approx(normed, abs=1e-3)


def test_sketch_is_within_a_ten_thousandth_of_a_standard_deviation() -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"value": rng.standard_t(3, 200_000)})
    statistics = compute_reference(reference, ["value"], [])
    column = statistics.columns["value"]
    assert not column.exact and len(column.values) < 3000
    for shift in (0.0, 0.05, 0.1, 0.15):
        window = np.sort(rng.standard_t(3, 50_000) + shift * column.std)
        exact = stats.wasserstein_distance(reference["value"], window) / column.std
        assert wasserstein(column, window) == pytest.approx(exact, abs=1e-4)


def test_window_below_min_rows_is_insufficient_data_never_drift() -> None:
    statistics = compute_reference(payments(2000, seed=9), NUMERIC, CATEGORICAL)
    shifted = payments(50, seed=10, shifts=dict.fromkeys(NUMERIC, 2.0))

    result = detect_drift(statistics, shifted)

    assert result.status == "insufficient_data" and not result.dataset_drift
    assert "50 rows" in (result.reason or "")
    assert {verdict.status for verdict in result.columns} == {"insufficient_data"}
    assert result.drifted_columns == []


def test_empty_window_is_insufficient_data() -> None:
    statistics = compute_reference(payments(2000, seed=9), NUMERIC, CATEGORICAL)

    result = detect_drift(statistics, payments(0, seed=10), predictions=np.array([]))

    assert result.status == "insufficient_data"
    assert result.prediction is None or result.prediction.status in ("insufficient_data", "error")


def hostile_windows(rows: int, seed: int) -> dict[str, tuple[pd.DataFrame, str, str, str]]:
    """name: (window, column, expected status, phrase in its reason)."""
    window = payments(rows, seed=seed)
    rng = np.random.default_rng(seed)
    text = window["balance"].astype(object)
    text[rng.random(rows) < 0.1] = "n/a"
    return {
        "all_missing": (window.assign(amount=np.nan), "amount", "error", "all 3000 values"),
        "text_in_numeric": (window.assign(balance=text), "balance", "error", "'n/a'"),
        "dates_in_numeric": (
            window.assign(score=pd.Timestamp("2024-01-01")),
            "score",
            "error",
            "datetime64",
        ),
        "absent_column": (window.drop(columns=["channel"]), "channel", "error", "no such column"),
        "mostly_missing": (
            window.assign(age=np.where(np.arange(rows) < 40, 30, np.nan)),
            "age",
            "insufficient_data",
            "40 values",
        ),
        "new_category": (
            window.assign(merchant=np.where(rng.random(rows) < 0.2, "casino", window.merchant)),
            "merchant",
            "drift",
            "casino",
        ),
    }


@pytest.mark.parametrize("case", list(hostile_windows(3000, 12)))
def test_hostile_window_gives_a_clear_verdict(case: str) -> None:
    statistics = compute_reference(payments(3000, seed=11), NUMERIC, CATEGORICAL)
    window, column, status, phrase = hostile_windows(3000, 12)[case]

    result = detect_drift(statistics, window)

    verdict = next(verdict for verdict in result.columns if verdict.column == column)
    assert verdict.status == status
    assert phrase in (verdict.reason or "")
    others = [v for v in result.columns if v.column != column]
    assert all(v.status == "ok" for v in others), [(v.column, v.reason) for v in others]
    if status in ("error", "insufficient_data"):
        assert result.reason is not None and f"{column} (" in result.reason
    json.dumps(result.to_dict())


def test_new_category_and_constant_columns_agree_with_evidently() -> None:
    rng = np.random.default_rng(13)
    reference = pd.DataFrame(
        {
            "constant": np.full(3000, 7.0),
            "kept_constant": np.full(3000, 7.0),
            "merchant": rng.choice(MERCHANTS, 3000),
        }
    )
    window = pd.DataFrame(
        {
            "constant": rng.normal(7.0, 0.001, 2000),  # more than 5 values: Wasserstein / 0.001
            "kept_constant": np.full(2000, 7.0),
            "merchant": rng.choice([*MERCHANTS, "casino"], 2000),
        }
    )
    numeric, categorical = ["constant", "kept_constant"], ["merchant"]
    statistics = compute_reference(reference, numeric, categorical)

    result = detect_drift(statistics, window)

    ours = {verdict.column: verdict for verdict in result.columns}
    assert verdicts(result) == evidently_column_verdicts(reference, window, numeric, categorical)
    assert ours["constant"].drifted and "reference is constant" in (ours["constant"].reason or "")
    assert ours["kept_constant"].status == "ok"
    assert ours["merchant"].new_categories == ["casino"]


def test_unexpected_window_values_are_not_a_crash() -> None:
    statistics = compute_reference(payments(3000, seed=14), NUMERIC, CATEGORICAL)
    window = payments(3000, seed=15)
    window["amount"] = window["amount"].where(np.arange(3000) % 10 > 0, np.inf)
    window["age"] = pd.array(window["age"], dtype="Int64")  # nullable integers
    window["score"] = window["score"].astype(object)  # numbers stored as objects
    window["channel"] = pd.Categorical(window["channel"], categories=["online", "store", "x"])

    result = detect_drift(statistics, window)

    assert result.status == "ok" and result.drifted_columns == []
    amount = next(verdict for verdict in result.columns if verdict.column == "amount")
    assert amount.missing_share == pytest.approx(0.1)


def test_reference_statistics_survive_a_json_round_trip() -> None:
    rng = np.random.default_rng(16)
    reference = payments(EXACT_VALUES_LIMIT * 4, seed=16)
    reference["flag"] = rng.random(len(reference)) < 0.3
    statistics = compute_reference(
        reference, [*NUMERIC, "flag"], CATEGORICAL, predictions=rng.random(len(reference))
    )
    assert not statistics.columns["balance"].exact and statistics.columns["age"].exact

    restored = ReferenceStatistics.from_dict(json.loads(json.dumps(statistics.to_dict())))

    assert restored == statistics
    window = payments(3000, seed=17, shifts={"amount": 0.3})
    window["flag"] = rng.random(3000) < 0.3
    first = detect_drift(statistics, window, predictions=rng.random(3000))
    second = detect_drift(restored, window, predictions=rng.random(3000))
    assert first.to_dict()["columns"] == second.to_dict()["columns"]
    assert DriftResult.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    with pytest.raises(ValueError, match="format version"):
        ReferenceStatistics.from_dict({**statistics.to_dict(), "format_version": 99})


def test_prediction_drift_for_probabilities_and_classes() -> None:
    rng = np.random.default_rng(18)
    reference = payments(5000, seed=18)
    probabilities = rng.beta(1, 20, 5000)
    statistics = compute_reference(reference, NUMERIC, CATEGORICAL, predictions=probabilities)
    window = payments(2000, seed=19)

    same = detect_drift(statistics, window, predictions=rng.beta(1, 20, 2000))
    higher = detect_drift(statistics, window, predictions=rng.beta(2, 20, 2000))

    assert same.prediction is not None and same.prediction.status == "ok"
    assert higher.prediction is not None and higher.prediction.drifted
    assert higher.status == "drift" and not higher.dataset_drift and higher.prediction_drift

    classes = rng.dirichlet([5, 3, 1], 5000)
    multiclass = compute_reference(reference, NUMERIC, CATEGORICAL, predictions=classes)
    assert multiclass.prediction is not None and multiclass.prediction.kind == "categorical"
    shifted = detect_drift(multiclass, window, predictions=rng.dirichlet([1, 3, 5], 2000))
    assert shifted.prediction is not None and shifted.prediction.drifted
    unrecorded = detect_drift(
        compute_reference(reference, NUMERIC, CATEGORICAL), window, predictions=probabilities
    )
    assert unrecorded.prediction is not None and unrecorded.prediction.status == "error"
    mismatched = detect_drift(statistics, window, predictions=rng.dirichlet([5, 3, 1], 2000))
    assert mismatched.prediction is not None and "categorical" in (
        mismatched.prediction.reason or ""
    )


def test_reference_rejects_missing_and_non_numeric_columns() -> None:
    frame = payments(500, seed=20)
    with pytest.raises(ValueError, match=r"lacks monitored columns \['income'\]"):
        compute_reference(frame, ["income"], [])
    with pytest.raises(ValueError, match="'merchant' should be numeric"):
        compute_reference(frame, ["merchant"], [])
    with pytest.raises(ValueError, match="both numeric and categorical"):
        compute_reference(frame, ["amount"], ["amount"])


def test_settings_reject_impossible_values() -> None:
    with pytest.raises(ValueError, match="drift_share"):
        DriftSettings(drift_share=1.5)
    with pytest.raises(ValueError, match="min_rows"):
        DriftSettings(min_rows=0)
    with pytest.raises(ValueError, match="positive"):
        ColumnDriftSettings(threshold=-0.1)


def test_evidently_report_is_written_on_bounded_samples(tmp_path: Path) -> None:
    reference = payments(30_000, seed=21)
    window = payments(25_000, seed=22, shifts={"balance": 0.5}).assign(visits=np.nan)
    path = str(tmp_path / "drift" / "report.html")

    written = write_evidently_report(reference, window, NUMERIC, CATEGORICAL, path, max_rows=3000)

    assert written == path
    html = Path(path).read_text()
    assert "<html" in html.lower() and "balance" in html
    assert len(sample_rows(reference, 3000)) == 3000
    assert sample_rows(reference, 3000).equals(sample_rows(reference, 3000))


BINARY = "binary_classification"


@pytest.mark.parametrize(
    ("task", "metric", "truth", "prediction", "status", "drop"),
    [
        (BINARY, "roc_auc", [0, 0, 1, 1] * 50, [0.1, 0.6, 0.4, 0.9] * 50, "drift", 0.2),
        (BINARY, "roc_auc", [0, 0, 1, 1] * 50, [0.1, 0.2, 0.8, 0.9] * 50, "ok", -0.05),
        ("regression", "rmse", [1.0, 2.0] * 100, [1.5, 2.5] * 100, "drift", 0.3),
        (BINARY, "roc_auc", [0] * 200, [0.2] * 200, "insufficient_data", None),
        ("regression", "rmse", [1.0] * 20, [1.0] * 20, "insufficient_data", None),
    ],
)
def test_performance_drift(
    task: str, metric: str, truth: list, prediction: list, status: str, drop: float | None
) -> None:
    reference = 0.95 if metric == "roc_auc" else 0.2
    verdict = performance_drift(
        task, np.array(truth), np.array(prediction), 0.5, metric, reference, 100, max_drop=0.1
    )
    assert verdict.status == status, verdict.reason
    assert verdict.drop == (None if drop is None else pytest.approx(drop))
    assert verdict.rows == len(truth)


def test_verdict_modules_import_no_heavy_library() -> None:
    code = (
        "import sys, ml_platform.monitoring.drift, ml_platform.monitoring.reference, "
        "ml_platform.monitoring.performance\n"
        "heavy = ('evidently', 'mlflow', 'torch', 'dagster', 'scipy', 'pandas', 'sklearn')\n"
        "print([name for name in heavy if name in sys.modules])"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
