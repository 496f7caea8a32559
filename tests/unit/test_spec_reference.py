"""docs/configuration.md: generated from the spec models, up to date, and covering every field."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from ml_platform.spec.features import FeatureRepoSpec
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.reference import REGENERATE, field_references, render
from ml_platform.training.flavors.params import MLPParams, XGBoostParams

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _models_in(annotation: typing.Any) -> list[tuple[type[BaseModel], str]]:
    """The section models an annotation holds, with the path suffix of their items."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _models_in(arg)]
    if origin is list:
        return [(model, "[]" + suffix) for model, suffix in _models_in(args[0])]
    if origin is dict:
        return [(model, ".<column>" + suffix) for model, suffix in _models_in(args[1])]
    return []


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field's YAML path, walked from the pydantic models (not from the generator)."""
    paths = []
    for name, info in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        for section, suffix in _models_in(info.annotation):
            paths += _paths(section, f"{path}{suffix}.")
    return paths


def test_the_committed_reference_is_the_generators_output() -> None:
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    assert committed == render(), (
        f"docs/configuration.md is out of date with the spec models; regenerate it: {REGENERATE}"
    )


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        (ModelSpec, ""),
        (FeatureRepoSpec, ""),
        (MLPParams, "model.params."),
        (XGBoostParams, "model.params."),
    ],
)
def test_every_field_has_a_row_with_type_default_and_example(
    model: type[BaseModel], prefix: str
) -> None:
    text = REFERENCE.read_text()
    paths = _paths(model, prefix)
    missing = [path for path in paths if f"| `{path}` |" not in text]
    assert not missing, f"fields missing from docs/configuration.md: {missing}"
    rows = {row.path: row for row in field_references(model, prefix)}
    assert sorted(rows) == sorted(paths)
    for row in rows.values():
        assert row.type and row.default and row.description and row.example, row


def test_defaults_allowed_values_and_examples_are_the_models() -> None:
    rows = {row.path: row for row in field_references(ModelSpec)}
    assert rows["training.epochs"].default == "`20`"
    assert rows["training.epochs"].allowed == ">= 1; <= 10000"
    assert rows["name"].default == "required"
    assert rows["task"].allowed == (
        "`binary_classification`, `multiclass_classification`, `regression`"
    )
    assert "`psi`" in rows["monitoring.columns.<column>.test"].allowed
    assert rows["scoring.window"].allowed.startswith("duration")
    assert rows["retraining.schedule"].allowed.startswith("cron")
    feature_rows = {row.path: row for row in field_references(FeatureRepoSpec)}
    # A feature view's gate has its own default floor, not the model gate's 1000 rows.
    assert feature_rows["feature_views[].gates.min_rows"].default == "`1`"
    assert rows["gates.data.min_rows"].default == "`1000`"


def test_a_field_without_description_or_example_stops_the_generator() -> None:
    class Undocumented(BaseModel):
        mystery: int | None = None

    with pytest.raises(ValueError, match="mystery: no description"):
        field_references(Undocumented)
