"""The version of the running code, recorded on every training run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# The repository root when running from a checkout (ml_platform/registry/ is two levels down).
_ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The git sha of the running code, else a declared version.

    Returns:
        ``ML_PLATFORM_CODE_VERSION`` when set; else the checkout's ``HEAD`` sha, with ``+dirty``
        when tracked files are modified; else ``ml_platform==<installed version>``.
    """
    declared = os.environ.get("ML_PLATFORM_CODE_VERSION")
    if declared:
        return declared
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return f"ml_platform=={version('ml_platform')}"
