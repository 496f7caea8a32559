"""Spec errors: one exception per invalid file, and pydantic errors as "field: what (fix)" lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ml_platform.core.helpers import did_you_mean


class SpecError(ValueError):
    """A spec file is invalid. The message names the file, the field and the fix.

    Attributes:
        path: the spec file.
        problems: one line per problem, ``<field>: <what is wrong> (<how to fix it>)``.
    """

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"spec '{self.path}' is invalid:\n{lines}")


def format_validation_error(error: ValidationError, spec_class: type[BaseModel]) -> list[str]:
    """Turn a pydantic validation error into one problem line per invalid field.

    Args:
        error: the error raised by ``spec_class.model_validate``.
        spec_class: the spec model that was validated, used to list the keys allowed where an
            unknown key was found.

    Returns:
        Lines such as ``training.epoch: unknown key 'epoch' (did you mean 'epochs'?)``.
    """
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            key = str(item["loc"][-1])
            allowed = _allowed_keys(spec_class, item["loc"][:-1])
            problems.append(
                f"{location}: unknown key '{key}' ({did_you_mean(key, allowed, 'allowed')})"
            )
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
