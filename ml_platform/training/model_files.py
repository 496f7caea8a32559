"""Reading a saved model's ``model.json``: the one place that checks it is there and well-formed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Every flavor describes a saved model in this file beside its weights or trees.
METADATA_FILENAME = "model.json"


def read_model_json(metadata_path: Path, hint: str = "was the model saved by a flavor?") -> dict:
    """The JSON object in ``metadata_path``.

    Args:
        metadata_path: The model's ``model.json``.
        hint: What to check when the file is missing.

    Raises:
        ValueError: The file is missing, unreadable, or not a JSON object.
    """
    if not metadata_path.exists():
        raise ValueError(f"{metadata_path} does not exist; {hint}")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{metadata_path} could not be read: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"{metadata_path} holds {type(metadata).__name__}, not an object")
    return metadata


def check_format_version(metadata: dict[str, Any], metadata_path: Path, expected: int) -> None:
    """Refuse a ``model.json`` written in a format this version of the platform does not read.

    Raises:
        ValueError: The format version differs from ``expected``.
    """
    version = metadata.get("format_version")
    if version != expected:
        raise ValueError(
            f"{metadata_path} has format_version {version!r}; this ml_platform reads {expected}"
        )


def read_saved_model(
    directory: Path, data_file: str, hint: str, format_version: int
) -> dict[str, Any]:
    """The ``model.json`` of a saved model whose data file is there, in a format this reads.

    Args:
        directory: The saved model's directory.
        data_file: The name of the file with its weights or trees.
        hint: What to check when a file is missing.
        format_version: The format this version of the platform reads.

    Raises:
        ValueError: A file is missing or unreadable, or the format differs.
    """
    metadata_path, data_path = directory / METADATA_FILENAME, directory / data_file
    if not data_path.exists():
        raise ValueError(f"{data_path} does not exist; {hint}")
    metadata = read_model_json(metadata_path, hint)
    check_format_version(metadata, metadata_path, format_version)
    return metadata
