"""Data gates: hostile data fails with a clear message, fast == GE verdicts, PII stays masked."""

from __future__ import annotations

import decimal
import json
import logging
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from ml_platform.gates import great_expectations as ge_adapter
from ml_platform.gates.expectations import default_expectations, gate_expectations
from ml_platform.gates.fast import FAST_EVALUATORS, FastVerdict, fast_evaluate
from ml_platform.gates.report import MASK, GateReport
from ml_platform.gates.run import run_gate
from ml_platform.gates.spec import DataGateSpec, ExpectationSpec

CANARY = "CANARY-PII-7f3a"
GATE = DataGateSpec(min_rows=50, label_balance=(0.01, 0.5))


def expect(kind: str, **kwargs: object) -> ExpectationSpec:
    return ExpectationSpec(type=f"expect_{kind}", kwargs=kwargs)


def training_frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.zeros(rows, dtype=np.int64)
    label[rng.choice(rows, rows // 10, replace=False)] = 1
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows, dtype=np.int64) % (rows // 2),
            "event_timestamp": pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC"),
            "is_fraud": label,
            "amount": rng.gamma(2.0, 30.0, rows),
            "merchant": rng.choice(["grocery", "travel", "online"], rows).astype(object),
        }
    )


def binary_defaults(gate: DataGateSpec = GATE) -> list[ExpectationSpec]:
    return default_expectations(
        label="is_fraud",
        task="binary_classification",
        key_columns=["customer_id"],
        timestamp_column="event_timestamp",
        feature_columns=["amount", "merchant"],
        gate=gate,
        numeric_columns=["amount"],
    )


def verdicts(report: GateReport) -> list[bool]:
    return [outcome.success for outcome in report.outcomes]


def test_importing_the_module_imports_no_heavy_library() -> None:
    heavy = [
        "great_expectations",
        "torch",
        "mlflow",
        "feast",
        "evidently",
        "dagster",
        "pandas",
        "numpy",
    ]
    modules = ", ".join(
        f"ml_platform.gates.{name}"
        for name in ("spec", "expectations", "report", "fast", "great_expectations", "run", "state")
    )
    code = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_clean_training_set_passes_without_great_expectations() -> None:
    frame = training_frame()
    fast = run_gate(frame, binary_defaults(), name="fraud/training_set")
    assert fast.success, fast.summary()
    assert fast.engine == "fast"
    assert all(outcome.engine == "fast" for outcome in fast.outcomes)
    assert "passed" in fast.summary()
    reference = run_gate(frame, binary_defaults(), name="fraud/training_set", mode="ge")
    assert reference.success, reference.summary()
    assert reference.engine == "great_expectations"


def test_default_expectations_cover_the_schema() -> None:
    kinds = {(e.type, e.kwargs.get("column")) for e in binary_defaults()}
    assert ("expect_column_values_to_not_be_null", "is_fraud") in kinds
    assert ("expect_column_values_to_be_in_set", "is_fraud") in kinds
    assert ("expect_column_mean_to_be_between", "is_fraud") in kinds
    assert ("expect_column_unique_value_count_to_be_between", "is_fraud") in kinds
    assert ("expect_column_values_to_not_be_null", "event_timestamp") in kinds
    assert ("expect_column_to_exist", "merchant") in kinds
    assert ("expect_column_values_to_be_between", "amount") in kinds
    compound = [e for e in binary_defaults() if e.type == "expect_compound_columns_to_be_unique"]
    assert compound[0].kwargs["column_list"] == ["customer_id", "event_timestamp"]
    assert (
        default_expectations(
            label="y",
            task="regression",
            key_columns=[],
            timestamp_column=None,
            feature_columns=[],
            gate=DataGateSpec(defaults=False),
        )
        == []
    )
    explicit = expect("column_values_to_be_unique", column="customer_id")
    combined = gate_expectations(
        DataGateSpec(expectations=[explicit]),
        label=None,
        task=None,
        key_columns=[],
        timestamp_column=None,
        feature_columns=[],
    )
    assert combined[-1] == explicit
    assert combined[0].type == "expect_table_row_count_to_be_between"


def _set(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = value
        return frame

    return mutate


def _at(column: str, rows: list[int], value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object) if isinstance(value, str) else frame[column]
        frame.loc[rows, column] = value
        return frame

    return mutate


HOSTILE: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], set[str]]] = {
    "nulls in label": (
        lambda f: f.assign(is_fraud=f["is_fraud"].astype("float64").where(f.index % 7 != 0)),
        {"expect_column_values_to_not_be_null"},
    ),
    "out-of-range label": (_at("is_fraud", [3, 4], 2), {"expect_column_values_to_be_in_set"}),
    "too few rows": (lambda f: f.head(10), {"expect_table_row_count_to_be_between"}),
    "duplicated key": (
        lambda f: pd.concat([f, f.iloc[[5]]], ignore_index=True),
        {"expect_compound_columns_to_be_unique"},
    ),
    "single class": (
        _set("is_fraud", 0),
        {"expect_column_unique_value_count_to_be_between", "expect_column_mean_to_be_between"},
    ),
    "inf in a numeric feature": (
        _at("amount", [1], np.inf),
        {"expect_column_values_to_be_between"},
    ),
    "all-NaN feature": (
        _set("amount", np.nan),
        {"expect_column_proportion_of_non_null_values_to_be_between"},
    ),
    "all-NaN label": (
        _set("is_fraud", np.nan),
        {"expect_column_values_to_not_be_null", "expect_column_mean_to_be_between"},
    ),
    "empty frame": (
        lambda f: f.iloc[0:0],
        {"expect_table_row_count_to_be_between", "expect_column_mean_to_be_between"},
    ),
    "strings in a numeric column": (
        _at("amount", [2], "12.5 EUR"),
        {"expect_column_values_to_be_between"},
    ),
    "missing label column": (
        lambda f: f.drop(columns=["is_fraud"]),
        {"expect_column_to_exist", "expect_column_values_to_not_be_null"},
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_data_fails_the_gate_with_a_clear_message(case: str) -> None:
    mutate, expected_failures = HOSTILE[case]
    frame = mutate(training_frame())
    fast = run_gate(frame, binary_defaults(), name=f"hostile/{case}")
    reference = run_gate(frame, binary_defaults(), name=f"hostile/{case}", mode="ge")
    assert verdicts(fast) == verdicts(reference)
    assert not fast.success
    failed = {outcome.type for outcome in fast.failed()}
    assert expected_failures <= failed, fast.summary()
    assert all(o.engine == "great_expectations" for o in fast.failed())  # GE confirmed them
    summary = fast.summary().splitlines()
    assert len(summary) == len(fast.failed())
    for line in summary:
        assert line.startswith("FAILED expect_")
        assert line.split("): ", 1)[1], line  # each failure says what was found
    json.dumps(fast.to_metadata(), allow_nan=False)


@pytest.mark.parametrize(
    ("target", "failing"),
    [
        ([42.0] * 60, "expect_column_unique_value_count_to_be_between"),  # constant column
        ([1.0, np.inf] * 30, "expect_column_values_to_be_between"),  # not finite
        ([1.0, 2.0, np.nan] * 20, "expect_column_values_to_not_be_null"),
    ],
    ids=["constant", "inf", "nan"],
)
def test_regression_target_must_be_finite_and_vary(target: list[float], failing: str) -> None:
    frame = pd.DataFrame({"entity_id": range(60), "target": target, "x": np.linspace(0, 1, 60)})
    specs = default_expectations(
        label="target",
        task="regression",
        key_columns=["entity_id"],
        timestamp_column=None,
        feature_columns=["x"],
        gate=DataGateSpec(min_rows=10),
        numeric_columns=["x"],
    )
    fast = run_gate(frame, specs, name="regression")
    assert verdicts(fast) == verdicts(run_gate(frame, specs, name="regression", mode="ge"))
    assert [o.type for o in fast.failed()] == [failing]


def test_errors_name_the_cause() -> None:
    frame = training_frame().drop(columns=["is_fraud"])
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[0, "amount"] = "twelve"
    specs = [
        expect("column_values_to_not_be_null", column="is_fraud"),
        expect("column_values_to_be_between", column="amount", min_value=0, max_value=10_000),
    ]
    report = run_gate(frame, specs, name="errors")
    missing, wrong_type = report.outcomes
    assert missing.exception is not None and 'column "is_fraud"' in missing.exception
    assert "does not exist" in missing.exception
    assert wrong_type.exception is not None and "same type" in wrong_type.exception
    assert "does not exist" in report.summary()


def test_mostly_nulls_and_bounds_follow_great_expectations() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan, 10.0], "k": [1, 1, 2, 3, None]})
    specs = [
        # 1 of 4 non-null values is out of range: 75% meet it; nulls are not counted.
        expect("column_values_to_be_between", column="x", min_value=0, max_value=5, mostly=0.75),
        expect("column_values_to_be_between", column="x", min_value=0, max_value=5, mostly=0.76),
        expect("column_values_to_be_between", column="x", min_value=1, max_value=10),
        expect("column_values_to_be_between", column="x", min_value=1, strict_min=True),
        expect("column_values_to_not_be_null", column="x", mostly=0.8),
        expect("column_values_to_not_be_null", column="x", mostly=0.81),
        expect("column_values_to_be_unique", column="k", mostly=0.5),
        expect("column_values_to_be_unique", column="k"),
    ]
    fast = run_gate(frame, specs, name="semantics")
    reference = run_gate(frame, specs, name="semantics", mode="ge")
    expected = [True, False, True, False, True, False, True, False]
    assert verdicts(fast) == verdicts(reference) == expected


def test_duplicated_expectations_each_get_an_outcome() -> None:
    spec = expect("column_values_to_be_in_set", column="merchant", value_set=["grocery"])
    report = run_gate(training_frame(), [spec, spec], name="duplicates", mode="ge")
    assert len(report.outcomes) == 2
    assert verdicts(report) == [False, False]


def _frames() -> dict[str, pd.DataFrame]:
    nan, inf = np.nan, np.inf
    return {
        "clean": pd.DataFrame({"a": [0.0, 0.5, 1.0, 2.0], "b": [1, 2, 3, 4], "c": list("abca")}),
        "nan and inf": pd.DataFrame(
            {"a": [nan, inf, -inf, 1.0], "b": [1, 1, 2, 2], "c": ["a", None, "b", "b"]}
        ),
        "float32 and nullable": pd.DataFrame(
            {
                "a": np.array([0.1, 0.5, 1.0, nan], dtype=np.float32),
                "b": pd.array([0, 1, None, 1], dtype="Int64"),
                "c": pd.Categorical(["a", "b", None, "a"]),
            }
        ),
        "object mixed": pd.DataFrame(
            {
                "a": pd.Series([1, "1", None, decimal.Decimal("0.5")], dtype=object),
                "b": [True, False, True, True],
                "c": pd.array(["a", None, "c", "c"], dtype="string"),
            }
        ),
        "all null": pd.DataFrame(
            {"a": [nan] * 4, "b": pd.array([None] * 4, dtype="Int64"), "c": [None] * 4}
        ),
        "empty": pd.DataFrame({"a": [], "b": [], "c": []}),
        "case twins": pd.DataFrame({"A": [9.0, 9.0, 9.0, 9.0], "a": [0.0, 1.0, 1.0, 0.5]}),
    }


def _expectation_grid() -> list[ExpectationSpec]:
    return [
        expect("column_to_exist", column="a"),
        expect("column_to_exist", column="c", column_index=2),
        expect("column_values_to_not_be_null", column="a"),
        expect("column_values_to_not_be_null", column="c", mostly=0.7),
        expect("column_values_to_be_between", column="a", min_value=0, max_value=1),
        expect("column_values_to_be_between", column="a", min_value=0.1, strict_min=True),
        expect("column_values_to_be_between", column="a", max_value=1.0, strict_max=True),
        expect("column_values_to_be_between", column="a", min_value=-1e308, max_value=1e308),
        expect("column_values_to_be_between", column="b", min_value=0, max_value=3, mostly=0.7),
        expect("column_values_to_be_in_set", column="b", value_set=[0, 1]),
        expect("column_values_to_be_in_set", column="c", value_set=["a", "b"], mostly=0.6),
        expect("column_values_to_not_be_in_set", column="c", value_set=["c"]),
        expect("column_values_to_be_unique", column="b"),
        expect("compound_columns_to_be_unique", column_list=["b", "c"]),
        expect("compound_columns_to_be_unique", column_list=["b", "c"], ignore_row_if="never"),
        expect("table_row_count_to_be_between", min_value=1, max_value=4),
        expect("column_mean_to_be_between", column="a", min_value=0, max_value=1),
        expect("column_max_to_be_between", column="b", max_value=3),
        expect("column_min_to_be_between", column="a", min_value=0),
        expect("column_unique_value_count_to_be_between", column="b", min_value=2),
        expect("column_proportion_of_non_null_values_to_be_between", column="c", min_value=0.75),
        expect("column_distinct_values_to_be_in_set", column="c", value_set=["a", "b"]),
        expect("column_values_to_be_of_type", column="a", type_="float64"),
    ]


@pytest.mark.parametrize("frame_name", sorted(_frames()))
def test_fast_verdicts_equal_great_expectations(frame_name: str) -> None:
    frame = _frames()[frame_name]
    specs = _expectation_grid()
    reference = run_gate(frame, specs, name=f"grid/{frame_name}", mode="ge")
    fast = run_gate(frame, specs, name=f"grid/{frame_name}", mode="fast")
    assert verdicts(fast) == verdicts(reference)
    # The fast evaluators alone (before GE re-checks failures) already agree wherever they
    # give a verdict, so GE only ever adds diagnostics.
    for spec, outcome in zip(specs, reference.outcomes, strict=True):
        alone = fast_evaluate(frame, spec)
        if alone is not None:
            assert alone.success == outcome.success, (spec, outcome)


def test_fast_verdicts_equal_great_expectations_on_random_frames() -> None:
    rng = random.Random(20240601)
    values = {
        "float": [0.0, -0.0, 0.5, 1.0, 3.0, np.nan, np.inf, -np.inf],
        "int": [0, 1, 2, 3],
        "string": ["a", "b", None, "c"],
    }
    for round_ in range(6):
        rows = rng.choice([0, 1, 3, 7])
        frame = pd.DataFrame(
            {kind: [rng.choice(pool) for _ in range(rows)] for kind, pool in values.items()}
        )
        frame["int"] = frame["int"].astype("int64")
        specs = []
        for _ in range(10):
            low, high = sorted(rng.sample([-1, 0, 0.5, 1, 2, 3], 2))
            column = rng.choice(["float", "int"])
            specs += [
                expect(
                    "column_values_to_be_between",
                    column=column,
                    min_value=low,
                    max_value=high,
                    mostly=rng.choice([0.5, 0.9, 1.0]),
                ),
                expect(
                    "column_values_to_be_in_set",
                    column="string",
                    value_set=["a", "b"],
                    mostly=rng.choice([0.5, 1.0]),
                ),
                expect("column_mean_to_be_between", column=column, min_value=low, max_value=high),
            ]
        fast = run_gate(frame, specs, name=f"random/{round_}")
        reference = run_gate(frame, specs, name=f"random/{round_}", mode="ge")
        assert verdicts(fast) == verdicts(reference), frame


def test_great_expectations_wins_when_the_fast_path_disagrees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kind = "expect_column_values_to_not_be_null"
    monkeypatch.setitem(FAST_EVALUATORS, kind, lambda data, kwargs: FastVerdict(False))
    with caplog.at_level(logging.WARNING, logger="ml_platform.gates.run"):
        report = run_gate(
            training_frame(),
            [expect("column_values_to_not_be_null", column="amount")],
            name="disagree",
        )
    assert report.success
    assert report.outcomes[0].engine == "great_expectations"
    assert "using Great Expectations' verdict" in caplog.text


def test_pii_values_never_leave_the_gate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    given_to_ge: list[tuple[list[str], list[str]]] = []  # (columns read, columns given)
    frame_for_ge = ge_adapter._frame_for_ge

    def spy(frame: pd.DataFrame, keep: set, indexed: list) -> pd.DataFrame:
        given = frame_for_ge(frame, keep, indexed)
        read = [column for _, spec in indexed for column in spec.columns]
        given_to_ge.append((read, list(given.columns)))
        return given

    monkeypatch.setattr(ge_adapter, "_frame_for_ge", spy)
    frame = training_frame()
    frame["email"] = CANARY
    frame.loc[3, "email"] = None
    gate = DataGateSpec(min_rows=50, label_balance=(0.01, 0.5), pii_columns=["email"])
    specs = [
        *binary_defaults(gate),
        expect("column_values_to_be_in_set", column="email", value_set=["known@example.com"]),
        expect("column_values_to_be_unique", column="email"),
        expect("compound_columns_to_be_unique", column_list=["email", "merchant"]),
        expect("column_distinct_values_to_be_in_set", column="email", value_set=["x@y.z"]),
        expect("column_mean_to_be_between", column="email", min_value=0),  # pandas quotes values
        expect("column_values_to_be_in_set", column="merchant", value_set=["grocery"]),
    ]
    context = tmp_path / "gx_context"
    with caplog.at_level(logging.DEBUG):
        reports = [
            run_gate(
                frame,
                specs,
                name="pii",
                pii_columns=gate.pii_columns,
                mode=mode,
                context_root=str(context),
            )
            for mode in ("fast", "ge")
        ]
    fast, reference = reports
    assert verdicts(fast) == verdicts(reference)
    for report in reports:
        email_outcomes = [o for o in report.outcomes if "email" in json.dumps(o.kwargs)]
        assert email_outcomes and not any(o.success for o in email_outcomes)
        in_set = email_outcomes[0]
        assert in_set.kwargs["value_set"] == MASK
        assert in_set.unexpected_count == len(frame) - 1
        assert set(in_set.sample) == {MASK}
        assert not report.outcomes[-1].success and "grocery" not in report.outcomes[-1].sample
        texts = [report.summary(), json.dumps(report.to_metadata()), repr(report.outcomes)]
        assert not any(CANARY in text for text in texts)
    assert CANARY not in caplog.text
    for read, given in given_to_ge:  # GE saw the PII column only when it had to check it
        assert ("email" in given) == ("email" in read), (read, given)
        if "email" in read:
            assert set(given) <= set(read)
    assert "known@example.com" not in json.dumps(fast.to_metadata())
    files = [path for path in context.rglob("*") if path.is_file()]
    assert any(path.suffix == ".json" for path in files)  # GE stored its results here...
    assert not [path for path in files if CANARY.encode() in path.read_bytes()]  # ...no PII


def test_file_context_keeps_results_and_builds_data_docs(tmp_path: Path) -> None:
    frame = training_frame()
    frame.loc[0, "merchant"] = "casino"
    specs = [
        expect(
            "column_values_to_be_in_set",
            column="merchant",
            value_set=["grocery", "travel", "online"],
        )
    ]
    report = run_gate(
        frame, specs, name="fraud/training_set", mode="ge", context_root=str(tmp_path)
    )
    assert report.data_docs_path is not None
    index = Path(report.data_docs_path)
    assert index.name == "index.html" and index.is_file()
    assert list((tmp_path / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert report.outcomes[0].sample == ["casino"]
    again = run_gate(frame, specs, name="fraud/training_set", context_root=str(tmp_path))
    assert again.data_docs_path == report.data_docs_path  # the same context, re-run by name


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "a"}},
            "did you mean 'expect_column_values_to_be_between'",
        ),
        ({"type": "expect_everything_to_be_fine"}, "unknown or unsupported expectation"),
        (
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "a"}},
            "kwargs.value_set is required by expect_column_values_to_be_in_set",
        ),
        (
            {"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 0}},
            "kwargs.column is required",
        ),
        (
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "a", "max": 1}},
            "kwargs.max is not an argument .*did you mean 'max_value'",
        ),
        (
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "a"}},
            "needs kwargs.min_value, kwargs.max_value or both",
        ),
        (
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "a", "min_value": 2, "max_value": 1},
            },
            "is greater than kwargs.max_value",
        ),
        (
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "mostly": 2}},
            "kwargs.mostly .* must be a number between 0 and 1",
        ),
        (
            {
                "type": "expect_compound_columns_to_be_unique",
                "kwargs": {"column_list": ["only_one"]},
            },
            "at least two column names",
        ),
        (
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 10.5},
            },
            "must be a whole number",
        ),
    ],
)
def test_invalid_expectations_are_rejected_precisely(document: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExpectationSpec.model_validate(document)


def test_gate_spec_is_strict() -> None:
    with pytest.raises(ValidationError, match="label_balance"):
        DataGateSpec.model_validate({"label_balance": [0.6, 0.2]})
    with pytest.raises(ValidationError, match="extra"):
        DataGateSpec.model_validate({"min_row": 10})
    spec = DataGateSpec.model_validate(
        {
            "expectations": [
                {
                    "type": "expect_column_mean_to_be_between",
                    "kwargs": {"column": "a", "min_value": 1},
                }
            ]
        }
    )
    assert spec.expectations[0].kwargs["min_value"] == 1.0  # GE's own coercion, applied early
