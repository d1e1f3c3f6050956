"""Atomic writes: a file or directory store appears complete at its final path, or not at all.

Everything is first written next to the target (same filesystem, hidden name) and then moved in
place with :func:`os.replace`, which is atomic for files on POSIX. A directory store (zarr) cannot
be swapped atomically when the target already exists, so the old one is moved aside first and
removed only after the new one is in place: an interruption leaves either the old or the new store
plus a hidden leftover, never a half-written store under the target name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is moved to ``target``.

    On an exception the temporary file or directory is removed and ``target`` is untouched.

    Arguments:
        target: Final path.
        directory: Whether the writer creates a directory (e.g. a zarr store) rather than a file.
    """

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if directory and target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (flushed and fsync'ed before the move)."""

    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode())
