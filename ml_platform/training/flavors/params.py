"""Parameter schemas of each flavor, checked when a spec is loaded.

Only pydantic and the standard library are imported: the spec loader imports this module while
the code location loads, where torch and xgboost must not be imported. Each problem reads
``model.params.<field>: <what is wrong> (<how to fix it>)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_platform.core.helpers import did_you_mean

# The torch flavor's built-in architecture; anything else is a ``package.module:Class``.
DEFAULT_ARCHITECTURE = "mlp"
FLAVORS: tuple[str, ...] = ("torch", "xgboost")
DEFAULT_FLAVOR = "torch"
# Passed by the torch trainer from the data to a custom module's constructor.
RESERVED_TORCH_PARAMS = ("input_dim", "output_dim")

PositiveInt = Annotated[int, Field(gt=0)]


class _Params(BaseModel):
    # Strict: YAML's `true` is not a depth and the string "0.1" not a learning rate.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class MLPParams(_Params):
    """``model.params`` of the torch flavor with ``architecture: mlp``.

    Attributes:
        hidden_sizes: Widths of the hidden layers, in order.
        dropout: Dropout probability after each hidden layer, in [0, 1).
        activation: "relu" or "gelu".
    """

    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [256, 256])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu"] = "relu"


class XGBoostParams(_Params):
    """``model.params`` of the xgboost flavor; the names are XGBoost's own.

    The objective follows the task, the seed comes from ``training.seed`` and the device from the
    compute profile.

    Attributes:
        n_estimators: Boosting rounds at most (each round is one "epoch" in the history).
        max_depth: Maximum depth of a tree.
        learning_rate: Shrinkage of each tree's contribution (XGBoost's eta).
        subsample: Fraction of the training rows each tree samples.
        colsample_bytree: Fraction of the columns each tree samples.
        min_child_weight: Minimum hessian sum in a leaf.
        reg_lambda: L2 regularization of leaf weights.
        reg_alpha: L1 regularization of leaf weights.
        gamma: Minimum loss reduction to split a leaf.
        max_bin: Histogram bins per feature.
        tree_method: "hist" or "approx" (both run on CPU and GPU).
        early_stopping_rounds: Stop after this many rounds without a validation-loss
            improvement; 0 disables; unset means ``training.early_stopping_patience``.
        scale_pos_weight: Binary only: weight of the positive class; unset means
            ``training.positive_class_weight``.
    """

    n_estimators: int = Field(default=100, ge=1, le=100_000)
    max_depth: int = Field(default=6, ge=1, le=64)
    learning_rate: float = Field(default=0.3, gt=0.0, le=1.0)
    subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(default=1.0, gt=0.0, le=1.0)
    min_child_weight: float = Field(default=1.0, ge=0.0)
    reg_lambda: float = Field(default=1.0, ge=0.0)
    reg_alpha: float = Field(default=0.0, ge=0.0)
    gamma: float = Field(default=0.0, ge=0.0)
    max_bin: int = Field(default=256, ge=2)
    tree_method: Literal["hist", "approx"] = "hist"
    early_stopping_rounds: int | None = Field(default=None, ge=0)
    scale_pos_weight: float | None = Field(default=None, gt=0.0)


def params_schema(flavor: str, architecture: str) -> type[BaseModel] | None:
    """The pydantic model of a flavor's params, or None where any JSON value is accepted.

    Args:
        flavor: One of `FLAVORS`.
        architecture: The spec's ``model.architecture`` (used by the torch flavor only).

    Returns:
        `MLPParams`, `XGBoostParams`, or None for a custom torch module (its constructor decides).

    Raises:
        ValueError: The flavor is unknown.
    """
    if flavor == "xgboost":
        return XGBoostParams
    if flavor == "torch":
        return MLPParams if architecture == DEFAULT_ARCHITECTURE else None
    raise ValueError(f"unknown flavor '{flavor}' ({did_you_mean(flavor, FLAVORS)})")


def validate_params(flavor: str, architecture: str, params: Mapping[str, Any]) -> list[str]:
    """Checks ``model.params`` against the flavor's schema.

    Args:
        flavor: The spec's ``model.flavor``.
        architecture: The spec's ``model.architecture``.
        params: The spec's ``model.params``.

    Returns:
        The problems, each ``model.<field>: <what> (<fix>)``; empty when the params are valid.
    """
    if flavor not in FLAVORS:
        return [f"model.flavor: unknown flavor '{flavor}' ({did_you_mean(flavor, FLAVORS)})"]
    if not isinstance(params, Mapping):
        return [f"model.params: must be a mapping of names to values (got {type(params).__name__})"]
    problems = _serializable(params)
    schema = params_schema(flavor, architecture)
    if schema is None:
        return problems + [
            f"model.params.{name}: set by the trainer from the data (remove it)"
            for name in RESERVED_TORCH_PARAMS
            if name in params
        ]
    try:
        schema.model_validate(dict(params))
    except ValidationError as error:
        problems += _format_errors(error, schema, flavor, architecture)
    return problems


def _format_errors(
    error: ValidationError, schema: type[BaseModel], flavor: str, architecture: str
) -> list[str]:
    """One ``model.params.<field>: <what> (<fix>)`` line per pydantic error."""
    owner = f"flavor '{flavor}'" + (
        f" (architecture '{architecture}')" if flavor == "torch" else ""
    )
    known = list(schema.model_fields)
    problems = []
    for detail in error.errors():
        field = _location(detail["loc"])
        if detail["type"] == "extra_forbidden":
            hint = did_you_mean(str(detail["loc"][0]), known, "known parameters")
            problems.append(f"model.params.{field}: not a parameter of {owner} ({hint})")
        else:
            problems.append(f"model.params.{field}: {detail['msg']} (got {detail['input']!r})")
    return problems


def _location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _serializable(params: Mapping[str, Any]) -> list[str]:
    try:
        json.dumps(dict(params))
    except (TypeError, ValueError) as error:
        return [f"model.params: must be JSON-serializable, they are saved with the model ({error})"]
    return []
