"""Atomic file writes: the one way this package puts a file on disk.

A file is written to a temporary sibling, flushed and fsynced, then swapped in with ``os.replace``
(atomic on POSIX), and the directory entry is fsynced: a process killed at any moment leaves
either the old file or the new one, never a torn one, and a power cut does not undo a replace
that returned. Pure standard library (and NumPy for ``.npz``), so DFT workers can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import IO, Callable, Iterator


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles (Windows): the replace is what we have
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``open(path, mode)`` that appears at ``path`` only when the block ends without an error.

    Args:
        path: the destination; its parent directories are created.
        mode: "wb" or "w" (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w'; got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes into a binary file object) atomically."""
    if callable(data):
        with atomic_open(path, "wb") as fh:
            data(fh)
    else:
        with atomic_open(path, "w" if isinstance(data, str) else "wb") as fh:
            fh.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    """``obj`` as JSON (NaN and inf written as JSON's non-standard literals, as ``json`` does)."""
    return atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """NumPy arrays as an uncompressed ``.npz`` (no pickled objects: ``allow_pickle`` reads fail loudly)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())
