"""Readers: every real layout opens to the same canonical dataset, lazily; bad input fails clearly.

Round trips are compared with ``xr.testing.assert_identical`` (values, dtypes, coordinates and
attributes), not ``assert_allclose``: every layout stores float32 losslessly (zarr, NetCDF, GRIB2
with IEEE 32-bit packing), the readers snap coordinates to the exact regular grid and reset
attributes, so anything short of identity is a reader bug.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from appa_engine.data import schema
from appa_engine.data.names import ERA5_LEVELS, check_units, lookup, normalize_units
from appa_engine.data.readers import canonicalize, describe, open_dataset, select, validate_canonical
from appa_engine.errors import DataError, MissingExtraError

GRIB_VARIABLES = ["temperature", "2m_temperature", "10m_u_component_of_wind",
                  "mean_sea_level_pressure", "total_precipitation"]  # one per GRIB level type
ARCO_VARIABLES = ["geopotential", "2m_temperature"]


@pytest.fixture(scope="module")
def mock() -> xr.Dataset:
    return schema.mock_canonical(4, nlat=32, nlon=64, levels=(500, 850), seed=1)


@pytest.fixture(scope="module")
def stores(mock, tmp_path_factory) -> dict:
    """The same mock written in every layout (written once per module)."""

    root = tmp_path_factory.mktemp("layouts")
    ens = schema.mock_canonical(4, nlat=32, nlon=64, levels=(500, 850), seed=2, members=3)
    out = {
        "wb2": schema.write_wb2_zarr(mock, root / "wb2.zarr"),
        "wb2_v2": schema.write_wb2_zarr(mock, root / "wb2_v2.zarr", zarr_format=2),
        "regridded": schema.write_wb2_regridded_zarr(mock, root / "regridded.zarr", zarr_format=2),
        "arco": schema.write_arco_zarr(mock[ARCO_VARIABLES], root / "arco.zarr"),
        "cds": schema.write_cds_netcdf(mock, root / "cds.nc"),
        "cds_360": schema.write_cds_netcdf(mock, root / "cds_360.nc", lon_180=False),
        "cds_ens": schema.write_cds_netcdf(ens, root / "cds_ens.nc", ensemble=True),
        "grib": schema.write_grib(mock[GRIB_VARIABLES], root / "era5.grib"),
        "ensemble": ens,
        "root": root,
    }
    return out


# ---------------------------------------------------------------------------------------------
# The same data in every layout


@pytest.mark.parametrize("layout", ["wb2", "wb2_v2", "regridded", "cds", "cds_360"])
def test_layouts_open_identical(stores, mock, layout):
    ds = open_dataset(stores[layout])
    xr.testing.assert_identical(ds, mock)
    validate_canonical(ds)
    assert list(ds.data_vars) == list(mock.data_vars)  # a fixed variable order


def test_arco_layout_selects_levels_and_hours(stores, mock):
    raw = xr.open_zarr(stores["arco"], consolidated=False)
    assert raw.sizes["level"] == 37 and raw.sizes["time"] == 19  # 18 hours + 1, hourly
    ds = open_dataset(stores["arco"], levels=[850, 500], time=list(mock.time.values))
    xr.testing.assert_identical(ds, mock[ARCO_VARIABLES])
    assert [int(v) for v in open_dataset(stores["arco"])["level"]] == list(ERA5_LEVELS)


def test_grib_layout_opens_identical(stores, mock):
    ds = open_dataset(stores["grib"])
    xr.testing.assert_identical(ds, mock[GRIB_VARIABLES])


def test_cds_ensemble_keeps_members(stores):
    ens = stores["ensemble"]
    ds = open_dataset(stores["cds_ens"])
    assert ds["temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    xr.testing.assert_identical(ds, ens)
    one = open_dataset(stores["cds_ens"], member=1)
    xr.testing.assert_identical(one, ens.sel(member=1, drop=True))
    two = open_dataset(stores["cds_ens"], member=[0, 2])
    xr.testing.assert_identical(two, ens.sel(member=[0, 2]))


def test_directory_and_glob_of_netcdf_files(mock, tmp_path):
    # Split by time and by variable kind, as CDS downloads often are.
    level_vars = [n for n, v in mock.data_vars.items() if "level" in v.dims]
    surface_vars = [n for n in mock.data_vars if n not in level_vars]
    for i, times in enumerate((slice(0, 2), slice(2, 4))):
        part = mock.isel(time=times)
        schema.write_cds_netcdf(part[level_vars], tmp_path / f"pl_{i}.nc")
        schema.write_cds_netcdf(part[surface_vars], tmp_path / f"sfc_{i}.nc")
    ds = open_dataset(tmp_path)
    assert ds["temperature"].chunks is not None  # several files are combined lazily with dask
    xr.testing.assert_identical(ds.load(), mock)
    sfc = open_dataset(str(tmp_path / "sfc_*.nc"), time=slice("2020-01-01T06", None))
    xr.testing.assert_identical(sfc.load(), mock[surface_vars].isel(time=slice(1, None)))
    only = open_dataset(tmp_path, variables=["t"], levels=[850])
    xr.testing.assert_identical(only.load(), mock[["temperature"]].sel(level=[850]))


def test_in_memory_dataset_and_idempotence(mock):
    xr.testing.assert_identical(open_dataset(mock), mock)
    xr.testing.assert_identical(canonicalize(canonicalize(mock)), mock)


# ---------------------------------------------------------------------------------------------
# Laziness: count the chunks the zarr store is asked for


class _CountingStore:
    """Factory of a zarr store wrapper that records every key read."""

    @staticmethod
    def wrap(path):
        from zarr.storage import LocalStore, WrapperStore

        class Counting(WrapperStore):
            def __init__(self, store):
                super().__init__(store)
                self.keys = []

            async def get(self, key, prototype, byte_range=None):
                self.keys.append(key)
                return await self._store.get(key, prototype, byte_range)

            async def get_partial_values(self, prototype, key_ranges):
                key_ranges = list(key_ranges)
                self.keys.extend(k for k, _ in key_ranges)
                return await self._store.get_partial_values(prototype, key_ranges)

        return Counting(LocalStore(str(path), read_only=True))


@pytest.mark.parametrize("writer", [schema.write_wb2_zarr, schema.write_wb2_regridded_zarr])
def test_selection_reads_only_the_needed_chunk(mock, tmp_path, writer):
    path = writer(mock, tmp_path / "store.zarr", chunks={"time": 1, "level": 1})
    store = _CountingStore.wrap(path)
    ds = open_dataset(store, variables=["temperature"], levels=[850], time="2020-01-01T06")
    data_reads = [k for k in store.keys if k.startswith("temperature/c")]
    assert data_reads == []  # opening and selecting read metadata and coordinates only
    values = ds["temperature"].values
    data_reads = [k for k in store.keys if k.startswith(("temperature/c", "geopotential/c"))]
    # Time step 1, level index 1 (850 hPa); the regridded layout is (time, level, lon, lat).
    assert data_reads == ["temperature/c/1/1/0/0"]
    expected = mock["temperature"].sel(level=[850]).isel(time=[1]).values
    np.testing.assert_array_equal(values, expected)
    # Without the selection every chunk of the variable would be read: 4 times × 2 levels.
    store.keys.clear()
    open_dataset(store, variables=["temperature"])["temperature"].load()
    assert len({k for k in store.keys if k.startswith("temperature/c")}) == 8


# ---------------------------------------------------------------------------------------------
# Selection


def test_time_selection_forms(mock):
    ds = open_dataset(mock, time=slice("2020-01-01T06", "2020-01-01T12"))
    assert list(ds.time.values) == list(mock.time.values[1:3])
    day = open_dataset(mock, time="2020-01-01")  # a whole day, dimension kept
    assert day.sizes["time"] == 4
    exact = open_dataset(mock, time=np.datetime64("2020-01-01T18"))
    assert exact.sizes["time"] == 1 and exact.time.values[0] == mock.time.values[3]
    listed = open_dataset(mock, time=[pd.Timestamp("2020-01-01T12"), "2020-01-01T00"])
    assert list(listed.time.values) == [mock.time.values[2], mock.time.values[0]]
    with pytest.raises(DataError, match="no time between 2021-01-01"):
        open_dataset(mock, time=slice("2021-01-01", None))
    with pytest.raises(DataError, match=r"time\(s\) not found: 2020-01-01 03:00") as e:
        open_dataset(mock, time=["2020-01-01T03"])
    assert "2020-01-01 00:00:00 to 2020-01-01 18:00:00" in e.value.hint


def test_missing_variable_lists_available(stores, mock):
    with pytest.raises(DataError, match=r"variable\(s\) vorticity not found") as e:
        open_dataset(stores["wb2"], variables=["temperature", "vorticity"])
    assert "geopotential" in e.value.hint and "2m_temperature" in e.value.hint
    with pytest.raises(DataError, match="not found") as e:
        open_dataset(mock, variables="relative_humidity")
    assert "temperature" in e.value.hint
    short = open_dataset(stores["cds"], variables=["t2m", "z"])  # short names are accepted
    assert list(short.data_vars) == ["geopotential", "2m_temperature"]


def test_missing_level_lists_available(stores):
    with pytest.raises(DataError, match=r"level\(s\) \[300\] hPa not found") as e:
        open_dataset(stores["cds"], levels=[300, 500])
    assert e.value.hint == "available levels (hPa): 500, 850"
    surface = open_dataset(stores["wb2"], variables=["2m_temperature"])
    with pytest.raises(DataError, match="no pressure levels"):
        select(surface, levels=[500])


def test_member_on_deterministic_data_is_refused(mock):
    with pytest.raises(DataError, match="not an ensemble"):
        open_dataset(mock, member=0)


# ---------------------------------------------------------------------------------------------
# Normalisation of other layouts


def _raw(lat, lon, *, times=None, name="t", units="K"):
    times = pd.date_range("2020-01-01", periods=2, freq="6h") if times is None else times
    data = np.arange(len(times) * len(lat) * len(lon), dtype=np.float32).reshape(len(times), len(lat), len(lon))
    return xr.Dataset(
        {name: (("time", "lat", "lon"), data, {"units": units})},
        coords={"time": times, "lat": lat, "lon": lon},
    )


def test_longitudes_in_minus180_180_are_rolled_and_360_dropped():
    lat = 90 - (np.arange(4) + 0.5) * 45
    lon = np.arange(-180, 180, 45.0)
    ds = canonicalize(_raw(lat, lon))
    assert np.array_equal(ds.longitude.values, np.arange(0, 360, 45.0))
    # The value at longitude 0 came from column 4 (lon = 0), the one at 180 from column 0.
    np.testing.assert_array_equal(ds["temperature"].values[:, :, 0], _raw(lat, lon)["t"].values[:, :, 4])
    np.testing.assert_array_equal(ds["temperature"].values[:, :, 4], _raw(lat, lon)["t"].values[:, :, 0])
    wrapped = _raw(lat, np.arange(0, 361, 45.0))  # 0 and 360 both present
    assert canonicalize(wrapped).sizes["longitude"] == 8


def test_ascending_latitudes_are_flipped_and_float32_coordinates_snapped():
    lat = (-90 + (np.arange(32) + 0.5) * 180 / 32).astype(np.float32)
    lon = (np.arange(64) * 5.625).astype(np.float32)
    raw = _raw(lat, lon)
    ds = canonicalize(raw)
    assert ds.latitude.dtype == np.float64 and ds.latitude.values[0] == 87.1875
    np.testing.assert_array_equal(ds["temperature"].values[:, 0], raw["t"].values[:, -1])


def test_gaussian_latitudes_are_refused():
    x, _ = np.polynomial.legendre.leggauss(32)
    lat = np.rad2deg(np.arcsin(x))[::-1]
    with pytest.raises(DataError, match=r"Gaussian grid \(N16\)") as e:
        canonicalize(_raw(lat, np.arange(64) * 5.625))
    assert "regrid" in e.value.hint


def test_irregular_and_regional_grids_are_refused():
    lat = np.array([80.0, 60.0, 30.0, 0.0, -30.0, -60.0, -80.0])
    with pytest.raises(DataError, match="latitude spacing is irregular"):
        canonicalize(_raw(lat, np.arange(8) * 45.0))
    with pytest.raises(DataError, match="do not cover the globe"):
        canonicalize(_raw(np.linspace(60, 30, 4), np.arange(8) * 45.0))
    with pytest.raises(DataError, match="longitudes .* do not cover the globe"):
        canonicalize(_raw(np.linspace(90, -90, 5), np.arange(4) * 10.0))
    with pytest.raises(DataError, match="longitude spacing is irregular"):
        canonicalize(_raw(np.linspace(90, -90, 5), np.array([0.0, 45, 100, 180, 225, 270, 315, 350])))


def test_labels_along_time_are_kept(mock):
    # The synthetic planet labels its independent runs along time; sorting must carry them along.
    labelled = mock.assign_coords(run=("time", np.array([0, 0, 1, 1])))
    out = canonicalize(labelled.isel(time=[2, 0, 3, 1]))
    assert out["run"].values.tolist() == [0, 0, 1, 1]
    validate_canonical(out)


def test_duplicated_times_are_refused_naming_them():
    times = pd.to_datetime(["2020-01-01T00", "2020-01-01T06", "2020-01-01T06", "2020-01-01T12"])
    raw = _raw(np.linspace(90, -90, 5), np.arange(8) * 45.0, times=times)
    with pytest.raises(DataError, match=r"duplicated times, first: 2020-01-01 06:00:00"):
        canonicalize(raw)


def test_unsorted_times_are_sorted_and_logged(caplog):
    times = pd.to_datetime(["2020-01-01T12", "2020-01-01T00", "2020-01-01T06"])
    raw = _raw(np.linspace(90, -90, 5), np.arange(8) * 45.0, times=times)
    with caplog.at_level(logging.WARNING, logger="appa_engine.data.readers"):
        ds = canonicalize(raw)
    assert "not sorted" in caplog.text
    assert list(ds.indexes["time"]) == sorted(times)
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    # Each field moved with its time: the 00 UTC field is raw index 1.
    np.testing.assert_array_equal(ds["temperature"].values[0], raw["t"].values[1])


def test_cds_and_cfgrib_coordinates_are_normalised():
    lat, lon = np.linspace(90, -90, 5), np.arange(8) * 45.0
    t = pd.date_range("2020-01-01", periods=2, freq="6h")
    data = np.random.default_rng(0).normal(size=(2, 3, 5, 8)).astype(np.float32)
    raw = xr.Dataset(
        {"z": (("time", "isobaricInPa", "latitude", "longitude"), data, {"units": "m2 s-2"})},
        coords={
            "time": t, "step": np.timedelta64(0, "ns"), "valid_time": ("time", t.values),
            "isobaricInPa": [100000.0, 85000.0, 50000.0], "latitude": lat, "longitude": lon,
            "number": 0, "surface": 0.0,
        },
    )  # fmt: skip
    ds = canonicalize(raw)
    assert list(ds.data_vars) == ["geopotential"]
    assert ds.level.values.tolist() == [500, 850, 1000] and ds.level.dtype == np.int64
    assert set(ds.coords) == {"time", "level", "latitude", "longitude"}
    assert ds["geopotential"].attrs["units"] == "m**2 s**-2"
    np.testing.assert_array_equal(ds["geopotential"].values, data[:, ::-1])
    # A single-level cfgrib file: "z" without levels is the orography.
    orog = raw.isel(time=0, isobaricInPa=0, drop=True).drop_vars(["valid_time", "step"], errors="ignore")
    assert list(canonicalize(orog).data_vars) == ["geopotential_at_surface"]


def test_grib_accumulations_with_2d_valid_time_and_single_level():
    lat, lon = np.linspace(90, -90, 5), np.arange(8) * 45.0
    t = pd.date_range("2020-01-01T06", periods=2, freq="12h")
    step = pd.to_timedelta([1, 2, 3], unit="h")
    data = np.arange(2 * 3 * 5 * 8, dtype=np.float32).reshape(2, 3, 5, 8)
    raw = xr.Dataset(
        {"tp": (("time", "step", "latitude", "longitude"), data, {"units": "m"})},
        coords={"time": t, "step": step, "latitude": lat, "longitude": lon, "surface": 0.0,
                "valid_time": (("time", "step"), t.values[:, None] + step.values[None, :])},
    )  # fmt: skip
    ds = canonicalize(raw)
    hours = (ds.indexes["time"] - pd.Timestamp("2020-01-01")) / pd.Timedelta("1h")
    assert hours.tolist() == [7, 8, 9, 19, 20, 21]
    np.testing.assert_array_equal(ds["total_precipitation"].values, data.reshape(6, 5, 8))
    # cfgrib squeezes a single pressure level into a scalar coordinate: it becomes a dim again.
    one = xr.Dataset(
        {"t": (("time", "latitude", "longitude"), data[:, 0], {"units": "K"}),
         "t2m": (("time", "latitude", "longitude"), data[:, 1], {"units": "K"})},
        coords={"time": t, "isobaricInhPa": 500.0, "latitude": lat, "longitude": lon},
    )  # fmt: skip
    ds = canonicalize(one)
    assert ds["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert ds.level.values.tolist() == [500]


def test_expver_dimension_is_combined():
    lat, lon = np.linspace(90, -90, 5), np.arange(8) * 45.0
    full = _raw(lat, lon, times=pd.date_range("2020-01-01", periods=4, freq="6h"))
    first = full["t"].where(full.time < np.datetime64("2020-01-01T12"))  # ERA5 until 06 UTC
    last = full["t"].where(full.time >= np.datetime64("2020-01-01T12"))  # ERA5T after
    raw = xr.Dataset({"t": xr.concat([first, last], dim=pd.Index([1, 5], name="expver"))})
    raw["t"].attrs["units"] = "K"
    xr.testing.assert_identical(canonicalize(raw), canonicalize(full))


def test_non_integer_levels_and_name_clashes_are_refused():
    lat, lon = np.linspace(90, -90, 5), np.arange(8) * 45.0
    ds = _raw(lat, lon).expand_dims(level=[500.5]).transpose("time", "level", "lat", "lon")
    with pytest.raises(DataError, match="whole hPa"):
        canonicalize(ds)
    both = _raw(lat, lon)
    both["temperature"] = both["t"]
    with pytest.raises(DataError, match="variables 't' and 'temperature' both read as 'temperature'"):
        canonicalize(both)


def test_curvilinear_grids_are_refused():
    lat2d = xr.DataArray(np.zeros((3, 4)), dims=("y", "x"))
    ds = xr.Dataset({"t": (("y", "x"), np.zeros((3, 4)))}, coords={"lat": lat2d, "lon": lat2d})
    with pytest.raises(DataError, match="curvilinear"):
        canonicalize(ds)


def test_validate_canonical_catches_violations(mock):
    assert validate_canonical(mock).shape == (32, 64)
    with pytest.raises(DataError, match="expected the order"):
        validate_canonical(mock.transpose("latitude", ...))
    with pytest.raises(DataError, match="units"):
        bad = mock.copy()
        bad["temperature"].attrs["units"] = "degC"
        validate_canonical(bad)
    with pytest.raises(DataError, match="sorted and unique"):
        validate_canonical(mock.isel(time=[1, 0, 2, 3]))


def test_describe(mock):
    info = describe(mock)
    assert info["levels"] == [500, 850] and info["times"] == 4 and info["members"] is None
    assert info["step"] == pd.Timedelta("6h") and info["grid"].shape == (32, 64)
    assert info["nbytes"] == sum(v.nbytes for v in mock.data_vars.values())


# ---------------------------------------------------------------------------------------------
# Units


@pytest.mark.parametrize(
    "units, expected",
    [("m**2 s**-2", "m**2 s**-2"), ("m2 s-2", "m**2 s**-2"), ("m^2/s^2", "m**2 s**-2"),
     ("m2/s2", "m**2 s**-2"), ("kelvin", "K"), ("K", "K"), ("m/s", "m s**-1"),
     ("m s-1", "m s**-1"), ("kg/kg", "kg kg**-1"), ("(0 - 1)", "1"), ("Pa/s", "Pa s**-1"),
     ("J/m^2", "J m**-2"), ("millibars", "hPa"), ("1/s", "s**-1")],
)  # fmt: skip
def test_unit_aliases_normalise(units, expected):
    assert normalize_units(units) == expected


def test_unknown_or_wrong_units_are_errors(mock):
    assert check_units("geopotential", "m^2/s^2") == "m**2 s**-2"
    assert check_units("temperature", None) == "K"
    with pytest.raises(DataError, match=r"'temperature' has units 'furlongs', expected 'K'"):
        check_units("temperature", "furlongs")
    bad = mock.copy()
    bad["mean_sea_level_pressure"] = bad["mean_sea_level_pressure"].assign_attrs(units="hPa")
    with pytest.raises(DataError, match=r"'mean_sea_level_pressure' has units 'hPa', expected 'Pa'"):
        canonicalize(bad)
    assert lookup("t2m").name == "2m_temperature" and lookup("10u").name == "10m_u_component_of_wind"
    with pytest.raises(DataError, match="unknown variable 'xyz'"):
        lookup("xyz")


# ---------------------------------------------------------------------------------------------
# Broken sources


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope.zarr")
    with pytest.raises(DataError, match="no file matches"):
        open_dataset(str(tmp_path / "*.nc"))
    with pytest.raises(DataError, match="neither a zarr store nor NetCDF/GRIB"):
        open_dataset(tmp_path)
    with pytest.raises(DataError, match="cannot read a int"):
        open_dataset(3)


def test_garbage_and_truncated_netcdf(stores, tmp_path):
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="cannot read .*garbage.nc' as NetCDF") as e:
        open_dataset(garbage)
    assert "corrupted or truncated" in e.value.hint
    data = stores["cds"].read_bytes()
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="as NetCDF"):
        open_dataset(truncated)
    unknown = tmp_path / "notes"
    unknown.write_text("hello")
    with pytest.raises(DataError, match="neither a NetCDF, a GRIB file nor a zarr store"):
        open_dataset(unknown)
    bad_grib = tmp_path / "bad.grib"
    bad_grib.write_bytes(b"GRIB" + bytes(100))
    with pytest.raises(DataError, match="GRIB"):
        open_dataset(bad_grib)


def test_zarr_with_missing_or_corrupted_metadata(mock, tmp_path):
    path = schema.write_wb2_zarr(mock, tmp_path / "a.zarr")
    (path / "zarr.json").unlink()
    with pytest.raises(DataError, match="root metadata .* is missing"):
        open_dataset(path)
    path = schema.write_wb2_zarr(mock, tmp_path / "b.zarr")
    (path / "zarr.json").write_text("{ not json")
    with pytest.raises(DataError, match="cannot read the zarr store"):
        open_dataset(path)


def test_missing_grib_extra(stores, monkeypatch):
    monkeypatch.setitem(sys.modules, "cfgrib", None)  # as if the 'grib' extra were not installed
    with pytest.raises(MissingExtraError, match="cfgrib") as e:
        open_dataset(stores["grib"])
    assert "appa-studio[grib]" in e.value.hint


def test_missing_cloud_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(MissingExtraError, match="gcsfs") as e:
        open_dataset("gs://weatherbench2/datasets/era5/x.zarr")
    assert "appa-studio[cloud]" in e.value.hint


def test_unreachable_url_fails_fast():
    """Offline, the host is unreachable; online, the bucket does not exist: either way a quick
    DataError (gcsfs alone would retry for about a minute)."""

    pytest.importorskip("gcsfs")
    start = time.monotonic()
    with pytest.raises(DataError, match="gs://appa-studio-no-such-bucket"):
        open_dataset("gs://appa-studio-no-such-bucket-4f3c/store.zarr", timeout=5)
    assert time.monotonic() - start < 15
    with pytest.raises(DataError, match="unsupported URL scheme 's3://'"):
        open_dataset("s3://bucket/store.zarr")


def test_variables_with_odd_dims_are_dropped(mock, caplog):
    ds = mock.copy()
    ds["time_bnds"] = (("time", "bnds"), np.zeros((4, 2)))
    with caplog.at_level(logging.WARNING, logger="appa_engine.data.readers"):
        out = canonicalize(ds)
    assert "time_bnds" not in out and "dropping variable 'time_bnds'" in caplog.text
    xr.testing.assert_identical(out, mock)


def test_copied_store_still_opens(stores, tmp_path):
    # A store moved elsewhere keeps working (no absolute paths in the metadata).
    dst = tmp_path / "copy.zarr"
    shutil.copytree(stores["wb2"], dst)
    assert os.path.isdir(dst)
    xr.testing.assert_identical(open_dataset(dst, time="2020-01-01T00"), open_dataset(stores["wb2"]).isel(time=[0]))
