"""``ml-platform calls MODEL``: who called which version, when, on which data, with what result.

Reads the prediction service's audit trail (``prediction_calls`` in the audit database,
``ML_PLATFORM_AUDIT_URL``, default ``$ML_PLATFORM_HOME/audit.db``). Calls still in a running
service's journal reach the table within its flush interval.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.cli.common import model_command
from ml_platform.cli.output import echo

if TYPE_CHECKING:
    from ml_platform.serving.calls import CallRecord

DEFAULT_LIMIT = 100

CALLS_HELP = """\
Show the prediction service's recorded calls of MODEL: who called (the API key's name), when,
which version answered (champion or canary), on which entity and data (the hash of the feature
values and the Feast feature views served; every value with --json), with what result (status,
prediction or error) and latency. Every call is recorded, refused ones included (caller
"unauthenticated"). The newest --limit calls matching every filter are shown, oldest first.
Reads the audit database (ML_PLATFORM_AUDIT_URL, default $ML_PLATFORM_HOME/audit.db); a running
service writes its calls there within its flush interval.

examples:
  ml-platform calls fraud_detection --since 1h
  ml-platform calls fraud_detection --entity customer_id=1042 --json
  ml-platform calls fraud_detection --caller checkout --version 3 --since 2026-03-01T00:00:00Z"""


def add_calls_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ml-platform calls`` and its options to the command line.

    Args:
        commands: The ``ml-platform`` subcommands.
    """
    parser = model_command(
        commands,
        "calls",
        "who called a served model, when, on which data, with what result",
        CALLS_HELP,
        "the served model's name",
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="the earliest call: a duration before now or an ISO 8601 time (UTC without an "
        "offset). Example: --since 1h",
    )
    parser.add_argument(
        "--until",
        metavar="WHEN",
        help="the first time no longer shown, in the same forms. Example: --until 30m",
    )
    parser.add_argument(
        "--entity",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a join key of the entity called for; repeat for several. Example: "
        "--entity customer_id=1042",
    )
    parser.add_argument(
        "--caller", metavar="NAME", help="the API key's name. Example: --caller checkout"
    )
    parser.add_argument(
        "--version", metavar="V", help="the model version that answered. Example: --version 3"
    )
    parser.add_argument(
        "--request-id",
        metavar="ID",
        help="one call, by the request id its answer carried. Example: --request-id 5f0c2a...",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N calls, the newest (default {DEFAULT_LIMIT}). Example: --limit 1000",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per call with every field, feature values included. Example: "
        "ml-platform calls fraud_detection --since 1h --json",
    )


def run_calls(args: argparse.Namespace) -> int:
    """Run ``ml-platform calls`` with parsed arguments.

    Args:
        args: The parsed command line (see `add_calls_command`).

    Returns:
        The exit status.
    """
    return calls(
        args.model,
        since=args.since,
        until=args.until,
        entity=args.entity,
        caller=args.caller,
        version=args.version,
        request_id=args.request_id,
        limit=args.limit,
        as_json=args.json,
    )


def parse_moment(value: str, now: datetime, option: str) -> datetime:
    """``1h`` (that long before now) or an ISO 8601 time (UTC when it has no offset).

    Args:
        value: The option's value.
        now: The current time.
        option: The option's name, for the error.

    Returns:
        The time, in UTC.

    Raises:
        ValueError: Neither a duration nor an ISO 8601 time; the message shows both forms.
    """
    from ml_platform.spec.values import parse_duration

    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{option} '{value}' is neither a duration before now nor an ISO 8601 time; "
            "write e.g. 1h, 30m, 7d or 2026-03-01T12:00:00Z"
        ) from None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


def parse_entity(pairs: list[str]) -> dict[str, Any]:
    """``applicant_id=7`` pairs as join keys; numbers match their text form too.

    Args:
        pairs: ``key=value`` texts.

    Returns:
        Join key -> value (a JSON number or literal when the value is one, else the text).

    Raises:
        ValueError: A pair without ``=``.
    """
    entity: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--entity '{pair}' is not KEY=VALUE; write e.g. applicant_id=7")
        try:
            entity[key] = json.loads(value)
        except ValueError:
            entity[key] = value
    return entity


def _prediction(call: CallRecord) -> str:
    value = call.prediction
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}"


def _result(call: CallRecord) -> str:
    if call.succeeded:
        return f"{call.status_code} {_prediction(call)}"
    return f"{call.status_code} {call.error or ''}".strip()


def _entity(call: CallRecord) -> str:
    return " ".join(f"{k}={v}" for k, v in call.entity.items()) or "-"


def _data(call: CallRecord) -> str:
    digest = (call.features_hash or "-")[:12]
    views = ",".join(f"{view}@{print_[:8]}" for view, print_ in call.feature_views.items())
    return f"{digest} {views}".strip()


COLUMNS = (
    "time (UTC)",
    "caller",
    "version",
    "entity",
    "features (hash, views)",
    "ms",
    "result",
    "request id",
)


def table_rows(calls: list[CallRecord]) -> list[list[str]]:
    """The calls as table cells, in the order of ``COLUMNS``.

    Args:
        calls: The calls, oldest first.

    Returns:
        One row of texts per call.
    """
    rows = []
    for call in calls:
        version = "-" if call.model_version is None else f"v{call.model_version} {call.role or ''}"
        rows.append(
            [
                call.called_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                call.caller,
                version.strip(),
                _entity(call),
                _data(call),
                f"{call.latency_ms:.1f}",
                _result(call),
                call.request_id,
            ]
        )
    return rows


def show_table(calls: list[CallRecord]) -> None:
    """The calls as an aligned table (never cut to the terminal's width: logs keep it whole).

    Args:
        calls: The calls, oldest first.
    """
    rows = table_rows(calls)
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    right = COLUMNS.index("ms")

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i == right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    echo(line(list(COLUMNS)), style="bold")
    for row in rows:
        echo(line(row))


def calls(
    model: str,
    *,
    since: str | None = None,
    until: str | None = None,
    entity: list[str] | None = None,
    caller: str | None = None,
    version: str | None = None,
    request_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
    as_json: bool = False,
) -> int:
    """Show the model's recorded calls that match every filter, oldest first.

    Args:
        model: The model called.
        since: The earliest call: a duration before now (``1h``) or an ISO 8601 time.
        until: The first time no longer shown, in the same forms.
        entity: ``KEY=VALUE`` join keys the entity has.
        caller: The API key name (or ``unauthenticated``).
        version: The model version that answered.
        request_id: One call's id.
        limit: At most this many calls, the newest ones.
        as_json: One JSON object per call, with every feature value, instead of the table.

    Returns:
        The exit status: 0, or 2 for an invalid option.
    """
    from ml_platform.core.helpers import redact_url
    from ml_platform.core.settings import PlatformSettings
    from ml_platform.serving.calls import query_calls

    now = datetime.now(UTC)
    try:
        start = parse_moment(since, now, "--since") if since else None
        end = parse_moment(until, now, "--until") if until else None
        keys = parse_entity(entity or [])
    except ValueError as error:
        echo(str(error), err=True)
        return 2
    if limit < 1:
        echo(f"--limit must be at least 1, got {limit}", err=True)
        return 2
    settings = PlatformSettings.from_env()
    found = query_calls(
        settings.audit_url,
        model,
        start=start,
        end=end,
        entity=keys or None,
        caller=caller,
        version=version,
        request_id=request_id,
        limit=limit,
    )
    if as_json:
        for call in found:
            values = asdict(call)
            values["called_at"] = call.called_at.isoformat()
            echo(json.dumps(values, sort_keys=True))
        return 0
    if not found:
        echo(
            f"no calls of '{model}' match in the audit trail at {redact_url(settings.audit_url)}",
            err=True,
        )
        return 0
    show_table(found)
    if len(found) == limit:
        echo(f"(the newest {limit} calls; --limit shows more, --since narrows)", err=True)
    return 0
