"""Tests of appa_engine.data.channels: names, order, lazy stacking and the exact round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from appa_engine.data.channels import ChannelSpec, channel_name, parse_channel
from appa_engine.errors import DataError

LEVELS = (1000, 500, 850)  # deliberately not sorted: order must follow the dataset


def make_dataset(*, nt: int = 5, nlat: int = 6, nlon: int = 12, seed: int = 0) -> xr.Dataset:
    """A small canonical dataset (WeatherBench2 names, latitude descending, level in hPa)."""

    rng = np.random.default_rng(seed)
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    shape3 = (nt, len(LEVELS), nlat, nlon)
    shape2 = (nt, nlat, nlon)
    f32 = np.float32
    ds = xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                (250 + 10 * rng.standard_normal(shape3)).astype(f32),
                {"units": "K", "long_name": "Temperature"},
            ),
            "geopotential": (
                ("time", "level", "latitude", "longitude"),
                (5e4 + 1e3 * rng.standard_normal(shape3)).astype(f32),
                {"units": "m**2 s**-2"},
            ),
            "2m_temperature": (
                ("time", "latitude", "longitude"),
                (280 + rng.standard_normal(shape2)).astype(f32),
                {"units": "K"},
            ),
            "mean_sea_level_pressure": (
                ("time", "latitude", "longitude"),
                (1e5 + 100 * rng.standard_normal(shape2)).astype(f32),
            ),
        },
        coords={
            "time": pd.date_range("2020-01-01", periods=nt, freq="6h"),
            "level": ("level", np.array(LEVELS, dtype=np.int64), {"units": "hPa"}),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
        attrs={"title": "test planet"},
    )
    return ds


def write_zarr(ds: xr.Dataset, path: Path) -> xr.Dataset:
    encoding = {v: {"chunks": (1,) + ds[v].shape[1:]} for v in ds.data_vars}
    ds.to_zarr(path, consolidated=False, encoding=encoding)
    return xr.open_zarr(path, consolidated=False)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("temperature_850", ("temperature", 850)),
        ("u_component_of_wind_1000", ("u_component_of_wind", 1000)),
        ("2m_temperature", ("2m_temperature", None)),
        ("10m_u_component_of_wind", ("10m_u_component_of_wind", None)),
        ("total_precipitation_6hr", ("total_precipitation_6hr", None)),
        ("geopotential_50", ("geopotential", 50)),
        ("_850", ("_850", None)),
    ],
)
def test_parse_channel(name, expected):
    assert parse_channel(name) == expected
    if expected[1] is not None:
        assert channel_name(*expected) == name


def test_spec_validation_and_container():
    with pytest.raises(DataError, match="at least one"):
        ChannelSpec(())
    with pytest.raises(DataError, match="duplicate channel names: temperature_850"):
        ChannelSpec(("temperature_850", "2m_temperature", "temperature_850"))
    spec = ChannelSpec(["temperature_850", "temperature_500", "geopotential_500", "2m_temperature"])
    assert spec.names == ("temperature_850", "temperature_500", "geopotential_500", "2m_temperature")
    assert len(spec) == 4 and spec.index("geopotential_500") == 2 and "2m_temperature" in spec
    assert spec.variables == ("temperature", "geopotential", "2m_temperature")
    assert spec.levels == (850, 500)
    assert spec.levels_of("temperature") == (850, 500) and spec.levels_of("2m_temperature") == ()
    assert spec.surface_variables == ("2m_temperature",)
    assert ChannelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(DataError, match="no channel 'temperature_700'"):
        spec.index("temperature_700")
    with pytest.raises(DataError, match="channels not in the spec: q_500"):
        spec.select(["q_500"])


def test_from_dataset_order_and_selection():
    ds = make_dataset()
    spec = ChannelSpec.from_dataset(ds)
    expected = [f"geopotential_{p}" for p in LEVELS] + [f"temperature_{p}" for p in LEVELS]
    expected += ["2m_temperature", "mean_sea_level_pressure"]
    assert spec.names == tuple(expected)
    # the same spec whatever the order of the data variables
    assert ChannelSpec.from_dataset(ds[list(ds.data_vars)[::-1]]) == spec

    sub = ChannelSpec.from_dataset(ds, variables=["temperature", "2m_temperature", "geopotential"], levels=[850, 1000])
    assert sub.names == ("temperature_1000", "temperature_850", "geopotential_1000", "geopotential_850",
                         "2m_temperature")
    with pytest.raises(DataError, match="variables not in the dataset: humidity"):
        ChannelSpec.from_dataset(ds, variables=["humidity"])
    with pytest.raises(DataError, match=r"levels not in the dataset: \[700\]"):
        ChannelSpec.from_dataset(ds, levels=[700, 850])
    # static fields (no time dim) are not channels
    static = ds.assign(land_sea_mask=(("latitude", "longitude"),
                                      np.zeros((ds.sizes["latitude"], ds.sizes["longitude"]))))
    assert ChannelSpec.from_dataset(static) == spec


def test_stack_matches_manual_selection():
    ds = make_dataset()
    spec = ChannelSpec(("temperature_850", "2m_temperature", "geopotential_1000", "temperature_1000"))
    stacked = spec.stack(ds)
    assert stacked.dims == ("time", "channel", "latitude", "longitude")
    assert list(stacked["channel"].values) == list(spec.names)
    manual = np.stack(
        [
            ds["temperature"].sel(level=850).values,
            ds["2m_temperature"].values,
            ds["geopotential"].sel(level=1000).values,
            ds["temperature"].sel(level=1000).values,
        ],
        axis=1,
    )
    np.testing.assert_array_equal(stacked.values, manual)
    # outer indexing on every axis, with integers, slices and lists
    part = stacked.isel(time=[4, 1], channel=[3, 0], latitude=slice(1, 4), longitude=2)
    np.testing.assert_array_equal(part.values, manual[[4, 1]][:, [3, 0]][:, :, 1:4, 2])
    np.testing.assert_array_equal(stacked.isel(time=2, channel=1).values, manual[2, 1])
    tensor = spec.to_tensor(ds)
    assert tensor.dtype == torch.float32 and tensor.shape == (5, 4, 6, 12)
    np.testing.assert_array_equal(tensor.numpy(), manual)


def test_stack_is_lazy(tmp_path):
    """Values are read when asked for: a chunk removed after stacking is seen as missing."""

    ds = make_dataset()
    z = write_zarr(ds, tmp_path / "x.zarr")
    spec = ChannelSpec.from_dataset(z)
    stacked = spec.stack(z)
    chunk_dir = tmp_path / "x.zarr" / "temperature" / "c" / "3"
    assert chunk_dir.is_dir()
    shutil.rmtree(chunk_dir)  # time step 3 of temperature
    c = spec.index("temperature_850")
    np.testing.assert_array_equal(stacked.isel(time=2, channel=c).values, ds["temperature"].sel(level=850).values[2])
    assert np.isnan(stacked.isel(time=3, channel=c).values).all()  # fill value: read after removal
    np.testing.assert_array_equal(stacked.isel(time=3, channel=spec.index("2m_temperature")).values,
                                  ds["2m_temperature"].values[3])


def test_surface_variable_named_like_a_level():
    ds = make_dataset()
    ds = ds.assign(cloud_cover_100=ds["2m_temperature"] * 0 + 0.5)
    spec = ChannelSpec(("cloud_cover_100", "temperature_500"))
    np.testing.assert_array_equal(spec.stack(ds).isel(channel=0).values, ds["cloud_cover_100"].values)


def test_missing_channels_list_what_is_available():
    ds = make_dataset()
    with pytest.raises(DataError, match="channels missing from the dataset: temperature_700, humidity") as info:
        ChannelSpec(("temperature_700", "humidity", "temperature_500")).stack(ds)
    assert "geopotential_1000" in info.value.hint and "2m_temperature" in info.value.hint
    with pytest.raises(DataError, match="missing from the dataset: 2m_temperature_850"):
        ChannelSpec(("2m_temperature_850",)).stack(ds)  # a surface variable asked on a level


def test_round_trip_exact_with_template(tmp_path):
    ds = make_dataset()
    spec = ChannelSpec.from_dataset(ds)
    back = spec.unstack(spec.to_tensor(ds), template=ds)
    xr.testing.assert_identical(back, ds)
    assert list(back.data_vars) == list(ds.data_vars)
    assert all(back[v].dtype == np.float32 for v in back.data_vars)
    # through a zarr store
    z = write_zarr(ds, tmp_path / "x.zarr")
    back = spec.unstack(spec.to_tensor(z), template=z)
    xr.testing.assert_identical(back, z)


def test_round_trip_without_template():
    ds = make_dataset()
    spec = ChannelSpec.from_dataset(ds)
    tensor = spec.to_tensor(ds)
    back = spec.unstack(tensor, time=ds["time"], latitude=ds["latitude"], longitude=ds["longitude"])
    assert list(back.data_vars) == ["geopotential", "temperature", "2m_temperature", "mean_sea_level_pressure"]
    xr.testing.assert_equal(back, ds[list(back.data_vars)])
    assert back["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert back["temperature"].dtype == np.float32 and back["level"].dtype == np.int64
    assert back["latitude"].attrs == {"units": "degrees_north"}
    # a stacked DataArray carries its own coordinates
    back2 = spec.unstack(spec.stack(ds))
    xr.testing.assert_equal(back2, back)
    with pytest.raises(DataError, match="needs the time coordinate"):
        spec.unstack(tensor.numpy())
    with pytest.raises(DataError, match="has 3 channels but the spec has 8"):
        spec.unstack(tensor[:, :3], template=ds)


def test_unstack_ensemble_and_uneven_levels():
    ds = make_dataset()
    spec = ChannelSpec(("temperature_850", "geopotential_500", "2m_temperature"))
    x = spec.to_tensor(ds)
    members = torch.stack([x, 2 * x])  # (M, T, C, H, W)
    out = spec.unstack(members, template=ds)
    assert out["temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert list(out["level"].values) == [850, 500]
    np.testing.assert_array_equal(out["temperature"].sel(level=850).isel(member=1).values,
                                  2 * ds["temperature"].sel(level=850).values)
    assert np.isnan(out["temperature"].sel(level=500).values).all()  # not a channel of the spec
    np.testing.assert_array_equal(out["geopotential"].sel(level=500).isel(member=0).values,
                                  ds["geopotential"].sel(level=500).values)
    np.testing.assert_array_equal(out["member"].values, [0, 1])


def test_time_labels_travel_and_unstack_copies():
    ds = make_dataset().assign_coords(run=("time", np.array([0, 0, 1, 1, 1], dtype=np.int32)))
    spec = ChannelSpec.from_dataset(ds)
    stacked = spec.stack(ds)
    np.testing.assert_array_equal(stacked["run"].values, [0, 0, 1, 1, 1])
    xr.testing.assert_identical(spec.unstack(spec.to_tensor(ds), template=ds), ds)
    xr.testing.assert_equal(spec.unstack(stacked), ds)
    x = spec.to_tensor(ds)
    out = spec.unstack(x, template=ds)
    x.zero_()  # the dataset owns its memory
    np.testing.assert_array_equal(out["2m_temperature"].values, ds["2m_temperature"].values)
