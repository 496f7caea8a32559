"""``ml-platform validate`` and ``ml-platform init``: check specs, scaffold new ones.

``init NAME --from-parquet FILE ...`` also writes the ``kind: features`` file from the files'
parquet schemas (no row is read): every column with its type, each file's timestamp field, the
entities (id-like columns the label file shares with the others), the label (a boolean or 0/1
column, preferring names like ``label``, ``target`` or ``is_*``), one feature view per other file,
and a model spec that uses them. Both files are then checked by the loader ``validate`` uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.cli.common import catalog_with
from ml_platform.cli.output import echo
from ml_platform.spec.loading import NAME_PATTERN

if TYPE_CHECKING:
    import pyarrow as pa

INIT_TEMPLATE = """\
# Model spec for '{name}'. Validate with: ml-platform validate {path}
kind: model
name: {name}
owner: {owner}
description: What this model predicts and who uses it.
task: binary_classification          # or multiclass_classification, regression

features:
  service: {service}                 # a Feast feature service, or list views below
  # views: [some_view, other_view:one_feature]
  # request: [amount]                # columns of the label source used directly
  # categorical: []

label:
  source: {source}                   # a source declared in a 'kind: features' file
  column: {label}
  # available_at_column: label_timestamp

# Everything below is optional; these are the defaults.
split: {{validation_fraction: 0.15, test_fraction: 0.15}}
model: {{architecture: mlp, params: {{hidden_sizes: [256, 256], dropout: 0.0}}}}
training: {{epochs: 20, batch_size: 4096, learning_rate: 0.001, early_stopping_patience: 3}}
compute: {{profile: cpu-small}}
evaluation: {{threshold: 0.5, slices: []}}
retraining: {{schedule: "0 3 * * 1"}}
"""

LABEL_NAMES = re.compile(r"^(label|target|y|outcome|class)$|^is_|_(label|target|flag)$")
ID_NAMES = re.compile(r"^id$|_(id|key)$")
NUMERIC = ("int64", "int32", "float64", "float32", "bool")


class ScaffoldError(Exception):
    """The parquet files cannot be turned into specs without a choice from the user."""


def validate(paths: list[Path]) -> int:
    """Check spec files (with the project's feature repos); show precise errors.

    Args:
        paths: spec files, or directories searched for them.

    Returns:
        The exit status: 0 when every spec is valid, 1 on errors or no spec, 2 for a missing path.
    """
    missing = [p for p in paths if not p.exists()]
    if missing:
        echo(f"no such file: {', '.join(map(str, missing))}", err=True)
        return 2
    catalog = catalog_with(paths)
    wanted = {p.resolve() for p in paths}

    def selected(path: Path) -> bool:
        return any(path == w or w in path.parents for w in wanted)

    errors = [e for e in catalog.errors if selected(Path(e.path))]
    for error in errors:
        echo(str(error), err=True)
    valid = [n for n, p in catalog.paths.items() if selected(p)]
    for name in valid:
        kind = "model" if name in catalog.models else "feature repo"
        echo(f"ok: {kind} '{name}' ({catalog.paths[name]})")
    if not errors and not valid:
        echo("no spec found (a spec is a YAML file with 'kind: model' or 'kind: features')")
        return 1
    return 1 if errors else 0


def init(
    name: str,
    directory: Path,
    owner: str,
    parquet_files: list[Path] | None = None,
    choices: dict[str, list[str]] | None = None,
) -> int:
    """Scaffold ``<directory>/<name>/model.yaml`` (and ``features.yaml`` from parquet files).

    Args:
        name: the new model's name.
        directory: where the model's folder is created (``assets`` is loaded by the project).
        owner: the model's owner (an e-mail or team).
        parquet_files: the data: one source per file; without them, the model spec uses the
            project's first feature service and source.
        choices: what the user chose over the inference: ``timestamp`` (column names),
            ``entity`` (join key columns), ``label`` (one column).

    Returns:
        The exit status: 0 when written (and valid), 1 when a file exists or the result does not
        validate, 2 for a bad name or data that needs a choice.
    """
    if not re.match(NAME_PATTERN, name):
        echo(f"'{name}' is not a valid model name: use letters, digits and _", err=True)
        return 2
    folder = directory / name
    targets = [folder / "model.yaml"] + ([folder / "features.yaml"] if parquet_files else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        echo(f"{', '.join(existing)} exists; not overwriting it", err=True)
        return 1
    if not parquet_files:
        return _init_from_project(name, targets[0], owner)
    try:
        scaffold = scaffold_from_parquet(name, owner, parquet_files, choices or {})
    except ScaffoldError as error:
        echo(str(error), err=True)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    targets[1].write_text(scaffold.features_yaml())
    targets[0].write_text(scaffold.model_yaml(targets[0]))
    for note in scaffold.notes:
        echo(f"  {note}")
    echo(f"wrote {targets[1]} and {targets[0]}; checking them:")
    status = validate([folder])
    if status:
        echo(f"the scaffold does not validate; edit {folder} to fix it", err=True)
        return 1
    echo(f"next: review them, then train the model: ml-platform run {name}")
    return 0


def _init_from_project(name: str, target: Path, owner: str) -> int:
    catalog = catalog_with([])
    services = [s.name for r in catalog.feature_repos.values() for s in r.feature_services]
    sources = [s.name for r in catalog.feature_repos.values() for s in r.sources]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        INIT_TEMPLATE.format(
            name=name,
            path=target,
            owner=owner,
            service=services[0] if services else "my_feature_service",
            source=sources[0] if sources else "my_label_source",
            label="label",
        )
    )
    echo(f"wrote {target}; edit it, then run: ml-platform validate {target}")
    return 0


@dataclass
class Column:
    """One parquet column as the spec declares it.

    Attributes:
        name: the column name.
        type: the spec's column type (``int64``, ``string``, ``timestamp``...).
        minimum: the smallest value in the file's statistics, if recorded.
        maximum: the largest value in the file's statistics, if recorded.
    """

    name: str
    type: str
    minimum: Any = None
    maximum: Any = None

    @property
    def id_like(self) -> bool:
        """Named like an identifier (``id``, ``*_id``, ``*_key``) and of an identifier type."""
        return bool(ID_NAMES.search(self.name)) and self.type in ("int64", "int32", "string")

    @property
    def binary(self) -> bool:
        """A boolean, or an integer whose recorded values are all 0 or 1."""
        if self.type == "bool":
            return True
        if self.type not in ("int64", "int32") or self.minimum is None or self.maximum is None:
            return False
        return self.minimum >= 0 and self.maximum <= 1


@dataclass
class Source:
    """One parquet file as a source of the features file.

    Attributes:
        name: the source name (the file's stem).
        path: the file's absolute path.
        columns: its columns with spec types, in file order.
        skipped: columns whose type the spec cannot declare, with the type.
        timestamp: the event-time column.
    """

    name: str
    path: Path
    columns: dict[str, Column]
    skipped: dict[str, str] = field(default_factory=dict)
    timestamp: str = ""


@dataclass
class Scaffold:
    """The specs inferred from parquet files, and what the user should know about them.

    Attributes:
        name: the model name.
        owner: the model's owner.
        sources: one per file.
        entities: the join key columns that identify a row of a feature view.
        label_source: the source holding the label.
        label: the label column.
        task: the task the label implies.
        views: feature view name -> (source, features), one per other source.
        request: columns of the label source used as features directly.
        ttl: the feature views' TTL, in days: the data's whole time span.
        notes: what was inferred, shown after writing.
    """

    name: str
    owner: str
    sources: list[Source]
    entities: list[str]
    label_source: Source
    label: str
    task: str
    views: dict[str, tuple[Source, list[str]]]
    request: list[str]
    ttl: int
    notes: list[str]

    @property
    def repo_name(self) -> str:
        """The features file's name."""
        return f"{self.name}_features"

    def features_yaml(self) -> str:
        """The ``kind: features`` file."""
        import yaml

        entities = [{"name": _entity_name(key), "join_keys": [key]} for key in self.entities]
        spec: dict[str, Any] = {
            "kind": "features",
            "name": self.repo_name,
            "description": f"The data of model '{self.name}' (scaffolded from parquet files).",
            "entities": entities,
            "sources": [
                {
                    "name": source.name,
                    "path": str(source.path),
                    "timestamp_field": source.timestamp,
                    "columns": {c.name: c.type for c in source.columns.values()},
                }
                for source in self.sources
            ],
            "feature_views": [
                {
                    "name": view,
                    "entities": [_entity_name(k) for k in self.entities if k in source.columns],
                    "source": source.name,
                    "ttl": f"{self.ttl}d",
                    "features": features,
                }
                for view, (source, features) in self.views.items()
            ],
        }
        header = (
            "# Scaffolded by `ml-platform init --from-parquet`; review it, then: "
            "ml-platform validate <this file>\n"
            "# timestamp_field: the event time of each row (features are joined as of a label's "
            "time).\n"
            "# ttl: how old a feature row may be at a label's time (proposed: the data's whole "
            "span).\n"
        )
        return header + yaml.safe_dump(spec, sort_keys=False)

    def model_yaml(self, path: Path) -> str:
        """The ``kind: model`` file (``path`` is where it is written, for its header)."""
        import yaml

        features: dict[str, Any] = {}
        if self.views:
            features["views"] = list(self.views)
        if self.request:
            features["request"] = self.request
        spec: dict[str, Any] = {
            "kind": "model",
            "name": self.name,
            "owner": self.owner,
            "description": "What this model predicts and who uses it.",
            "task": self.task,
            "features": features,
            "label": {"source": self.label_source.name, "column": self.label},
        }
        header = (
            f"# Model spec for '{self.name}'. Validate with: ml-platform validate {path}\n"
            "# Train it (visible in the Dagster UI): ml-platform run "
            f"{self.name}\n"
        )
        return header + yaml.safe_dump(spec, sort_keys=False)


def scaffold_from_parquet(
    name: str, owner: str, files: list[Path], choices: dict[str, list[str]]
) -> Scaffold:
    """Infer a features file and a model spec from parquet schemas and statistics.

    Args:
        name: the model name.
        owner: the model's owner.
        files: the parquet files, one source each.
        choices: ``timestamp``, ``entity`` and ``label`` columns the user chose.

    Returns:
        The inferred specs.

    Raises:
        ScaffoldError: a file is missing or unreadable, a choice is needed (several timestamp
            columns, no label candidate) or a chosen column does not exist.
    """
    sources = [_read_source(path) for path in files]
    names = [s.name for s in sources]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        raise ScaffoldError(f"two files make source '{duplicate}'; rename one of them")
    notes: list[str] = []
    for source in sources:
        source.timestamp = _timestamp(source, choices.get("timestamp", []))
        for column, kind in source.skipped.items():
            notes.append(f"skipped {source.name}.{column}: type {kind} has no spec column type")
    label_source, label = _label(sources, choices.get("label", []), notes)
    column = label_source.columns[label]
    task = (
        "binary_classification"
        if column.binary
        else "regression"
        if column.type in ("float64", "float32")
        else "multiclass_classification"
    )
    entities = _entities(sources, label_source, choices.get("entity", []))
    notes.append(f"entities (join keys): {', '.join(entities) or 'none'}")
    skip = {label, *entities}
    views: dict[str, tuple[Source, list[str]]] = {}
    for source in sources:
        if source is label_source or not any(k in source.columns for k in entities):
            continue
        features = _feature_columns(source, skip)
        if features:
            views[source.name] = (source, features)
    request = _feature_columns(label_source, skip)
    if not views and not request:
        raise ScaffoldError(
            f"no feature found: no other file shares an id-like column with '{label_source.name}' "
            "and it has no numeric column besides the label; name the join key with --entity"
        )
    notes.append(f"feature views: {', '.join(views) or 'none'}; request: {request or 'none'}")
    return Scaffold(
        name=name,
        owner=owner,
        sources=sources,
        entities=entities,
        label_source=label_source,
        label=label,
        task=task,
        views=views,
        request=request,
        ttl=_span_days(sources),
        notes=notes,
    )


def _read_source(path: Path) -> Source:
    """The file's columns, typed from its schema, with min/max from its statistics."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ScaffoldError(f"{path}: no such parquet file")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise ScaffoldError(f"{path}: not a readable parquet file ({error})") from None
    schema = parquet.schema_arrow
    name = re.sub(r"\W", "_", path.stem).strip("_").lower() or "source"
    if not re.match(r"^[a-z_]", name):
        name = f"source_{name}"
    source = Source(name=name, path=path.resolve(), columns={})
    for index, arrow_field in enumerate(schema):
        kind = _column_type(arrow_field.type)
        if kind is None:
            source.skipped[arrow_field.name] = str(arrow_field.type)
            continue
        minimum, maximum = _statistics(parquet, index)
        source.columns[arrow_field.name] = Column(arrow_field.name, kind, minimum, maximum)
    return source


def _column_type(arrow_type: pa.DataType) -> str | None:
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type  # type: ignore[attr-defined]
    if types.is_boolean(arrow_type):
        return "bool"
    if types.is_integer(arrow_type):
        small = arrow_type.bit_width < 32 or arrow_type == pa.int32()
        return "int32" if small else "int64"
    if types.is_floating(arrow_type):
        return "float64" if arrow_type == pa.float64() else "float32"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return "string"
    if types.is_timestamp(arrow_type) or types.is_date(arrow_type):
        return "timestamp"
    return None


def _statistics(parquet: Any, index: int) -> tuple[Any, Any]:
    """A column's min and max over the row groups, from the file's footer (None if absent)."""
    metadata = parquet.metadata
    lows, highs = [], []
    leaf = _leaf_index(parquet, index)
    if leaf is None:
        return None, None
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(leaf).statistics
        if statistics is None or not statistics.has_min_max:
            return None, None
        lows.append(statistics.min)
        highs.append(statistics.max)
    try:
        return (min(lows), max(highs)) if lows else (None, None)
    except TypeError:
        return None, None


def _leaf_index(parquet: Any, index: int) -> int | None:
    """The parquet leaf column of top-level field ``index`` (flat schemas: the same index)."""
    name = parquet.schema_arrow.names[index]
    for leaf in range(parquet.metadata.num_columns):
        if parquet.schema.column(leaf).path == name:
            return leaf
    return None


def _timestamp(source: Source, chosen: list[str]) -> str:
    candidates = [c.name for c in source.columns.values() if c.type == "timestamp"]
    picked = [c for c in chosen if c in candidates]
    if len(picked) == 1:
        return picked[0]
    if not candidates:
        raise ScaffoldError(
            f"{source.path}: no timestamp column; every source needs the event time of its rows "
            "(a timestamp or date column)"
        )
    if len(candidates) == 1 and not picked:
        return candidates[0]
    raise ScaffoldError(
        f"{source.path}: several timestamp columns ({', '.join(candidates)}); choose the event "
        f"time of its rows with --timestamp COLUMN (e.g. --timestamp {candidates[0]})"
    )


def _label(sources: list[Source], chosen: list[str], notes: list[str]) -> tuple[Source, str]:
    if chosen:
        (label,) = chosen[-1:]
        holders = [s for s in sources if label in s.columns]
        if not holders:
            raise ScaffoldError(f"--label {label}: no file has this column")
        return holders[0], label
    ranked = []
    for order, source in enumerate(sources):
        for column in source.columns.values():
            if column.id_like or not column.binary:
                continue
            named = bool(LABEL_NAMES.search(column.name.lower()))
            ranked.append((not named, order, column.name, source))
    if not ranked:
        raise ScaffoldError(
            "no label found (a boolean or 0/1 column, e.g. 'label', 'target' or 'is_fraud'); "
            "name it with --label COLUMN"
        )
    ranked.sort(key=lambda item: item[:3])
    _, _, label, source = ranked[0]
    others = [f"{s.name}.{c}" for _, _, c, s in ranked[1:]]
    notes.append(
        f"label: {source.name}.{label}"
        + (f" (other candidates: {', '.join(others)}; choose with --label)" if others else "")
    )
    return source, label


def _entities(sources: list[Source], label_source: Source, chosen: list[str]) -> list[str]:
    if chosen:
        unknown = [c for c in chosen if not any(c in s.columns for s in sources)]
        if unknown:
            raise ScaffoldError(f"--entity {unknown[0]}: no file has this column")
        return chosen
    others = [s for s in sources if s is not label_source]
    shared = [
        column.name
        for column in label_source.columns.values()
        if column.id_like and any(column.name in s.columns for s in others)
    ]
    if shared:
        return shared
    own = [c.name for c in label_source.columns.values() if c.id_like]
    if own:
        return own[:1]
    raise ScaffoldError(
        f"no id-like column (id, *_id, *_key) in {label_source.path}; name the column that "
        "identifies a row's entity with --entity COLUMN"
    )


def _feature_columns(source: Source, skip: set[str]) -> list[str]:
    return [
        column.name
        for column in source.columns.values()
        if column.type in NUMERIC
        and not column.id_like
        and column.name not in skip
        and column.name != source.timestamp
    ]


def _entity_name(join_key: str) -> str:
    return re.sub(r"_(id|key)$", "", join_key) or join_key


def _span_days(sources: list[Source]) -> int:
    """Days from the earliest to the latest event time of all files (at least 1; 30 if unknown)."""
    stamps = [
        value
        for source in sources
        for value in (
            source.columns[source.timestamp].minimum,
            source.columns[source.timestamp].maximum,
        )
        if isinstance(value, datetime)
    ]
    if not stamps:
        return 30
    try:
        return max(1, (max(stamps) - min(stamps)).days + 1)
    except TypeError:  # naive and aware datetimes
        return 30
