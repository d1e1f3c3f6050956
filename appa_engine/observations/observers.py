r"""Observers as data: who observes what, where, when, and how well.

An observer is a frozen description (no tensors, no grid) of a set of scalar observations

.. math:: y = \mathcal{A}(x^{1:L}) + \eta, \qquad \eta \sim \mathcal{N}(0, \Sigma_y),
    \quad \Sigma_y = \operatorname{diag}(\sigma_1^2, \dots, \sigma_N^2),

where each observer contributes a block of rows of :math:`\mathcal{A}` and of :math:`\Sigma_y`.
Errors :math:`\sigma` are given per variable in *physical* units (K, m/s, Pa, ...); compiling an
:class:`ObservationSet` against a model (:mod:`appa_engine.observations.compile`) turns them into
the standardised units the sampler works in.

Kinds, and the shape of their optional ``values`` (physical units, NaN = missing):

=========================  ====================================================================
:class:`Stations`          point stations at their true coordinates, ``(T, S, V)``
:class:`Profiles`          vertical columns of levels at points, ``(T, S, V)``
:class:`WindSpeedStations` :math:`\sqrt{u^2 + v^2}` at points (nonlinear), ``(T, S, V)``
:class:`SatelliteSwath`    grid cells seen by an orbiting instrument, ``(N,)`` in compiled order
:class:`TrackSwath`        grid cells under a hand-drawn polyline, ``(N,)`` in compiled order
:class:`FullStateObserver` whole states (e.g. an analysis), ``(T, V, H, W)``
:class:`LatentObserver`    whole *latent* states, ``(T, Z, h, w)``, applied before decoding
=========================  ====================================================================

Here ``T`` is the number of observation times of the observer, ``S`` of locations and ``V`` of
observed channels (:attr:`Observer.channels`: every variable at every level, variable-major).
Channels are named ``variable`` (surface) or ``variable_level`` (``temperature_850``): an observer
lists ``variables`` and, optionally, ``levels`` (hPa); without levels, a variable may itself be a
channel name such as ``"temperature_850"``.

``errors`` is either one number (every channel) or a mapping from a channel name or a variable
name to a standard deviation; a channel name takes precedence over its variable.

Every validation failure raises :class:`~appa_engine.errors.ObservationError` with a hint.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from appa_engine.errors import ObservationError

__all__ = [
    "Observer",
    "Stations",
    "Profiles",
    "WindSpeedStations",
    "SatelliteSwath",
    "TrackSwath",
    "FullStateObserver",
    "LatentObserver",
    "ObservationSet",
    "OBSERVER_KINDS",
    "channel_name",
    "split_channel",
    "time_range",
]

_LEVEL = re.compile(r"^(?P<variable>.+)_(?P<level>\d+(?:\.\d+)?)$")


def channel_name(variable: str, level: float | None) -> str:
    """``"temperature", 850`` → ``"temperature_850"``; ``"2m_temperature", None`` → itself."""

    return variable if level is None else f"{variable}_{float(level):g}"


def split_channel(channel: str) -> tuple[str, float | None]:
    """``"temperature_850"`` → ``("temperature", 850.0)``; ``"2m_temperature"`` → ``(.., None)``."""

    m = _LEVEL.match(channel)
    if m is None:
        return channel, None
    return m["variable"], float(m["level"])


def _as_time(value: Any, *, what: str) -> np.datetime64:
    times = _as_times(value, what=what, allow_scalar=True)
    if times.ndim != 0:
        raise ObservationError(
            f"{what} must be a single time, got {times.size}", hint="e.g. '2021-01-01T00:00'"
        )
    return times[()]


def _as_times(value: Any, *, what: str, allow_scalar: bool = False) -> np.ndarray:
    try:
        times = np.array(value, dtype="datetime64[ns]")  # a copy: frozen by the observers
    except (TypeError, ValueError) as e:
        raise ObservationError(
            f"{what} could not be read as dates ({e})",
            hint="pass numpy datetime64 values or ISO strings such as '2021-01-01T06:00'",
        ) from e
    if times.ndim == 0 and not allow_scalar:
        times = times.reshape(1)
    if np.any(np.isnat(times)):
        raise ObservationError(
            f"{what} contain NaT (not-a-time) values", hint="drop the missing times"
        )
    return times


def _as_timedelta(value: Any, *, what: str) -> np.timedelta64:
    import pandas as pd

    hint = "e.g. '1h', '30min' or np.timedelta64(1, 'h')"
    try:
        delta = value if isinstance(value, np.timedelta64) else pd.Timedelta(value).to_timedelta64()
    except (TypeError, ValueError, AttributeError) as e:  # AttributeError: pd.NaT
        raise ObservationError(f"{what} {value!r} is not a duration", hint=hint) from e
    if np.isnat(delta):
        raise ObservationError(f"{what} is missing (NaT)", hint=hint)
    return delta.astype("timedelta64[ns]")


def time_range(start: Any, end: Any, freq: Any = "1h") -> np.ndarray:
    """Regular times from ``start`` to ``end`` *inclusive* (when ``end`` falls on the step).

    Arguments:
        start: First time (ISO string, datetime or np.datetime64).
        end: Last time.
        freq: Step, a duration (``"1h"``, ``"30min"``, ``np.timedelta64(6, "h")``).

    Returns:
        Times, shape ``(T,)``, datetime64[ns].
    """

    t0 = _as_time(start, what="the start time")
    t1 = _as_time(end, what="the end time")
    step = _as_timedelta(freq, what="the frequency")
    if step <= np.timedelta64(0, "ns"):
        raise ObservationError(f"the frequency must be positive, got {freq!r}", hint="e.g. '1h'")
    if t1 < t0:
        raise ObservationError(f"the end time {t1} is before the start time {t0}", hint="swap them")
    return np.arange(t0, t1 + np.timedelta64(1, "ns"), step)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, np.datetime64) or isinstance(b, np.datetime64):
        return type(a) is type(b) and bool(a == b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Observer:
    r"""Base of every observer.

    Arguments:
        name: Unique name within an :class:`ObservationSet` (shown in tables and plots).
        errors: Observation error standard deviation in physical units, one number for every
            channel or a mapping ``{channel or variable: std}``; all > 0.
        values: Observed values in physical units (shape per kind, see the module docstring),
            NaN where missing, or None when they are still to be simulated.
    """

    #: Short name of the kind, used in scenario files and tables.
    kind: ClassVar[str] = ""
    #: Whether the observer sees latent states (applied to the latent, not the decoded, trajectory).
    on_latent: ClassVar[bool] = False

    name: str
    errors: Mapping[str, float] | float
    values: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ObservationError(
                f"an observer needs a non-empty name, got {self.name!r}", hint="e.g. name='synop'"
            )
        self._normalise()
        self._check_errors()
        if self.values is not None:
            values = np.array(self.values, dtype=np.float64)  # a copy: frozen below
            values = self._check_values(values)
            values.setflags(write=False)
            object.__setattr__(self, "values", values)

    # Hooks for the kinds.
    def _normalise(self) -> None:
        pass

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        return values

    def _fail(self, message: str, hint: str | None = None):
        raise ObservationError(f"{self.kind} '{self.name}': {message}", hint=hint)

    @property
    def channels(self) -> tuple[str, ...]:
        """Observed quantities (model channels, or derived names for nonlinear observers)."""
        return ()

    def _error_keys(self) -> set[str]:
        keys = set(self.channels)
        keys.update(split_channel(c)[0] for c in self.channels)
        return keys

    def _check_errors(self) -> None:
        errors = self.errors
        if isinstance(errors, Mapping):
            errors = {str(k): v for k, v in errors.items()}
            if not errors:
                self._fail("errors is empty", hint="give one std per variable, or a single number")
            allowed = self._error_keys()
            unknown = sorted(set(errors) - allowed) if allowed else []
            if unknown:
                self._fail(
                    f"errors are given for {', '.join(map(repr, unknown))}, which it does not observe",
                    hint=f"keys must be among: {', '.join(sorted(allowed))}",
                )
            for key, value in errors.items():
                errors[key] = self._check_std(value, key)
            object.__setattr__(self, "errors", errors)
            for channel in self.channels:
                self.error_of(channel)  # every channel must resolve
        else:
            object.__setattr__(self, "errors", self._check_std(errors, "all channels"))

    def _check_std(self, value: Any, key: str) -> float:
        try:
            std = float(value)
        except (TypeError, ValueError):
            self._fail(
                f"the error of {key} is not a number: {value!r}",
                hint="give a std in physical units",
            )
        if not (math.isfinite(std) and std > 0):
            self._fail(
                f"the error of {key} must be a positive finite std, got {value!r}",
                hint="observation errors are standard deviations in physical units, e.g. 0.5 (K)",
            )
        return std

    def error_of(self, channel: str) -> float:
        """Error std (physical units) of one observed channel."""

        if not isinstance(self.errors, dict):
            return float(self.errors)
        if channel in self.errors:
            return self.errors[channel]
        variable = split_channel(channel)[0]
        if variable in self.errors:
            return self.errors[variable]
        self._fail(
            f"no error is given for {channel!r}",
            hint=f"add {variable!r} (or {channel!r}) to errors, or give a single number",
        )

    # Equality compares arrays element-wise (NaN == NaN); observers are not hashable.
    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            _equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)
        )

    __hash__ = None  # type: ignore[assignment]

    def _summary(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._summary()
        values = "no values" if self.values is None else f"values {self.values.shape}"
        return f"{type(self).__name__}({self.name!r}, {extra}{', ' if extra else ''}{values})"


def _as_variables(owner: Observer, variables: Any) -> tuple[str, ...]:
    if isinstance(variables, str):
        variables = (variables,)
    try:
        variables = tuple(variables)
    except TypeError:
        owner._fail(
            f"variables must be a list of names, got {variables!r}", hint="e.g. ['2m_temperature']"
        )
    if not variables:
        owner._fail(
            "observes no variable", hint="list at least one variable, e.g. ['2m_temperature']"
        )
    for v in variables:
        if not isinstance(v, str) or not v:
            owner._fail(f"variable names must be non-empty strings, got {v!r}")
    if len(set(variables)) != len(variables):
        owner._fail(
            f"variables contain duplicates: {list(variables)}", hint="list each variable once"
        )
    return variables


def _as_levels(owner: Observer, levels: Any, *, required: bool = False) -> tuple[float, ...] | None:
    if levels is None:
        if required:
            owner._fail("needs levels", hint="give pressure levels in hPa, e.g. levels=[850, 500]")
        return None
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if levels.ndim != 1 or levels.size == 0:
        owner._fail("levels must be a non-empty list", hint="e.g. levels=[850, 500] (hPa)")
    if not np.all(np.isfinite(levels)) or np.any(levels <= 0):
        owner._fail(f"levels must be positive pressures in hPa, got {levels.tolist()}")
    if len(np.unique(levels)) != levels.size:
        owner._fail(f"levels contain duplicates: {levels.tolist()}", hint="list each level once")
    return tuple(float(v) for v in levels)


def _as_points(
    owner: Observer, lon: Any, lat: Any, *, what: str = "location"
) -> tuple[np.ndarray, np.ndarray]:
    try:
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        lat = np.atleast_1d(np.array(lat, dtype=np.float64))
    except (TypeError, ValueError) as e:
        owner._fail(f"coordinates are not numbers ({e})", hint="give lon and lat in degrees")
    if lon.ndim != 1 or lat.ndim != 1:
        owner._fail(f"lon and lat must be 1-D, got shapes {lon.shape} and {lat.shape}")
    if lon.size != lat.size:
        owner._fail(
            f"has {lon.size} longitudes but {lat.size} latitudes",
            hint=f"give one (lon, lat) pair per {what}",
        )
    if lon.size == 0:
        owner._fail(f"has no {what}", hint=f"give at least one {what}")
    bad = np.flatnonzero(~(np.isfinite(lon) & np.isfinite(lat)))
    if bad.size:
        owner._fail(
            f"{what} {bad[0]} has a NaN or infinite coordinate ({bad.size} in all)",
            hint=f"drop the {what}s without coordinates",
        )
    bad = np.flatnonzero(np.abs(lat) > 90)
    if bad.size:
        owner._fail(
            f"{what} {bad[0]} has latitude {lat[bad[0]]:g} outside [-90, 90] ({bad.size} in all)",
            hint="check that longitude and latitude are not swapped",
        )
    lon = np.mod(lon, 360.0)
    lon = np.where(lon >= 360.0, 0.0, lon)  # np.mod(-1e-17, 360) == 360.0
    for a in (lon, lat):
        a.setflags(write=False)
    return lon, lat


def _check_unique_times(owner: Observer, times: np.ndarray) -> np.ndarray:
    if times.ndim != 1 or times.size == 0:
        owner._fail(
            "has no observation time",
            hint="give at least one time, e.g. time_range(start, end, '1h')",
        )
    if len(np.unique(times)) != times.size:
        owner._fail("times contain duplicates", hint="list each observation time once")
    times.setflags(write=False)
    return times


def _values_tsv(owner: Observer, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if values.shape == shape:
        return values
    if shape[-1] == 1 and values.shape == shape[:-1]:
        return values.reshape(shape)
    owner._fail(
        f"values have shape {values.shape}, expected {shape} (times, locations, channels)",
        hint="arrange values as (time, location, channel) with channels in the order of .channels",
    )


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class _PointObserver(Observer):
    lon: np.ndarray
    lat: np.ndarray
    times: np.ndarray
    names: tuple[str, ...] | None = None
    elevation: np.ndarray | None = None

    def _normalise(self) -> None:
        lon, lat = _as_points(self, self.lon, self.lat, what="station")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        times = _as_times(self.times, what=f"{self.kind} '{self.name}' times")
        object.__setattr__(self, "times", _check_unique_times(self, times))
        if self.names is not None:
            names = (
                (self.names,) if isinstance(self.names, str) else tuple(str(n) for n in self.names)
            )
            if len(names) != lon.size:
                self._fail(
                    f"has {len(names)} names for {lon.size} stations",
                    hint="give one name per station",
                )
            object.__setattr__(self, "names", names)
        if self.elevation is not None:
            elevation = np.atleast_1d(np.array(self.elevation, dtype=np.float64))
            if elevation.shape != lon.shape:
                self._fail(
                    f"has {elevation.size} elevations for {lon.size} stations",
                    hint="give one elevation (m) per station, NaN where unknown",
                )
            elevation.setflags(write=False)
            object.__setattr__(self, "elevation", elevation)

    @property
    def n_locations(self) -> int:
        return int(self.lon.size)

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        return _values_tsv(self, values, (self.times.size, self.lon.size, len(self.channels)))

    def _summary(self) -> str:
        return f"{self.lon.size} locations, {self.times.size} times, channels={list(self.channels)}"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Stations(_PointObserver):
    """Point stations, interpolated bilinearly at their true coordinates.

    Arguments:
        lon: Longitudes in degrees (any range; stored in [0, 360)), shape ``(S,)``.
        lat: Latitudes in degrees, in [-90, 90], shape ``(S,)``.
        times: Observation times, shape ``(T,)`` (see :func:`time_range`); between two model
            states the operator interpolates linearly in time.
        variables: Observed variables (surface names, or level variables with ``levels``).
        levels: Pressure levels (hPa) of level variables, or None.
        names: Optional station names, ``(S,)``.
        elevation: Optional station elevations in metres, ``(S,)`` (for display; the operator
            does not correct for height).
        values: Optional values, ``(T, S, V)`` (``(T, S)`` accepted when ``V = 1``).
    """

    kind: ClassVar[str] = "stations"

    variables: tuple[str, ...]
    levels: tuple[float, ...] | None = None

    def _normalise(self) -> None:
        object.__setattr__(self, "variables", _as_variables(self, self.variables))
        object.__setattr__(
            self, "levels", _as_levels(self, self.levels, required=self.kind == "profiles")
        )
        super()._normalise()

    @property
    def channels(self) -> tuple[str, ...]:
        if self.levels is None:
            return self.variables
        return tuple(channel_name(v, p) for v in self.variables for p in self.levels)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Profiles(Stations):
    """Vertical profiles (radiosondes, aircraft columns): a column of levels at each point.

    The operator is that of :class:`Stations` applied at every level; ``levels`` is required.
    Values are ``(T, S, V)`` with the channels variable-major, level-minor.
    """

    kind: ClassVar[str] = "profiles"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class WindSpeedStations(_PointObserver):
    r"""Wind speed at points, the nonlinear example.

    .. math:: \mathcal{A}(x) = \sqrt{u(x)^2 + v(x)^2}

    with :math:`u, v` bilinearly interpolated (in space, then linearly in time) at the station
    in physical units; at 10 m (``levels=None``) from ``10m_u_component_of_wind`` and
    ``10m_v_component_of_wind``, otherwise from ``u_component_of_wind_<level>`` and
    ``v_component_of_wind_<level>``. Observed channels are ``10m_wind_speed`` or
    ``wind_speed_<level>``; ``errors`` may be keyed ``wind_speed``.

    Arguments:
        levels: Pressure levels (hPa), or None for the 10 m wind.
        values: Optional speeds in m/s, ``(T, S, V)`` with ``V`` = number of levels (1 at 10 m).
    """

    kind: ClassVar[str] = "wind_speed_stations"

    levels: tuple[float, ...] | None = None

    def _normalise(self) -> None:
        object.__setattr__(self, "levels", _as_levels(self, self.levels))
        super()._normalise()

    @property
    def channels(self) -> tuple[str, ...]:
        if self.levels is None:
            return ("10m_wind_speed",)
        return tuple(channel_name("wind_speed", p) for p in self.levels)

    def _error_keys(self) -> set[str]:
        return super()._error_keys() | {"wind_speed"}

    def error_of(self, channel: str) -> float:
        if (
            isinstance(self.errors, dict)
            and channel not in self.errors
            and "wind_speed" in self.errors
        ):
            return self.errors["wind_speed"]
        return super().error_of(channel)

    @property
    def components(self) -> tuple[tuple[str, str], ...]:
        """Model channels ``(u, v)`` behind each observed channel."""

        if self.levels is None:
            return (("10m_u_component_of_wind", "10m_v_component_of_wind"),)
        return tuple(
            (channel_name("u_component_of_wind", p), channel_name("v_component_of_wind", p))
            for p in self.levels
        )


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class SatelliteSwath(Observer):
    r"""An orbiting instrument observing every grid cell within its field of view.

    The orbit (:class:`~appa_engine.observations.orbits.CircularOrbit` or
    :class:`~appa_engine.observations.orbits.TLEOrbit`) is sampled ``samples_per_hour`` times per
    hour on ``[start, end)``. **Binning:** a sample at time :math:`s` observes the model state
    :math:`t_k` nearest to it when :math:`t_k - \tau \le s < t_k + \tau`, with :math:`\tau` the
    ``tolerance`` (default: half the spacing of the model states, so that every sample bins to
    exactly one state; a smaller tolerance drops the samples far from every state). The cells of
    state :math:`k` are the union of the fields of view of its samples, so there is one
    observation per (state, channel, cell), duplicates removed; its time is the state time and
    the operator is a selection (no interpolation).

    Arguments:
        orbit: An orbit with ``ground_track(times) -> (lon, lat)``.
        fov_radius_deg: Great-circle radius of the field of view, in (0, 90) degrees (Appa: 5).
        samples_per_hour: Sampling rate (Appa: 60).
        start: First sample time.
        end: End of the sampling, excluded.
        variables: Observed variables; ``levels`` (hPa) as for :class:`Stations`.
        tolerance: Binning half-width :math:`\tau` (a duration), or None for the default.
        values: Optional values, ``(N,)`` in the row order of the compiled observations (state,
            channel, cell), which depends on the grid and the model times.
    """

    kind: ClassVar[str] = "satellite_swath"

    orbit: Any
    fov_radius_deg: float
    samples_per_hour: float
    start: np.datetime64
    end: np.datetime64
    variables: tuple[str, ...]
    levels: tuple[float, ...] | None = None
    tolerance: np.timedelta64 | None = None

    def _normalise(self) -> None:
        object.__setattr__(self, "variables", _as_variables(self, self.variables))
        object.__setattr__(self, "levels", _as_levels(self, self.levels))
        if not callable(getattr(self.orbit, "ground_track", None)):
            self._fail(
                f"the orbit {type(self.orbit).__name__} has no ground_track(times)",
                hint="use CircularOrbit or TLEOrbit from appa_engine.observations.orbits",
            )
        for key in ("fov_radius_deg", "samples_per_hour"):
            value = getattr(self, key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                self._fail(f"{key} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                self._fail(
                    f"{key} must be positive, got {value!r}",
                    hint="Appa: 5° radius, 60 samples per hour",
                )
            object.__setattr__(self, key, value)
        if self.fov_radius_deg >= 90:
            self._fail(f"the field-of-view radius {self.fov_radius_deg}° must be below 90°")
        start = _as_time(self.start, what=f"the start of '{self.name}'")
        end = _as_time(self.end, what=f"the end of '{self.name}'")
        if end <= start:
            self._fail(f"end {end} is not after start {start}", hint="sampling covers [start, end)")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if self.tolerance is not None:
            tol = _as_timedelta(self.tolerance, what="the tolerance")
            if tol <= np.timedelta64(0, "ns"):
                self._fail(
                    f"the tolerance must be positive, got {self.tolerance!r}", hint="e.g. '30min'"
                )
            object.__setattr__(self, "tolerance", tol)

    @property
    def channels(self) -> tuple[str, ...]:
        if self.levels is None:
            return self.variables
        return tuple(channel_name(v, p) for v in self.variables for p in self.levels)

    @property
    def times(self) -> np.ndarray:
        """Sample times on ``[start, end)``, shape ``(n_samples,)``."""

        from appa_engine.observations.orbits import sample_times

        return sample_times(self.start, self.end, self.samples_per_hour)

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        if values.ndim != 1:
            self._fail(f"values must be 1-D (compiled row order), got shape {values.shape}")
        return values

    def _summary(self) -> str:
        return f"{self.start} to {self.end}, fov {self.fov_radius_deg:g}°, channels={list(self.channels)}"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class TrackSwath(Observer):
    """Every grid cell within ``width_deg / 2`` of a hand-drawn polyline, at each of ``times``.

    The polyline runs along great circles between its vertices (it is densified every quarter
    grid spacing and the cells within the half-width of any point are kept). At each time, one
    observation per (channel, cell); between model states the operator interpolates linearly in
    time.

    Arguments:
        lon: Vertex longitudes in degrees, shape ``(P,)`` (one vertex gives a disc).
        lat: Vertex latitudes in degrees, shape ``(P,)``.
        width_deg: Full swath width, great-circle degrees (1° ≈ 111 km), in (0, 180).
        times: Observation times, shape ``(T,)``.
        variables: Observed variables; ``levels`` (hPa) as for :class:`Stations`.
        values: Optional values, ``(N,)`` in the compiled row order (time, channel, cell).
    """

    kind: ClassVar[str] = "track_swath"

    lon: np.ndarray
    lat: np.ndarray
    width_deg: float
    times: np.ndarray
    variables: tuple[str, ...]
    levels: tuple[float, ...] | None = None

    def _normalise(self) -> None:
        object.__setattr__(self, "variables", _as_variables(self, self.variables))
        object.__setattr__(self, "levels", _as_levels(self, self.levels))
        lon, lat = _as_points(self, self.lon, self.lat, what="vertex")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        try:
            width = float(self.width_deg)
        except (TypeError, ValueError):
            self._fail(f"width_deg must be a number, got {self.width_deg!r}")
        if not (math.isfinite(width) and 0 < width < 180):
            self._fail(
                f"width_deg must lie in (0, 180), got {self.width_deg!r}",
                hint="e.g. 10 (≈ 1100 km)",
            )
        object.__setattr__(self, "width_deg", width)
        times = _as_times(self.times, what=f"track_swath '{self.name}' times")
        object.__setattr__(self, "times", _check_unique_times(self, times))

    @property
    def channels(self) -> tuple[str, ...]:
        if self.levels is None:
            return self.variables
        return tuple(channel_name(v, p) for v in self.variables for p in self.levels)

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        if values.ndim != 1:
            self._fail(f"values must be 1-D (compiled row order), got shape {values.shape}")
        return values

    def _summary(self) -> str:
        return f"{self.lon.size} vertices, width {self.width_deg:g}°, {self.times.size} times"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class FullStateObserver(Observer):
    """Whole physical states at given times (e.g. an analysis to start a forecast from).

    The operator is the identity on the chosen channels and every grid cell, interpolated
    linearly in time between model states (exact on state times).

    Arguments:
        times: Observation times, shape ``(T,)``.
        variables: Observed variables (with ``levels``), or None for every model channel.
        values: Optional values, ``(T, V, H, W)``.
    """

    kind: ClassVar[str] = "full_state"

    times: np.ndarray
    variables: tuple[str, ...] | None = None
    levels: tuple[float, ...] | None = None

    def _normalise(self) -> None:
        if self.variables is not None:
            object.__setattr__(self, "variables", _as_variables(self, self.variables))
        elif self.levels is not None:
            self._fail(
                "levels are given without variables",
                hint="give variables, or neither for all channels",
            )
        object.__setattr__(self, "levels", _as_levels(self, self.levels))
        times = _as_times(self.times, what=f"full_state '{self.name}' times")
        object.__setattr__(self, "times", _check_unique_times(self, times))

    @property
    def channels(self) -> tuple[str, ...]:
        if self.variables is None:
            return ()
        if self.levels is None:
            return self.variables
        return tuple(channel_name(v, p) for v in self.variables for p in self.levels)

    def resolve_channels(self, model_channels: Sequence[str]) -> tuple[str, ...]:
        """Observed channels against a model (every model channel when ``variables`` is None)."""
        return tuple(model_channels) if self.variables is None else self.channels

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        if (
            values.ndim != 4
            or values.shape[0] != self.times.size
            or (self.variables is not None and values.shape[1] != len(self.channels))
        ):
            self._fail(
                f"values have shape {values.shape}, expected (T={self.times.size}, V, H, W)",
                hint="arrange values as (time, channel, latitude, longitude)",
            )
        return values

    def _summary(self) -> str:
        channels = "all channels" if self.variables is None else f"channels={list(self.channels)}"
        return f"{self.times.size} times, {channels}"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LatentObserver(Observer):
    r"""Whole *latent* states at given times.

    :attr:`on_latent` is True: the compiled operator applies it to the latent trajectory
    :math:`z^{1:L}` (``(B, T, Z, h, w)``), not to the decoded one, so observing it needs no
    decoder pass. It is the identity on every latent channel and cell, linear in time between
    states. Latent units are the model's (already standardised), so ``errors`` is one number.

    Arguments:
        times: Observation times, shape ``(T,)``.
        errors: Error std in latent units (one number).
        values: Optional latent values, ``(T, Z, h, w)``; without them, compiling needs
            ``latent_shape=(Z, h, w)``.
    """

    kind: ClassVar[str] = "latent"
    on_latent: ClassVar[bool] = True

    times: np.ndarray

    def _normalise(self) -> None:
        if isinstance(self.errors, Mapping):
            self._fail("errors must be one number (latent units)", hint="e.g. errors=0.1")
        times = _as_times(self.times, what=f"latent '{self.name}' times")
        object.__setattr__(self, "times", _check_unique_times(self, times))

    @property
    def channels(self) -> tuple[str, ...]:
        return ("latent",)

    def _check_values(self, values: np.ndarray) -> np.ndarray:
        if values.ndim != 4 or values.shape[0] != self.times.size:
            self._fail(
                f"values have shape {values.shape}, expected (T={self.times.size}, Z, h, w)",
                hint="arrange latent values as (time, latent channel, latent lat, latent lon)",
            )
        return values

    def _summary(self) -> str:
        return f"{self.times.size} times"


#: Observer classes by their ``kind``.
OBSERVER_KINDS: dict[str, type[Observer]] = {
    cls.kind: cls
    for cls in (
        Stations,
        Profiles,
        WindSpeedStations,
        SatelliteSwath,
        TrackSwath,
        FullStateObserver,
        LatentObserver,
    )
}


@dataclass(frozen=True, eq=False)
class ObservationSet:
    """An ordered collection of observers with unique names.

    Compiling it (:meth:`compile`) concatenates the observers' rows in this order into one
    operator :math:`\\mathcal{A}` and one diagonal :math:`\\Sigma_y`.

    Arguments:
        observers: The observers (a sequence, stored as a tuple).
    """

    observers: tuple[Observer, ...] = ()

    def __post_init__(self):
        observers = (
            (self.observers,) if isinstance(self.observers, Observer) else tuple(self.observers)
        )
        for k, obs in enumerate(observers):
            if not isinstance(obs, Observer):
                raise ObservationError(
                    f"item {k} of the observation set is a {type(obs).__name__}, not an observer",
                    hint="build observers with Stations(...), SatelliteSwath(...), ...",
                )
        names = [obs.name for obs in observers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ObservationError(
                f"observer names must be unique, repeated: {', '.join(map(repr, duplicates))}",
                hint="rename one of them",
            )
        object.__setattr__(self, "observers", observers)

    def __iter__(self) -> Iterator[Observer]:
        return iter(self.observers)

    def __len__(self) -> int:
        return len(self.observers)

    def __getitem__(self, key: int | str) -> Observer:
        if isinstance(key, str):
            for obs in self.observers:
                if obs.name == key:
                    return obs
            raise KeyError(key)
        return self.observers[key]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObservationSet):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(obs.name for obs in self.observers)

    def compile(
        self,
        *,
        grid,
        channels: Sequence[str],
        times: Any,
        mean: Any,
        std: Any,
        latent_shape: tuple[int, int, int] | None = None,
        drop_missing: bool = False,
    ):
        """Compile against a model; see :func:`appa_engine.observations.compile.compile_observations`."""

        from appa_engine.observations.compile import compile_observations

        return compile_observations(
            self,
            grid=grid,
            channels=channels,
            times=times,
            mean=mean,
            std=std,
            latent_shape=latent_shape,
            drop_missing=drop_missing,
        )
