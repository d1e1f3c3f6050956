r"""Observer drafts: the editable form of one observer (who observes what, where, when, how well).

A draft is a :class:`param.Parameterized` the widgets edit; :meth:`ObserverDraft.to_observer`
turns it into the engine's frozen observer (:class:`Stations`, :class:`Profiles`,
:class:`SatelliteSwath`, :class:`TrackSwath`) for an assimilation *window* of hourly states
:math:`t_0, t_0 + 1\,\mathrm{h}, \dots, t_0 + (L - 1)\,\mathrm{h}`, and
:meth:`ObserverDraft.from_observer` turns one back (restoring a session from a scenario file).

Times of an observer are the hours ``start_hour, start_hour + every_hours, …`` up to ``end_hour``
(offsets from :math:`t_0`, clipped to the window). Observed *channels* are the surface variables
as they are and the level variables at every selected level (``temperature_850``), with one error
standard deviation per variable in physical units.

The number of scalar observations (what the sampler pays for) is
:math:`T \times S \times V` for stations and profiles, and for swaths the number of
(state, channel, cell) triples seen: a satellite sample at time :math:`s` observes the state
:math:`t_k` with :math:`|s - t_k| < 30` min (half the state spacing), every cell within its field
of view.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import param

from app import adapter
from app.state.notice import error

__all__ = [
    "DEFAULT_ERRORS",
    "PALETTE",
    "Window",
    "Footprint",
    "ObserverDraft",
    "StationsDraft",
    "ProfilesDraft",
    "SatelliteDraft",
    "TrackDraft",
    "DRAFT_KINDS",
    "draft_from_observer",
]

#: Default observation error std per variable, physical units.
DEFAULT_ERRORS: dict[str, float] = {
    "2m_temperature": 1.0,
    "temperature": 1.0,
    "2m_dewpoint_temperature": 1.0,
    "10m_u_component_of_wind": 1.5,
    "10m_v_component_of_wind": 1.5,
    "u_component_of_wind": 1.5,
    "v_component_of_wind": 1.5,
    "geopotential": 100.0,
    "specific_humidity": 5e-4,
    "mean_sea_level_pressure": 100.0,
    "surface_pressure": 100.0,
    "total_precipitation": 1e-4,
}

#: Colours given to observers in turn (distinct on the coolwarm and viridis fields).
PALETTE = ("#ff7f0e", "#2ca02c", "#9467bd", "#e377c2", "#17becf", "#8c564b", "#bcbd22", "#111111")

_HOUR = np.timedelta64(1, "h")


@dataclasses.dataclass(frozen=True)
class Window:
    """The assimilation window: ``hours`` hourly states from ``start``."""

    start: np.datetime64
    hours: int

    @property
    def times(self) -> np.ndarray:
        """State times, shape ``(hours,)``."""
        return self.start + np.arange(self.hours) * _HOUR


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What one observer looks like on the globe.

    Attributes:
        points: ``(lon, lat)`` of point observers, each ``(S,)``, or None.
        lines: ``(lon, lat)`` of tracks with NaN between segments, or None.
        mask: Grid cells observed at least once, boolean ``(H, W)``, or None.
        n_observations: Number of scalar observations over the window.
    """

    label: str
    kind: str
    color: str
    points: tuple[np.ndarray, np.ndarray] | None = None
    lines: tuple[np.ndarray, np.ndarray] | None = None
    mask: np.ndarray | None = None
    n_observations: int = 0


def as_level(p: Any) -> int | float:
    """A pressure level as shown and stored: ``500.0`` → ``500`` (whole hPa), else the float."""

    p = float(p)
    return int(p) if p.is_integer() else p


def _regular_hours(times: np.ndarray, start: np.datetime64) -> tuple[int, int, int, bool]:
    """``(first, last, step, exact)`` hour offsets of ``times`` from ``start``."""

    offsets = (np.sort(np.asarray(times, dtype="datetime64[ns]")) - start) / _HOUR
    first, last = int(np.floor(offsets[0])), int(np.ceil(offsets[-1]))
    steps = np.diff(offsets)
    step = max(1, int(round(steps.min()))) if steps.size else 1
    exact = bool(
        np.all(offsets == np.round(offsets))
        and first >= 0
        and np.array_equal(offsets, np.arange(first, last + 1, step, dtype=np.float64))
    )
    return max(first, 0), max(last, 0), step, exact


class ObserverDraft(param.Parameterized):
    """Base of the drafts: variables, levels, errors, time window and colour."""

    kind: ClassVar[str] = ""
    #: Whether only level variables may be observed (profiles).
    level_only: ClassVar[bool] = False
    #: Variables chosen for a new draft, when the truth has them.
    default_variables: ClassVar[tuple[str, ...]] = ("2m_temperature",)

    label = param.String(default="observer", doc="Unique name of the observer")
    variables = param.ListSelector(default=[], objects=[], doc="Observed variables")
    levels = param.ListSelector(default=[], objects=[], doc="Pressure levels (hPa) of level variables")
    errors = param.Dict(default={}, doc="Error std per variable, physical units")
    start_hour = param.Integer(default=0, bounds=(0, None), doc="First observation, hours after the window start")
    end_hour = param.Integer(default=23, bounds=(0, None), doc="Last observation, hours after the window start")
    every_hours = param.Integer(default=1, bounds=(1, None), doc="Hours between observation times")
    color = param.Color(default=PALETTE[0])
    notice = param.Parameter(default=None, doc="Message for the draft's form (a Notice or None)")
    values = param.Parameter(default=None, doc="Observed values from an imported scenario (cleared on edit)")

    _geometry: ClassVar[tuple[str, ...]] = ("variables", "levels", "start_hour", "end_hour", "every_hours")

    def __init__(self, **params):
        super().__init__(**params)
        self.param.watch(self._drop_values, list(self._geometry))

    def _drop_values(self, *events) -> None:
        if self.values is not None:
            self.values = None

    # -- vocabulary --------------------------------------------------------------------------

    def set_vocabulary(self, variables: Sequence[str], levels: Sequence[float]) -> None:
        """Offer the variables and levels of the truth, keeping the current choice where possible."""

        names = [v for v in variables if not self.level_only or adapter.variable_meta(v).has_levels]
        names += [v for v in self.variables if v not in names]  # keep what a scenario asked for
        levels = sorted({as_level(p) for p in levels} | {as_level(p) for p in self.levels})
        self.param.variables.objects = names
        self.param.levels.objects = levels
        if not self.variables:
            chosen = [v for v in self.default_variables if v in names] or names[:1]
            self.variables = chosen
        if not self.levels and any(adapter.variable_meta(v).has_levels for v in self.variables):
            self.levels = list(levels)

    def channels(self) -> list[str]:
        """Observed channels: surface variables, and level variables at every selected level."""

        out = []
        for v in self.variables:
            if adapter.variable_meta(v).has_levels:
                out += [adapter.channel_name(v, p) for p in self.levels]
            else:
                out.append(v)
        return out

    def error_of(self, variable: str) -> float:
        return float(self.errors.get(variable, DEFAULT_ERRORS.get(variable, 1.0)))

    def set_error(self, variable: str, value: Any) -> bool:
        """Set the error std of one variable; a non-positive or non-numeric value is refused."""

        try:
            std = float(value)
        except (TypeError, ValueError):
            self.notice = error(f"The error of {variable} must be a number, got {value!r}.")
            return False
        if not (np.isfinite(std) and std > 0):
            self.notice = error(
                f"The error of {variable} must be a positive standard deviation, got {value!r}. "
                "Hint: give it in the variable's units, e.g. 0.5 (K)."
            )
            return False
        self.errors = {**self.errors, variable: std}
        self.notice = None
        return True

    def set_times(self, start_hour: int, end_hour: int, every_hours: int, *, hours: int) -> bool:
        """Set the time window (hour offsets within a window of ``hours`` states)."""

        if not (0 <= start_hour <= end_hour < hours):
            self.notice = error(
                f"The times must satisfy 0 ≤ first ({start_hour}) ≤ last ({end_hour}) < {hours} "
                "(the window length)."
            )
            return False
        if every_hours < 1:
            self.notice = error(f"The step must be at least 1 hour, got {every_hours}.")
            return False
        self.param.update(start_hour=int(start_hour), end_hour=int(end_hour), every_hours=int(every_hours))
        self.notice = None
        return True

    def hours(self, window: Window) -> np.ndarray:
        """Observation hour offsets inside the window, shape ``(T,)``."""

        last = min(self.end_hour, window.hours - 1)
        return np.arange(self.start_hour, last + 1, self.every_hours)

    def times(self, window: Window) -> np.ndarray:
        """Observation times, shape ``(T,)``."""
        return window.start + self.hours(window) * _HOUR

    def _errors_for_observer(self) -> dict[str, float]:
        return {v: self.error_of(v) for v in self.variables}

    def _check_common(self, window: Window) -> None:
        if not self.variables:
            raise adapter.ObservationError(f"'{self.label}' observes no variable", hint="choose at least one variable")
        if any(adapter.variable_meta(v).has_levels for v in self.variables) and not self.levels:
            raise adapter.ObservationError(f"'{self.label}' observes level variables but no level is chosen",
                                           hint="choose at least one pressure level")
        if self.hours(window).size == 0:
            raise adapter.ObservationError(
                f"'{self.label}' has no observation time inside the {window.hours}-hour window",
                hint="move its first hour inside the window",
            )

    # -- to implement ------------------------------------------------------------------------

    def to_observer(self, window: Window) -> adapter.Observer:
        """The engine's observer for this draft (raises ObservationError when incomplete)."""
        raise NotImplementedError

    def footprint(self, window: Window, grid) -> Footprint:
        """Geometry and observation count of the draft over the window."""
        raise NotImplementedError

    def _restore_common(self, obs, window: Window) -> list[str]:
        """Copy variables, levels, errors and times from an observer; returns warnings."""

        warnings: list[str] = []
        variables, levels = [], []
        if obs.levels is not None:
            variables, levels = list(obs.variables), list(obs.levels)
        else:
            for channel in obs.variables:
                v, p = _split(channel)
                if v not in variables:
                    variables.append(v)
                if p is not None and p not in levels:
                    levels.append(p)
        self.param.variables.objects = list(dict.fromkeys([*self.param.variables.objects, *variables]))
        self.param.levels.objects = sorted({*map(as_level, self.param.levels.objects), *map(as_level, levels)})
        errors = {}
        for v in variables:
            channel = adapter.channel_name(v, levels[0]) if adapter.variable_meta(v).has_levels and levels else v
            try:
                errors[v] = float(obs.error_of(channel))
            except adapter.ObservationError:
                errors[v] = DEFAULT_ERRORS.get(v, 1.0)
        if isinstance(obs.errors, dict) and len({obs.error_of(c) for c in obs.channels}) > len(variables):
            warnings.append(f"'{obs.name}': per-level errors were merged to one error per variable")
        self.param.update(variables=variables, levels=sorted(as_level(p) for p in levels), errors=errors)
        if set(self.channels()) != set(obs.channels):
            warnings.append(f"'{obs.name}': its channels were completed to every variable at every level")
        return warnings


def _split(channel: str) -> tuple[str, float | None]:
    """``temperature_850`` → (``temperature``, 850.0) when ``temperature`` is a level variable."""

    head, _, tail = channel.rpartition("_")
    if head and tail.replace(".", "", 1).isdigit() and adapter.variable_meta(head).has_levels:
        return head, float(tail)
    return channel, None


class StationsDraft(ObserverDraft):
    """Point stations: a table of ``id, name, lon, lat, elevation`` (lon in [0, 360))."""

    kind: ClassVar[str] = "stations"
    default_variables: ClassVar[tuple[str, ...]] = ("2m_temperature",)
    _geometry: ClassVar[tuple[str, ...]] = (*ObserverDraft._geometry, "table")

    table = param.DataFrame(
        default=None, allow_None=True, columns={"id", "name", "lon", "lat", "elevation"},
        doc="Stations; ``id`` is a stable integer used to match drawn points",
    )

    def __init__(self, **params):
        if params.get("table") is None:
            params["table"] = empty_table()
        super().__init__(**params)

    @property
    def n_stations(self) -> int:
        return len(self.table)

    def next_ids(self, n: int) -> np.ndarray:
        start = int(self.table["id"].max()) + 1 if len(self.table) else 0
        return np.arange(start, start + n, dtype=np.int64)

    def _observer_class(self):
        return adapter.Stations

    def to_observer(self, window: Window) -> adapter.Observer:
        self._check_common(window)
        if not len(self.table):
            raise adapter.ObservationError(f"'{self.label}' has no station", hint="click on the globe to add stations")
        elevation = self.table["elevation"].to_numpy(dtype=np.float64)
        return self._observer_class()(
            name=self.label,
            lon=self.table["lon"].to_numpy(dtype=np.float64),
            lat=self.table["lat"].to_numpy(dtype=np.float64),
            names=tuple(str(n) for n in self.table["name"]),
            elevation=None if np.all(np.isnan(elevation)) else elevation,
            times=self.times(window),
            errors=self._errors_for_observer(),
            values=self.values,
            **self._channel_fields(),
        )

    def _channel_fields(self) -> dict:
        return {"variables": tuple(self.channels()), "levels": None}

    def n_observations(self, window: Window) -> int:
        return int(self.hours(window).size * len(self.table) * len(self.channels()))

    def footprint(self, window: Window, grid=None) -> Footprint:
        lon = self.table["lon"].to_numpy(dtype=np.float64)
        lat = self.table["lat"].to_numpy(dtype=np.float64)
        return Footprint(self.label, self.kind, self.color, points=(lon, lat),
                         n_observations=self.n_observations(window))

    @classmethod
    def from_observer(cls, obs, window: Window, **params) -> tuple["StationsDraft", list[str]]:
        names = obs.names if obs.names is not None else tuple(f"S{k + 1}" for k in range(obs.lon.size))
        elevation = obs.elevation if obs.elevation is not None else np.full(obs.lon.size, np.nan)
        table = pd.DataFrame({"id": np.arange(obs.lon.size, dtype=np.int64), "name": list(names),
                              "lon": np.asarray(obs.lon, dtype=np.float64),
                              "lat": np.asarray(obs.lat, dtype=np.float64),
                              "elevation": np.asarray(elevation, dtype=np.float64)})
        draft = cls(label=obs.name, table=table, **params)
        warnings = draft._restore_common(obs, window)
        first, last, step, exact = _regular_hours(obs.times, window.start)
        if not exact:
            warnings.append(f"'{obs.name}': irregular times were replaced by hours {first}–{last} every {step} h")
        draft.param.update(start_hour=first, end_hour=last, every_hours=step)
        draft.values = obs.values if exact else None
        return draft, warnings


class ProfilesDraft(StationsDraft):
    """Vertical profiles (radiosondes): level variables at every chosen level, at points."""

    kind: ClassVar[str] = "profiles"
    level_only: ClassVar[bool] = True
    default_variables: ClassVar[tuple[str, ...]] = ("temperature", "u_component_of_wind", "v_component_of_wind")

    def _observer_class(self):
        return adapter.Profiles

    def _channel_fields(self) -> dict:
        return {"variables": tuple(self.variables), "levels": tuple(self.levels)}


class SatelliteDraft(ObserverDraft):
    """A polar orbiter on a circular orbit, observing every cell within its field of view.

    The orbit's epoch is the window start unless an imported scenario fixed another one, so
    ``raan_deg`` and ``phase_deg`` describe where the satellite is when the window opens.
    """

    kind: ClassVar[str] = "satellite_swath"
    level_only: ClassVar[bool] = False
    default_variables: ClassVar[tuple[str, ...]] = ("temperature",)
    _geometry: ClassVar[tuple[str, ...]] = (
        *ObserverDraft._geometry, "altitude_km", "inclination_deg", "raan_deg", "phase_deg", "fov_radius_deg",
        "samples_per_hour",
    )

    altitude_km = param.Number(default=800.0, bounds=(150.0, 40000.0), doc="Altitude above the surface (km)")
    inclination_deg = param.Number(default=75.0, bounds=(0.0, 180.0), doc="Inclination (°); > 90 retrograde")
    raan_deg = param.Number(default=0.0, bounds=(-360.0, 360.0),
                            doc="Longitude of the ascending node at the window start (°)")
    phase_deg = param.Number(default=0.0, bounds=(-360.0, 360.0),
                             doc="Angle from the ascending node at the window start (°)")
    fov_radius_deg = param.Number(default=5.0, bounds=(0.1, 89.0), doc="Field-of-view radius, great-circle degrees")
    samples_per_hour = param.Number(default=60.0, bounds=(1.0, 3600.0), doc="Samples of the ground track per hour")
    epoch = param.Parameter(default=None, doc="Orbit epoch (None: the window start)")
    j2 = param.Boolean(default=False, doc="Add the secular J2 drift")

    _cache: dict

    def __init__(self, **params):
        super().__init__(**params)
        self._cache = {}

    def orbit(self, window: Window) -> adapter.CircularOrbit:
        epoch = window.start if self.epoch is None else self.epoch
        return adapter.CircularOrbit(
            float(self.altitude_km), float(self.inclination_deg), float(self.raan_deg), float(self.phase_deg),
            epoch=np.datetime64(epoch, "ns"), j2=bool(self.j2),
        )

    def set_orbit(self, **params) -> bool:
        """Change orbital parameters; values out of range are refused with a notice."""

        current = {k: getattr(self, k) for k in ("altitude_km", "inclination_deg", "raan_deg", "phase_deg")}
        current.update({k: v for k, v in params.items() if k in current})
        try:
            adapter.CircularOrbit(*(float(current[k])
                                    for k in ("altitude_km", "inclination_deg", "raan_deg", "phase_deg")))
            fov = float(params.get("fov_radius_deg", self.fov_radius_deg))
            if not 0 < fov < 90:
                raise adapter.ObservationError(f"the field-of-view radius {fov}° is outside (0, 90)°",
                                               hint="Appa's polar orbiter sees 5°")
            rate = float(params.get("samples_per_hour", self.samples_per_hour))
            if not rate > 0:
                raise adapter.ObservationError(f"samples per hour must be positive, got {rate}", hint="e.g. 60")
        except (adapter.ObservationError, TypeError, ValueError) as e:
            self.notice = error(e)
            return False
        try:
            self.param.update(**params)
        except ValueError as e:  # a param bound (e.g. altitude below 150 km)
            self.notice = error(str(e))
            return False
        self.notice = None
        return True

    def _bounds(self, window: Window) -> tuple[np.datetime64, np.datetime64]:
        hours = self.hours(window)
        return window.start + int(hours[0]) * _HOUR, window.start + (int(hours[-1]) + 1) * _HOUR

    def track(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ground track over the satellite's time window: ``(times, lon, lat)``, each ``(N,)``."""

        start, end = self._bounds(window)
        return adapter.ground_track(self.orbit(window), start, end, self.samples_per_hour)

    def to_observer(self, window: Window) -> adapter.Observer:
        self._check_common(window)
        start, end = self._bounds(window)
        return adapter.SatelliteSwath(
            name=self.label,
            orbit=self.orbit(window),
            fov_radius_deg=float(self.fov_radius_deg),
            samples_per_hour=float(self.samples_per_hour),
            start=start,
            end=end,
            variables=tuple(self.channels()),
            levels=None,
            errors=self._errors_for_observer(),
            values=self.values,
        )

    def _masks(self, window: Window, grid) -> tuple[np.ndarray, int]:
        key = (window, tuple(grid.shape), grid.latitude[0], self.altitude_km, self.inclination_deg, self.raan_deg,
               self.phase_deg, self.fov_radius_deg, self.samples_per_hour, str(self.epoch), self.j2,
               self.start_hour, self.end_hour)
        if key not in self._cache:
            times, lon, lat = self.track(window)
            # Bin samples to the nearest hourly state (|s - t_k| < 30 min) and count cells per state.
            k = np.floor((times - window.start) / _HOUR + 0.5).astype(np.int64)
            union = np.zeros(grid.shape, dtype=bool)
            cells = 0
            for state in np.unique(k):
                sel = k == state
                mask = adapter.swath_mask(grid, lon[sel], lat[sel], self.fov_radius_deg)
                cells += int(mask.sum())
                union |= mask
            self._cache = {key: (union, cells, lon, lat)}
        union, cells, _, _ = self._cache[key]
        return union, cells

    def footprint(self, window: Window, grid=None) -> Footprint:
        times, lon, lat = self.track(window)
        if grid is None:
            return Footprint(self.label, self.kind, self.color, lines=(lon, lat))
        mask, cells = self._masks(window, grid)
        return Footprint(self.label, self.kind, self.color, lines=(lon, lat), mask=mask,
                         n_observations=cells * len(self.channels()))

    def n_observations(self, window: Window, grid) -> int:
        return self._masks(window, grid)[1] * len(self.channels())

    @classmethod
    def from_observer(cls, obs, window: Window, **params) -> tuple["SatelliteDraft", list[str]]:
        orbit = obs.orbit
        if type(orbit).__name__ != "CircularOrbit":
            raise adapter.ObservationError(
                f"'{obs.name}' uses a {type(orbit).__name__}, which the editor cannot show yet",
                hint="it is kept out of the session; edit the scenario file to keep it",
            )
        wrap = lambda angle: ((float(angle) + 180.0) % 360.0) - 180.0  # noqa: E731  (the same orbit)
        draft = cls(label=obs.name, altitude_km=float(orbit.altitude_km), inclination_deg=float(orbit.inclination_deg),
                    raan_deg=wrap(orbit.raan_deg), phase_deg=wrap(orbit.phase_deg),
                    fov_radius_deg=float(obs.fov_radius_deg), samples_per_hour=float(obs.samples_per_hour),
                    epoch=None if orbit.epoch == window.start else orbit.epoch, j2=bool(orbit.j2), **params)
        warnings = draft._restore_common(obs, window)
        first = (obs.start - window.start) / _HOUR
        last = (obs.end - window.start) / _HOUR - 1
        exact = first == int(first) and last == int(last) and first >= 0 and obs.tolerance is None
        if not exact:
            warnings.append(f"'{obs.name}': its sampling was rounded to whole hours "
                            f"{int(max(first, 0))}–{int(max(last, 0))}")
        draft.param.update(start_hour=int(max(first, 0)), end_hour=int(max(last, 0)))
        draft.values = obs.values if exact else None
        return draft, warnings


class TrackDraft(ObserverDraft):
    """A hand-drawn track (polyline along great circles) with a swath width."""

    kind: ClassVar[str] = "track_swath"
    default_variables: ClassVar[tuple[str, ...]] = ("temperature",)
    _geometry: ClassVar[tuple[str, ...]] = (*ObserverDraft._geometry, "lon", "lat", "width_deg")

    lon = param.Array(default=np.zeros(0), doc="Vertex longitudes (°)")
    lat = param.Array(default=np.zeros(0), doc="Vertex latitudes (°)")
    width_deg = param.Number(default=10.0, bounds=(0.1, 179.0), doc="Full swath width, great-circle degrees")

    _cache: dict

    def __init__(self, **params):
        super().__init__(**params)
        self._cache = {}

    def set_track(self, lon, lat) -> bool:
        """Replace the vertices; the track needs ≥ 2 finite vertices with |lat| ≤ 90."""

        lon = np.asarray(lon, dtype=np.float64).ravel()
        lat = np.asarray(lat, dtype=np.float64).ravel()
        if lon.size != lat.size or lon.size < 2:
            self.notice = error("A track needs at least two vertices. Hint: press and hold to start a line, "
                                "tap to add vertices, press again to end it.")
            return False
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat)) and np.all(np.abs(lat) <= 90)):
            self.notice = error("The track has vertices outside the globe; it was not changed. "
                                "Hint: draw on the visible globe.")
            return False
        self.param.update(lon=np.mod(lon, 360.0), lat=lat)
        self.notice = None
        return True

    def set_width(self, width_deg: Any) -> bool:
        try:
            width = float(width_deg)
        except (TypeError, ValueError):
            width = np.nan
        if not (np.isfinite(width) and 0 < width < 180):
            self.notice = error(f"The swath width must lie in (0, 180)°, got {width_deg!r}.")
            return False
        self.width_deg = width
        self.notice = None
        return True

    def to_observer(self, window: Window) -> adapter.Observer:
        self._check_common(window)
        if self.lon.size < 2:
            raise adapter.ObservationError(f"'{self.label}' has no track", hint="draw a line on the globe")
        return adapter.TrackSwath(
            name=self.label, lon=self.lon, lat=self.lat, width_deg=float(self.width_deg),
            times=self.times(window), variables=tuple(self.channels()), levels=None,
            errors=self._errors_for_observer(), values=self.values,
        )

    def _mask(self, grid) -> np.ndarray:
        key = (tuple(grid.shape), grid.latitude[0], self.lon.tobytes(), self.lat.tobytes(), self.width_deg)
        if key not in self._cache:
            mask = (adapter.track_mask(grid, self.lon, self.lat, self.width_deg) if self.lon.size >= 2
                    else np.zeros(grid.shape, bool))
            self._cache = {key: mask}
        return self._cache[key]

    def n_observations(self, window: Window, grid) -> int:
        return int(self.hours(window).size * self._mask(grid).sum() * len(self.channels()))

    def footprint(self, window: Window, grid=None) -> Footprint:
        from app.geo import great_circle

        lines = great_circle(self.lon, self.lat, step_deg=1.0) if self.lon.size >= 2 else None
        if grid is None:
            return Footprint(self.label, self.kind, self.color, lines=lines)
        return Footprint(self.label, self.kind, self.color, lines=lines, mask=self._mask(grid),
                         n_observations=self.n_observations(window, grid))

    @classmethod
    def from_observer(cls, obs, window: Window, **params) -> tuple["TrackDraft", list[str]]:
        draft = cls(label=obs.name, lon=np.asarray(obs.lon, dtype=np.float64),
                    lat=np.asarray(obs.lat, dtype=np.float64),
                    width_deg=float(obs.width_deg), **params)
        warnings = draft._restore_common(obs, window)
        first, last, step, exact = _regular_hours(obs.times, window.start)
        if not exact:
            warnings.append(f"'{obs.name}': irregular times were replaced by hours {first}–{last} every {step} h")
        draft.param.update(start_hour=first, end_hour=last, every_hours=step)
        draft.values = obs.values if exact else None
        return draft, warnings


#: Draft classes by observer kind.
DRAFT_KINDS: dict[str, type[ObserverDraft]] = {
    cls.kind: cls for cls in (StationsDraft, ProfilesDraft, SatelliteDraft, TrackDraft)
}


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=np.int64), "name": pd.Series(dtype=object),
                         "lon": pd.Series(dtype=np.float64), "lat": pd.Series(dtype=np.float64),
                         "elevation": pd.Series(dtype=np.float64)})


def draft_from_observer(obs, window: Window, **params) -> tuple[ObserverDraft, list[str]]:
    """The draft of an engine observer (raises ObservationError for kinds the editor cannot show)."""

    cls = DRAFT_KINDS.get(obs.kind)
    if cls is None:
        raise adapter.ObservationError(
            f"'{obs.name}' is a {obs.kind} observer, which the editor cannot show yet",
            hint="it is kept out of the session; edit the scenario file to keep it",
        )
    try:
        return cls.from_observer(obs, window, **params)
    except ValueError as e:  # a value outside what the editor offers (e.g. an altitude below 150 km)
        if isinstance(e, adapter.AppaError):
            raise
        raise adapter.ObservationError(f"'{obs.name}' cannot be edited here: {e}") from e

