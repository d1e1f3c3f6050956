"""Mock data: plausible physics, canonical form, and writers that produce the real raw layouts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from appa_engine.data import schema
from appa_engine.data.grid import Grid
from appa_engine.data.names import ERA5_LEVELS
from appa_engine.data.readers import validate_canonical
from appa_engine.errors import DataError

R_D = 287.05


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    variables = (*schema.DEFAULT_VARIABLES, "surface_pressure", "land_sea_mask", "sea_surface_temperature")
    return schema.mock_canonical(4, nlat=32, nlon=64, levels=(850, 250, 500), variables=variables, seed=3)


def test_mock_is_canonical_float32(ds):
    grid = validate_canonical(ds)
    assert grid == Grid.regular(32, 64)
    assert ds.level.values.tolist() == [250, 500, 850]
    assert all(v.dtype == np.float32 for v in ds.data_vars.values())
    assert ds["land_sea_mask"].dims == ("latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert ds["temperature"].attrs == {"units": "K", "long_name": "Temperature"}


def test_mock_physics_is_plausible(ds):
    z, t = ds["geopotential"], ds["temperature"]
    # Geopotential increases with height and temperature decreases, at every point.
    assert (z.sel(level=250) > z.sel(level=500)).all() and (z.sel(level=500) > z.sel(level=850)).all()
    assert (t.sel(level=850) > t.sel(level=500)).all()
    # 500 hPa height about 5.5 km; temperatures of the troposphere.
    z500_m = float(z.sel(level=500).mean()) / 9.80665
    assert 5000 < z500_m < 6000
    assert 200 < float(t.min()) and float(t.max()) < 320
    # Hypsometric equation on zonal-time means: ΔΦ = R_d · T_mean · ln(p1/p2).
    zm = z.mean(("time", "longitude"))
    tm = t.mean(("time", "longitude"))
    dphi = zm.sel(level=500) - zm.sel(level=850)
    t_layer = (tm.sel(level=500) + tm.sel(level=850)) / 2
    np.testing.assert_allclose(dphi, R_D * t_layer * np.log(850 / 500), rtol=0.02)
    # A westerly jet near 40° at 250 hPa, weaker winds at 850 hPa.
    u250 = ds["u_component_of_wind"].sel(level=250).mean(("time", "longitude"))
    lat_max = abs(float(u250.latitude[int(np.argmax(u250.values))]))
    assert 30 <= lat_max <= 50 and float(u250.max()) > 20
    assert float(abs(ds["u_component_of_wind"].sel(level=850)).mean()) < float(abs(u250).mean())
    # Moisture: positive, decreasing upwards, largest in the tropics.
    q = ds["specific_humidity"]
    assert (q > 0).all() and float(q.sel(level=850).mean()) > float(q.sel(level=250).mean())
    qz = q.sel(level=850).mean(("time", "longitude"))
    assert float(qz.sel(latitude=0, method="nearest")) > float(qz.sel(latitude=70, method="nearest"))
    # Surface: pressures near 1013 hPa, surface pressure below sea level pressure on average.
    msl, sp = ds["mean_sea_level_pressure"], ds["surface_pressure"]
    assert 95000 < float(msl.min()) and float(msl.max()) < 107000
    assert float(sp.mean()) < float(msl.mean())
    assert (ds["total_precipitation"] >= 0).all()
    assert (ds["sea_surface_temperature"] >= 271.35 - 1e-3).all()
    assert set(np.unique(ds["land_sea_mask"].values)) <= {0.0, 1.0}


def test_mock_seed_and_members():
    a = schema.mock_canonical(2, nlat=8, nlon=16, seed=0)
    b = schema.mock_canonical(2, nlat=8, nlon=16, seed=0)
    c = schema.mock_canonical(2, nlat=8, nlon=16, seed=1)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["temperature"].values, c["temperature"].values)
    ens = schema.mock_canonical(2, nlat=8, nlon=16, members=3, variables=("temperature", "land_sea_mask"))
    assert ens["temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert ens["land_sea_mask"].dims == ("latitude", "longitude")
    spread = ens["temperature"].std("member")
    assert float(spread.min()) > 0  # members differ everywhere
    poles = schema.mock_canonical(1, nlat=9, nlon=16, poles=True)
    assert poles.latitude.values[0] == 90.0 and poles.latitude.values[-1] == -90.0
    with pytest.raises(DataError, match="cannot build 'potential_vorticity'"):
        schema.mock_canonical(1, variables=("potential_vorticity",))


def test_wb2_and_regridded_raw_layouts(ds, tmp_path):
    schema.write_wb2_zarr(ds, tmp_path / "wb2.zarr")
    raw = xr.open_zarr(tmp_path / "wb2.zarr", consolidated=False)
    assert raw["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert raw["temperature"].encoding["chunks"] == (1, 3, 32, 64)
    assert raw.latitude.values[0] > 0
    schema.write_wb2_regridded_zarr(ds, tmp_path / "regridded.zarr", zarr_format=2)
    raw = xr.open_zarr(tmp_path / "regridded.zarr")  # v2, consolidated like the real stores
    assert (tmp_path / "regridded.zarr" / ".zmetadata").exists()
    assert raw["temperature"].dims == ("time", "level", "longitude", "latitude")
    assert raw["2m_temperature"].dims == ("time", "longitude", "latitude")
    assert np.all(np.diff(raw.latitude.values) > 0)
    np.testing.assert_array_equal(
        raw["temperature"].isel(latitude=0).values, ds["temperature"].isel(latitude=-1).values
    )


def test_arco_raw_layout(ds, tmp_path):
    small = ds[["temperature", "2m_temperature"]].isel(time=[0, 1])
    schema.write_arco_zarr(small, tmp_path / "arco.zarr")
    raw = xr.open_zarr(tmp_path / "arco.zarr", consolidated=False)
    assert raw.level.values.tolist() == list(ERA5_LEVELS)
    assert np.all(np.diff(raw.time.values) == np.timedelta64(1, "h")) and raw.sizes["time"] == 7
    t = raw["temperature"]
    assert np.isnan(t.sel(level=1000).values).all() and np.isnan(t.isel(time=1).values).all()
    np.testing.assert_array_equal(t.sel(level=500).isel(time=6).values,
                                  small["temperature"].sel(level=500).isel(time=1).values)


def test_cds_raw_layout(ds, tmp_path):
    path = schema.write_cds_netcdf(ds, tmp_path / "cds.nc")
    raw = xr.open_dataset(path)
    assert {"z", "t", "u", "v", "q", "t2m", "u10", "v10", "msl", "tp", "sp", "lsm", "sst"} == set(raw.data_vars)
    assert raw["t"].dims == ("valid_time", "pressure_level", "latitude", "longitude")
    assert raw.pressure_level.values.tolist() == [850.0, 500.0, 250.0]
    assert raw.longitude.values.min() == -180.0 and raw.longitude.values.max() < 180.0
    assert int(raw["number"]) == 0 and raw["expver"].dims == ("valid_time",)
    assert raw["t"].attrs["GRIB_paramId"] == 130
    # The field at longitude -180 is the canonical field at 180.
    np.testing.assert_array_equal(raw["t2m"].sel(longitude=-180.0).values,
                                  ds["2m_temperature"].sel(longitude=180.0).values)
    raw.close()
    ens = schema.mock_canonical(2, nlat=8, nlon=16, members=2, variables=("temperature",))
    raw = xr.open_dataset(schema.write_cds_netcdf(ens, tmp_path / "ens.nc", ensemble=True))
    assert raw["t"].dims == ("number", "valid_time", "pressure_level", "latitude", "longitude")
    raw.close()
    with pytest.raises(DataError, match="ensemble=True"):
        schema.write_cds_netcdf(ens, tmp_path / "x.nc")


def test_grib_raw_layout(ds, tmp_path):
    cfgrib = pytest.importorskip("cfgrib")
    small = ds[["temperature", "2m_temperature"]].isel(time=[0, 1])
    path = schema.write_grib(small, tmp_path / "x.grib")
    parts = cfgrib.open_datasets(str(path), backend_kwargs={"indexpath": ""}, decode_timedelta=True)
    names = {n: p for p in parts for n in p.data_vars}
    assert set(names) == {"t", "t2m"}
    assert "isobaricInhPa" in names["t"]["t"].dims and float(names["t2m"]["heightAboveGround"]) == 2.0
    # IEEE packing: exact float32 values.
    np.testing.assert_array_equal(
        names["t2m"]["t2m"].values, small["2m_temperature"].values
    )
    with pytest.raises(DataError, match="no ECMWF paramId"):
        tp6 = schema.mock_canonical(1, nlat=8, nlon=16, variables=("total_precipitation_6hr",))
        schema.write_grib(tp6, tmp_path / "y.grib")
    assert not (tmp_path / "y.grib").exists()  # atomic: nothing left behind on failure


def test_writers_refuse_non_canonical_input(ds, tmp_path):
    with pytest.raises(DataError):
        schema.write_wb2_zarr(ds.transpose("longitude", ...), tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()
