"""Tests of appa_engine.data.stats: streaming weighted statistics against brute force, files,
standardisation and the ``appa data stats`` subcommand."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.grid import area_weights
from appa_engine.data.stats import STATS_VERSION, Statistics, compute_statistics, destandardize, standardize
from appa_engine.errors import ConfigError, DataError

LEVELS = (500, 850)


def make_dataset(*, nt: int = 11, nlat: int = 8, nlon: int = 16, seed: int = 0) -> xr.Dataset:
    """Small canonical dataset; sea-surface temperature is NaN over a fixed 'land' mask."""

    rng = np.random.default_rng(seed)
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    # latitude-dependent fields, so that the area weighting matters
    gradient = np.cos(np.deg2rad(lat))[None, :, None]
    temperature = 220 + 60 * gradient[:, None] + 5 * rng.standard_normal((nt, len(LEVELS), nlat, nlon))
    # large mean, small spread: where a naive sum of squares loses digits
    geopotential = 5.5e4 + 30 * gradient[:, None] + rng.standard_normal((nt, len(LEVELS), nlat, nlon))
    sst = 270 + 30 * gradient + rng.standard_normal((nt, nlat, nlon))
    land = rng.random((nlat, nlon)) < 0.3
    sst[:, land] = np.nan
    sst[3, :, :5] = np.nan  # some time-varying gaps too (sea ice)
    return xr.Dataset(
        {
            "temperature": (("time", "level", "latitude", "longitude"), temperature.astype(np.float32)),
            "geopotential": (("time", "level", "latitude", "longitude"), geopotential),
            "sea_surface_temperature": (("time", "latitude", "longitude"), sst.astype(np.float32)),
        },
        coords={
            "time": pd.date_range("2020-01-01", periods=nt, freq="6h"),
            "level": np.array(LEVELS),
            "latitude": lat,
            "longitude": lon,
        },
    )


def brute_force(ds: xr.Dataset, spec: ChannelSpec) -> tuple[np.ndarray, np.ndarray]:
    """np.average with area weights broadcast to each field, NaN cells dropped."""

    w = area_weights(ds["latitude"].values)
    means, stds = [], []
    for name in spec:
        var, _, level = name.rpartition("_")
        x = ds[var].sel(level=int(level)).values if level.isdigit() else ds[name].values
        x = x.astype(np.float64)
        weights = np.broadcast_to(w[None, :, None], x.shape)
        ok = ~np.isnan(x)
        mu = np.average(x[ok], weights=weights[ok])
        means.append(mu)
        stds.append(np.sqrt(np.average((x[ok] - mu) ** 2, weights=weights[ok])))
    return np.array(means), np.array(stds)


def test_matches_brute_force_for_any_chunk_size():
    ds = make_dataset()
    spec = ChannelSpec.from_dataset(ds)
    mean, std = brute_force(ds, spec)
    results = [compute_statistics(ds, spec, chunk=chunk) for chunk in (1, 2, 4, 7, 11, 100)]
    for stats in results:
        np.testing.assert_allclose(stats.mean, mean, rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats.std, std, rtol=1e-10, atol=0)
        np.testing.assert_allclose(stats.mean, results[0].mean, rtol=1e-12)
        np.testing.assert_allclose(stats.std, results[0].std, rtol=1e-10)
        assert stats.count == 11 and stats.spec == spec
    # the NaN channel really lost its land cells (plain mean would be NaN)
    assert np.isfinite(results[0].mean).all()
    # unweighted statistics differ: the weighting is not a no-op
    t = ds["temperature"].sel(level=500).values
    assert abs(results[0].mean[spec.index("temperature_500")] - t.mean()) > 0.5


def test_stacked_input_and_default_spec():
    ds = make_dataset()
    spec = ChannelSpec(("sea_surface_temperature", "temperature_850"))
    a = compute_statistics(ds, spec, chunk=3)
    b = compute_statistics(spec.stack(ds), chunk=5)
    c = compute_statistics(ChannelSpec.from_dataset(ds).stack(ds), spec)  # select by name
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-12)
    np.testing.assert_allclose(c.std, a.std, rtol=1e-10)
    assert b.spec == spec == c.spec
    assert compute_statistics(ds, chunk=4).spec == ChannelSpec.from_dataset(ds)


def test_progress_bar_does_not_change_results(capsys):
    ds = make_dataset()
    spec = ChannelSpec(("temperature_500",))
    a = compute_statistics(ds, spec, chunk=2, progress=True)
    assert "statistics" in capsys.readouterr().err
    assert a == compute_statistics(ds, spec, chunk=2)


def test_nan_policy_and_degenerate_channels():
    ds = make_dataset()
    spec = ChannelSpec(("temperature_500", "sea_surface_temperature"))
    with pytest.raises(DataError, match="'sea_surface_temperature' has NaNs"):
        compute_statistics(ds, spec, nan_policy="raise")
    with pytest.raises(ConfigError, match="nan_policy"):
        compute_statistics(ds, spec, nan_policy="zero")
    with pytest.raises(ConfigError, match="chunk"):
        compute_statistics(ds, spec, chunk=0)
    empty = ds.assign(sea_surface_temperature=ds["sea_surface_temperature"] * np.nan)
    with pytest.raises(DataError, match="NaN everywhere: sea_surface_temperature"):
        compute_statistics(empty, spec, chunk=4)
    flat = ds.assign(temperature=ds["temperature"] * 0 + 250.0)
    with pytest.raises(DataError, match="zero standard deviation.*temperature_500"):
        compute_statistics(flat, spec)


def test_save_load_round_trip(tmp_path):
    ds = make_dataset()
    stats = compute_statistics(ds, chunk=3)
    path = tmp_path / "sub" / "stats.json"
    stats.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == STATS_VERSION and data["channels"] == list(stats.names)
    assert [p.name for p in path.parent.iterdir()] == ["stats.json"]  # no temporary left over
    back = Statistics.load(path)
    assert back == stats and back.count == stats.count
    assert np.array_equal(back.mean, stats.mean)  # floats exact through JSON

    sub = Statistics.load(path, spec=ChannelSpec(("sea_surface_temperature", "temperature_850")))
    assert sub.mean[0] == stats.mean[stats.spec.index("sea_surface_temperature")]
    with pytest.raises(DataError, match="the statistics lack channels: specific_humidity_850") as info:
        Statistics.load(path, spec=ChannelSpec(("temperature_850", "specific_humidity_850")))
    assert "appa data stats" in info.value.hint

    data["version"] = STATS_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="format version 2"):
        Statistics.load(path)
    with pytest.raises(DataError, match="does not exist"):
        Statistics.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"channels": []}')
    with pytest.raises(DataError, match="not an Appa statistics file"):
        Statistics.load(tmp_path / "bad.json")


def test_standardize_torch_numpy_xarray():
    spec = ChannelSpec(("a_500", "b"))
    stats = Statistics(spec, [10.0, -3.0], [2.0, 0.5])
    x = torch.tensor([[[[12.0, float("nan")]], [[-3.0, -2.0]]]])  # (1, C=2, H=1, W=2)
    z = standardize(x, stats)
    assert z.dtype == torch.float32 and z.shape == x.shape
    torch.testing.assert_close(z[0, :, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.isnan(z[0, 0, 0, 1]) and z[0, 1, 0, 1] == 2.0
    assert standardize(x, stats, fill_nan=True)[0, 0, 0, 1] == 0.0
    torch.testing.assert_close(destandardize(standardize(x, stats), stats), x, equal_nan=True)
    x64 = x.double()
    assert standardize(x64, stats).dtype == torch.float64
    np.testing.assert_allclose(standardize(x.numpy(), stats), z.numpy(), equal_nan=True)
    with pytest.raises(DataError, match="C = 2 channels"):
        standardize(torch.zeros(3, 4, 5), stats)

    da = xr.DataArray(x.numpy()[:, ::-1], dims=("time", "channel", "latitude", "longitude"),
                      coords={"channel": ["b", "a_500"]})
    zd = standardize(da, stats)
    np.testing.assert_allclose(zd.sel(channel="a_500").values, z[:, 0].numpy(), equal_nan=True)
    np.testing.assert_allclose(destandardize(zd, stats).values, da.values, equal_nan=True)


def test_standardize_dataset():
    ds = make_dataset()
    stats = compute_statistics(ds, chunk=5)
    z = standardize(ds, stats, fill_nan=True)
    stacked = ChannelSpec.from_dataset(ds).stack(z).values.astype(np.float64)
    w = area_weights(ds["latitude"].values)[None, None, :, None]
    raw = ChannelSpec.from_dataset(ds).stack(ds).values
    ok = ~np.isnan(raw)
    assert not np.isnan(stacked).any() and (stacked[~ok] == 0).all()
    # standardised channels have weighted mean 0 and std 1 over their valid cells
    wb = np.broadcast_to(w, raw.shape)
    for c in range(raw.shape[1]):
        m = ok[:, c]
        assert abs(np.average(stacked[:, c][m], weights=wb[:, c][m])) < 1e-5
        assert abs(np.average(stacked[:, c][m] ** 2, weights=wb[:, c][m]) - 1) < 1e-5
    back = destandardize(standardize(ds, stats), stats)
    xr.testing.assert_allclose(back, ds, rtol=1e-6)
    assert back["temperature"].dtype == np.float32


# ------------------------------------------------------------------------------- CLI
def run_cli(argv: list[str]) -> int:
    from appa_engine.cli.data_stats import register

    parser = argparse.ArgumentParser(prog="appa data")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_stats(tmp_path, capsys):
    ds = make_dataset()
    store = tmp_path / "data.zarr"
    ds.to_zarr(store, consolidated=False)
    out = tmp_path / "stats.json"
    rc = run_cli(
        ["stats", str(store), "--out", str(out), "--variables", "temperature,sea_surface_temperature",
         "--levels", "850", "--time", "2020-01-01T06:00..2020-01-02T12:00", "--no-progress"]
    )
    assert rc == 0 and "2 channels over 6 states" in capsys.readouterr().out
    got = Statistics.load(out)
    sub = ds.sel(time=slice("2020-01-01T06", "2020-01-02T12"))
    assert got.names == ("temperature_850", "sea_surface_temperature")
    mean, std = brute_force(sub, got.spec)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got.std, std, rtol=1e-10)
    run_cli(["stats", str(store), "--out", str(out), "--time", "2020-01-02T12:00", "--no-progress"])
    assert Statistics.load(out).count == 1  # one date: one state, time dim kept
    with pytest.raises(ConfigError, match="no times of the dataset fall in"):
        run_cli(["stats", str(store), "--out", str(out), "--time", "2021-01:2021-02"])
    with pytest.raises(DataError):
        run_cli(["stats", str(tmp_path / "missing.zarr"), "--out", str(out)])
