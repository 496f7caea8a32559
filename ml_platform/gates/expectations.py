"""Default expectations: what every data set of a model's schema must meet.

:func:`default_expectations` derives them from the schema (label, task, keys, features) and
:func:`gate_expectations` puts them before a gate's own declared expectations.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ml_platform.core.tasks import TASKS
from ml_platform.gates.spec import DataGateSpec, ExpectationSpec

DEFAULT_LABEL_BALANCE = (0.0005, 0.5)
# The largest finite float: ``between -FINITE and FINITE`` rejects +-inf (GE ignores NaN).
FINITE = sys.float_info.max


def default_expectations(
    *,
    label: str | None,
    task: str | None,
    key_columns: Sequence[str],
    timestamp_column: str | None,
    feature_columns: Sequence[str],
    gate: DataGateSpec,
    numeric_columns: Sequence[str] = (),
) -> list[ExpectationSpec]:
    """The expectations every training set of this schema must meet.

    Args:
        label: The label column, or None for data without labels (features, scoring sets).
        task: ``binary_classification``, ``multiclass_classification``, ``regression`` or None.
        key_columns: Entity key columns; with the timestamp they identify a row.
        timestamp_column: The event timestamp column, or None.
        feature_columns: Columns the model reads; each must exist and hold some non-null value.
        gate: The gate declaration; ``defaults=False`` returns no expectations.
        numeric_columns: Numeric feature columns; each must hold no +-inf (NaN stays allowed:
            the trainer imputes missing values).

    Returns:
        The default expectations: the row count floor; the label present, non-null and valid
        for the task (binary: values in {0, 1} and a positive share within ``label_balance``;
        regression: finite; every task: at least two distinct values); non-null entity keys and
        timestamp, unique together; every feature column present and not entirely null.

    Raises:
        ValueError: ``task`` is not one of the platform's tasks.
    """
    if not gate.defaults:
        return []
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    result: list[ExpectationSpec] = [
        _expect("expect_table_row_count_to_be_between", min_value=gate.min_rows)
    ]
    if label is not None:
        result += _label_expectations(label, task, gate)
    timestamp: list[str] = [timestamp_column] if timestamp_column else []
    keys = list(dict.fromkeys([*key_columns, *timestamp]))
    result += _key_expectations(keys)
    result += _feature_expectations(feature_columns, numeric_columns)
    return result


def gate_expectations(
    gate: DataGateSpec,
    *,
    label: str | None,
    task: str | None,
    key_columns: Sequence[str],
    timestamp_column: str | None,
    feature_columns: Sequence[str],
    numeric_columns: Sequence[str] = (),
) -> list[ExpectationSpec]:
    """The defaults (unless ``gate.defaults`` is false) followed by the gate's own expectations.

    Args:
        gate: The gate declaration.
        label: See :func:`default_expectations`.
        task: See :func:`default_expectations`.
        key_columns: See :func:`default_expectations`.
        timestamp_column: See :func:`default_expectations`.
        feature_columns: See :func:`default_expectations`.
        numeric_columns: See :func:`default_expectations`.

    Returns:
        Every expectation the gate checks, defaults first.
    """
    defaults = default_expectations(
        label=label,
        task=task,
        key_columns=key_columns,
        timestamp_column=timestamp_column,
        feature_columns=feature_columns,
        gate=gate,
        numeric_columns=numeric_columns,
    )
    return [*defaults, *gate.expectations]


def _label_expectations(label: str, task: str | None, gate: DataGateSpec) -> list[ExpectationSpec]:
    """The label is present, non-null and valid for the task."""
    result = [
        _expect("expect_column_to_exist", column=label),
        _expect("expect_column_values_to_not_be_null", column=label),
    ]
    if task == "binary_classification":
        low, high = gate.label_balance or DEFAULT_LABEL_BALANCE
        result += [
            _expect("expect_column_values_to_be_in_set", column=label, value_set=[0, 1]),
            _expect(
                "expect_column_mean_to_be_between", column=label, min_value=low, max_value=high
            ),
        ]
    elif task == "regression":
        result.append(
            _expect(
                "expect_column_values_to_be_between",
                column=label,
                min_value=-FINITE,
                max_value=FINITE,
            )
        )
    if task is not None:  # a single class (or a constant target) teaches nothing
        result.append(
            _expect("expect_column_unique_value_count_to_be_between", column=label, min_value=2)
        )
    return result


def _key_expectations(keys: Sequence[str]) -> list[ExpectationSpec]:
    """Entity keys and timestamp are non-null and identify a row."""
    result = [_expect("expect_column_values_to_not_be_null", column=column) for column in keys]
    if len(keys) == 1:
        result.append(_expect("expect_column_values_to_be_unique", column=keys[0]))
    elif len(keys) > 1:
        result.append(_expect("expect_compound_columns_to_be_unique", column_list=keys))
    return result


def _feature_expectations(
    feature_columns: Sequence[str], numeric_columns: Sequence[str]
) -> list[ExpectationSpec]:
    """Feature columns exist and are not entirely null; numeric ones hold no +-inf."""
    result: list[ExpectationSpec] = []
    for column in dict.fromkeys(feature_columns):
        result.append(_expect("expect_column_to_exist", column=column))
        # Missing values are imputed in training, but a column with none at all is a broken join.
        result.append(
            _expect(
                "expect_column_proportion_of_non_null_values_to_be_between",
                column=column,
                min_value=0,
                strict_min=True,
            )
        )
    for column in dict.fromkeys(numeric_columns):
        result.append(
            _expect(
                "expect_column_values_to_be_between",
                column=column,
                min_value=-FINITE,
                max_value=FINITE,
            )
        )
    return result


def _expect(kind: str, **kwargs: Any) -> ExpectationSpec:
    return ExpectationSpec(type=kind, kwargs=kwargs)
