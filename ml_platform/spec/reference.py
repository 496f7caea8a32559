"""The configuration reference, ``docs/configuration.md``, generated from the spec models.

Every field of a model spec (``kind: model``), of a features file (``kind: features``) and of
each flavor's ``model.params`` is walked from its pydantic model: its type, default, allowed
values, what it means (the model's ``Attributes:`` docstring or the comment above the field) and
an example. Regenerate the file after changing a spec model::

    .venv/bin/python -m ml_platform.spec.reference > docs/configuration.md

``tests/unit/test_spec_reference.py`` fails when the committed file differs from this output.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ml_platform.compute.profiles import COMPUTE_PROFILES
from ml_platform.gates.spec import SUPPORTED_EXPECTATIONS
from ml_platform.spec import values
from ml_platform.spec.features import FeatureRepoSpec
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.reference_text import DESCRIPTIONS, EXAMPLES
from ml_platform.training.flavors.params import MLPParams, XGBoostParams

REGENERATE = ".venv/bin/python -m ml_platform.spec.reference > docs/configuration.md"


_DURATION_HINT = "duration: an integer and s, m, h, d or w ('30d', '12h')"
_VALIDATORS = {
    values._duration: _DURATION_HINT,
    values._positive_duration: _DURATION_HINT + ", longer than 0",
    values._cron: "cron: 5 fields, minute hour day-of-month month day-of-week",
    values._timezone: "IANA timezone ('UTC', 'Europe/Paris')",
}


@dataclass(frozen=True)
class FieldReference:
    """One row of the reference: a field of a spec, in YAML path notation.

    Attributes:
        path: where the field is, e.g. ``training.epochs`` or ``sources[].columns``.
        type: the field's type in words.
        default: the default, as YAML, or ``required``.
        allowed: the values or range the field accepts.
        description: what the field means.
        example: an example value, as inline YAML.
        section: whether the field holds a section of its own (documented field by field).
    """

    path: str
    type: str
    default: str
    allowed: str
    description: str
    example: str
    section: bool = False


def _yaml(value: Any) -> str:
    """A value as inline YAML (JSON flow style, which YAML reads)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The annotation without ``Annotated`` and ``None``, and the metadata it carried."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation, metadata
            annotation = options[0]
        else:
            return annotation, metadata


def _constraints(metadata: list[Any]) -> list[str]:
    """Bounds, lengths, patterns and value checks of a field, in words."""
    words = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            words += _constraints(list(item.metadata))
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            words.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.MinLen):
            words.append("not empty" if item.min_length == 1 else f"{item.min_length} or more")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length} characters")
        elif getattr(item, "pattern", None):
            pattern = item.pattern
            words.append(
                "letters, digits and _, not starting with a digit"
                if pattern == values.NAME_PATTERN
                else f"matches `{pattern}`"
            )
        elif getattr(item, "func", None) in _VALIDATORS:
            words.append(_VALIDATORS[item.func])
    return words


def _type_words(annotation: Any) -> tuple[str, list[str]]:
    """The type in words, and the allowed values or bounds it implies."""
    annotation, metadata = _unwrap(annotation)
    allowed = _constraints(metadata)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "choice", [", ".join(f"`{a}`" for a in args), *allowed]
    if origin in (typing.Union, types.UnionType):
        parts = [_type_words(a) for a in args if a is not type(None)]
        kinds = " or ".join(dict.fromkeys(kind for kind, _ in parts))
        return kinds, [" or ".join(w for _, words in parts for w in words), *allowed]
    if origin is list:
        item, item_allowed = _type_words(args[0])
        return f"list of {_plural(item)}", [f"each {w}" for w in item_allowed] + allowed
    if origin is tuple:
        items = [_type_words(a)[0] for a in args]
        return f"[{', '.join(items)}]", allowed
    if origin is dict:
        key, key_allowed = _type_words(args[0])
        item, item_allowed = _type_words(args[1])
        keys = [f"keys: {w}" for w in key_allowed]
        return f"mapping of {key} to {item}", keys + [f"values {w}" for w in item_allowed] + allowed
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section", allowed
    names = {int: "integer", float: "number", str: "string", bool: "true or false"}
    if annotation is Any:
        return "any YAML value", allowed
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))), allowed


def _plural(word: str) -> str:
    if word == "section":
        return "sections"
    if word == "choice":
        return "choices"
    return {"integer": "integers", "number": "numbers", "string": "strings"}.get(word, word)


def _nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The section model a field holds, and the path suffix of its items (``''``, ``[]``)."""
    annotation, _ = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, ""
    if origin is list and inspect.isclass(args[0]) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and inspect.isclass(args[1]) and issubclass(args[1], BaseModel):
        return args[1], ".<column>"
    return None


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """What each field means: its ``Attributes:`` docstring entry, or the comments above it."""
    described: dict[str, str] = {}
    doc = inspect.getdoc(model) or ""
    if "Attributes:" in doc:
        entries = doc.split("Attributes:", 1)[1]
        for match in re.finditer(r"^\s{4}(\w+): (.+?)(?=^\s{4}\w+: |\Z)", entries, re.M | re.S):
            described[match.group(1)] = " ".join(match.group(2).split())
    comments: list[str] = []
    for line in inspect.getsource(model).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("# "))
            continue
        field = re.match(r"^\s{4}(\w+)\s*:", line)
        if field and comments and field.group(1) in model.model_fields:
            described.setdefault(field.group(1), " ".join(comments))
        comments = []
    return described


def _sentence(text: str) -> str:
    text = text.strip().replace("``", "`")
    if text and text[-1] not in ".)":
        text += "."
    return text[:1].upper() + text[1:]


def _default(info: FieldInfo, section: BaseModel | None, name: str) -> tuple[str, Any]:
    """The default in words (``required``, ``none``) and as a value (``PydanticUndefined``).

    Inside a section whose default differs from its model's (a feature view's gate), the
    section's value is the default.
    """
    if section is not None:
        value = getattr(section, name)
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is PydanticUndefined:
        return "required", value
    if value is None:
        return "none", value
    if isinstance(value, BaseModel):
        changed = {
            name: getattr(value, name)
            for name, field in type(value).model_fields.items()
            if getattr(value, name) != field.get_default(call_default_factory=True)
        }
        return ("section defaults" + (f", {_yaml(changed)}" if changed else "")), value
    return f"`{_yaml(value)}`", value


def _lookup(table: dict[str, Any], path: str) -> Any:
    """The entry of ``path`` or of its longest suffix (``gates.data.min_rows``, ``min_rows``)."""
    parts = path.split(".")
    for start in range(len(parts)):
        key = ".".join(parts[start:])
        if key in table:
            return table[key]
    return None


def _example(path: str, annotation: Any, value: Any) -> Any:
    """An example value: one given in EXAMPLES, else the default, else the first allowed."""
    bare, _ = _unwrap(annotation)
    if typing.get_origin(bare) is typing.Literal and len(typing.get_args(bare)) == 1:
        return typing.get_args(bare)[0]
    given = _lookup(EXAMPLES, path)
    if given is not None:
        return given
    if value is not PydanticUndefined and value is not None and value != [] and value != {}:
        return value.model_dump() if isinstance(value, BaseModel) else value
    annotation, _ = _unwrap(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)[0]
    if annotation is bool:
        return True
    raise ValueError(f"{path}: no example; add one to EXAMPLES in ml_platform/spec/reference.py")


def field_references(
    model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
) -> list[FieldReference]:
    """Every field of ``model`` and of the sections it holds, depth first, in declaration order.

    Args:
        model: a spec model (``ModelSpec``, ``FeatureRepoSpec``, a flavor's params).
        prefix: the YAML path of ``model`` in its file, e.g. ``"gates.data."``.
        defaults: the section's default where it differs from ``model()``'s, else None.

    Returns:
        One reference per field; a section's own row comes before its fields'.

    Raises:
        ValueError: a field has no description or no example (add them to ``DESCRIPTIONS`` or a
            comment above the field, and ``EXAMPLES``).
    """
    comments = _field_comments(model)
    rows: list[FieldReference] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if info.metadata:
            annotation = typing.Annotated[annotation, *info.metadata]
        kind, allowed = _type_words(annotation)
        default, value = _default(info, defaults, name)
        nested = _nested_model(annotation)
        summary = (inspect.getdoc(nested[0]) or "").split("\n\n")[0] if nested else ""
        description = (
            DESCRIPTIONS.get(path)
            or comments.get(name)
            or _lookup(DESCRIPTIONS, path)
            or " ".join(summary.split())
        )
        if not description:
            raise ValueError(f"{path}: no description; add a comment above the field")
        children: list[FieldReference] = []
        if nested is not None:
            section, suffix = nested
            inner = value if isinstance(value, BaseModel) and suffix == "" else None
            children = field_references(section, f"{path}{suffix}.", inner)
        if nested is not None and _lookup(EXAMPLES, path) is None:
            first = children[0]  # a section's example: its first field's
            item = {first.path.rsplit(".", 1)[1]: json.loads(first.example)}
            example = [item] if nested[1] == "[]" else item
        else:
            example = _example(path, annotation, value)
        rows.append(
            FieldReference(
                path=path,
                type=kind,
                default=default,
                allowed="; ".join(w for w in allowed if w),
                description=_sentence(description),
                example=_yaml(example),
                section=nested is not None,
            )
        )
        rows += children
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[FieldReference]) -> list[str]:
    lines = [
        "| field | type | default | allowed | description | example |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (
            f"`{row.path}`",
            row.type,
            row.default,
            row.allowed,
            row.description,
            f"`{row.example}`",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _grouped(title: str, model: type[BaseModel], intro: str) -> list[str]:
    """A file's fields: the top-level fields, then one table per section."""
    lines = [f"## {title}", "", intro, ""]
    rows = field_references(model)
    top = [r for r in rows if "." not in r.path and "[" not in r.path]
    lines += [*_table(top), ""]
    for section in (r for r in top if r.section):
        nested = [r for r in rows if r.path.startswith((f"{section.path}.", f"{section.path}["))]
        field = model.model_fields[section.path]
        doc = (inspect.getdoc(_nested_model(field.annotation)[0]) or "").split("\n\n")[0]  # type: ignore[index]
        lines += [f"### `{section.path}`", "", _sentence(" ".join(doc.split())), ""]
        lines += [*_table(nested), ""]
    return lines


def _flavor_params() -> list[str]:
    lines = [
        "## Model parameters",
        "",
        "`model.params` is checked against the flavor's schema when the spec loads; an unknown "
        "name fails with the closest known one. A custom torch module (`model.architecture: "
        "package.module:Class`) takes any JSON-serializable parameters, passed to its "
        "constructor with `input_dim` and `output_dim` (which the trainer sets).",
        "",
    ]
    for title, schema in (
        ("torch, `architecture: mlp` (the default)", MLPParams),
        ("xgboost (`model.flavor: xgboost`)", XGBoostParams),
    ):
        lines += [f"### {title}", ""]
        lines += [*_table(field_references(schema, "model.params.")), ""]
    return lines


def _expectations() -> list[str]:
    lines = [
        "## Expectations",
        "",
        "`gates.data.expectations[].type` (and a feature view's `gates.expectations[].type`) "
        "names one of these Great Expectations 1.x expectations; `kwargs` are GE's own "
        "arguments. Every expectation also takes `meta`, `notes` and `description`.",
        "",
        "| type | required kwargs | optional kwargs |",
        "|---|---|---|",
    ]
    for name, signature in sorted(SUPPORTED_EXPECTATIONS.items()):
        required = ", ".join(f"`{k}`" for k in signature.required) or "none"
        optional = ", ".join(f"`{k}`" for k in signature.optional) or "none"
        lines.append(f"| `{name}` | {required} | {optional} |")
    return [*lines, ""]


def _profiles() -> list[str]:
    lines = [
        "## Compute profiles",
        "",
        "`compute.profile` names one of these built-in profiles, or one a deployment adds or "
        "overrides in the YAML file named by `ML_PLATFORM_COMPUTE_PROFILES` "
        "([docs/kubernetes.md](kubernetes.md)). Locally a profile only decides CPU or CUDA.",
        "",
        "| profile | cpu | memory | GPU | max runtime |",
        "|---|---|---|---|---|",
    ]
    for name, profile in COMPUTE_PROFILES.items():
        gpu = "none"
        if profile.gpu_count:
            gpu = f"{profile.gpu_count} x {profile.gpu_product or 'any GPU'}"
            if profile.gpu_resource != "nvidia.com/gpu":
                gpu += f" (`{profile.gpu_resource}`)"
        hours = f"{profile.max_runtime_seconds / 3600:g} h"
        lines.append(f"| `{name}` | {profile.cpu} | {profile.memory} | {gpu} | {hours} |")
    return [*lines, ""]


def render() -> str:
    """The whole configuration reference, as Markdown.

    Returns:
        The text of ``docs/configuration.md``.
    """
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the spec models by ml_platform/spec/reference.py; do not edit. -->",
        "",
        "Every field of the two spec files, generated from their models in `ml_platform/spec/`. "
        f"After changing a model, regenerate it: `{REGENERATE}`. Paths are YAML paths: "
        "`training.epochs` is `epochs` under `training:`, `sources[].path` is `path` in each "
        "item of the `sources` list, `monitoring.columns.<column>` is any column's name. "
        "Unknown keys are errors. Strings may use `${VAR}` and `${VAR:-default}`; an unset "
        "`${VAR}` without a default is an error naming its field. `ml-platform validate PATH` "
        "checks a file.",
        "",
        'Examples are inline YAML (JSON is YAML): `"7d"` is written `7d` in a spec file.',
        "",
    ]
    lines += _grouped(
        "Model spec (`kind: model`)",
        ModelSpec,
        "One model: its features, label and task, and everything else with defaults. Example: "
        "[`assets/fraud_detection/model.yaml`](../assets/fraud_detection/model.yaml).",
    )
    lines += _grouped(
        "Features file (`kind: features`)",
        FeatureRepoSpec,
        "One Feast repository: entities, sources, feature views, feature services. Every "
        "reference must resolve inside the file. Example: "
        "[`assets/fraud_detection/features.yaml`](../assets/fraud_detection/features.yaml).",
    )
    lines += _flavor_params() + _expectations() + _profiles()
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    """Write the reference to stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
