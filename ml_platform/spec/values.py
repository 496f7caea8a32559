"""Value types shared by the specs: names, durations, and ``${VAR}`` interpolation of YAML text."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A name that is a valid Dagster asset key part, Feast name and MLflow model name.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Duration = Annotated[str, Field(pattern=r"^\s*\d+\s*[smhdw]\s*$")]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class StrictSpec(BaseModel):
    """Base of every spec section: unknown keys are errors and specs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: str | int | timedelta) -> timedelta:
    """Parse ``'30d'``, ``'12h'``, ``'2w'`` or seconds into a timedelta.

    Args:
        value: a duration string (an integer and one of the units s, m, h, d, w), a number of
            seconds, or a timedelta (returned as is).

    Returns:
        The duration.

    Raises:
        ValueError: the string is not a duration; the message shows valid examples.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION_PATTERN.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. '30d', '12h', '90m' or '2w'")
    amount, unit = match.groups()
    return timedelta(**{_DURATION_UNITS[unit]: int(amount)})


def interpolate_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with environment values.

    A variable that is unset and has no default is left as written; paths are checked where they
    are used.

    Args:
        text: the YAML text.
        environ: the variables to use (default: ``os.environ``).

    Returns:
        The text with every resolvable reference replaced.
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        return match.group(0)

    return _ENV_PATTERN.sub(replace, text)
