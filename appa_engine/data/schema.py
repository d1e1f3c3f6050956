r"""Mock data in the real layouts, for tests and benchmarks (the WeatherBench2 ``schema`` idea).

:func:`mock_canonical` builds a canonical dataset with physically plausible magnitudes; the
writers store it the way each real source does, so that every reader is tested without
downloads:

=============================  ===================================================================
:func:`write_wb2_zarr`         WB2 0.25° stores: ``(time, level, latitude, longitude)``, latitude
                               90 → −90, one time step per chunk
:func:`write_wb2_regridded_zarr`  WB2 regridded stores (64×32, 240×121): ``(time, level,
                               longitude, latitude)``, latitude ascending
:func:`write_arco_zarr`        ARCO-ERA5: WB2 names, all 37 ERA5 levels, hourly (levels and hours
                               absent from the input are written as NaN)
:func:`write_cds_netcdf`       CDS NetCDF (2024+): short names, ``valid_time``,
                               ``pressure_level`` (descending, float), ``number``, ``expver``,
                               longitudes −180..180 by default
:func:`write_grib`             GRIB2 as ECMWF writes it (paramId, ``isobaricInhPa``,
                               ``heightAboveGround``), IEEE 32-bit packing so values survive exactly
=============================  ===================================================================

The mock atmosphere is a zonal-mean climate plus travelling planetary waves and a little noise:

.. math::

    T_s(\phi) = 300 - 50 \sin^2\phi, \qquad
    T(p, \phi) = \max\!\big(T_s(\phi)\,(p/p_0)^{a},\ 210\big), \quad a = 0.19, \\
    \Phi(p, \phi) = \Phi_0 + \frac{R_d T_s(\phi)}{a}\big(1 - (p/p_0)^{a}\big)

(the hypsometric equation integrated for :math:`T = T_s (p/p_0)^a`, so geopotential increases with
height while temperature decreases), a westerly jet
:math:`u = 35\,e^{-((|\phi| - 40°)/12°)^2} e^{-\ln^2(p/250)/0.8}` over surface trade winds, and
specific humidity :math:`q = 0.018\,e^{-(\phi/35°)^2}(p/p_0)^3`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.data.grid import Grid
from appa_engine.data.names import ERA5_LEVELS, VARIABLES
from appa_engine.data.readers import canonicalize, validate_canonical
from appa_engine.errors import DataError, require
from appa_engine.io.atomic import atomic_path

__all__ = [
    "DEFAULT_VARIABLES",
    "mock_canonical",
    "write_wb2_zarr",
    "write_wb2_regridded_zarr",
    "write_arco_zarr",
    "write_cds_netcdf",
    "write_grib",
]

#: The variables of Appa's ERA5 state that :func:`mock_canonical` builds by default.
DEFAULT_VARIABLES = (
    "geopotential",
    "temperature",
    "u_component_of_wind",
    "v_component_of_wind",
    "specific_humidity",
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
    "mean_sea_level_pressure",
    "total_precipitation",
)

_R_D = 287.05  # J kg^-1 K^-1
_G = 9.80665  # m s^-2
_A = 0.19  # lapse exponent of T = T_s (p/p0)^a


def _waves(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, hours: np.ndarray
) -> np.ndarray:
    """Travelling planetary waves, shape ``(T, H, W)``, unit amplitude."""

    phi, lam = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    out = np.zeros((hours.size, lat.size, lon.size))
    for k in range(1, 6):
        phase, speed, lat0 = rng.uniform(0, 2 * np.pi), rng.uniform(-10, 20), rng.uniform(-60, 60)
        envelope = np.exp(-(((np.rad2deg(phi) - lat0) / 25.0) ** 2))
        for i, h in enumerate(hours):
            out[i] += envelope * np.cos(k * lam + phase - np.deg2rad(speed) * h / 24 * k) / k
    return out / max(np.abs(out).max(), 1e-12)


def _fields(
    name: str,
    rng: np.random.Generator,
    lat: np.ndarray,
    lon: np.ndarray,
    p: np.ndarray,
    hours: np.ndarray,
) -> np.ndarray:
    """One variable, shape ``(T, P, H, W)`` for level variables, ``(T, H, W)`` or ``(H, W)``."""

    deg = lat[None, None, :, None]
    phi = np.deg2rad(deg)
    lam = np.deg2rad(lon)[None, None, None, :]
    pr = (p / 1000.0)[None, :, None, None]
    nt = hours.size
    wave = _waves(rng, lat, lon, hours)[:, None]  # (T, 1, H, W)
    noise = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    t_s = 300.0 - 50.0 * np.sin(phi) ** 2
    height = np.log(1000.0 / np.maximum(p, 1.0))[None, :, None, None]
    shape3 = (nt, p.size, lat.size, lon.size)
    land = np.maximum(np.cos(2 * lam) * np.cos(phi) - 0.3, 0.0)[0, 0]  # (H, W)
    if name == "temperature":
        return np.maximum(t_s * pr**_A, 210.0) + 3.0 * wave + 0.5 * noise(*shape3)
    if name == "geopotential":
        phi_mean = 100 * _G + _R_D * t_s / _A * (1 - pr**_A)  # hypsometric, Φ(1000 hPa) = 100 g
        return phi_mean + 300.0 * (1 + height) * wave + 5 * noise(*shape3)
    if name == "u_component_of_wind":
        jet = 35.0 * np.exp(-(((np.abs(deg) - 40.0) / 12.0) ** 2))
        jet = jet * np.exp(-np.log(pr / 0.25) ** 2 / 0.8)
        trades = -5.0 * np.cos(3 * phi) * pr**4
        return jet + trades + 4.0 * wave + noise(*shape3)
    if name == "v_component_of_wind":
        return 4.0 * np.roll(wave, lon.size // 8, axis=-1) + noise(*shape3)
    if name == "specific_humidity":
        q = 0.018 * np.exp(-((deg / 35.0) ** 2)) * pr**3 * (1 + 0.2 * wave) + 2e-6
        return np.maximum(q, 1e-7) + 0 * noise(*shape3)
    if name == "vertical_velocity":
        return 0.1 * wave * np.sin(np.pi * pr) + 0.02 * noise(*shape3)
    if name == "relative_humidity":
        return np.clip(70 + 20 * wave - 30 * (1 - pr) + 5 * noise(*shape3), 0, 100)
    # Surface variables, (T, H, W).
    t_s, phi, deg, lam, wave = t_s[:, 0], phi[:, 0], deg[:, 0], lam[:, 0], wave[:, 0]
    shape2 = (nt, lat.size, lon.size)
    if name == "2m_temperature":
        return t_s - 8 * land + 3.0 * wave + 0.5 * noise(*shape2)
    if name == "2m_dewpoint_temperature":
        return t_s - 8 * land - 5.0 + 3.0 * wave + 0.5 * noise(*shape2)
    if name == "skin_temperature":
        return t_s - 8 * land + 1.0 + 3.0 * wave + 0.5 * noise(*shape2)
    if name == "sea_surface_temperature":
        return np.maximum(t_s + 3.0 * wave, 271.35) + 0 * noise(*shape2)
    if name in ("10m_u_component_of_wind", "100m_u_component_of_wind"):
        return -5.0 * np.cos(3 * phi) + 2.0 * wave + noise(*shape2)
    if name in ("10m_v_component_of_wind", "100m_v_component_of_wind"):
        return 2.0 * np.roll(wave, lon.size // 8, axis=-1) + noise(*shape2)
    if name == "10m_wind_speed":
        return np.abs(-5.0 * np.cos(3 * phi) + 2.0 * wave) + np.abs(noise(*shape2))
    if name == "mean_sea_level_pressure":
        return 101325.0 + 700.0 * np.cos(6 * phi) + 1500.0 * wave + 50 * noise(*shape2)
    if name == "surface_pressure":
        msl = 101325.0 + 700.0 * np.cos(6 * phi) + 1500.0 * wave
        return msl * np.exp(-_G * 1500 * land / (_R_D * t_s)) + 50 * noise(*shape2)
    if name in ("total_precipitation", "total_precipitation_6hr", "total_precipitation_24hr"):
        hours_acc = {"total_precipitation": 1, "total_precipitation_6hr": 6}.get(name, 24)
        rate = 2e-4 * (0.3 + np.exp(-((deg / 12.0) ** 2))) * np.exp(2 * wave)  # m per hour
        return hours_acc * rate * rng.gamma(0.5, 2.0, shape2)
    if name == "total_column_water_vapour":
        return 50 * np.exp(-((deg / 35.0) ** 2)) * (1 + 0.2 * wave) + 0.5 * np.abs(noise(*shape2))
    if name in ("total_cloud_cover", "sea_ice_cover"):
        return np.clip(0.5 + 0.4 * wave + 0.1 * noise(*shape2), 0, 1)
    if name == "toa_incident_solar_radiation":
        hour_angle = np.deg2rad(15.0 * (hours[:, None, None] % 24) - 180.0) + lam
        cos_zenith = np.cos(phi) * np.cos(hour_angle)  # equinox
        return 1361.0 * 3600.0 * np.maximum(cos_zenith, 0.0) + 0 * noise(*shape2)
    # Static fields, (H, W).
    if name == "land_sea_mask":
        return (land > 0).astype(np.float64)
    if name == "geopotential_at_surface":
        return _G * 1500.0 * land
    supported = [n for n in VARIABLES if n not in ("potential_vorticity", "wind_speed")]
    raise DataError(
        f"mock_canonical cannot build '{name}'", hint=f"supported: {', '.join(supported)}"
    )


def mock_canonical(
    times: int | Sequence[Any] | pd.DatetimeIndex = 4,
    *,
    variables: Sequence[str] = DEFAULT_VARIABLES,
    levels: Sequence[int] = (500, 850),
    nlat: int = 32,
    nlon: int = 64,
    seed: int = 0,
    poles: bool = False,
    members: int | None = None,
    freq: str = "6h",
    start: str = "2020-01-01",
) -> xr.Dataset:
    """A canonical dataset with plausible magnitudes (see the module docstring), float32.

    Arguments:
        times: Number of time steps (from ``start``, every ``freq``) or the times themselves.
        variables: WB2 names.
        levels: Pressure levels in hPa (any order; stored ascending).
        nlat, nlon: Grid size (:meth:`Grid.regular`).
        seed: Seed of the waves and noise.
        poles: Latitude rows on the poles (``nlat`` odd, e.g. 121) or cell-centred (e.g. 32).
        members: Number of ensemble members (a leading ``member`` dim), or ``None``.
    """

    if isinstance(times, (int, np.integer)):
        index = pd.date_range(start, periods=int(times), freq=freq)
    else:
        index = pd.DatetimeIndex(times)
    time = index.values.astype("datetime64[ns]")
    hours = (time - time[0]) / np.timedelta64(1, "h") if time.size else np.zeros(0)
    grid = Grid.regular(nlat, nlon, poles=poles)
    lat, lon = grid.lat, grid.lon
    p = np.array(sorted(int(v) for v in levels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    n_members = 1 if members is None else int(members)
    data: dict[str, Any] = {}
    for name in variables:
        info = VARIABLES.get(name)
        if info is None:
            raise DataError(f"unknown variable '{name}'", hint=f"known: {', '.join(VARIABLES)}")
        if info.levels and p.size == 0:
            raise DataError(f"'{name}' needs pressure levels, but levels is empty")
        fields = [_fields(name, rng, lat, lon, p, hours) for _ in range(n_members)]
        if info.static:
            dims: tuple[str, ...] = ("latitude", "longitude")
            fields = fields[:1]
        elif info.levels:
            dims = ("time", "level", "latitude", "longitude")
        else:
            dims = ("time", "latitude", "longitude")
        if members is not None and not info.static:
            value = np.stack(fields).astype(np.float32)
            dims = ("member", *dims)
        else:
            value = fields[0].astype(np.float32)
        data[name] = xr.Variable(dims, value, {"units": info.units})
    coords: dict[str, Any] = {"time": time, "latitude": lat, "longitude": lon}
    if any(VARIABLES[n].levels for n in variables):
        coords["level"] = p
    if members is not None:
        coords["member"] = np.arange(n_members, dtype=np.int64)
    return canonicalize(xr.Dataset(data, coords=coords))


# ---------------------------------------------------------------------------------------------
# Writers


def _zarr_encoding(ds: xr.Dataset, chunks: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {
        name: {"chunks": tuple(max(1, min(chunks.get(d, n), n)) for d, n in var.sizes.items())}
        for name, var in ds.data_vars.items()
    }


def _wb2_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Attributes like those of the real WB2 stores (the readers drop them)."""

    ds = ds.copy()
    for name, var in ds.data_vars.items():
        info = VARIABLES.get(name)
        if info is not None:
            var.attrs = {
                "long_name": info.long_name,
                "short_name": info.short_names[0] if info.short_names else name,
                "units": info.units,
            }
    ds.attrs = {"source": "appa_engine.data.schema mock", "comment": "not real data"}
    return ds


def _write_zarr(ds: xr.Dataset, path: str | os.PathLike, encoding: dict, zarr_format: int) -> Path:
    with atomic_path(path, directory=True) as tmp:
        ds.to_zarr(
            tmp, mode="w", encoding=encoding, zarr_format=zarr_format,
            consolidated=zarr_format == 2,
        )  # fmt: skip
    return Path(path)


def write_wb2_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    chunks: dict[str, int] | None = None,
    zarr_format: int = 3,
) -> Path:
    """Write a canonical dataset as a WB2 0.25°-style store.

    Arguments:
        ds: Canonical dataset.
        path: Target directory (written atomically).
        chunks: Chunk length per dim (default: one time step, everything else whole).
        zarr_format: 3 (consolidated=False, as STACK.md) or 2 (consolidated, as the real WB2
            stores).
    """

    validate_canonical(ds)
    encoding = _zarr_encoding(ds, {"time": 1, **(chunks or {})})
    return _write_zarr(_wb2_attrs(ds), path, encoding, zarr_format)


def write_wb2_regridded_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    chunks: dict[str, int] | None = None,
    zarr_format: int = 3,
) -> Path:
    """Write a canonical dataset as a WB2 regridded store: ``(…, longitude, latitude)``, latitude
    ascending."""

    validate_canonical(ds)
    out = _wb2_attrs(ds).isel(latitude=slice(None, None, -1))
    out = out.transpose("member", "time", "level", "longitude", "latitude", missing_dims="ignore")
    encoding = _zarr_encoding(out, {"time": 1, **(chunks or {})})
    return _write_zarr(out, path, encoding, zarr_format)


def write_arco_zarr(ds: xr.Dataset, path: str | os.PathLike, *, zarr_format: int = 3) -> Path:
    """Write a canonical dataset as an ARCO-ERA5-style store: WB2 names, the 37 ERA5 levels,
    hourly times from the first to the last one; what ``ds`` lacks is NaN."""

    validate_canonical(ds)
    if "member" in ds.dims:
        raise DataError("ARCO-ERA5 stores hold no ensembles; select one member first")
    out = _wb2_attrs(ds)
    if "level" in out.dims:
        extra = sorted(set(int(v) for v in out.level.values) - set(ERA5_LEVELS))
        if extra:
            raise DataError(f"levels {extra} are not ERA5 pressure levels")
        out = out.reindex(level=np.array(ERA5_LEVELS, dtype=np.int64))
    if out.sizes.get("time", 0) > 1:
        t = out.indexes["time"]
        hourly = pd.date_range(t[0], t[-1], freq="1h").values.astype("datetime64[ns]")
        out = out.reindex(time=hourly)
    return _write_zarr(out, path, _zarr_encoding(out, {"time": 1}), zarr_format)


def _short_name(name: str) -> str:
    info = VARIABLES.get(name)
    return info.short_names[0] if info is not None and info.short_names else name


def write_cds_netcdf(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    lon_180: bool = True,
    ensemble: bool = False,
) -> Path:
    """Write a canonical dataset as a CDS NetCDF download (the 2024+ CDS format).

    Short names (``z``, ``t``, ``t2m``, …; WB2-only variables keep their long name),
    ``valid_time`` (seconds since 1970), ``pressure_level`` (float hPa, descending), latitude
    descending, longitude in [−180, 180) when ``lon_180`` (else [0, 360)), an ``expver``
    coordinate, and a scalar ``number`` or, with ``ensemble``, a ``number`` dimension (from
    ``member``, or of length 1).
    """

    validate_canonical(ds)
    out = ds.copy()
    if "member" in out.dims:
        if not ensemble:
            raise DataError("the dataset has members: write it with ensemble=True")
        out = out.rename(member="number")
    elif ensemble:
        out = out.expand_dims(number=np.array([0], dtype=np.int64))
    else:
        out = out.assign_coords(number=np.int64(0))
    renames = {name: _short_name(name) for name in out.data_vars}
    if len(set(renames.values())) != len(renames):
        raise DataError("two variables share a CDS short name (e.g. z): write them to two files")
    for name, var in out.data_vars.items():
        info = VARIABLES.get(name)
        attrs: dict[str, Any] = {
            "units": var.attrs.get("units", ""),
            "long_name": var.attrs.get("long_name", name),
        }
        if info is not None and info.param_id is not None:
            attrs.update(
                GRIB_paramId=info.param_id,
                GRIB_shortName=renames[name],
                GRIB_cfVarName=renames[name],
            )
        var.attrs = attrs
    out = out.rename_vars(renames)
    if "level" in out.dims:
        out = out.isel(level=slice(None, None, -1))
        out = out.assign_coords(level=out.level.values.astype(np.float64))
        out = out.rename(level="pressure_level")
        out["pressure_level"].attrs = {
            "units": "hPa", "long_name": "pressure", "standard_name": "air_pressure"
        }
    if lon_180:
        lon = (out.longitude.values + 180.0) % 360.0 - 180.0
        order = np.argsort(lon, kind="stable")
        out = out.isel(longitude=order).assign_coords(longitude=lon[order])
    out["latitude"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
    out["longitude"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
    out = out.rename(time="valid_time")
    out = out.assign_coords(expver=("valid_time", np.full(out.sizes["valid_time"], "0001")))
    out.attrs = {
        "GRIB_centre": "ecmf",
        "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
        "Conventions": "CF-1.7",
        "institution": "European Centre for Medium-Range Weather Forecasts",
        "history": "mock CDS download written by appa_engine.data.schema",
    }
    encoding = {"valid_time": {"units": "seconds since 1970-01-01", "dtype": "int64"}}
    with atomic_path(path) as tmp:
        out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return Path(path)


def write_grib(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write a canonical dataset as GRIB2 (IEEE 32-bit packing, exact for float32 data).

    Uses cfgrib's per-variable writer (``cfgrib.xarray_to_grib.canonical_dataarray_to_grib``);
    cfgrib's dataset writer does not run with current xarray. Variables without an ECMWF
    ``paramId`` (``total_precipitation_6hr``) and ensembles are refused.
    """

    require("cfgrib", extra="grib", purpose="writing GRIB files")
    from cfgrib.xarray_to_grib import canonical_dataarray_to_grib

    validate_canonical(ds)
    if "member" in ds.dims:
        raise DataError("write_grib does not write ensembles; select one member first")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for name, var in ds.data_vars.items():
                info = VARIABLES.get(name)
                if info is None or info.param_id is None:
                    raise DataError(f"'{name}' has no ECMWF paramId and cannot be written to GRIB")
                da = var.copy()
                da.attrs = {"GRIB_paramId": info.param_id}
                keys: dict[str, Any] = {"centre": "ecmf", "edition": 2, "packingType": "grid_ieee"}
                if info.levels:
                    da = da.rename(level="isobaricInhPa")
                    keys["typeOfLevel"] = "isobaricInhPa"
                else:
                    keys["typeOfLevel"] = info.grib_level[0]
                    if info.grib_level[1]:
                        keys["level"] = info.grib_level[1]
                if "time" in da.dims:
                    da = da.assign_coords(time=da.time.values.astype("datetime64[ns]"))
                sample = "regular_ll_pl_grib2" if info.levels else "regular_ll_sfc_grib2"
                canonical_dataarray_to_grib(da, f, grib_keys=keys, sample_name=sample)
    return Path(path)
