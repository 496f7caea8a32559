"""Feature-repository specs (``kind: features``): entities, sources, feature views, services.

The platform compiles them into real Feast objects (``ml_platform.features.store``). A repo is
checked as a whole when it is read: every reference (a view's source and entities, a service's
views, the columns a view or its gate names) must resolve inside the repo.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ml_platform.core.helpers import unknown
from ml_platform.gates.spec import DataGateSpec
from ml_platform.spec.values import Name, PositiveDuration, StrictSpec

# Dtypes a source column may declare; they map onto Feast types and pandas dtypes.
ColumnType = Literal["int64", "int32", "float64", "float32", "string", "bool", "timestamp"]
# Declared types whose columns must hold finite numbers, whatever dtype the file has.
NUMERIC_TYPES = frozenset({"int64", "int32", "float64", "float32"})


class EntitySpec(StrictSpec):
    """A Feast entity: the join keys that identify one row of a feature view."""

    name: Name
    join_keys: list[Name] = Field(min_length=1)
    description: str = ""


class SourceSpec(StrictSpec):
    """A parquet source and its declared schema; relative paths live under the data root."""

    name: Name
    path: str
    timestamp_field: str = "event_timestamp"
    columns: dict[str, ColumnType] = Field(min_length=1)
    description: str = ""
    # Who answers for the data: an email or a team ("team:credit"); empty: the repo's owner.
    owner: str = ""

    @model_validator(mode="after")
    def _timestamp_is_declared(self) -> SourceSpec:
        if self.columns.get(self.timestamp_field) != "timestamp":
            raise ValueError(
                f"timestamp_field '{self.timestamp_field}' must be declared in columns with type "
                "'timestamp'"
            )
        return self


class FeatureViewSpec(StrictSpec):
    """A Feast feature view: features of a source, keyed by entities, valid for ``ttl``."""

    name: Name
    entities: list[Name] = Field(min_length=1)
    source: Name
    ttl: PositiveDuration = "30d"
    features: list[str] = Field(min_length=1)
    online: bool = True
    description: str = ""
    # Who answers for the view: an email or a team; empty: the repo's owner.
    owner: str = ""
    # Dimension tables can be small: by default a view only has to hold some rows.
    gates: DataGateSpec = Field(default_factory=lambda: DataGateSpec(min_rows=1))


class FeatureServiceSpec(StrictSpec):
    """A named set of feature views that models can select as a whole."""

    name: Name
    feature_views: list[Name] = Field(min_length=1)
    description: str = ""


class GeneratorSpec(StrictSpec):
    """A function that (re)creates the sources' parquet files, for examples and synthetic data."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = Field(default_factory=dict)


class FeatureRepoSpec(StrictSpec):
    """A ``kind: features`` file: one Feast repository, checked for dangling references."""

    kind: Literal["features"]
    name: Name
    description: str = ""
    # Who answers for these sources and views: an email or a team ("team:data-platform").
    owner: str = ""
    generator: GeneratorSpec | None = None
    entities: list[EntitySpec] = Field(min_length=1)
    sources: list[SourceSpec] = Field(min_length=1)
    feature_views: list[FeatureViewSpec] = Field(default_factory=list)
    feature_services: list[FeatureServiceSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> FeatureRepoSpec:
        problems = self._duplicate_names()
        for i, view in enumerate(self.feature_views):
            problems += self._view_problems(i, view)
        views = {view.name for view in self.feature_views}
        for i, service in enumerate(self.feature_services):
            for view_name in service.feature_views:
                if view_name not in views:
                    problems.append(
                        f"feature_services[{i}].feature_views: "
                        f"{unknown('feature view', view_name, views)}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _duplicate_names(self) -> list[str]:
        problems = []
        for kind, names in (
            ("entity", [e.name for e in self.entities]),
            ("source", [s.name for s in self.sources]),
            ("feature view", [v.name for v in self.feature_views]),
            ("feature service", [s.name for s in self.feature_services]),
        ):
            for duplicate in sorted({n for n in names if names.count(n) > 1}):
                problems.append(
                    f"{kind} name '{duplicate}' is declared twice; names must be unique"
                )
        return problems

    def _view_problems(self, i: int, view: FeatureViewSpec) -> list[str]:
        where = f"feature_views[{i}] ('{view.name}')"
        entities = {entity.name: entity for entity in self.entities}
        sources = {source.name: source for source in self.sources}
        source = sources.get(view.source)
        if source is None:
            return [f"{where}.source: {unknown('source', view.source, sources)}"]
        problems = []
        for entity_name in view.entities:
            entity = entities.get(entity_name)
            if entity is None:
                problems.append(f"{where}.entities: {unknown('entity', entity_name, entities)}")
                continue
            for key in entity.join_keys:
                if key not in source.columns:
                    problems.append(
                        f"{where}: join key '{key}' of entity '{entity_name}' is not a column "
                        f"of source '{source.name}'; add it to the source's columns"
                    )
        for field_name, columns in (
            ("gates", gate_columns(view.gates)),
            ("features", view.features),
        ):
            for column in columns:
                if column not in source.columns:
                    problems.append(
                        f"{where}.{field_name}: {unknown('column', column, source.columns)} "
                        f"in source '{source.name}'"
                    )
        return problems


def gate_columns(gate: DataGateSpec) -> list[str]:
    """Columns a data gate names: PII columns and the columns of its expectations.

    Args:
        gate: a feature view's or a model's data gate.

    Returns:
        The column names, each once, in the order the gate names them.
    """
    return list(
        dict.fromkeys([*gate.pii_columns, *(c for e in gate.expectations for c in e.columns)])
    )
