"""Small helpers shared across the platform: JSON-safe values, imports by path, suggestions."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import importlib
import math
import re
from collections.abc import Iterable
from typing import Any, Self

# A URL starts with its scheme: "s3://", "postgresql+psycopg2://"; anything else is a path or text.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def json_safe(value: Any) -> Any:
    """Plain JSON types; non-finite floats become strings ("nan", "inf").

    Numpy scalars become Python scalars, dates and timestamps ISO strings, sets sorted lists and
    anything else its ``str``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy's float64 too, returned as a plain float
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(items)
            except TypeError:
                items = sorted(items, key=repr)
        return [json_safe(v) for v in items]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    isoformat = getattr(value, "isoformat", None)  # pandas Timestamp
    if callable(isoformat):
        return str(isoformat())
    return str(value)


def import_object(path: str, what: str) -> Any:
    """Import ``package.module:name`` (``name`` may be dotted).

    Args:
        path: the import path, ``package.module:attribute``.
        what: the setting that named it, for the error message (``generator.function``).

    Raises:
        ImportError: the path is malformed, the module cannot be imported or lacks the name; the
            message says which part failed and how to fix it.
    """
    module_name, separator, attribute = path.partition(":")
    if not separator or not module_name or not attribute or ":" in attribute:
        raise ImportError(f"{what} '{path}' is not an import path; use 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ImportError(
            f"{what} '{path}': module '{module_name}' could not be imported ({exc}); "
            "check the module path and that its package is installed"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ImportError(f"{what} '{path}': module '{module_name}' has no '{attribute}'")
        target = getattr(target, part)
    return target


def close_matches(value: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The choices closest to ``value`` (prefix matches first), at most ``n``."""
    known = sorted(choices)
    prefixed = [c for c in known if c.startswith(value)] if value else []
    return (prefixed or difflib.get_close_matches(value, known, n=n, cutoff=0.6))[:n]


def did_you_mean(value: str, choices: Iterable[str], listing: str = "known") -> str:
    """``"did you mean 'x'?"`` for the closest choice, else ``"<listing>: a, b, c"``."""
    known = sorted(choices)
    close = difflib.get_close_matches(value, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"{listing}: {', '.join(known) or 'none'}"


def unknown(kind: str, value: str, known: Iterable[str]) -> str:
    """``unknown <kind> '<value>' (did you mean ...?)``: the message for a name not found."""
    return f"unknown {kind} '{value}' ({did_you_mean(value, known)})"


class JsonDataclass:
    """Mixin for dataclasses stored as JSON: ``to_dict`` and ``from_dict`` of the init fields.

    ``from_dict`` ignores keys the class no longer has and lets fields added since take their
    defaults, so records written by an older version still load.
    """

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Read what ``to_dict`` wrote."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


def redact_url(location: str) -> str:
    """``location`` as it can be shown: a URL loses its user, password, query and fragment.

    Paths, URLs and SQLAlchemy URLs of data, artifacts, MLflow and the audit log can carry
    credentials (``s3://KEY:SECRET@bucket/ml``, ``https://host/x?token=...``); whatever is shown
    in metadata, logs or MLflow params goes through here. A local path is returned unchanged.

    Args:
        location: A URL, or a local path.

    Returns:
        The URL without credentials (``s3://bucket/ml``), or the path as it was.
    """
    from urllib.parse import urlsplit

    if not _URL_SCHEME.match(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:  # a malformed host (an unbalanced "[") still must not leak what follows
        return location.split("://", 1)[0] + "://<redacted>"
    host = parts.netloc.rsplit("@", 1)[-1]
    # Not urlunsplit: it turns sqlite:////abs/path (an empty host) into sqlite://abs/path.
    return f"{parts.scheme}://{host}{parts.path}"


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{},]+")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted by :func:`redact_url` (for log lines and errors).

    Args:
        text: A message that may quote URLs (an error from fsspec or MLflow, a progress line).

    Returns:
        The message, each URL without its user, password, query and fragment.
    """
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group(0)), text)
