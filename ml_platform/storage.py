"""Reading and writing platform files on a local disk or any fsspec URL (``s3://``, ``gs://``).

Writes never leave a half-written file where a reader looks: local files are written to a
temporary name and renamed; object stores write whole objects. Pointers (``current.json``) are
updated only after the data they point at is complete, so a failed step leaves the previous good
version in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (local) or as one object (URL)."""
    if is_url(path):
        import fsspec

        with fsspec.open(path, "wb") as handle:
            handle.write(data)  # type: ignore[union-attr]
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_bytes(path: str) -> bytes:
    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as handle:
            return handle.read()  # type: ignore[union-attr]
    return Path(path).read_bytes()


def exists(path: str) -> bool:
    if is_url(path):
        import fsspec

        filesystem, resolved = fsspec.core.url_to_fs(path)
        return filesystem.exists(resolved)
    return Path(path).exists()


def write_json(path: str, value: Any) -> None:
    write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Write a DataFrame as parquet (zstd), atomically for local paths."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    write_bytes(path, buffer.getvalue())


def read_parquet(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path, columns=columns)


def pointer_path(directory: str) -> str:
    return f"{directory.rstrip('/')}/current.json"


def write_pointer(directory: str, record: dict[str, Any]) -> None:
    """Mark ``record`` as the current good version of what lives in ``directory``."""
    write_json(pointer_path(directory), record)


def read_pointer(directory: str) -> dict[str, Any] | None:
    """The current good version's record, or None when nothing was completed yet."""
    path = pointer_path(directory)
    return read_json(path) if exists(path) else None


def fingerprint(path: str) -> str | None:
    """A cheap version of a file or directory: size and modification time (None if missing)."""
    import fsspec

    filesystem, resolved = fsspec.core.url_to_fs(path)
    if not filesystem.exists(resolved):
        return None
    info = filesystem.info(resolved)
    changed = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    return f"{info.get('size', 0)}-{changed}"
