"""The one place where the app talks to the engine (:mod:`appa_engine`).

The state classes (:mod:`app.state`) and the views never import :mod:`appa_engine`; they call the
functions here, which open data, read uploads, describe variables, propagate orbits, compute swath
footprints and read and write scenario files. Errors a user can cause come out as
:class:`~appa_engine.errors.AppaError` subclasses (re-exported as :data:`AppaError`), whose
``message`` and ``hint`` the app shows next to the control that caused them.

The run/results part of the app adds the model and the sampler here (:func:`describe_model` is
the seam: it reports what is loaded).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.errors import AppaError, ConfigError, DataError, ObservationError
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
from appa_engine.observations.scenario import Scenario

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
]


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
            f"the truth {path!r} has no time dimension" if not isinstance(path, xr.Dataset) else "the truth has no time",
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
    """What the app can say about its model before the run part loads it."""

    if path is None:
        return ModelStatus(
            None,
            False,
            "No model is loaded: you can explore the truth and design observations, "
            "and export them as a scenario file.",
        )
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model '{path}' does not exist", hint="pass the path of a model package with --model")
    return ModelStatus(str(path), False, f"Model package '{path.name}' found; running it comes with the Results tab.")


def mock_truth(path: str | os.PathLike, *, times: int = 8, nlat: int = 32, nlon: int = 64, seed: int = 0,
               variables: Sequence[str] | None = None, levels: Sequence[int] = (500, 850)) -> Path:
    """Write a small mock truth store (the engine's ``mock_canonical``) for tests and demos."""

    from appa_engine.data.schema import DEFAULT_VARIABLES, mock_canonical, write_wb2_zarr

    names = tuple(variables) if variables is not None else tuple(v for v in DEFAULT_VARIABLES if v != "total_precipitation")
    ds = mock_canonical(times, variables=names, levels=levels, nlat=nlat, nlon=nlon, seed=seed)
    return write_wb2_zarr(ds, path)

