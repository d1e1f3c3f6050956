"""Pieces shared by the training scripts: data config, preset-aware config resolution, time splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from appa_engine.config import from_dict, merge, parse_overrides, read_config_file, to_dict
from appa_engine.errors import ConfigError

__all__ = ["SplitConfig", "resolve", "split_value"]

T = TypeVar("T")


@dataclass(frozen=True)
class SplitConfig:
    """Train / valid / test split by time: fractions (< 1) of the record, or years (≥ 1000)."""

    valid: float = 0.1
    test: float = 0.1

    def __post_init__(self):
        for name in ("valid", "test"):
            v = getattr(self, name)
            if not (0 < v < 1 or 1000 <= v <= 9999):
                raise ConfigError(f"split.{name} must be a fraction in (0, 1) or a year, got {v}")


def split_value(v: float) -> float | str:
    """A split entry as :func:`~appa_engine.data.windows.split_by_time` takes it."""
    return v if v < 1 else str(int(v))


def resolve(cls: type[T], *, file: str | Path | None, overrides: list[str] | tuple[str, ...],
            preset_defaults: Callable[[str], dict]) -> T:
    """Resolve a training config whose model section defaults to its preset's.

    Order: the dataclass defaults ← ``preset_defaults(preset)`` (e.g. the preset's model config
    and blanket length) ← the config file ← the ``key=value`` overrides. The preset name itself
    is read from the overrides, else the file, else the default.
    """

    file_data = read_config_file(file) if file is not None else {}
    over = parse_overrides(list(overrides))
    preset = over.get("preset", file_data.get("preset", cls().preset))  # type: ignore[attr-defined]
    base = merge(to_dict(cls()), preset_defaults(preset))
    return from_dict(cls, merge(merge(base, file_data), over))
