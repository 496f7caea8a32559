"""The Great Expectations 1.x adapter: GE's verdicts and diagnostics for a gate's expectations.

Expectations on PII columns run apart, in an in-memory context that stores nothing and keeps no
unexpected-value lists; GE gets only the columns the expectations read (all non-PII columns in
the reference mode). With a ``context_root``, suites, validation results and Data Docs are kept
in a file context there, one process at a time. Great Expectations is imported only when a
function here runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.core.helpers import json_safe
from ml_platform.gates.report import MASK, ExpectationOutcome, safe_kwargs, targets_pii
from ml_platform.gates.spec import ExpectationSpec, is_number

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_SIZE = 5
DATA_DOCS_INDEX_LIMIT = 100  # newest validation results listed on the Data Docs index page
_GATE_INDEX = "ml_platform_gate_index"
_NOT_IDENTITY = {"id", "rendered_content", "notes", "meta"}
# PII expectations: counts only, no unexpected-value lists.
_PRIVATE_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}
_MISSING_COLUMN = re.compile(r'^Error: The column "[^"]*" in BatchData does not exist\.$')


def validate_with_ge(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    name: str,
    pii: frozenset[str],
    context_root: str | None,
    *,
    full: bool,
) -> tuple[dict[int, ExpectationOutcome], str | None]:
    """GE's outcomes for ``indexed`` expectations, and the Data Docs index when one was built.

    Expectations on PII columns run apart, in an in-memory context that stores nothing, with
    no unexpected-value lists; the others run in the file context when ``context_root`` is set.
    Never raises for bad data or a GE failure: those become failed outcomes that say why.

    Args:
        frame: The data under check.
        indexed: The expectations to validate, each with its position in the gate.
        name: The gate's name; GE's suite, data source and checkpoint are named after it.
        pii: PII column names, whose values never reach a report or a stored file.
        context_root: A directory for a file-based GE context; None for an in-memory one.
        full: Give GE every non-PII column (the reference mode); otherwise only the columns
            the expectations read.

    Returns:
        One outcome per position in ``indexed``, and the Data Docs index path or URL (None
        without a file context).
    """
    public = [(i, s) for i, s in indexed if not targets_pii(s, pii)]
    private = [(i, s) for i, s in indexed if targets_pii(s, pii)]
    outcomes: dict[int, ExpectationOutcome] = {}
    docs: str | None = None
    for part, is_private in ((public, False), (private, True)):
        if not part:
            continue
        found, part_docs = _ge_run(
            _GeRun(
                frame=frame,
                indexed=part,
                name=name,
                keep=_columns_to_keep(frame, part, pii, full=full and not is_private),
                pii=pii,
                context_root=None if is_private else context_root,
                result_format=dict(_PRIVATE_RESULT_FORMAT) if is_private else "SUMMARY",
                private=is_private,
            )
        )
        outcomes.update(found)
        if not is_private:
            docs = part_docs
    return outcomes, docs


@dataclass(frozen=True)
class _GeRun:
    """One GE validation: what it checks, which values GE gets, and where results are kept."""

    frame: pd.DataFrame
    indexed: list[tuple[int, ExpectationSpec]]
    name: str
    keep: set[Any]  # columns whose real values GE gets
    pii: frozenset[str]
    context_root: str | None  # a file context there, or an in-memory one
    result_format: Any
    private: bool  # expectations on PII columns: messages withheld, no unexpected-value lists


def _columns_to_keep(
    frame: pd.DataFrame,
    indexed: list[tuple[int, ExpectationSpec]],
    pii: frozenset[str],
    *,
    full: bool,
) -> set[Any]:
    """Columns whose real values GE gets: the ones read (and their case-insensitive twins)."""
    wanted = {c.casefold() for _, spec in indexed for c in spec.columns}
    keep = {c for c in frame.columns if isinstance(c, str) and c.casefold() in wanted}
    if full:
        keep |= {c for c in frame.columns if c not in pii}
    return keep


def _frame_for_ge(
    frame: pd.DataFrame, keep: set[Any], indexed: list[tuple[int, ExpectationSpec]]
) -> pd.DataFrame:
    """``frame`` with only the ``keep`` columns' values; others dropped or zeroed.

    Columns are only zeroed (kept by name, in place) when an expectation checks a column's
    position, so ``column_index`` means the same thing as on the full frame.
    """
    import numpy as np
    import pandas as pd

    if all(c in keep for c in frame.columns):
        return frame
    if not any("column_index" in spec.kwargs for _, spec in indexed):
        return pd.DataFrame(frame[[c for c in frame.columns if c in keep]])
    placeholder = pd.Series(np.zeros(len(frame), dtype=bool), index=frame.index)
    columns = {c: (frame[c] if c in keep else placeholder) for c in frame.columns}
    return pd.DataFrame(columns, index=frame.index)


def _ge_run(run: _GeRun) -> tuple[dict[int, ExpectationOutcome], str | None]:
    outcomes: dict[int, ExpectationOutcome] = {}
    docs: str | None = None
    try:
        with _exclusive(run.context_root):
            docs = _ge_validate(run, outcomes)
    except Exception as exc:  # GE itself failed: every pending expectation fails, explained
        for index, spec in run.indexed:
            if index not in outcomes:
                message = f"Great Expectations could not run: {type(exc).__name__}: {exc}"
                outcomes[index] = _error_outcome(spec, run.pii, message, run.private)
    for index, spec in run.indexed:
        if index not in outcomes:
            message = "Great Expectations returned no result for this expectation"
            outcomes[index] = _error_outcome(spec, run.pii, message, run.private)
    return outcomes, docs


def _ge_validate(run: _GeRun, outcomes: dict[int, ExpectationOutcome]) -> str | None:
    """Validate with GE, filling ``outcomes``; returns the Data Docs index when one was built."""
    import great_expectations as gx
    import numpy as np

    context = _ge_context(gx, run.context_root)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.name) or "gate"
    expectations, duplicate_of = _suite_expectations(gx, run, outcomes)
    if not expectations:
        return None
    # Built whole, then stored once: adding expectations one by one to a stored suite rewrites
    # the suite file after each one.
    suite = _replace_suite(context, gx.ExpectationSuite(name=safe_name, expectations=expectations))
    batch = (
        context.data_sources.add_or_update_pandas(safe_name)
        .add_dataframe_asset(safe_name)
        .add_batch_definition_whole_dataframe("whole_dataframe")
    )
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(data=batch, suite=suite, name=safe_name)
    )
    batch_parameters = {"dataframe": _frame_for_ge(run.frame, run.keep, run.indexed)}
    with np.errstate(all="ignore"):  # GE's own arithmetic on NaN and inf warns
        if run.context_root is None:
            result = validation.run(
                batch_parameters=batch_parameters, result_format=run.result_format
            )
        else:
            result = _run_checkpoint(
                gx, context, safe_name, validation, batch_parameters, run.result_format
            )
    specs = dict(run.indexed)
    for item in result.results:
        index = int(item.expectation_config.meta[_GATE_INDEX])
        outcomes[index] = _ge_outcome(specs[index], item, run.pii, run.private)
    for index, first in duplicate_of.items():
        if first in outcomes:
            outcomes[index] = replace(outcomes[first], kwargs=safe_kwargs(specs[index], run.pii))
    return None if run.context_root is None else _data_docs_index(context.get_docs_sites_urls())


def _suite_expectations(
    gx: Any, run: _GeRun, outcomes: dict[int, ExpectationOutcome]
) -> tuple[list[Any], dict[int, int]]:
    """GE expectation objects for a suite, and which positions duplicate an earlier one.

    A suite is a set: GE drops an expectation equal to one already added (meta and notes
    aside), so duplicates share the first one's result. Expectations GE rejects get a failed
    outcome in ``outcomes`` and are left out.
    """
    added: list[tuple[Any, int]] = []
    expectations: list[Any] = []
    duplicate_of: dict[int, int] = {}
    for index, spec in run.indexed:
        try:
            expectation = _ge_expectation(gx, spec, index)
        except Exception as exc:
            message = f"Great Expectations rejected the expectation: {exc}"
            outcomes[index] = _error_outcome(spec, run.pii, message, run.private)
            continue
        identity = (spec.type, expectation.dict(exclude=_NOT_IDENTITY))
        first = next((i for key, i in added if key == identity), None)
        if first is None:
            added.append((identity, index))
            expectations.append(expectation)
        else:
            duplicate_of[index] = first
    return expectations, duplicate_of


def _run_checkpoint(
    gx: Any,
    context: Any,
    name: str,
    validation: Any,
    batch_parameters: dict[str, Any],
    result_format: Any,
) -> Any:
    """Run ``validation`` through a checkpoint that renders this run's Data Docs pages."""
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    # The checkpoint's UpdateDataDocsAction renders only this run's pages, where
    # build_data_docs() would re-render every result ever stored.
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[validation],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format=result_format,
        )
    )
    run = checkpoint.run(batch_parameters=batch_parameters)
    return next(iter(run.run_results.values()))


def _ge_context(gx: Any, context_root: str | None) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if context_root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=context_root)
        _limit_data_docs_index(context)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _limit_data_docs_index(context: Any) -> None:
    """Index only the newest results: GE's index page otherwise loads every stored result."""
    for site_name, site in (context.variables.data_docs_sites or {}).items():
        index = site.get("site_index_builder") or {"class_name": "DefaultSiteIndexBuilder"}
        if "validation_results_limit" not in index:
            index = {**index, "validation_results_limit": DATA_DOCS_INDEX_LIMIT}
            context.update_data_docs_site(site_name, {**site, "site_index_builder": index})


@contextlib.contextmanager
def _exclusive(context_root: str | None) -> Iterator[None]:
    """Serialize processes sharing a file context: GE rewrites great_expectations.yml per run."""
    if context_root is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    Path(context_root).mkdir(parents=True, exist_ok=True)
    with open(Path(context_root) / ".ml_platform_gate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_suite(context: Any, suite: Any) -> Any:
    """Store ``suite`` under its name, replacing any earlier one.

    Deleting first is much faster than ``add_or_update``, which compares every old expectation
    with every new one.
    """
    with contextlib.suppress(Exception):  # none stored yet under this name
        context.suites.delete(suite.name)
    return context.suites.add(suite)


def _ge_expectation(gx: Any, spec: ExpectationSpec, index: int) -> Any:
    class_name = "".join(part.capitalize() for part in spec.type.split("_"))
    kwargs = dict(spec.kwargs)
    kwargs["meta"] = {**kwargs.get("meta", {}), _GATE_INDEX: index}
    return getattr(gx.expectations, class_name)(**kwargs)


def _data_docs_index(sites: list[dict[str, Any]]) -> str | None:
    from urllib.parse import unquote, urlparse

    for site in sites:
        url = str(site.get("site_url") or "")
        if url:
            return unquote(urlparse(url).path) if url.startswith("file:") else url
    return None


def _ge_outcome(
    spec: ExpectationSpec, item: Any, pii: frozenset[str], private: bool
) -> ExpectationOutcome:
    result = dict(item.result or {})
    exception = _exception_message(item.exception_info)
    sample = list(result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
    unexpected = result.get("unexpected_count")
    observed = json_safe(result.get("observed_value"))
    if private:
        sample = [MASK] * min(int(unexpected or 0), SAMPLE_SIZE)
        if not is_number(observed) and observed is not None:
            observed = MASK
        if exception is not None and not _MISSING_COLUMN.match(exception):
            exception = "Great Expectations raised an error (message withheld: PII column)"
    else:
        sample = [_mask_row(value, pii) for value in sample]
    return ExpectationOutcome(
        type=spec.type,
        kwargs=safe_kwargs(spec, pii),
        success=bool(item.success),
        observed_value=observed,
        unexpected_count=None if unexpected is None else int(unexpected),
        unexpected_percent=json_safe(result.get("unexpected_percent")),
        sample=json_safe(sample),
        exception=exception,
        engine="great_expectations",
    )


def _mask_row(value: Any, pii: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if k in pii else v) for k, v in value.items()}
    return value


def _exception_message(info: Any) -> str | None:
    """The first exception message in GE's exception_info (flat or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    entries: Iterable[Any] = [info] if "raised_exception" in info else info.values()
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _error_outcome(
    spec: ExpectationSpec, pii: frozenset[str], message: str, private: bool
) -> ExpectationOutcome:
    if private:
        message = "Great Expectations raised an error (message withheld: PII column)"
    return ExpectationOutcome(
        type=spec.type,
        kwargs=safe_kwargs(spec, pii),
        success=False,
        exception=message,
        engine="great_expectations",
    )
