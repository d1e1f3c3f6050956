"""Fair CRPS, spread, spread-skill ratio and rank histogram against brute force and closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import norm

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import area_mean, mae, rmse
from appa_engine.metrics.probabilistic import (
    crps,
    crps_fair_pointwise,
    rank_histogram,
    spread,
    spread_skill_ratio,
)


def grid(nlat: int, nlon: int) -> dict:
    return {
        "latitude": 90 - (np.arange(nlat) + 0.5) * 180 / nlat,
        "longitude": np.arange(nlon) * 360 / nlon,
    }


def make(rng, *, M=5, nt=2, nlat=6, nlon=8, scale=1.0):
    """Members and truth drawn i.i.d. N(0, scale²) (an exchangeable ensemble)."""
    coords = dict(time=pd.date_range("2020-01-01", periods=nt, freq="1h"), **grid(nlat, nlon))
    x = xr.DataArray(
        scale * rng.normal(size=(M, nt, nlat, nlon)),
        dims=("member", "time", "latitude", "longitude"),
        coords=coords,
        name="temperature",
        attrs={"units": "K"},
    )
    y = xr.DataArray(
        scale * rng.normal(size=(nt, nlat, nlon)),
        dims=("time", "latitude", "longitude"),
        coords=coords,
        name="temperature",
    )
    return x, y


def crps_double_sum(x: np.ndarray, y: float) -> float:
    """Fair CRPS of one point by the O(M²) definition."""
    M = len(x)
    skill = sum(abs(xm - y) for xm in x) / M
    if M == 1:
        return skill
    pair = sum(abs(a - b) for a in x for b in x) / (2 * M * (M - 1))
    return skill - pair


def test_pointwise_crps_against_double_sum(rng):
    for M in (1, 2, 3, 7):
        x, y = make(rng, M=M, nt=1, nlat=3, nlon=4)
        c = crps_fair_pointwise(x, y)
        assert c.dims == ("time", "latitude", "longitude")
        for i in range(3):
            for j in range(4):
                expected = crps_double_sum(x.values[:, 0, i, j], y.values[0, i, j])
                assert float(c[0, i, j]) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_crps_against_numerical_integral(rng):
    # The integral of (F(z) - 1{z >= y})² with F the members' empirical CDF is the plug-in CRPS;
    # the fair estimator subtracts the extra pair term sum|x_m - x_m'| / (2 M² (M - 1)).
    M = 4
    x, y = make(rng, M=M, nt=1, nlat=2, nlon=2)
    c = crps_fair_pointwise(x, y)
    for i in range(2):
        for j in range(2):
            xs, ys = np.sort(x.values[:, 0, i, j]), float(y.values[0, i, j])
            z = np.linspace(min(xs[0], ys) - 1, max(xs[-1], ys) + 1, 400_001)
            F = np.searchsorted(xs, z, side="right") / M
            integral = np.trapezoid((F - (z >= ys)) ** 2, z)
            pairs = np.abs(xs[:, None] - xs[None, :]).sum()
            assert float(c[0, i, j]) == pytest.approx(
                integral - pairs / (2 * M**2 * (M - 1)), abs=1e-4
            )


def test_crps_is_area_weighted_mean_of_pointwise(rng):
    x, y = make(rng)
    c = crps(x, y)
    assert c.dims == ("time",)
    np.testing.assert_allclose(c, area_mean(crps_fair_pointwise(x, y)), rtol=1e-12)
    assert c.attrs["units"] == "K" and "M - 1" in c.attrs["definition"]


def test_fair_crps_is_unbiased_for_small_ensembles(rng):
    # Members and truth i.i.d. N(0, 1): the expected fair CRPS of 3 members equals the CRPS of the
    # N(0, 1) distribution itself, y(2Φ(y) - 1) + 2φ(y) - 1/√π; the plug-in estimator does not.
    x, y = make(rng, M=3, nt=1, nlat=100, nlon=200)
    exact = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / np.sqrt(np.pi)
    expected = float(area_mean(exact).squeeze())
    fair = float(crps(x, y).squeeze())
    assert fair == pytest.approx(expected, abs=0.012)
    pairs = abs(x - x.rename(member="other")).sum(("member", "other"))
    plug_in = float(area_mean(abs(x - y).mean("member") - pairs / (2 * 3**2)).squeeze())
    assert plug_in - expected > 0.15  # biased by E|X - X'| / (2M) ≈ 0.19


def test_one_member_crps_is_mae(rng):
    x, y = make(rng, M=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = crps(x, y)
        s = spread(x)
    np.testing.assert_allclose(c, mae(x, y), rtol=1e-12)
    np.testing.assert_allclose(c, mae(x.isel(member=0, drop=True), y), rtol=1e-12)
    assert bool(s.isnull().all())


def test_identical_members(rng):
    x, y = make(rng, M=1)
    x = xr.concat([x] * 6, dim="member")
    np.testing.assert_array_equal(spread(x), 0.0)
    np.testing.assert_allclose(crps(x, y), mae(x, y), rtol=1e-12)
    np.testing.assert_array_equal(spread_skill_ratio(x, y), 0.0)


def test_spread_against_brute_force(rng):
    x, _ = make(rng, M=4, nt=1, nlat=4, nlon=3)
    lat = x.latitude.values
    band = np.sin(np.deg2rad(lat + 22.5)) - np.sin(np.deg2rad(lat - 22.5))
    num = den = 0.0
    for i in range(4):
        for j in range(3):
            v = x.values[:, 0, i, j]
            num += band[i] * sum((v - v.mean()) ** 2) / 3
            den += band[i]
    s = spread(x)
    assert s.dims == ("time",)
    assert float(s[0]) == pytest.approx(np.sqrt(num / den), rel=1e-12)
    assert s.attrs["units"] == "K" and "1/(M-1)" in s.attrs["definition"]


def test_spread_skill_ratio(rng):
    x, y = make(rng, M=5)
    ssr = spread_skill_ratio(x, y)
    np.testing.assert_allclose(ssr, spread(x) / rmse(x, y) * np.sqrt(6 / 5), rtol=1e-12)
    assert ssr.attrs["units"] == "1"
    # An exchangeable ensemble is calibrated: SSR ≈ 1 (the √((M+1)/M) factor matters here).
    x, y = make(rng, M=5, nt=1, nlat=100, nlon=200, scale=3.0)
    assert float(spread_skill_ratio(x, y).squeeze()) == pytest.approx(1.0, abs=0.03)
    assert float((spread(x) / rmse(x, y)).squeeze()) == pytest.approx(np.sqrt(5 / 6), abs=0.03)


def test_dataset_input(rng):
    x, y = make(rng)
    ds_x, ds_y = x.to_dataset(), y.to_dataset()
    out = crps(ds_x, ds_y)
    assert isinstance(out, xr.Dataset) and out["temperature"].attrs["units"] == "K"
    np.testing.assert_allclose(out["temperature"], crps(x, y))


def test_rank_histogram_against_loops(rng):
    M = 4
    x, y = make(rng, M=M, nt=3, nlat=4, nlon=5)
    h = rank_histogram(x, y)
    assert h.dims == ("rank",) and list(h["rank"].values) == list(range(M + 1))
    expected = np.zeros(M + 1, dtype=int)
    for t in range(3):
        for i in range(4):
            for j in range(5):
                expected[int(np.sum(x.values[:, t, i, j] < y.values[t, i, j]))] += 1
    np.testing.assert_array_equal(h.values, expected)
    per_time = rank_histogram(x, y, dims=("latitude", "longitude"))
    assert set(per_time.dims) == {"rank", "time"}
    np.testing.assert_array_equal(per_time.sum("time").values, expected)


def test_rank_histogram_ties_are_spread_at_random(rng):
    M, n = 4, 10_000
    coords = grid(50, 200)
    y = xr.DataArray(np.zeros((50, 200)), dims=("latitude", "longitude"), coords=coords)
    x = xr.zeros_like(y).expand_dims(member=M)
    h = rank_histogram(x, y, seed=1)
    assert int(h.sum()) == n
    np.testing.assert_allclose(h.values, n / (M + 1), rtol=0.1)  # flat, not piled at rank 0
    np.testing.assert_array_equal(h, rank_histogram(x, y, seed=1))
    assert not np.array_equal(h, rank_histogram(x, y, seed=2))
    # Partial ties: members (0, 0, 1, 2) and truth 0 → rank 0, 1 or 2, never 3 or 4.
    x = xr.concat([xr.zeros_like(y), xr.zeros_like(y), y + 1, y + 2], dim="member")
    h = rank_histogram(x, y)
    assert h.values[3] == h.values[4] == 0 and h.values[:3].min() > n / 3 * 0.9


def test_rank_histogram_skips_nan_truth(rng):
    x, y = make(rng, M=3, nt=1, nlat=2, nlon=2)
    y[0, 0, 0] = np.nan
    assert int(rank_histogram(x, y).sum()) == 3


def test_errors(rng):
    x, y = make(rng)
    with pytest.raises(DataError, match="no 'member' dimension"):
        crps(x.isel(member=0), y)
    with pytest.raises(DataError, match="coordinates differ"):
        crps(x, y.isel(time=[0]))
