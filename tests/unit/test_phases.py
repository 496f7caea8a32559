"""Progress lines of a long step: one per phase, with its time and throughput."""

from __future__ import annotations

from ml_platform.core.progress import Phases


def test_each_phase_is_logged_with_its_time_and_rows_per_second() -> None:
    lines: list[str] = []
    phases = Phases("training set of loans", lines.append)
    assert phases.done("read the labels", 12_345) >= 0
    phases.done("applied the Feast definitions")
    assert lines[0].startswith("training set of loans: read the labels in ")
    assert "(12,345 rows, " in lines[0] and lines[0].endswith(" rows/s)")
    assert lines[1].endswith(" s") and "rows" not in lines[1]
    assert phases.total() >= 0
