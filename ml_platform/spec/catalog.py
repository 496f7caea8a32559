"""The catalog of loaded specs, and the resolution of each model against the feature repos.

``resolve_model`` checks every reference of a model spec (label source and columns, feature
service and views, request columns, slices, gates, metrics, flavor parameters) and returns the
columns the model uses. Each section has its own check; problems are collected, not raised one by
one, so a spec author sees every mistake of a file at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ml_platform.core.helpers import unknown
from ml_platform.core.tasks import TASK_METRICS
from ml_platform.spec.errors import SpecError
from ml_platform.spec.features import (
    FeatureRepoSpec,
    FeatureViewSpec,
    SourceSpec,
    gate_columns,
)
from ml_platform.spec.model import ModelSpec
from ml_platform.training.flavors.params import validate_params


@dataclass(frozen=True)
class ResolvedFeatures:
    """The columns a model uses once its spec is resolved against the feature repositories."""

    feature_views: dict[str, list[str]]  # feature view -> its features the model uses
    request: list[str]  # label-source columns used directly as features
    categorical: list[str]
    entity_columns: list[str]
    timestamp_column: str

    @property
    def feature_refs(self) -> list[str]:
        """Feast feature references, ``view:feature``."""
        return [f"{view}:{name}" for view, names in self.feature_views.items() for name in names]

    @property
    def model_inputs(self) -> list[str]:
        """Input columns of the model, in a stable order."""
        inputs = [name for names in self.feature_views.values() for name in names]
        return list(dict.fromkeys([*self.request, *inputs]))


@dataclass(frozen=True)
class Catalog:
    """Every valid spec found, plus the files that failed with their errors."""

    feature_repos: dict[str, FeatureRepoSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    resolved: dict[str, ResolvedFeatures] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)  # model or repo name -> its file
    errors: list[SpecError] = field(default_factory=list)

    def sources(self) -> dict[str, tuple[FeatureRepoSpec, SourceSpec]]:
        """Every source of every feature repo, by name, with the repo declaring it."""
        return {s.name: (repo, s) for repo in self.feature_repos.values() for s in repo.sources}

    def feature_views(self) -> dict[str, tuple[FeatureRepoSpec, FeatureViewSpec]]:
        """Every feature view of every feature repo, by name, with the repo declaring it."""
        return {
            v.name: (repo, v) for repo in self.feature_repos.values() for v in repo.feature_views
        }

    def repo_of_source(self, source: str) -> FeatureRepoSpec:
        """The feature repo that declares ``source`` (a KeyError when none does)."""
        return self.sources()[source][0]


def resolve_model(spec: ModelSpec, catalog: Catalog) -> ResolvedFeatures:
    """Check a model spec against the feature repositories and resolve its columns.

    Args:
        spec: a model spec, valid on its own.
        catalog: the feature repositories it may reference.

    Returns:
        The feature views and columns the model uses.

    Raises:
        ValueError: a reference does not resolve or a parameter does not fit the flavor; one
            line per problem, each naming the field and the fix.
    """
    sources = catalog.sources()
    label_source = sources.get(spec.label.source)
    if label_source is None:
        raise ValueError(f"label.source: {unknown('source', spec.label.source, sources)}")
    source = label_source[1]
    timestamp_column = spec.label.timestamp_column or source.timestamp_field
    problems = _label_problems(spec, source, timestamp_column)
    selected, selection_problems = _select_features(spec, catalog, source)
    problems += selection_problems
    entity_columns = spec.label.entity_columns or _join_keys(catalog, selected)
    problems += [
        f"label.entity_columns: join key '{column}' is not a column of label source "
        f"'{source.name}'; the label rows need it to join features"
        for column in entity_columns
        if column not in source.columns
    ]
    all_inputs = set(spec.features.request) | {n for names in selected.values() for n in names}
    problems += _column_problems(spec, catalog, source, all_inputs)
    problems += _metric_problems(spec)
    problems += _model_problems(spec)
    if problems:
        raise ValueError("\n".join(problems))
    return ResolvedFeatures(
        feature_views=selected,
        request=list(spec.features.request),
        categorical=list(spec.features.categorical),
        entity_columns=entity_columns,
        timestamp_column=timestamp_column,
    )


def _label_problems(spec: ModelSpec, source: SourceSpec, timestamp_column: str) -> list[str]:
    """The label column and the label timestamps must be columns of the label source."""
    columns = source.columns
    problems = []
    if spec.label.column not in columns:
        problems.append(
            f"label.column: '{spec.label.column}' is not a column of label source "
            f"'{source.name}' ({unknown('column', spec.label.column, columns)}); "
            "declare it in the source's columns or fix the name"
        )
    for field_name, column in (
        ("label.timestamp_column", timestamp_column),
        ("label.available_at_column", spec.label.available_at_column),
    ):
        if column is not None and columns.get(column) != "timestamp":
            problems.append(
                f"{field_name}: '{column}' must be a 'timestamp' column of source '{source.name}'"
            )
    return problems


def _select_features(
    spec: ModelSpec, catalog: Catalog, source: SourceSpec
) -> tuple[dict[str, list[str]], list[str]]:
    """The features of each view the model selects (service, then views), and the problems."""
    views = catalog.feature_views()
    selected: dict[str, list[str]] = {}
    problems: list[str] = []
    if spec.features.service:
        services = {
            s.name: s for repo in catalog.feature_repos.values() for s in repo.feature_services
        }
        service = services.get(spec.features.service)
        if service is None:
            problems.append(
                f"features.service: {unknown('feature service', spec.features.service, services)}"
            )
        else:
            for view_name in service.feature_views:
                selected[view_name] = list(views[view_name][1].features)
    for i, ref in enumerate(spec.features.views):
        view_name, _, feature = ref.partition(":")
        if view_name not in views:
            problems.append(f"features.views[{i}]: {unknown('feature view', view_name, views)}")
            continue
        available = views[view_name][1].features
        if feature and feature not in available:
            problems.append(
                f"features.views[{i}]: {unknown('feature', feature, available)} "
                f"in feature view '{view_name}'"
            )
            continue
        chosen = [feature] if feature else list(available)
        selected[view_name] = list(dict.fromkeys([*selected.get(view_name, []), *chosen]))
    for i, column in enumerate(spec.features.request):
        if column not in source.columns:
            problems.append(
                f"features.request[{i}]: {unknown('column', column, source.columns)} "
                f"in label source '{source.name}'"
            )
        elif column == spec.label.column:
            problems.append(f"features.request[{i}]: the label '{column}' cannot be a feature")
    return selected, problems


def _join_keys(catalog: Catalog, selected: dict[str, list[str]]) -> list[str]:
    """The join keys of the entities of the selected feature views, each once."""
    views = catalog.feature_views()
    entities = {e.name: e for repo in catalog.feature_repos.values() for e in repo.entities}
    join_keys = [
        key
        for view_name in selected
        for entity_name in views[view_name][1].entities
        for key in entities[entity_name].join_keys
    ]
    return list(dict.fromkeys(join_keys))


def _column_problems(
    spec: ModelSpec, catalog: Catalog, source: SourceSpec, all_inputs: set[str]
) -> list[str]:
    """Categorical columns, slices, the scoring source and data-gate columns must exist."""
    columns = source.columns
    problems = [
        f"features.categorical[{i}]: '{column}' is not one of the model's features; "
        "list it under features.request or a feature view first"
        for i, column in enumerate(spec.features.categorical)
        if column not in all_inputs
    ]
    problems += [
        f"evaluation.slices[{i}]: {unknown('column', column, columns)} "
        f"in label source '{source.name}'"
        for i, column in enumerate(spec.evaluation.slices)
        if column not in columns and column not in all_inputs
    ]
    sources = catalog.sources()
    if spec.scoring.source and spec.scoring.source not in sources:
        problems.append(f"scoring.source: {unknown('source', spec.scoring.source, sources)}")
    problems += [
        f"gates.data: {unknown('column', column, columns)} in label source "
        f"'{source.name}' or the model's features"
        for column in gate_columns(spec.gates.data)
        if column not in columns and column not in all_inputs
    ]
    return problems


def _model_problems(spec: ModelSpec) -> list[str]:
    """The ``model`` section: an architecture only the torch flavor has, params per flavor."""
    model = spec.model
    problems = []
    if model.flavor != "torch" and model.architecture != "mlp":
        problems.append(
            f"model.architecture: '{model.architecture}' applies to the torch flavor only, not "
            f"'{model.flavor}'; remove it or set model.flavor: torch"
        )
    return problems + validate_params(model.flavor, model.architecture, dict(model.params))


def _metric_problems(spec: ModelSpec) -> list[str]:
    """Gate metrics and the primary metric must apply to the task; slice gates need slices."""
    task_metrics = TASK_METRICS[spec.task]
    gates = spec.gates.evaluation
    problems = []
    gate_metrics = [
        (f"gates.evaluation.{part}", metric)
        for part, metrics in (
            ("min", gates.min),
            ("max", gates.max),
            ("max_regression", gates.max_regression),
        )
        for metric in metrics
    ]
    for i, slice_gate in enumerate(gates.slices):
        where = f"gates.evaluation.slices[{i}]"
        if slice_gate.column not in spec.evaluation.slices:
            problems.append(
                f"{where}.column: '{slice_gate.column}' is not in evaluation.slices; add it there"
            )
        gate_metrics += [(f"{where}.min", m) for m in slice_gate.min]
        gate_metrics += [(f"{where}.max_disparity", m) for m in slice_gate.max_disparity]
    known = ", ".join(sorted(task_metrics))
    problems += [
        f"{where}.{metric}: does not apply to task '{spec.task}'; use one of {known}"
        for where, metric in gate_metrics
        if metric not in task_metrics
    ]
    if spec.evaluation.primary_metric and spec.evaluation.primary_metric not in task_metrics:
        problems.append(
            f"evaluation.primary_metric: '{spec.evaluation.primary_metric}' does not apply to "
            f"task '{spec.task}'; use one of {known}"
        )
    return problems
