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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def is_url(path: str) -> bool:
    """Whether ``path`` is an object-store URL (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file beside ``path``, then rename it into place.

    The one atomic writer of the platform: a reader, or a run resumed after a crash, sees the old
    file or the new one, never half of one. The data is flushed to disk before the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(descriptor)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (local) or as one object (URL)."""
    if is_url(path):
        import fsspec

        with fsspec.open(path, "wb") as handle:
            handle.write(data)  # type: ignore[union-attr]
        return
    write_atomically(path, lambda temporary: temporary.write_bytes(data))


def read_bytes(path: str) -> bytes:
    """The whole content of a local file or object."""
    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as handle:
            return handle.read()  # type: ignore[union-attr]
    return Path(path).read_bytes()


def exists(path: str) -> bool:
    """Whether a local file or object exists."""
    if is_url(path):
        import fsspec

        filesystem, resolved = fsspec.core.url_to_fs(path)
        return filesystem.exists(resolved)
    return Path(path).exists()


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as indented, key-sorted JSON, atomically."""
    write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def read_json(path: str) -> Any:
    """Read a JSON file or object."""
    return json.loads(read_bytes(path))


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Write a DataFrame as parquet (zstd), atomically for local paths."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    write_bytes(path, buffer.getvalue())


def read_parquet(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet file, or only ``columns`` of it."""
    import pandas as pd

    return pd.read_parquet(path, columns=columns)


def pointer_path(directory: str) -> str:
    """The pointer file (``current.json``) of a directory of versions."""
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
