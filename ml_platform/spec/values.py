"""Value types shared by the specs: names, durations, crons, timezones, ``${VAR}`` and YAML.

Every check here runs when the code location loads, so it imports only the standard library,
pydantic and yaml. A value that passes is one Dagster and the platform accept later: a cron
``ScheduleDefinition`` takes, a timezone ``zoneinfo`` knows, a duration ``timedelta`` holds.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# A name that is a valid Dagster asset key part, Feast name and MLflow model name.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Longer than any window or cooldown means; far below what timedelta and pandas can hold.
_LONGEST_DURATION = timedelta(days=100 * 366)
# Stands for an unset ``${VAR}`` while the YAML is parsed, so its field can be named.
_UNSET_MARK = "__ml_platform_unset_variable_{}__"
_UNSET_PATTERN = re.compile(r"__ml_platform_unset_variable_([A-Za-z_][A-Za-z0-9_]*?)__")

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class StrictSpec(BaseModel):
    """Base of every spec section: unknown keys are errors, specs are immutable, numbers finite."""

    # Schemas are built on first validation: pydantic otherwise builds each section's schema
    # at import and again inside every spec that nests it (30 ms of loading the code location).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def parse_duration(value: str | int | timedelta) -> timedelta:
    """Parse ``'30d'``, ``'12h'``, ``'2w'`` or seconds into a timedelta.

    Args:
        value: a duration string (an integer and one of the units s, m, h, d, w), a number of
            seconds, or a timedelta (returned as is).

    Returns:
        The duration.

    Raises:
        ValueError: the string is not a duration or is longer than 100 years; the message shows
            valid examples.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION_PATTERN.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. '30d', '12h', '90m' or '2w'")
    amount, unit = match.groups()
    try:
        duration = timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    except OverflowError:
        duration = _LONGEST_DURATION * 2
    if duration > _LONGEST_DURATION:
        raise ValueError(f"'{value}' is longer than 100 years; write e.g. '30d' or '52w'")
    return duration


def _duration(value: str) -> str:
    _checked_duration(value)
    return value


def _positive_duration(value: str) -> str:
    if _checked_duration(value) <= timedelta(0):
        raise ValueError("must be longer than 0; write e.g. '7d' or '12h'")
    return value


def _checked_duration(value: str) -> timedelta:
    """``parse_duration``, with a message that leaves the value to the error's ``got``."""
    try:
        return parse_duration(value)
    except ValueError as error:
        text = str(error).removeprefix(f"'{value}' is ")
        raise ValueError(text) from None


# A duration that may be 0 (a cooldown), and one that must be longer than 0 (a window, a TTL).
Duration = Annotated[str, AfterValidator(_duration)]
PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Each cron field's range and names, as croniter (vendored by Dagster) reads them; the day of
# the week accepts 7 for Sunday.
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)
_CRON_ITEM = re.compile(r"^(?:(\*|\?)|(\w+)(?:-(\w+))?)(?:/(\d+))?$")


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a cron Dagster's ``ScheduleDefinition`` accepts, or None.

    The accepted grammar is the common subset of croniter's (which Dagster vendors): five
    fields, each a list of ``*``, values, names (``mon``, ``jan``) and ranges, each with an
    optional ``/step`` (``?`` is ``*`` in the day fields, a backwards range wraps around);
    never February 30 or 31. Dagster accepts a few more forms (``L``, ``#``, ``@daily``); the
    platform rejects them rather than guess their meaning. ``tests/unit/test_spec_hostile.py``
    checks every cron accepted here against Dagster's own ``is_valid_cron_string``.

    Args:
        expression: the cron expression.

    Returns:
        What is wrong (without the expression), with an example; None when the expression is valid.
    """
    example = "write 5 fields, minute hour day-of-month month day-of-week, e.g. '0 3 * * 1'"
    fields = expression.lower().split()
    if len(fields) != 5:
        return f"not a 5-field cron expression; {example}"
    values: list[set[int] | None] = []
    for text, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        chosen: set[int] | None = set()
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                return f"the {label} field '{text}' is not valid; {example}"
            star, first, last, step = match.groups()
            if step is not None and int(step) == 0:
                return f"the {label} field '{text}' has a step of 0"
            if star == "?" and not label.startswith("day"):
                return f"'?' is for the day fields only; use '*' for the {label}"
            if star:
                chosen = None
                continue
            bounds = [_cron_value(part, names) for part in (first, last or first)]
            if None in bounds or not all(low <= b <= high for b in bounds if b is not None):
                return f"the {label} field '{text}' is out of range; use {low}-{high}" + (
                    f" or names ({', '.join(names)})" if names else ""
                )
            start, end = bounds[0] or 0, bounds[1] or 0
            if start > end:  # croniter wraps around (fri-mon)
                chosen = None
            if chosen is not None:
                chosen.update(range(start, end + 1, int(step or 1)))
        values.append(chosen)
    days, months = values[2], values[3]
    if months == {2} and days is not None and days <= {30, 31}:
        return f"never fires: February has no day {min(days)}"
    return None


def _cron_value(text: str, names: dict[str, int]) -> int | None:
    if text.isdigit():
        return int(text)
    return names.get(text)


def _cron(value: str) -> str:
    problem = cron_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError("not an IANA timezone; write e.g. 'UTC' or 'Europe/Paris'") from None
    return value


# A cron expression Dagster schedules, and a timezone it runs them in.
Cron = Annotated[str, AfterValidator(_cron)]
Timezone = Annotated[str, AfterValidator(_timezone)]


def _interpolate(text: str, environ: dict[str, str] | None, unset: Callable[[str], str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``unset(name)`` where neither is set."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        return unset(name)

    return _ENV_PATTERN.sub(replace, text)


# libyaml's parser when PyYAML was built with it: 8x faster than the pure-Python one, which
# was most of the time a code location with a hundred specs spent reading them.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses a key written twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key; SafeLoader reports it below
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' on line {line} is already set on line {first}; "
                    "YAML would keep only the last one, remove one of them",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, environ: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """Parse spec YAML after ``${VAR}`` interpolation; refuse duplicate keys and unset variables.

    Args:
        text: the YAML text.
        environ: the variables to use (default: ``os.environ``).

    Returns:
        The document, and one problem per unset variable without a default, naming the field
        that uses it (``owner: environment variable 'TEAM' is not set (...)``).

    Raises:
        yaml.YAMLError: the text is not YAML, or a mapping repeats a key (the message has the
            line).
    """
    document = yaml.load(  # a SafeLoader subclass
        _interpolate(text, environ, _UNSET_MARK.format), Loader=_UniqueKeyLoader
    )
    return document, [
        f"{field or '(top level)'}: environment variable '{name}' is not set (set it, or give "
        f"a default: '${{{name}:-value}}')"
        for field, name in _unset_variables(document, "")
    ]


def _unset_variables(value: Any, field: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(field, name) for name in _UNSET_PATTERN.findall(value)]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{field}.{key}" if field else str(key)
            found += [(where, name) for name in _UNSET_PATTERN.findall(str(key))]
            found += _unset_variables(item, where)
        return found
    if isinstance(value, list):
        return [
            pair for i, item in enumerate(value) for pair in _unset_variables(item, f"{field}[{i}]")
        ]
    return []
