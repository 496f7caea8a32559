"""Declarative specs: feature repositories and models, loaded from YAML and validated.

Two kinds of YAML file are read (any other YAML file is ignored):

- ``kind: features`` declares Feast definitions: entities, parquet sources (with their schema),
  feature views with TTLs and feature services. The platform compiles them into real Feast objects.
- ``kind: model`` declares one model: its features, label, task, split, architecture,
  hyperparameters, compute profile, evaluation and retraining policy.

Specs are discovered from ``assets/**/*.yaml`` and every directory listed in
``ML_PLATFORM_SPEC_PATH`` (``os.pathsep``-separated). Everything here is pure Python + pydantic:
loading specs never imports Feast, torch or MLflow, so the code location loads fast.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_platform.compute import load_profiles
from ml_platform.validation import DataGateSpec

SPEC_PATH_ENV = "ML_PLATFORM_SPEC_PATH"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Dtypes a source column may declare; they map onto Feast types and pandas dtypes.
ColumnType = Literal["int64", "int32", "float64", "float32", "string", "bool", "timestamp"]
Task = Literal["binary_classification", "multiclass_classification", "regression"]
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SpecError(ValueError):
    """A spec file is invalid. The message names the file, the field and the fix."""

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"spec '{self.path}' is invalid:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: str | int | timedelta) -> timedelta:
    """Parse ``'30d'``, ``'12h'``, ``'2w'`` or seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION_PATTERN.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. '30d', '12h', '90m' or '2w'")
    amount, unit = match.groups()
    return timedelta(**{_DURATION_UNITS[unit]: int(amount)})


Duration = Annotated[str, Field(pattern=r"^\s*\d+\s*[smhdw]\s*$")]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class EntitySpec(_Strict):
    name: Name
    join_keys: list[Name] = Field(min_length=1)
    description: str = ""


class SourceSpec(_Strict):
    name: Name
    path: str
    timestamp_field: str = "event_timestamp"
    columns: dict[str, ColumnType] = Field(min_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _timestamp_is_declared(self) -> SourceSpec:
        if self.columns.get(self.timestamp_field) != "timestamp":
            raise ValueError(
                f"timestamp_field '{self.timestamp_field}' must be declared in columns with type "
                "'timestamp'"
            )
        return self


class FeatureViewSpec(_Strict):
    name: Name
    entities: list[Name] = Field(min_length=1)
    source: Name
    ttl: Duration = "30d"
    features: list[str] = Field(min_length=1)
    online: bool = True
    description: str = ""
    # Dimension tables can be small: by default a view only has to hold some rows.
    gates: DataGateSpec = Field(default_factory=lambda: DataGateSpec(min_rows=1))


class FeatureServiceSpec(_Strict):
    name: Name
    feature_views: list[Name] = Field(min_length=1)
    description: str = ""


class GeneratorSpec(_Strict):
    """A function that (re)creates the sources' parquet files, for examples and synthetic data."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = Field(default_factory=dict)


class FeatureRepoSpec(_Strict):
    kind: Literal["features"]
    name: Name
    description: str = ""
    generator: GeneratorSpec | None = None
    entities: list[EntitySpec] = Field(min_length=1)
    sources: list[SourceSpec] = Field(min_length=1)
    feature_views: list[FeatureViewSpec] = Field(default_factory=list)
    feature_services: list[FeatureServiceSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> FeatureRepoSpec:
        problems: list[str] = []
        entities = {entity.name: entity for entity in self.entities}
        sources = {source.name: source for source in self.sources}
        views = {view.name for view in self.feature_views}
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
        for i, view in enumerate(self.feature_views):
            where = f"feature_views[{i}] ('{view.name}')"
            source = sources.get(view.source)
            if source is None:
                problems.append(f"{where}.source: {_unknown('source', view.source, sources)}")
                continue
            for entity_name in view.entities:
                entity = entities.get(entity_name)
                if entity is None:
                    problems.append(
                        f"{where}.entities: {_unknown('entity', entity_name, entities)}"
                    )
                    continue
                for key in entity.join_keys:
                    if key not in source.columns:
                        problems.append(
                            f"{where}: join key '{key}' of entity '{entity_name}' is not a column "
                            f"of source '{source.name}'; add it to the source's columns"
                        )
            for column in gate_columns(view.gates):
                if column not in source.columns:
                    problems.append(
                        f"{where}.gates: {_unknown('column', column, source.columns)} "
                        f"in source '{source.name}'"
                    )
            for feature in view.features:
                if feature not in source.columns:
                    problems.append(
                        f"{where}.features: {_unknown('column', feature, source.columns)} "
                        f"in source '{source.name}'"
                    )
        for i, service in enumerate(self.feature_services):
            for view_name in service.feature_views:
                if view_name not in views:
                    problems.append(
                        f"feature_services[{i}].feature_views: "
                        f"{_unknown('feature view', view_name, views)}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class FeatureSelection(_Strict):
    service: Name | None = None
    views: list[str] = Field(default_factory=list)
    request: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> FeatureSelection:
        if not self.service and not self.views and not self.request:
            raise ValueError(
                "declare at least one of features.service, features.views or features.request"
            )
        return self


class LabelSpec(_Strict):
    source: Name
    column: str
    timestamp_column: str | None = None
    available_at_column: str | None = None
    entity_columns: list[str] | None = None


class SplitSpec(_Strict):
    method: Literal["time"] = "time"
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)


class ArchitectureSpec(_Strict):
    architecture: str = Field(default="mlp", pattern=r"^(mlp|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
    params: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(_Strict):
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=4096, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0)
    early_stopping_patience: int = Field(default=3, ge=1)
    seed: int = 7
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    positive_class_weight: float | Literal["balanced"] | None = None


class ComputeSpec(_Strict):
    profile: str = "cpu-small"

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        profiles = load_profiles()  # built-in plus the deployment's ML_PLATFORM_COMPUTE_PROFILES
        if value not in profiles:
            raise ValueError(_unknown("compute profile", value, profiles))
        return value


Metric = Literal[
    "roc_auc",
    "pr_auc",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "log_loss",
    "calibration_error",
    "rmse",
    "mae",
    "r2",
    "macro_f1",
]
LOWER_IS_BETTER = frozenset({"log_loss", "calibration_error", "rmse", "mae"})
TASK_METRICS: dict[str, frozenset[str]] = {
    "binary_classification": frozenset(
        {
            "roc_auc",
            "pr_auc",
            "precision",
            "recall",
            "f1",
            "accuracy",
            "log_loss",
            "calibration_error",
        }
    ),
    "multiclass_classification": frozenset({"accuracy", "macro_f1", "log_loss"}),
    "regression": frozenset({"rmse", "mae", "r2"}),
}


class EvaluationSpec(_Strict):
    threshold: float = Field(default=0.5, gt=0, lt=1)
    primary_metric: Metric | None = None
    slices: list[str] = Field(default_factory=list)
    min_slice_rows: int = Field(default=30, ge=1)


class SliceGateSpec(_Strict):
    column: str
    min: dict[Metric, float] = Field(default_factory=dict)
    max_disparity: dict[Metric, float] = Field(default_factory=dict)


class EvaluationGateSpec(_Strict):
    """Blocking evaluation gates: a version failing any of them is registered, never promoted."""

    min: dict[Metric, float] = Field(default_factory=dict)
    max: dict[Metric, float] = Field(default_factory=dict)
    # How much worse than the champion, on the same test rows, the challenger may be.
    max_regression: dict[Metric, float] = Field(default_factory=dict)
    slices: list[SliceGateSpec] = Field(default_factory=list)
    max_latency_ms_per_1k_rows: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _directions(self) -> EvaluationGateSpec:
        for metric in self.min:
            if metric in LOWER_IS_BETTER:
                raise ValueError(f"min.{metric}: lower is better for {metric}; use max.{metric}")
        for metric in self.max:
            if metric not in LOWER_IS_BETTER:
                raise ValueError(f"max.{metric}: higher is better for {metric}; use min.{metric}")
        for metric, value in self.max_regression.items():
            if value < 0:
                raise ValueError(f"max_regression.{metric}: must be >= 0, got {value}")
        return self


class GatesSpec(_Strict):
    data: DataGateSpec = Field(default_factory=DataGateSpec)
    evaluation: EvaluationGateSpec = Field(default_factory=EvaluationGateSpec)


class PromotionSpec(_Strict):
    # The challenger must beat the champion on evaluation.primary_metric by at least this much.
    min_improvement: float = Field(default=0.0, ge=0)


class ScoringSpec(_Strict):
    source: Name | None = None
    window: Duration = "7d"


class RetrainingSpec(_Strict):
    schedule: str | None = "0 3 * * 1"
    timezone: str = "UTC"
    # Declarative automation: rebuild the model's graph when its data changes, never past a
    # failed blocking check.
    automation: bool = False

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"'{value}' is not a 5-field cron expression, e.g. '0 3 * * 1'")
        return value


class ModelSpec(_Strict):
    kind: Literal["model"]
    name: Name
    owner: str = Field(min_length=1)
    description: str = ""
    task: Task
    features: FeatureSelection
    label: LabelSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)

    @property
    def primary_metric(self) -> str:
        if self.evaluation.primary_metric:
            return self.evaluation.primary_metric
        return {"binary_classification": "roc_auc", "multiclass_classification": "macro_f1"}.get(
            self.task, "rmse"
        )


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
        return {s.name: (repo, s) for repo in self.feature_repos.values() for s in repo.sources}

    def feature_views(self) -> dict[str, tuple[FeatureRepoSpec, FeatureViewSpec]]:
        return {
            v.name: (repo, v) for repo in self.feature_repos.values() for v in repo.feature_views
        }

    def repo_of_source(self, source: str) -> FeatureRepoSpec:
        return self.sources()[source][0]


def gate_columns(gate: DataGateSpec) -> list[str]:
    """Columns a data gate names: PII columns and the columns of its expectations."""
    return list(
        dict.fromkeys([*gate.pii_columns, *(c for e in gate.expectations for c in e.columns)])
    )


def _unknown(kind: str, value: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known) or 'none'}"
    return f"unknown {kind} '{value}' ({hint})"


def interpolate_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with environment values."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        return match.group(0)  # left as is; paths are checked where they are used

    return _ENV_PATTERN.sub(replace, text)


def _format_validation_error(error: ValidationError, spec_class: type[BaseModel]) -> list[str]:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            key = str(item["loc"][-1])
            allowed = _allowed_keys(spec_class, item["loc"][:-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            problems.append(f"{location}: unknown key '{key}' ({fix})")
        elif item["type"] == "missing":
            problems.append(f"{location}: required field is missing; add it")
        else:
            message = item["msg"].removeprefix("Value error, ")
            given = item.get("input")
            shown = "" if isinstance(given, (dict, list)) or given is None else f", got {given!r}"
            problems.append(f"{location or '(top level)'}: {message}{shown}")
    return problems


def _allowed_keys(model: Any, location: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``location`` inside ``model`` (list indexes are skipped)."""
    for part in location:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model is not None else None
        model = _model_class(info.annotation) if info is not None else None
    return list(model.model_fields) if model is not None else []


def _model_class(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def read_spec_file(path: str | Path) -> FeatureRepoSpec | ModelSpec | None:
    """Parse one YAML file. Returns None when the file declares neither kind.

    Raises:
        SpecError: the file declares a kind but is invalid (message names field and fix).
    """
    path = Path(path)
    try:
        document = yaml.safe_load(interpolate_env(path.read_text()))
    except yaml.YAMLError as exc:
        raise SpecError(path, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or "kind" not in document:
        return None
    kind = document.get("kind")
    spec_class = {"model": ModelSpec, "features": FeatureRepoSpec}.get(str(kind))
    if spec_class is None:
        raise SpecError(path, [f"kind: unknown kind {kind!r}; use 'model' or 'features'"])
    try:
        spec = spec_class.model_validate(document)
    except ValidationError as exc:
        raise SpecError(path, _format_validation_error(exc, spec_class)) from None
    return spec


def discover_spec_files(project_root: Path, extra_paths: str | None = None) -> list[Path]:
    """Find candidate YAML files under ``assets/`` and ``ML_PLATFORM_SPEC_PATH``."""
    roots = [project_root / "assets"]
    extra = os.environ.get(SPEC_PATH_ENV, "") if extra_paths is None else extra_paths
    roots += [Path(p) for p in extra.split(os.pathsep) if p.strip()]
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += sorted(p for p in root.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return list(dict.fromkeys(p.resolve() for p in files))


def resolve_model(spec: ModelSpec, catalog: Catalog) -> ResolvedFeatures:
    """Check a model spec against the feature repositories and resolve its columns.

    Raises:
        ValueError: a reference does not resolve; the message names the field and the fix.
    """
    problems: list[str] = []
    sources = catalog.sources()
    views = catalog.feature_views()
    label_source = sources.get(spec.label.source)
    if label_source is None:
        raise ValueError(f"label.source: {_unknown('source', spec.label.source, sources)}")
    _, source = label_source
    columns = source.columns
    if spec.label.column not in columns:
        problems.append(
            f"label.column: '{spec.label.column}' is not a column of label source "
            f"'{source.name}' ({_unknown('column', spec.label.column, columns)}); "
            "declare it in the source's columns or fix the name"
        )
    timestamp_column = spec.label.timestamp_column or source.timestamp_field
    for field_name, column in (
        ("label.timestamp_column", timestamp_column),
        ("label.available_at_column", spec.label.available_at_column),
    ):
        if column is not None and columns.get(column) != "timestamp":
            problems.append(
                f"{field_name}: '{column}' must be a 'timestamp' column of source '{source.name}'"
            )

    selected: dict[str, list[str]] = {}
    if spec.features.service:
        services = {
            s.name: s for repo in catalog.feature_repos.values() for s in repo.feature_services
        }
        service = services.get(spec.features.service)
        if service is None:
            problems.append(
                f"features.service: {_unknown('feature service', spec.features.service, services)}"
            )
        else:
            for view_name in service.feature_views:
                selected[view_name] = list(views[view_name][1].features)
    for i, ref in enumerate(spec.features.views):
        view_name, _, feature = ref.partition(":")
        if view_name not in views:
            problems.append(f"features.views[{i}]: {_unknown('feature view', view_name, views)}")
            continue
        available = views[view_name][1].features
        if feature and feature not in available:
            problems.append(
                f"features.views[{i}]: {_unknown('feature', feature, available)} "
                f"in feature view '{view_name}'"
            )
            continue
        chosen = [feature] if feature else list(available)
        selected[view_name] = list(dict.fromkeys([*selected.get(view_name, []), *chosen]))
    for i, column in enumerate(spec.features.request):
        if column not in columns:
            problems.append(
                f"features.request[{i}]: {_unknown('column', column, columns)} "
                f"in label source '{source.name}'"
            )
        elif column == spec.label.column:
            problems.append(f"features.request[{i}]: the label '{column}' cannot be a feature")

    join_keys: list[str] = []
    entities = {e.name: e for repo in catalog.feature_repos.values() for e in repo.entities}
    for view_name in selected:
        for entity_name in views[view_name][1].entities:
            join_keys += entities[entity_name].join_keys
    entity_columns = spec.label.entity_columns or list(dict.fromkeys(join_keys))
    for column in entity_columns:
        if column not in columns:
            problems.append(
                f"label.entity_columns: join key '{column}' is not a column of label source "
                f"'{source.name}'; the label rows need it to join features"
            )
    all_inputs = set(spec.features.request) | {n for names in selected.values() for n in names}
    for i, column in enumerate(spec.features.categorical):
        if column not in all_inputs:
            problems.append(
                f"features.categorical[{i}]: '{column}' is not one of the model's features; "
                "list it under features.request or a feature view first"
            )
    for i, column in enumerate(spec.evaluation.slices):
        if column not in columns and column not in all_inputs:
            problems.append(
                f"evaluation.slices[{i}]: {_unknown('column', column, columns)} "
                f"in label source '{source.name}'"
            )
    if spec.scoring.source and spec.scoring.source not in sources:
        problems.append(f"scoring.source: {_unknown('source', spec.scoring.source, sources)}")
    task_metrics = TASK_METRICS[spec.task]
    for column in gate_columns(spec.gates.data):
        if column not in columns and column not in all_inputs:
            problems.append(
                f"gates.data: {_unknown('column', column, columns)} in label source "
                f"'{source.name}' or the model's features"
            )
    gates = spec.gates.evaluation
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
    for where, metric in gate_metrics:
        if metric not in task_metrics:
            problems.append(
                f"{where}.{metric}: does not apply to task '{spec.task}'; use one of "
                f"{', '.join(sorted(task_metrics))}"
            )
    if spec.evaluation.primary_metric and spec.evaluation.primary_metric not in task_metrics:
        problems.append(
            f"evaluation.primary_metric: '{spec.evaluation.primary_metric}' does not apply to "
            f"task '{spec.task}'; use one of {', '.join(sorted(task_metrics))}"
        )
    if problems:
        raise ValueError("\n".join(problems))
    return ResolvedFeatures(
        feature_views=selected,
        request=list(spec.features.request),
        categorical=list(spec.features.categorical),
        entity_columns=entity_columns,
        timestamp_column=timestamp_column,
    )


def load_catalog(files: Iterable[Path]) -> Catalog:
    """Load every spec file; collect errors per file instead of stopping at the first."""
    catalog = Catalog()
    models: list[tuple[Path, ModelSpec]] = []
    for path in files:
        try:
            spec = read_spec_file(path)
        except SpecError as exc:
            catalog.errors.append(exc)
            continue
        if isinstance(spec, FeatureRepoSpec):
            if spec.name in catalog.feature_repos:
                catalog.errors.append(
                    SpecError(
                        path,
                        [
                            f"name: feature repo '{spec.name}' is also declared in "
                            f"'{catalog.paths[spec.name]}'; names must be unique"
                        ],
                    )
                )
                continue
            catalog.feature_repos[spec.name] = spec
            catalog.paths[spec.name] = path
        elif isinstance(spec, ModelSpec):
            models.append((path, spec))
    _check_repos_disjoint(catalog)
    for path, spec in models:
        if spec.name in catalog.models:
            catalog.errors.append(
                SpecError(
                    path,
                    [
                        f"name: model '{spec.name}' is also declared in "
                        f"'{catalog.paths[spec.name]}'; model names must be unique"
                    ],
                )
            )
            continue
        try:
            resolved = resolve_model(spec, catalog)
        except ValueError as exc:
            catalog.errors.append(SpecError(path, str(exc).splitlines()))
            continue
        catalog.models[spec.name] = spec
        catalog.resolved[spec.name] = resolved
        catalog.paths[spec.name] = path
    return catalog


def _check_repos_disjoint(catalog: Catalog) -> None:
    seen: dict[tuple[str, str], str] = {}
    for repo_name, repo in list(catalog.feature_repos.items()):
        names = [("source", s.name) for s in repo.sources]
        names += [("feature view", v.name) for v in repo.feature_views]
        clash = next((n for n in names if n in seen), None)
        if clash:
            catalog.errors.append(
                SpecError(
                    catalog.paths[repo_name],
                    [
                        f"{clash[0]} '{clash[1]}' is also declared in feature repo "
                        f"'{seen[clash]}'; Feast names are global, rename one"
                    ],
                )
            )
            del catalog.feature_repos[repo_name]
            continue
        seen.update({n: repo_name for n in names})


def load_project(project_root: Path | None = None, extra_paths: str | None = None) -> Catalog:
    """Discover and load all specs of a project (default: the current directory)."""
    root = Path.cwd() if project_root is None else project_root
    return load_catalog(discover_spec_files(root, extra_paths))
