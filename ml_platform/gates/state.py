"""Gate state: each feature view's latest data-gate verdict, kept beside its data.

Materializing a feature view records whether its gate passed; building a training set refuses
views whose latest gate failed until they are materialized again on passing data.
"""

from __future__ import annotations

from ml_platform.core import storage
from ml_platform.core.settings import PlatformSettings


def view_gate_root(settings: PlatformSettings, view: str) -> str:
    """The directory holding a feature view's gate state.

    Args:
        settings: Platform settings (where data lives).
        view: The feature view's name.

    Returns:
        The directory (local path or URL) of the view's data.
    """
    return settings.data_path("features", view)


def record_view_gate(settings: PlatformSettings, view: str, passed: bool) -> None:
    """Remember a feature view's latest gate verdict.

    Args:
        settings: Platform settings (where data lives).
        view: The feature view's name.
        passed: Whether its data gate passed.
    """
    storage.write_json(f"{view_gate_root(settings, view)}/gate.json", {"passed": passed})


def blocked_feature_views(settings: PlatformSettings, views: list[str]) -> list[str]:
    """Views whose latest data gate failed (cleared by materializing them on passing data).

    Args:
        settings: Platform settings (where data lives).
        views: The feature views to look at.

    Returns:
        The views of ``views`` whose latest recorded gate failed, in the given order.
    """
    blocked = []
    for view in views:
        path = f"{view_gate_root(settings, view)}/gate.json"
        if storage.exists(path) and not storage.read_json(path)["passed"]:
            blocked.append(view)
    return blocked
