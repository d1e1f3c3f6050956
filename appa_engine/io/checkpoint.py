"""Checkpoints: atomic saves, safe loads (``weights_only=True``), clear errors.

A checkpoint is a dict of tensors, state dicts and plain data saved with :func:`torch.save`.
Loading always uses ``weights_only=True``: a checkpoint cannot execute code. A truncated or
corrupted file, or one that is not a checkpoint, raises
:class:`~appa_engine.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from appa_engine.errors import CheckpointError
from appa_engine.io.atomic import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "sha256"]


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Serialise ``obj`` in memory, then write it atomically to ``path``."""

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint saved by :func:`save_checkpoint` (``weights_only=True``)."""

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(
            f"checkpoint '{path}' is truncated, corrupted or not a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'})",
            hint="re-download or re-create it; training can resume from an earlier checkpoint",
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a dict")
    return obj


def sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (used by model packages to detect corruption)."""

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
