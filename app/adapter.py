r"""The one place where the app talks to the engine (:mod:`appa_engine`).

The state classes (:mod:`app.state`) and the views never import :mod:`appa_engine`; they call the
functions here, which open data, read uploads, describe variables, propagate orbits, compute swath
footprints and read and write scenario files. Errors a user can cause come out as
:class:`~appa_engine.errors.AppaError` subclasses (re-exported as :data:`AppaError`), whose
``message`` and ``hint`` the app shows next to the control that caused them.

The run/results part lives here too: :func:`load_engine` loads a model package once per process
(an :class:`Engine` shared read-only by every session), :func:`run_scenario` runs a scenario on a
worker thread (simulating the values of observers that have none from the truth), publishes the
guided ensemble as soon as it exists and returns the final :class:`RunOutput` (with O−B) after
the background pass, and the results functions (:func:`ensemble_layer`, :func:`layer_range`,
:func:`meteogram`, :func:`metric_curves`, :func:`innovations`, :func:`export_result`) turn an
output into what the views draw. The numerics of the results are defined here, once:

.. math:: \bar{x} = \frac{1}{M}\sum_m x_m, \qquad
    s = \sqrt{\frac{1}{M-1}\sum_m (x_m - \bar{x})^2}, \qquad e = \bar{x} - x^\star,

with the scores over time (RMSE, spread, fair CRPS, spread-skill ratio) taken from
:mod:`appa_engine.metrics` (area-weighted), and the observation-space residuals
:math:`y - \overline{H(x^b)}` (O−B) and :math:`y - \overline{H(x^a)}` (O−A).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.diffusion.samplers import Cancelled
from appa_engine.errors import AppaError, CheckpointError, ConfigError, DataError, ObservationError
from appa_engine.observations.observers import (
    ObservationSet,
    Observer,
    Profiles,
    SatelliteSwath,
    Stations,
    TrackSwath,
    channel_name,
)
from appa_engine.observations.orbits import CircularOrbit
from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings, Scenario

__all__ = [
    "AppaError",
    "ConfigError",
    "DataError",
    "ObservationError",
    "ObservationSet",
    "Observer",
    "Profiles",
    "SatelliteSwath",
    "Stations",
    "TrackSwath",
    "CircularOrbit",
    "Scenario",
    "VariableMeta",
    "ModelStatus",
    "channel_name",
    "open_truth",
    "grid_of",
    "variable_meta",
    "read_station_upload",
    "ground_track",
    "swath_mask",
    "track_mask",
    "scenario_to_bytes",
    "scenario_from_bytes",
    "describe_model",
    "mock_truth",
    "CheckpointError",
    "Cancelled",
    "SamplerSettings",
    "GuidanceSettings",
    "Engine",
    "load_engine",
    "RunOutput",
    "run_scenario",
    "check_run",
    "window_times",
    "align_truth",
    "output_variables",
    "output_levels",
    "truth_field",
    "LAYERS",
    "ensemble_layer",
    "layer_range",
    "Meteogram",
    "meteogram",
    "metric_curves",
    "innovations",
    "export_result",
    "open_export",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VariableMeta:
    """What the app shows about a variable."""

    name: str
    units: str
    long_name: str
    has_levels: bool


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """Which model the app runs, in words (``loaded`` False until the run part loads one)."""

    path: str | None
    loaded: bool
    text: str


def open_truth(path: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    """Open a truth dataset (zarr, NetCDF, GRIB, ...) lazily, in the canonical layout.

    Raises:
        DataError: the source is missing or malformed.
    """

    from appa_engine.data.readers import open_dataset

    ds = open_dataset(path)
    if "time" not in ds.dims or ds.sizes["time"] == 0:
        raise DataError(
            (f"the truth {path!r} has no time dimension" if not isinstance(path, xr.Dataset)
             else "the truth has no time"),
            hint="give a dataset of states with a time axis",
        )
    if not any("time" in ds[v].dims for v in ds.data_vars):
        raise DataError("the truth holds no time-dependent variable", hint="give states, not static fields")
    return ds


def grid_of(ds: xr.Dataset):
    """The :class:`~appa_engine.data.grid.Grid` of a canonical dataset."""

    from appa_engine.data.grid import Grid

    return Grid.from_arrays(ds["latitude"].values, ds["longitude"].values)


@functools.lru_cache(maxsize=256)
def variable_meta(name: str) -> VariableMeta:
    """Units, long name and whether ``name`` lives on pressure levels (WB2 vocabulary)."""

    from appa_engine.data.names import VARIABLES

    info = VARIABLES.get(name)
    if info is None:
        return VariableMeta(name, "", name.replace("_", " "), False)
    return VariableMeta(name, info.units, info.long_name, info.levels)


def read_station_upload(data: bytes, filename: str, *, max_bytes: int, max_stations: int) -> pd.DataFrame:
    """Stations from the bytes of an uploaded CSV or GeoJSON file.

    Returns:
        A DataFrame with columns ``name``, ``lon`` (in [0, 360)), ``lat``, ``elevation``.

    Raises:
        ObservationError: too large, not CSV/GeoJSON, or a bad row (named in the message).
    """

    from appa_engine.observations.io import read_stations

    suffix = Path(filename or "").suffix.lower()
    fmt = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".geojson": "geojson", ".json": "geojson"}.get(suffix)
    if fmt is None:
        raise ObservationError(
            f"cannot read '{filename}': only .csv and .geojson station files are accepted",
            hint="upload a CSV with lon/lat columns or a GeoJSON FeatureCollection of points",
        )
    return read_stations(bytes(data), format=fmt, max_bytes=max_bytes, max_stations=max_stations)


def ground_track(orbit: CircularOrbit, start: np.datetime64, end: np.datetime64, samples_per_hour: float):
    """Sub-satellite points sampled on ``[start, end)``: ``(times, lon, lat)``, lon in [0, 360)."""

    from appa_engine.observations.orbits import sample_times

    times = sample_times(start, end, samples_per_hour)
    lon, lat = orbit.ground_track(times)
    return times, lon, lat


def swath_mask(grid, lon, lat, radius_deg: float) -> np.ndarray:
    """Grid cells within ``radius_deg`` of any point, boolean ``(H, W)``."""

    from appa_engine.observations.orbits import swath_mask as _swath_mask

    return _swath_mask(grid, np.asarray(lon), np.asarray(lat), radius_deg)


def track_mask(grid, lon, lat, width_deg: float) -> np.ndarray:
    """Cells a :class:`TrackSwath` observes: within ``width_deg / 2`` of the great-circle polyline
    (densified every quarter grid spacing, as the operator does), boolean ``(H, W)``."""

    from app.geo import great_circle

    step = 0.25 * min(grid.dlat, grid.dlon)
    lon_d, lat_d = great_circle(lon, lat, step_deg=step)
    return swath_mask(grid, lon_d, lat_d, width_deg / 2.0)


def scenario_to_bytes(scenario: Scenario, fmt: str = "yaml") -> bytes:
    """The scenario file's content (``fmt``: ``"yaml"`` or ``"json"``), as the engine writes it."""

    if fmt not in ("yaml", "json"):
        raise ConfigError(f"unknown scenario format {fmt!r}", hint="use 'yaml' or 'json'")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scenario.{fmt}"
        scenario.save(path)
        return path.read_bytes()


def scenario_from_bytes(data: bytes, filename: str) -> Scenario:
    """Read an uploaded scenario file (``.yaml``, ``.yml`` or ``.json``).

    Raises:
        ConfigError: not a scenario file, a newer version, unknown keys or invalid observers.
    """

    suffix = Path(filename or "").suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(
            f"cannot read '{filename}' as a scenario", hint="upload a .yaml or .json file exported by Appa Studio"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scenario{suffix}"
        path.write_bytes(bytes(data))
        try:
            return Scenario.load(path)
        except UnicodeDecodeError as e:
            raise ConfigError(f"'{filename}' is not a text file", hint="upload a YAML or JSON scenario") from e


def describe_model(path: str | os.PathLike | None) -> ModelStatus:
    """What the app can say about its model: ``loaded`` once :func:`load_engine` loaded it.

    Raises:
        ConfigError: ``path`` does not exist.
    """

    if path is None:
        return ModelStatus(
            None,
            False,
            "No model is loaded: you can explore the truth and design observations, "
            "and export them as a scenario file.",
        )
    engine = _ENGINES.get(_engine_key(path))
    if engine is not None:
        return engine.status
    if str(path) != "default" and not Path(path).exists():
        raise ConfigError(f"model '{path}' does not exist", hint="pass the path of a model package with --model")
    name = "default" if str(path) == "default" else Path(path).name
    return ModelStatus(str(path), False, f"Model package '{name}' found but not loaded yet.")


def mock_truth(path: str | os.PathLike, *, times: int = 8, nlat: int = 32, nlon: int = 64, seed: int = 0,
               variables: Sequence[str] | None = None, levels: Sequence[int] = (500, 850)) -> Path:
    """Write a small mock truth store (the engine's ``mock_canonical``) for tests and demos."""

    from appa_engine.data.schema import DEFAULT_VARIABLES, mock_canonical, write_wb2_zarr

    names = (tuple(variables) if variables is not None
             else tuple(v for v in DEFAULT_VARIABLES if v != "total_precipitation"))
    ds = mock_canonical(times, variables=names, levels=levels, nlat=nlat, nlon=nlon, seed=seed)
    return write_wb2_zarr(ds, path)



# -- the model ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """One loaded model package, shared read-only by every session (see :func:`load_engine`).

    Attributes:
        path: The package directory (resolved).
        model: The :class:`~appa_engine.model.AppaModel`.
        assimilator: The :class:`~appa_engine.tasks.assimilator.Assimilator` running it.
        variables: Variables of the model's channels, in channel order.
        levels: Pressure levels (hPa) of its level variables, ascending.
        grid: Its :class:`~appa_engine.data.grid.Grid`.
        time_step_hours: Hours between consecutive states.
        blanket: K, states per blanket of the prior.
        device: Where it runs (``"cpu"``, ``"cuda:0"``, ...).
        status: What the app says about it.
    """

    path: str
    model: Any
    assimilator: Any
    variables: tuple[str, ...]
    levels: tuple[int, ...]
    grid: Any
    time_step_hours: float
    blanket: int
    device: str
    status: ModelStatus

    @property
    def model_name(self) -> str:
        """What a scenario file names this model: ``"default"`` for the shipped package, else its path."""

        from appa_engine.io.package import default_model_path

        try:
            if Path(self.path).resolve() == default_model_path().resolve():
                return "default"
        except OSError:
            pass
        return self.path

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.model.channels.names)


_ENGINES: dict[str, Engine] = {}
_ENGINE_LOCK = threading.Lock()


def _engine_key(path: str | os.PathLike) -> str:
    from appa_engine.io.package import default_model_path

    resolved = default_model_path() if str(path) == "default" else Path(path).expanduser()
    return str(resolved.resolve())


def _every(hours: float) -> str:
    return "hourly" if hours == 1 else f"{hours:g}-hourly"


def load_engine(path: str | os.PathLike, *, device: str = "auto") -> Engine:
    """Load a model package once per process (later calls with the same path return it at once).

    Thread-safe: sessions that open at the same time wait for one load. Torch keeps its default
    number of threads unless ``APPA_THREADS`` is set.

    Arguments:
        path: ``"default"`` (the shipped model) or a package directory.
        device: ``"auto"`` (the GPU when there is one), ``"cpu"`` or ``"cuda"`` (first load only).

    Raises:
        CheckpointError: not a model package, or a corrupted one.
        ConfigError: ``APPA_THREADS`` is not a positive integer.
    """

    key = _engine_key(path)
    with _ENGINE_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _load_engine(path, device=device)
            _ENGINES[key] = engine
    return engine


def _load_engine(path: str | os.PathLike, *, device: str) -> Engine:
    import torch

    from appa_engine.io.package import load_model, resolve_model_path
    from appa_engine.tasks.assimilator import Assimilator

    threads = os.environ.get("APPA_THREADS")
    if threads:
        try:
            n = int(threads)
            if n < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"APPA_THREADS must be a positive integer, got {threads!r}",
                              hint="unset it to use torch's default (the number of physical cores)") from None
        torch.set_num_threads(n)
    t0 = time.perf_counter()
    resolved = resolve_model_path(path)
    model = load_model(resolved)
    assimilator = Assimilator(model, device=device)
    channels = model.channels
    H, W = model.grid.shape
    spec = model.spec
    text = (f"Model '{resolved.resolve().name}': {spec.preset} preset, {len(channels)} channels on a {H} × {W} grid, "
            f"{_every(spec.time_step_hours)}, blankets of {spec.blanket} states; running on {assimilator.device.type}.")
    engine = Engine(
        path=str(resolved.resolve()),
        model=assimilator.model,
        assimilator=assimilator,
        variables=tuple(channels.variables),
        levels=tuple(sorted(int(p) for p in channels.levels)),
        grid=model.grid,
        time_step_hours=float(spec.time_step_hours),
        blanket=int(spec.blanket),
        device=str(assimilator.device),
        status=ModelStatus(str(resolved), True, text),
    )
    log.info("loaded %s in %.1f s (%d torch threads)", resolved, time.perf_counter() - t0, torch.get_num_threads())
    return engine


# -- running a scenario -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class RunOutput:
    """What a run returns.

    Attributes:
        dataset: The engine's output: variables ``(member, time, [level,] latitude, longitude)``
            and, with observations, ``obs_*`` on dim ``obs``, ``obs_analysis`` and
            ``obs_background`` ``(member, obs)`` and ``footprint``.
        truth: The truth on the output's times, variables and (common) levels, NaN at the times
            it does not cover; None when it covers none of them (or there is no truth).
        scenario: The scenario that ran, with the simulated observation values (re-runnable by
            ``appa assimilate --scenario``).
        seconds: Wall time of the run.
    """

    dataset: xr.Dataset
    truth: xr.Dataset | None
    scenario: Scenario
    seconds: float


def window_times(engine: Engine, scenario: Scenario) -> np.ndarray:
    """Times of the states of a scenario's assimilation window on the model's time step, ``(T,)``."""

    from appa_engine.tasks.assimilator import window_times as _window_times

    return _window_times(scenario.start, scenario.hours, engine.model.time_step)


def _label(t) -> str:
    return np.datetime_as_string(np.datetime64(t, "m")).replace("T", " ")


def _check_covered(truth: xr.Dataset, times: np.ndarray, what: str) -> None:
    have = truth["time"].values
    missing = ~np.isin(times, have)
    if not missing.any():
        return
    span = f"{_label(have[0])} to {_label(have[-1])}" if have.size else "no time"
    first = times[np.flatnonzero(missing)[0]]
    if missing.all():
        message = f"the window {_label(times[0])} to {_label(times[-1])} is outside the truth, which covers {span}"
    else:
        message = (f"the truth has no state at {int(missing.sum())} of the window's {times.size} times "
                   f"(first: {_label(first)}); it covers {span}")
    raise ObservationError(f"{what}: {message}",
                           hint="move or shorten the window so that it lies inside the truth's time range")


def check_run(engine: Engine, scenario: Scenario, truth: xr.Dataset | None) -> None:
    """Fast checks of a scenario before it is queued (no sampling).

    Raises:
        ObservationError: an observer sees a variable or level the model lacks; observers without
            values and no truth, or a window the truth does not cover, to simulate them.
        ConfigError: a forecast lead shorter than the model's time step.
        DataError: the truth is on another grid than the model.
    """

    channels = set(engine.channels)
    for obs in scenario.observations:
        if obs.on_latent:
            continue
        needed = [c for pair in obs.components for c in pair] if hasattr(obs, "components") else obs.channels
        missing = [c for c in needed if c not in channels]
        if missing:
            raise ObservationError(
                f"{obs.kind} '{obs.name}' observes {', '.join(missing)}, which the model does not have",
                hint=f"the model has: {', '.join(engine.variables)}"
                     + (f" on {', '.join(map(str, engine.levels))} hPa" if engine.levels else ""),
            )
    if scenario.task == "forecast" and scenario.lead_hours < engine.time_step_hours:
        raise ConfigError(
            f"a forecast lead of {scenario.lead_hours} h is shorter than the model's time step "
            f"({engine.time_step_hours:g} h), so it would add no state",
            hint=f"use a lead of at least {engine.time_step_hours:g} h",
        )
    need = [obs.name for obs in scenario.observations if obs.values is None]
    if not need:
        return
    names = ", ".join(f"'{n}'" for n in need)
    if truth is None:
        raise ObservationError(
            f"observers {names} have no values and there is no truth to simulate them from",
            hint="load a truth dataset that covers the window, or import a scenario whose observers carry values",
        )
    if grid_of(truth) != engine.grid:
        raise DataError(
            f"the truth is on a {'×'.join(map(str, grid_of(truth).shape))} grid but the model on "
            f"{'×'.join(map(str, engine.grid.shape))}, so observations cannot be simulated from it",
            hint="load a truth on the model's grid (e.g. the truth.zarr shipped with the model)",
        )
    _check_covered(truth, window_times(engine, scenario), f"cannot simulate the values of {names}")


def _simulate_missing(engine: Engine, scenario: Scenario, truth: xr.Dataset | None) -> Scenario:
    """The scenario with values simulated from ``truth`` (noise seeded by ``scenario.seed``) for the
    observers that have none; the others are kept as they are."""

    from appa_engine.tasks.simulate import simulate

    need = [obs for obs in scenario.observations if obs.values is None]
    if not need:
        return scenario
    filled = simulate(engine.model, ObservationSet(tuple(need)), truth, window_times(engine, scenario),
                      seed=scenario.seed)
    by_name = {obs.name: obs for obs in filled}
    observations = ObservationSet(tuple(by_name.get(obs.name, obs) for obs in scenario.observations))
    return dataclasses.replace(scenario, observations=observations)


def _pass(progress: Callable[[int, int], None] | None, index: int,
          passes: int) -> Callable[[int, int], None] | None:
    """Progress of pass ``index`` of ``passes`` equal sampling passes, reported over all of them."""

    if progress is None:
        return None
    return lambda i, n: progress(index * n + i, passes * n)


def run_scenario(engine: Engine, scenario: Scenario, truth: xr.Dataset | None, *,
                 progress: Callable[[int, int], None] | None = None, cancel: Any = None,
                 publish: Callable[[RunOutput], None] | None = None) -> RunOutput:
    """Run a scenario's task (on a worker thread: this takes seconds to minutes).

    Observers without values get values simulated from ``truth`` first. Then two sampling passes
    of ``steps`` each: the guided ensemble (the analysis), handed to ``publish`` as soon as it
    exists (without O−B), and the background (the unguided prior ensemble with the same seed,
    :meth:`~appa_engine.tasks.assimilator.Assimilator.background`) whose observation
    equivalents ``obs_background`` give O−B. The arrays are those of one
    ``assimilator.run(scenario, background=True)`` call. Without observations in the window
    there is no background pass (and nothing is published: the result is final at once).

    Arguments:
        engine: The loaded model.
        scenario: Window, observers and settings.
        truth: The canonical truth dataset (lazy), or None.
        progress: Called with ``(step, 2 × steps)`` after each diffusion step: steps
            ``1 … steps`` are the guided pass, ``steps + 1 … 2 × steps`` the background pass.
        cancel: A :class:`threading.Event`; the sampler raises :class:`Cancelled` at the next step
            once it is set (a guided result already published stays valid).
        publish: Called (on this thread) with the guided :class:`RunOutput`, before the
            background pass; e.g. :meth:`app.jobs.Job.publish`.

    Returns:
        The final output: the guided dataset plus ``obs_background``, the same truth and
        scenario as the published one, and the wall time of the whole run.

    Raises:
        ObservationError, ConfigError, DataError: see :func:`check_run`; too many observations
            for the guidance buffers.
        Cancelled: ``cancel`` was set.
    """

    t0 = time.perf_counter()
    check_run(engine, scenario, truth)
    scenario = _simulate_missing(engine, scenario, truth)
    passes = 2 if len(scenario.observations) else 1
    if cancel is not None and cancel.is_set():  # cancelled while the observations were simulated
        raise Cancelled(0, scenario.sampler.steps)
    assimilator = engine.assimilator
    ds = assimilator.run(scenario, progress=_pass(progress, 0, passes), cancel=cancel)
    guided = RunOutput(ds, align_truth(ds, truth), scenario, time.perf_counter() - t0)
    if not ds.sizes.get("obs", 0):  # the prior: no observation to compare, no background
        return guided
    if publish is not None:
        publish(guided)
    log.debug("guided ensemble in %.1f s; sampling the background", guided.seconds)
    background = assimilator.background(scenario, progress=_pass(progress, 1, passes), cancel=cancel)
    return dataclasses.replace(guided, dataset=ds.assign(obs_background=background),
                               seconds=time.perf_counter() - t0)


# -- results ------------------------------------------------------------------------------------

#: What the globe can show of an ensemble.
LAYERS = ("mean", "spread", "member", "truth", "error")


def output_variables(ds: xr.Dataset) -> list[str]:
    """The state variables of an output (dims ``(member, time, [level,] latitude, longitude)``)."""

    return [str(v) for v in ds.data_vars
            if ds[v].dims[:2] == ("member", "time") and {"latitude", "longitude"} <= set(ds[v].dims)]


def output_levels(ds: xr.Dataset, variable: str) -> list[int]:
    """Pressure levels of ``variable`` in an output (empty for a surface variable)."""

    da = ds[variable]
    return [int(p) for p in da["level"].values] if "level" in da.dims else []


def _check_grid(ds: xr.Dataset, truth: xr.Dataset) -> bool:
    return (truth.sizes.get("latitude") == ds.sizes["latitude"]
            and truth.sizes.get("longitude") == ds.sizes["longitude"]
            and np.allclose(truth["latitude"].values, ds["latitude"].values, atol=1e-6)
            and np.allclose(truth["longitude"].values, ds["longitude"].values, atol=1e-6))


def align_truth(ds: xr.Dataset, truth: xr.Dataset | None) -> xr.Dataset | None:
    """The truth on an output's times, state variables and levels (loaded in memory).

    Times the truth lacks are NaN; variables and levels it lacks are left out. None without a
    truth, on another grid, or when it covers none of the output's times.
    """

    if truth is None or not _check_grid(ds, truth):
        if truth is not None:
            log.warning("the truth is not on the output's grid: results are shown without it")
        return None
    names = [v for v in output_variables(ds)
             if v in truth.data_vars and {"time", "latitude", "longitude"} <= set(truth[v].dims)
             and ("level" in truth[v].dims) == ("level" in ds[v].dims)]
    times = ds["time"].values
    covered = np.isin(times, truth["time"].values)
    if not names or not covered.any():
        return None
    sub = truth[names].sel(time=times[covered])
    if "level" in sub.dims:
        levels = [p for p in ds["level"].values if p in sub["level"].values]
        sub = sub.sel(level=levels) if levels else sub.drop_vars([v for v in names if "level" in truth[v].dims])
    if not sub.data_vars:
        return None
    sub = sub.reset_coords(drop=True).reindex(time=times)
    sub = sub.assign_coords(latitude=ds["latitude"].values, longitude=ds["longitude"].values)
    if "level" in sub.dims:
        sub = sub.assign_coords(level=sub["level"].values.astype(ds["level"].dtype))
    return sub.load()


def _field(ds: xr.Dataset, variable: str, level: int | None) -> xr.DataArray:
    if variable not in ds.data_vars:
        raise DataError(f"the output has no variable {variable!r}",
                        hint=f"choose one of {', '.join(output_variables(ds))}")
    da = ds[variable]
    if "level" in da.dims:
        if level is None or int(level) not in [int(p) for p in da["level"].values]:
            raise DataError(f"{variable} has no level {level!r} in the output",
                            hint=f"choose one of {', '.join(map(str, output_levels(ds, variable)))} hPa")
        da = da.sel(level=int(level))
    return da


def truth_field(truth: xr.Dataset | None, *, variable: str, level: int | None) -> xr.DataArray | None:
    """The truth of ``variable`` (at ``level``) over the output's times, ``(time, latitude,
    longitude)``, or None when the truth lacks it."""

    if truth is None or variable not in truth.data_vars:
        return None
    da = truth[variable]
    if "level" in da.dims:
        if level is None or int(level) not in [int(p) for p in da["level"].values]:
            return None
        da = da.sel(level=int(level))
    return da


def _need_truth(truth, variable, level) -> xr.DataArray:
    y = truth_field(truth, variable=variable, level=level)
    if y is None:
        raise DataError(f"this run has no truth of {variable}" + (f" at {level} hPa" if level is not None else ""),
                        hint="load a truth that covers the run's window and variables, then run again")
    return y


def _spread(x: xr.DataArray) -> xr.DataArray:
    """Ensemble standard deviation over ``member`` (ddof=1; 0 for a single member)."""

    if x.sizes["member"] < 2:
        return xr.zeros_like(x.isel(member=0, drop=True))
    return x.std("member", ddof=1)


def ensemble_layer(ds: xr.Dataset, truth: xr.Dataset | None, *, layer: str, variable: str, level: int | None,
                   time_index: int, member: int = 0) -> xr.DataArray:
    """One map of an output: ``(latitude, longitude)``, float64.

    Arguments:
        ds: A run's dataset.
        truth: Its aligned truth (:attr:`RunOutput.truth`) or None.
        layer: ``"mean"`` (ensemble mean), ``"spread"`` (ensemble standard deviation, ddof=1;
            0 for one member), ``"member"``, ``"truth"`` or ``"error"`` (mean − truth).
        variable, level: The field (``level`` None for a surface variable).
        time_index: Index along the output's time.
        member: The member shown by the ``"member"`` layer.

    Raises:
        DataError: an unknown variable/level/member, or a truth layer without truth.
    """

    if layer not in LAYERS:
        raise ConfigError(f"unknown layer {layer!r}", hint=f"use one of {', '.join(LAYERS)}")
    x = _field(ds, variable, level).isel(time=int(time_index)).astype(np.float64)
    if layer == "member":
        if not 0 <= int(member) < x.sizes["member"]:
            raise DataError(f"member {member} does not exist", hint=f"the run has {x.sizes['member']} members")
        out = x.isel(member=int(member))
    elif layer == "mean":
        out = x.mean("member")
    elif layer == "spread":
        out = _spread(x)
    else:
        y = _need_truth(truth, variable, level).isel(time=int(time_index)).astype(np.float64)
        out = y if layer == "truth" else x.mean("member") - y
    out = out.transpose("latitude", "longitude").reset_coords(drop=True)
    out.name = variable
    out.attrs = {"units": ds[variable].attrs.get("units", ""), "layer": layer}
    return out


def _percentiles(values: np.ndarray, q) -> np.ndarray:
    values = values[np.isfinite(values)]
    return np.percentile(values, q) if values.size else np.full(np.shape(q), np.nan)


def layer_range(ds: xr.Dataset, truth: xr.Dataset | None, *, layer: str, variable: str,
                level: int | None) -> tuple[float, float]:
    """A colour range of a layer that stays fixed over time.

    ``mean``, ``member`` and ``truth`` share the 1st–99th percentiles of the truth and the
    ensemble mean together; ``spread`` is ``(0, p99)``; ``error`` is ``±p99 |mean − truth|``.
    """

    if layer not in LAYERS:
        raise ConfigError(f"unknown layer {layer!r}", hint=f"use one of {', '.join(LAYERS)}")
    x = _field(ds, variable, level).astype(np.float64)
    mean = x.mean("member")
    y = truth_field(truth, variable=variable, level=level)
    if layer == "spread":
        hi = float(_percentiles(_spread(x).values.ravel(), 99))
        return (0.0, hi if np.isfinite(hi) and hi > 0 else 1.0)
    if layer == "error":
        if y is None:
            return (-1.0, 1.0)
        hi = float(_percentiles(np.abs(mean.values - y.values.astype(np.float64)).ravel(), 99))
        hi = hi if np.isfinite(hi) and hi > 0 else 1.0
        return (-hi, hi)
    values = (mean.values.ravel() if y is None
              else np.concatenate([mean.values.ravel(), y.values.astype(np.float64).ravel()]))
    lo, hi = (float(v) for v in _percentiles(values, [1, 99]))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return (lo, hi)


@dataclasses.dataclass(frozen=True, eq=False)
class Meteogram:
    """The ensemble at one grid cell over time, with the truth and the nearby observations.

    Attributes:
        lon, lat: The grid cell used (the nearest one), lon in [0, 360).
        variable, level, units: The field.
        times: ``(T,)`` datetime64[ns].
        members: ``(M, T)``.
        truth: ``(T,)`` (NaN where the truth has no state) or None.
        obs: Observations of this variable and level strictly within one grid spacing of the cell
            (in latitude and in longitude): columns ``time``, ``value``, ``error``, ``observer``,
            ``lon``, ``lat``.
    """

    lon: float
    lat: float
    variable: str
    level: int | None
    units: str
    times: np.ndarray
    members: np.ndarray
    truth: np.ndarray | None
    obs: pd.DataFrame


def _nearest(ds: xr.Dataset, lon: float, lat: float) -> tuple[int, int]:
    lats = ds["latitude"].values.astype(np.float64)
    lons = ds["longitude"].values.astype(np.float64)
    i = int(np.argmin(np.abs(lats - float(lat))))
    j = int(np.argmin(np.abs((lons - float(lon) + 180.0) % 360.0 - 180.0)))
    return i, j


def _obs_columns() -> list[str]:
    return ["time", "value", "error", "observer", "lon", "lat"]


def meteogram(ds: xr.Dataset, truth: xr.Dataset | None, *, variable: str, level: int | None, lon: float,
              lat: float) -> Meteogram:
    """The ensemble, truth and observations at the grid cell nearest to ``(lon, lat)``."""

    if not (np.isfinite(lon) and np.isfinite(lat)) or abs(lat) > 90:
        raise DataError(f"({lon}, {lat}) is not a point of the globe", hint="click on the globe")
    x = _field(ds, variable, level)
    i, j = _nearest(ds, lon, lat)
    cell_lat = float(ds["latitude"].values[i])
    cell_lon = float(ds["longitude"].values[j]) % 360.0
    members = np.asarray(x.isel(latitude=i, longitude=j).transpose("member", "time").values, dtype=np.float64)
    y = truth_field(truth, variable=variable, level=level)
    y = None if y is None else np.asarray(y.isel(latitude=i, longitude=j).values, dtype=np.float64)
    obs = pd.DataFrame({c: [] for c in _obs_columns()})
    if "obs_value" in ds and ds.sizes.get("obs", 0):
        dlat = abs(float(np.diff(ds["latitude"].values[:2])[0]))
        dlon = abs(float(np.diff(ds["longitude"].values[:2])[0]))
        olat = ds["obs_lat"].values.astype(np.float64)
        olon = ds["obs_lon"].values.astype(np.float64)
        olev = ds["obs_level"].values.astype(np.float64)
        same_level = np.isnan(olev) if level is None else (olev == float(level))
        near = ((np.abs(olat - cell_lat) < dlat - 1e-6)
                & (np.abs((olon - cell_lon + 180.0) % 360.0 - 180.0) < dlon - 1e-6))
        keep = (ds["obs_variable"].values.astype(str) == variable) & same_level & near
        obs = pd.DataFrame({
            "time": ds["obs_time"].values[keep].astype("datetime64[ns]"),
            "value": ds["obs_value"].values[keep].astype(np.float64),
            "error": ds["obs_error"].values[keep].astype(np.float64),
            "observer": ds["observer"].values[keep].astype(str),
            "lon": olon[keep],
            "lat": olat[keep],
        }).sort_values("time", kind="stable").reset_index(drop=True)
    units = ds[variable].attrs.get("units") or variable_meta(variable).units
    return Meteogram(cell_lon, cell_lat, variable, None if level is None else int(level), units,
                     ds["time"].values.astype("datetime64[ns]"), members, y, obs)


def metric_curves(ds: xr.Dataset, truth: xr.Dataset | None, *, variable: str, level: int | None) -> pd.DataFrame | None:
    """Scores of the ensemble against the truth at each time the truth covers.

    Returns:
        A DataFrame indexed by ``time`` with columns ``rmse``, ``spread``, ``crps`` (fair) and
        ``ssr`` (spread-skill ratio), all area-weighted (:mod:`appa_engine.metrics`); None without
        truth for this field.
    """

    from appa_engine import metrics

    y = truth_field(truth, variable=variable, level=level)
    if y is None:
        return None
    x = _field(ds, variable, level).astype(np.float64)
    y = y.astype(np.float64).transpose("time", "latitude", "longitude")
    covered = np.flatnonzero(np.isfinite(y.values).any(axis=(1, 2)))
    if covered.size == 0:
        return None
    x, y = x.isel(time=covered), y.isel(time=covered)
    x = x.reset_coords(drop=True)
    y = y.reset_coords(drop=True)
    frame = pd.DataFrame({
        "rmse": metrics.rmse(x, y).values,
        "spread": metrics.spread(x).values,
        "crps": metrics.crps(x, y).values,
        "ssr": metrics.spread_skill_ratio(x, y).values,
    }, index=pd.DatetimeIndex(x["time"].values, name="time"))
    return frame


_INNOVATION_COLUMNS = ["observer", "variable", "level", "lon", "lat", "time", "value", "error",
                       "o_minus_b", "o_minus_a"]


def innovations(ds: xr.Dataset | None) -> pd.DataFrame:
    """One row per scalar observation: ``observer, variable, level, lon, lat, time, value, error,
    o_minus_b, o_minus_a``, where O−B is the value minus the member mean of ``obs_background``
    (NaN without a background) and O−A the value minus the member mean of ``obs_analysis``
    (an empty table for None or an output without observations)."""

    if ds is None or "obs_value" not in ds or not ds.sizes.get("obs", 0):
        return pd.DataFrame({c: [] for c in _INNOVATION_COLUMNS})
    value = ds["obs_value"].values.astype(np.float64)
    analysis = ds["obs_analysis"].astype(np.float64).mean("member").values
    background = (ds["obs_background"].astype(np.float64).mean("member").values if "obs_background" in ds
                  else np.full_like(value, np.nan))
    return pd.DataFrame({
        "observer": ds["observer"].values.astype(str),
        "variable": ds["obs_variable"].values.astype(str),
        "level": ds["obs_level"].values.astype(np.float64),
        "lon": ds["obs_lon"].values.astype(np.float64),
        "lat": ds["obs_lat"].values.astype(np.float64),
        "time": ds["obs_time"].values.astype("datetime64[ns]"),
        "value": value,
        "error": ds["obs_error"].values.astype(np.float64),
        "o_minus_b": value - background,
        "o_minus_a": value - analysis,
    })


def _export_name(ds: xr.Dataset) -> str:
    task = str(ds.attrs.get("task", "run"))
    start = np.datetime_as_string(np.datetime64(ds["time"].values[0], "h")) if ds.sizes.get("time") else "empty"
    return f"appa-{task}-{start}"


def export_result(ds: xr.Dataset, fmt: str) -> tuple[bytes, str]:
    """The bytes of an output file and its name.

    Arguments:
        ds: A run's dataset (the scenario stays in its attributes).
        fmt: ``"netcdf"`` (``appa-<task>-<start>.nc``) or ``"zarr"`` (a zip of a zarr store,
            ``appa-<task>-<start>.zarr.zip``, which opens with
            ``xr.open_zarr(zarr.storage.ZipStore(path))``).
    """

    from appa_engine.io.outputs import write_dataset

    if fmt not in ("netcdf", "zarr"):
        raise ConfigError(f"unknown export format {fmt!r}", hint="use 'netcdf' or 'zarr'")
    name = _export_name(ds)
    with tempfile.TemporaryDirectory() as tmp:
        if fmt == "netcdf":
            return write_dataset(ds, Path(tmp) / f"{name}.nc").read_bytes(), f"{name}.nc"
        store = write_dataset(ds, Path(tmp) / "store.zarr")
        archive = Path(tmp) / "store.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:  # chunks are compressed
            for file in sorted(store.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(store).as_posix())
        return archive.read_bytes(), f"{name}.zarr.zip"


def open_export(path: str | os.PathLike) -> xr.Dataset:
    """Read a file written by :func:`export_result` (``.nc``, ``.zarr.zip`` or a ``.zarr`` directory), in memory."""

    path = Path(path)
    if path.name.endswith(".zip"):
        import zarr

        store = zarr.storage.ZipStore(path, mode="r")
        try:
            with xr.open_zarr(store, consolidated=False) as f:
                return f.load()
        finally:
            store.close()
    if path.suffix == ".zarr":
        with xr.open_zarr(path, consolidated=False) as f:
            return f.load()
    if path.suffix in (".nc", ".nc4"):
        with xr.open_dataset(path, engine="netcdf4") as f:  # no guessing: cfgrib would load eccodes
            ds = f.load()
        if "footprint" in ds and ds["footprint"].dtype == np.uint8:  # NetCDF has no booleans
            ds["footprint"] = ds["footprint"].astype(bool)
        return ds
    raise ConfigError(f"cannot tell the format of '{path.name}'", hint="use a .nc or .zarr.zip file")
