"""Typed, frozen configurations loaded from TOML/YAML files and ``key=value`` overrides.

A configuration is a frozen :func:`dataclasses.dataclass` (possibly nested). :func:`load_config`
builds one from defaults, an optional file and a list of dotted overrides; unknown keys and values
of the wrong type raise :class:`~appa_engine.errors.ConfigError` naming the key and the expected
type. :func:`to_dict` gives back plain data, which every run saves next to its outputs.

Example:
    >>> @dataclass(frozen=True)
    ... class Optim:
    ...     lr: float = 1e-4
    >>> @dataclass(frozen=True)
    ... class Run:
    ...     steps: int = 10
    ...     optim: Optim = Optim()
    >>> load_config(Run, overrides=["optim.lr=3e-4"]).optim.lr
    0.0003
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from appa_engine.errors import ConfigError

__all__ = ["load_config", "from_dict", "to_dict", "parse_overrides", "dump_config", "merge", "read_config_file"]

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """Plain nested dict of a config dataclass (tuples become lists)."""

    def convert(v):
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(config)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless."""

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        candidates = [arg for arg in args if arg is not type(None)]
        for arg in candidates:
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # e.g. `X | None`: the error of X says more than the union
            raise errors[0]
        raise ConfigError(f"'{key}' = {value!r} does not match {_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"'{key}' = {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' expects a list ({_name(tp)}), got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"'{key}' expects {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' expects a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' expects a section ({tp.__name__}), got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"'{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' expects a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"'{key}' expects {tp.__name__}, got {value!r}")
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: dict, *, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from nested plain data; unknown keys raise."""

    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping for '{prefix or cls.__name__}', got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{prefix}{k}'" for k in unknown),
            hint=f"valid keys{' of ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(sorted(fields)),
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"invalid configuration for {cls.__name__}: {e}") from e


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into ``{"a": {"b": 1}, "c": [1, 2]}``.

    Values are parsed as YAML scalars/lists (``1e-4``, ``true``, ``[64, 128]``, ``null``).
    """

    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value", hint="e.g. --set optim.lr=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse the value of override '{item}': {e}") from e
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 as a string; accept plain numbers written that way.
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override")
        node[parts[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursive merge of nested dicts (``update`` wins)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_config_file(path: str | Path) -> dict:
    """Read a TOML, YAML or JSON file into plain data."""

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(
                f"config file '{path}' has an unknown extension", hint="use .toml, .yaml or .json"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot parse config file '{path}': {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    return data


def load_config(
    cls: type[T],
    *,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: T | None = None,
) -> T:
    """Resolve a config: ``base`` (or the defaults of ``cls``) ← ``file`` ← ``overrides``."""

    data = to_dict(base if base is not None else cls())
    if file is not None:
        data = merge(data, read_config_file(file))
    data = merge(data, parse_overrides(list(overrides)))
    return from_dict(cls, data)


def dump_config(config: Any, path: str | Path) -> None:
    """Write a resolved config as YAML next to the outputs of a run (atomically)."""

    from appa_engine.io.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
