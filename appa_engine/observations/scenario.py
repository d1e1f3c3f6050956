"""Scenario files: the observations and the run settings that reproduce an assimilation.

A scenario is a versioned YAML (or JSON) file::

    version: 1
    model: default            # a model name or a path to a model package
    task: reanalysis          # reanalysis | filter | forecast
    start: '2021-01-01T00:00:00'
    hours: 24                 # assimilation window length
    lead_hours: 0             # forecast lead (forecast task)
    members: 8
    seed: 0
    sampler: {name: pc, steps: 32, corrections: 2, delta: 0.1}
    guidance: {method: mmps, iterations: 2, solver: cg}
    observations:
      - kind: stations
        name: synop
        lon: [4.35, 2.35]
        lat: [50.85, 48.86]
        times: ['2021-01-01T00:00:00', '2021-01-01T06:00:00']
        variables: [2m_temperature]
        errors: {2m_temperature: 0.5}
        values: [[[271.3], [273.9]], [[272.0], [.nan]]]

Each observer is written with its ``kind`` and the fields of its class
(:mod:`appa_engine.observations.observers`); times are ISO strings, durations strings such as
``'1800s'``, orbits a mapping with their ``type`` (``CircularOrbit`` or ``TLEOrbit``) and
parameters. Small arrays are written as (nested) lists; arrays of more than
:data:`INLINE_LIMIT` numbers as ``{shape, dtype, base64}`` (little-endian float64 bytes), so
saving and loading round-trips exactly (floats are written with ``repr``).

A file of a newer :data:`SCENARIO_VERSION` or with unknown keys raises
:class:`~appa_engine.errors.ConfigError` with a hint.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from appa_engine.config import from_dict as config_from_dict
from appa_engine.config import to_dict as config_to_dict
from appa_engine.errors import AppaError, ConfigError, ObservationError
from appa_engine.observations.observers import OBSERVER_KINDS, ObservationSet, Observer

__all__ = [
    "SCENARIO_VERSION",
    "INLINE_LIMIT",
    "SamplerSettings",
    "GuidanceSettings",
    "Scenario",
    "observer_to_dict",
    "observer_from_dict",
]

#: Version of the scenario file format written by this code.
SCENARIO_VERSION = 1
#: Arrays with more numbers than this are stored as base64 rather than lists.
INLINE_LIMIT = 10_000

TASKS = ("reanalysis", "filter", "forecast")


@dataclass(frozen=True)
class SamplerSettings:
    """Diffusion sampler (Appa for assimilation: predictor-corrector, 32 steps, 2 corrections, δ = 0.1)."""

    name: str = "pc"
    steps: int = 32
    corrections: int = 2
    delta: float = 0.1

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"sampler.name must be a non-empty string, got {self.name!r}", hint="e.g. 'pc'"
            )
        _check_int("sampler.steps", self.steps, minimum=1)
        _check_int("sampler.corrections", self.corrections, minimum=0)
        if not (
            isinstance(self.delta, (int, float)) and math.isfinite(self.delta) and self.delta > 0
        ):
            raise ConfigError(
                f"sampler.delta must be a positive number, got {self.delta!r}", hint="Appa uses 0.1"
            )


@dataclass(frozen=True)
class GuidanceSettings:
    """Guidance: MMPS (Appa: 2 solver iterations) or DPS."""

    method: Literal["mmps", "dps"] = "mmps"
    iterations: int = 2
    solver: Literal["cg", "gmres"] = "cg"

    def __post_init__(self):
        if self.method not in ("mmps", "dps"):
            raise ConfigError(f"guidance.method must be 'mmps' or 'dps', got {self.method!r}")
        if self.solver not in ("cg", "gmres"):
            raise ConfigError(f"guidance.solver must be 'cg' or 'gmres', got {self.solver!r}")
        _check_int("guidance.iterations", self.iterations, minimum=1)


def _check_int(key: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{key} must be an integer ≥ {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Everything needed to reproduce a run: observations plus settings.

    Arguments:
        start: Time of the first state of the window (ISO string or datetime64).
        observations: The observation set.
        model: Model name or path to a model package.
        task: ``"reanalysis"``, ``"filter"`` or ``"forecast"``.
        hours: Length of the assimilation window in hours, ≥ 1.
        lead_hours: Forecast lead time in hours (≥ 1 for the forecast task).
        members: Ensemble size, ≥ 1.
        sampler: Sampler settings.
        guidance: Guidance settings.
        seed: Random seed, ≥ 0.
    """

    start: np.datetime64
    observations: ObservationSet = field(default_factory=ObservationSet)
    model: str = "default"
    task: Literal["reanalysis", "filter", "forecast"] = "reanalysis"
    hours: int = 24
    lead_hours: int = 0
    members: int = 8
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    seed: int = 0

    def __post_init__(self):
        try:
            start = np.asarray(self.start, dtype="datetime64[ns]")
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"start {self.start!r} is not a date ({e})", hint="e.g. '2021-01-01T00:00'"
            ) from e
        if start.ndim != 0 or np.isnat(start):
            raise ConfigError(
                f"start must be one date, got {self.start!r}", hint="e.g. '2021-01-01T00:00'"
            )
        object.__setattr__(self, "start", start[()])
        if not isinstance(self.observations, ObservationSet):
            try:
                object.__setattr__(self, "observations", ObservationSet(tuple(self.observations)))
            except TypeError as e:
                raise ConfigError(
                    "observations must be an ObservationSet or a list of observers"
                ) from e
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(
                f"model must be a name or a path, got {self.model!r}", hint="e.g. 'default'"
            )
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        _check_int("hours", self.hours, minimum=1)
        _check_int("lead_hours", self.lead_hours, minimum=0)
        _check_int("members", self.members, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.task == "forecast" and self.lead_hours < 1:
            raise ConfigError("a forecast needs lead_hours ≥ 1", hint="set lead_hours, e.g. 24")
        for key, cls in (("sampler", SamplerSettings), ("guidance", GuidanceSettings)):
            value = getattr(self, key)
            if isinstance(value, dict):
                object.__setattr__(self, key, config_from_dict(cls, value, prefix=f"{key}."))
            elif not isinstance(value, cls):
                raise ConfigError(f"{key} must be a {cls.__name__} or a mapping, got {value!r}")

    @property
    def end(self) -> np.datetime64:
        """Time of the last state of the assimilation window (hourly states)."""
        return self.start + np.timedelta64(self.hours - 1, "h")

    def to_dict(self) -> dict:
        """Plain data (the file's content), with ``version`` first."""

        return {
            "version": SCENARIO_VERSION,
            "model": self.model,
            "task": self.task,
            "start": _iso(self.start),
            "hours": int(self.hours),
            "lead_hours": int(self.lead_hours),
            "members": int(self.members),
            "seed": int(self.seed),
            "sampler": config_to_dict(self.sampler),
            "guidance": config_to_dict(self.guidance),
            "observations": [observer_to_dict(obs) for obs in self.observations],
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the scenario") -> "Scenario":
        """Build a scenario from plain data, checking the version and the keys."""

        if not isinstance(data, dict):
            raise ConfigError(
                f"{source} must hold a mapping at the top level, got {type(data).__name__}"
            )
        data = dict(data)
        if "version" not in data:
            raise ConfigError(
                f"{source} has no 'version'", hint=f"add 'version: {SCENARIO_VERSION}' at the top"
            )
        version = data.pop("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(
                f"{source} has an invalid version {version!r}",
                hint=f"use version: {SCENARIO_VERSION}",
            )
        if version > SCENARIO_VERSION:
            raise ConfigError(
                f"{source} has format version {version}, newer than the {SCENARIO_VERSION} this Appa Studio reads",
                hint=("upgrade appa-studio (pip install -U appa-studio), "
                      "or re-export the scenario from the older version"),
            )
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(
                f"{source} has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
                hint=f"valid keys: version, {', '.join(sorted(valid))}",
            )
        if "start" not in data:
            raise ConfigError(f"{source} has no 'start'", hint="add e.g. start: '2021-01-01T00:00'")
        raw = data.get("observations") or []
        if not isinstance(raw, list):
            raise ConfigError(f"'observations' in {source} must be a list of observers")
        observers = [
            observer_from_dict(d, where=f"{source}, observer #{k + 1}") for k, d in enumerate(raw)
        ]
        try:
            data["observations"] = ObservationSet(tuple(observers))
        except ObservationError as e:
            raise ConfigError(f"{source}: {e.message}", hint=e.hint) from e
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the scenario atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""

        from appa_engine.io.atomic import atomic_write_text

        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        elif path.suffix == ".json":
            text = json.dumps(data, indent=2, allow_nan=True) + "\n"
        else:
            raise ConfigError(
                f"cannot save a scenario as '{path.suffix}'", hint="use a .yaml or .json file name"
            )
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        """Read a scenario file (YAML or JSON)."""

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"scenario file '{path}' does not exist")
        text = path.read_text()
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text)
            else:
                raise ConfigError(
                    f"scenario file '{path}' has an unknown extension", hint="use .yaml or .json"
                )
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot parse scenario file '{path}': {e}") from e
        return cls.from_dict(data, source=f"scenario file '{path}'")


class _Dumper(yaml.SafeDumper):
    """Writes lists of scalars on one line (``[1.0, 2.0]``), everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list):
    flow = all(not isinstance(v, (list, dict)) for v in data) or all(
        isinstance(v, list) and all(not isinstance(u, (list, dict)) for u in v) for v in data
    )
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=flow and len(data) > 0
    )


_Dumper.add_representer(list, _represent_list)


def _iso(t: Any) -> Any:
    t = np.asarray(t, dtype="datetime64[ns]")
    whole = np.all(t.astype(np.int64) % 10**9 == 0)
    s = np.datetime_as_string(t, unit="s" if whole else "ns")
    return s.tolist() if isinstance(s, np.ndarray) else str(s)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.datetime64):
        return _iso(value)
    if isinstance(value, np.timedelta64):  # before np.integer, of which it is a subclass
        ns = int(value.astype("timedelta64[ns]").astype(np.int64))
        return f"{ns // 10**9}s" if ns % 10**9 == 0 else f"{ns}ns"
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":
            return _iso(value)
        if value.size > INLINE_LIMIT:
            data = np.ascontiguousarray(value, dtype="<f8").tobytes()
            return {
                "shape": list(value.shape),
                "dtype": "float64",
                "base64": base64.b64encode(data).decode(),
            }
        return np.asarray(value, dtype=np.float64).tolist()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):  # orbits
        out = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.init:
                out[f.name] = _encode(getattr(value, f.name))
        return out
    raise ConfigError(f"cannot write a {type(value).__name__} into a scenario file")


def _decode_array(value: Any, where: str) -> Any:
    if isinstance(value, dict) and "base64" in value:
        try:
            data = base64.b64decode(value["base64"], validate=True)
            return np.frombuffer(data, dtype="<f8").reshape(value["shape"]).astype(np.float64)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(
                f"{where}: a base64 array is corrupted ({e})", hint="re-export the scenario"
            ) from e
    return value


def _decode_orbit(value: Any, where: str) -> Any:
    from appa_engine.observations import orbits

    if not isinstance(value, dict) or "type" not in value:
        raise ConfigError(
            f"{where}: 'orbit' must be a mapping with a 'type'",
            hint="e.g. {type: CircularOrbit, altitude_km: 800, inclination_deg: 75}",
        )
    kinds = {"CircularOrbit": orbits.CircularOrbit, "TLEOrbit": orbits.TLEOrbit}
    params = dict(value)
    kind = params.pop("type")
    if kind not in kinds:
        raise ConfigError(
            f"{where}: unknown orbit type {kind!r}", hint=f"use one of: {', '.join(kinds)}"
        )
    cls = kinds[kind]
    valid = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(
            f"{where}: unknown {kind} keys {unknown}",
            hint=f"valid keys: {', '.join(sorted(valid))}",
        )
    try:
        return cls(**params)
    except (ObservationError, TypeError) as e:
        raise ConfigError(f"{where}: invalid orbit: {e}") from e


def observer_to_dict(observer: Observer) -> dict:
    """Plain data of an observer: its ``kind`` and every field."""

    out: dict[str, Any] = {"kind": observer.kind}
    names = [f.name for f in dataclasses.fields(observer)]
    for name in (
        ["name"]
        + [n for n in names if n not in ("name", "errors", "values")]
        + ["errors", "values"]
    ):
        out[name] = _encode(getattr(observer, name))
    return out


def observer_from_dict(data: Any, *, where: str = "observer") -> Observer:
    """Rebuild an observer from :func:`observer_to_dict` data (raises :class:`ConfigError`)."""

    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    params = dict(data)
    kind = params.pop("kind", None)
    if kind not in OBSERVER_KINDS:
        raise ConfigError(
            f"{where} has {'no kind' if kind is None else f'unknown kind {kind!r}'}",
            hint=f"kind must be one of: {', '.join(OBSERVER_KINDS)}",
        )
    cls = OBSERVER_KINDS[kind]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(
            f"{where} ({kind}) has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
            hint=f"valid keys: kind, {', '.join(sorted(valid))}",
        )
    for key in ("values", "lon", "lat", "elevation"):
        if key in params:
            params[key] = _decode_array(params[key], where)
    if "orbit" in params:
        params["orbit"] = _decode_orbit(params["orbit"], where)
    try:
        return cls(**params)
    except TypeError as e:  # a missing required field
        raise ConfigError(
            f"{where} ({kind}): {e}", hint=f"required keys: {', '.join(sorted(_required(cls)))}"
        ) from e
    except AppaError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from e


def _required(cls) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
