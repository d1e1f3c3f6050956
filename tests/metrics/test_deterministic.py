"""RMSE, bias and MAE of the ensemble mean against explicit loops with hand-computed weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import area_mean, bias, mae, rmse

NLAT, NLON = 6, 8
LAT = 90 - (np.arange(NLAT) + 0.5) * 180 / NLAT  # cell centres, descending
LON = np.arange(NLON) * 360 / NLON


def band_weights(lat: np.ndarray) -> np.ndarray:
    """Band areas of a cell-centred grid, by hand: sin(φ + Δ/2) - sin(φ - Δ/2)."""
    d = 180 / lat.size
    return np.sin(np.deg2rad(lat + d / 2)) - np.sin(np.deg2rad(lat - d / 2))


def make(rng, *, members: int | None = 4, nt: int = 2, levels=(500, 850)):
    coords = {
        "time": pd.date_range("2020-01-01", periods=nt, freq="6h"),
        "level": list(levels),
        "latitude": LAT,
        "longitude": LON,
    }
    y = xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                rng.normal(size=(nt, len(levels), NLAT, NLON)),
                {"units": "K"},
            ),
            "2m_temperature": (
                ("time", "latitude", "longitude"),
                rng.normal(size=(nt, NLAT, NLON)),
                {"units": "K"},
            ),
        },
        coords=coords,
    )
    if members is None:
        x = y.copy(
            data={
                name: a.values + 0.5 * rng.normal(size=a.shape) for name, a in y.data_vars.items()
            }
        )
    else:
        x = xr.Dataset(
            {
                name: (
                    ("member",) + a.dims,
                    a.values[None] + rng.normal(size=(members,) + a.shape) + 0.3,
                    a.attrs,
                )
                for name, a in y.data_vars.items()
            },
            coords=coords,
        )
    return x, y


def brute(x: np.ndarray, y: np.ndarray, f) -> float:
    """Weighted mean of f(ensemble mean - truth) over one (lat, lon) slice, by explicit loops."""
    w = band_weights(LAT)
    num = den = 0.0
    for i in range(NLAT):
        for j in range(NLON):
            e = np.mean(x[:, i, j]) - y[i, j] if x.ndim == 3 else x[i, j] - y[i, j]
            num += w[i] * f(e)
            den += w[i]
    return num / den


@pytest.mark.parametrize("members", [4, None])
def test_against_brute_force(rng, members):
    x, y = make(rng, members=members)
    r, b, m = rmse(x, y), bias(x, y), mae(x, y)
    for t in range(2):
        for k, level in enumerate([500, 850]):
            xs = x["temperature"].values[:, t, k] if members else x["temperature"].values[t, k]
            ys = y["temperature"].values[t, k]
            assert r["temperature"].sel(time=y.time[t], level=level) == pytest.approx(
                np.sqrt(brute(xs, ys, np.square)), rel=1e-12
            )
            assert b["temperature"].sel(time=y.time[t], level=level) == pytest.approx(
                brute(xs, ys, lambda e: e), rel=1e-12
            )
            assert m["temperature"].sel(time=y.time[t], level=level) == pytest.approx(
                brute(xs, ys, abs), rel=1e-12
            )
        xs = x["2m_temperature"].values[:, t] if members else x["2m_temperature"].values[t]
        assert r["2m_temperature"].isel(time=t) == pytest.approx(
            np.sqrt(brute(xs, y["2m_temperature"].values[t], np.square))
        )


def test_schema(rng):
    x, y = make(rng)
    r = rmse(x, y)
    assert r["temperature"].dims == ("time", "level")
    assert r["2m_temperature"].dims == ("time",)
    for name in ("temperature", "2m_temperature"):
        assert r[name].attrs["units"] == "K"
        assert "sqrt" in r[name].attrs["definition"]
        assert r[name].attrs["long_name"]
    da = rmse(x["temperature"], y["temperature"])
    assert da.name == "temperature" and da.dims == ("time", "level") and da.attrs["units"] == "K"


def test_dims_option_pools_time(rng):
    x, y = make(rng)
    per_time = rmse(x, y)["temperature"]
    pooled = rmse(x, y, dims=("time", "latitude", "longitude"))["temperature"]
    assert pooled.dims == ("level",)
    np.testing.assert_allclose(pooled, np.sqrt((per_time**2).mean("time")), rtol=1e-12)


def test_exact_zero_and_constant_error(rng):
    _, y = make(rng)
    assert float(abs(rmse(y, y)["temperature"]).max()) == 0.0
    x = y + 2.0
    np.testing.assert_allclose(rmse(x, y)["temperature"], 2.0)
    np.testing.assert_allclose(bias(x, y)["temperature"], 2.0)
    np.testing.assert_allclose(bias(y - 2.0, y)["temperature"], -2.0)
    np.testing.assert_allclose(mae(y - 2.0, y)["temperature"], 2.0)


def test_area_weighting_favours_the_equator():
    # Error 1 on the equatorial rows only: the mean is the equatorial rows' share of the sphere.
    y = xr.DataArray(
        np.zeros((NLAT, NLON)),
        dims=("latitude", "longitude"),
        coords={"latitude": LAT, "longitude": LON},
    )
    x = y.copy()
    x[NLAT // 2 - 1 : NLAT // 2 + 1] = 1.0
    w = band_weights(LAT)
    share = w[NLAT // 2 - 1 : NLAT // 2 + 1].sum() / w.sum()
    assert float(mae(x, y)) == pytest.approx(share)
    assert share > 2 / NLAT  # more than the unweighted share


def test_nan_points_are_skipped():
    y = xr.DataArray(
        np.zeros((NLAT, NLON)),
        dims=("latitude", "longitude"),
        coords={"latitude": LAT, "longitude": LON},
    )
    x = y + 1.0
    x[0, 0] = np.nan
    assert float(rmse(x, y)) == pytest.approx(1.0)
    assert float(area_mean(x)) == pytest.approx(1.0)


def test_errors(rng):
    x, y = make(rng)
    with pytest.raises(DataError, match="no variable"):
        rmse(x, y.drop_vars("2m_temperature"))
    with pytest.raises(DataError, match="coordinates differ"):
        rmse(x, y.isel(time=[0]))
    with pytest.raises(DataError, match="member"):
        rmse(x, x)
    with pytest.raises(DataError, match="cannot be reduced"):
        rmse(x, y, dims=("level", "latitude", "longitude"))
