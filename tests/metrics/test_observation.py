"""O−B / O−A statistics per observer and the innovation χ²: loops and Monte Carlo oracles."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from appa_engine.errors import ObservationError
from appa_engine.metrics.observation import innovation_statistics

OBSERVERS = np.array(["stations", "satellite", "radiosondes"])
VARIABLES = np.array(["temperature", "2m_temperature"])


def table(rng, n: int, *, sigma_o=0.5) -> xr.Dataset:
    return xr.Dataset(
        {
            "value": ("obs", rng.normal(size=n), {"units": "K"}),
            "error": ("obs", np.broadcast_to(sigma_o, (n,)).astype(float)),
        },
        coords={
            "observer": ("obs", rng.choice(OBSERVERS, size=n)),
            "variable": ("obs", rng.choice(VARIABLES, size=n)),
        },
    )


def equivalents(rng, n: int, M: int, scale: float = 1.0) -> xr.DataArray:
    return xr.DataArray(scale * rng.normal(size=(M, n)), dims=("member", "obs"))


def test_against_loops(rng):
    n, M = 200, 6
    obs, hb, ha = (
        table(rng, n, sigma_o=rng.uniform(0.2, 1.0, size=n)),
        equivalents(rng, n, M),
        equivalents(rng, n, M, 0.3),
    )
    out = innovation_statistics(obs, hb, ha)
    assert out["omb_mean"].dims == ("observer", "variable")
    assert list(out.data_vars) == ["count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "chi2"]
    for o in OBSERVERS:
        for v in VARIABLES:
            d_b, d_a, chi = [], [], []
            for i in range(n):
                if obs.observer.values[i] == o and obs.variable.values[i] == v:
                    y, s = obs.value.values[i], obs.error.values[i]
                    b, a_ = hb.values[:, i], ha.values[:, i]
                    d_b.append(y - b.mean())
                    d_a.append(y - a_.mean())
                    chi.append((y - b.mean()) ** 2 / (s**2 + sum((b - b.mean()) ** 2) / (M - 1)))
            row = out.sel(observer=o, variable=v)
            assert int(row["count"]) == len(d_b)
            assert float(row["omb_mean"]) == pytest.approx(np.mean(d_b), rel=1e-12)
            assert float(row["omb_rms"]) == pytest.approx(
                np.sqrt(np.mean(np.square(d_b))), rel=1e-12
            )
            assert float(row["oma_mean"]) == pytest.approx(np.mean(d_a), rel=1e-12)
            assert float(row["oma_rms"]) == pytest.approx(
                np.sqrt(np.mean(np.square(d_a))), rel=1e-12
            )
            assert float(row["chi2"]) == pytest.approx(np.mean(chi), rel=1e-12)
    assert out["omb_rms"].attrs["units"] == "K" and out["chi2"].attrs["units"] == "1"
    assert "sigma_o" in out["chi2"].attrs["definition"]


def consistent(rng, n, M, sigma_o, sigma_b, stated_sigma_o):
    """Members and truth exchangeable around a random background mean; y = truth + noise."""
    mu = rng.normal(size=n) * 5
    truth = mu + sigma_b * rng.normal(size=n)
    members = mu + sigma_b * rng.normal(size=(M, n))
    obs = xr.Dataset(
        {
            "value": ("obs", truth + sigma_o * rng.normal(size=n)),
            "error": ("obs", np.full(n, stated_sigma_o)),
        },
        coords={"observer": ("obs", np.full(n, "stations")), "variable": ("obs", np.full(n, "t"))},
    )
    return obs, xr.DataArray(members, dims=("member", "obs"))


def test_chi2_is_one_when_errors_are_consistent(rng):
    n, M, sigma_o, sigma_b = 20_000, 64, 0.8, 0.6
    obs, hb = consistent(rng, n, M, sigma_o, sigma_b, stated_sigma_o=sigma_o)
    chi2 = float(innovation_statistics(obs, hb, by=())["chi2"])
    expected = (sigma_o**2 + (M + 1) / M * sigma_b**2) / (sigma_o**2 + sigma_b**2)  # 1.006
    assert chi2 == pytest.approx(expected, abs=0.04)  # MC std ≈ √(2/n) ≈ 0.01
    assert chi2 == pytest.approx(1.0, abs=0.05)


def test_chi2_is_large_when_the_error_is_understated(rng):
    n, M, sigma_o, sigma_b = 20_000, 64, 0.9, 0.3
    obs, hb = consistent(rng, n, M, sigma_o, sigma_b, stated_sigma_o=sigma_o / 3)
    chi2 = float(innovation_statistics(obs, hb, by=())["chi2"])
    assert chi2 > 4.0  # ≈ (0.81 + 0.09) / (0.09 + 0.09) = 5


def test_deterministic_background_and_groupings(rng):
    n = 50
    obs = table(rng, n)
    hb = xr.DataArray(rng.normal(size=n), dims="obs")
    out = innovation_statistics(obs, hb, by=())
    d = obs.value.values - hb.values
    assert float(out["chi2"]) == pytest.approx(
        np.mean(d**2 / 0.25), rel=1e-12
    )  # σ_b² = 0 for M = 1
    assert int(out["count"]) == n and "oma_mean" not in out
    per_observer = innovation_statistics(obs, hb, by="observer")
    assert per_observer["count"].dims == ("observer",)
    assert int(per_observer["count"].sum()) == n
    assert sorted(per_observer["observer"].values) == sorted(OBSERVERS)


def test_missing_combination_counts_zero(rng):
    obs = table(rng, 4)
    obs = obs.assign_coords(
        observer=("obs", ["a", "a", "b", "b"]), variable=("obs", ["x", "y", "x", "x"])
    )
    out = innovation_statistics(obs, equivalents(rng, 4, 3))
    assert int(out["count"].sel(observer="b", variable="y")) == 0
    assert bool(out["omb_mean"].sel(observer="b", variable="y").isnull())
    assert out["count"].dtype == np.int64


def test_errors(rng):
    obs = table(rng, 10)
    with pytest.raises(ObservationError, match="10"):
        innovation_statistics(obs, equivalents(rng, 9, 3))
    with pytest.raises(ObservationError, match="lacks"):
        innovation_statistics(obs.drop_vars("error"), equivalents(rng, 10, 3))
    with pytest.raises(ObservationError, match="positive"):
        innovation_statistics(obs.assign(error=obs.error * 0), equivalents(rng, 10, 3))
    with pytest.raises(ObservationError, match="unexpected dims"):
        innovation_statistics(obs, equivalents(rng, 10, 3).expand_dims(time=2))
    with pytest.raises(ObservationError, match="analysis"):
        innovation_statistics(obs, equivalents(rng, 10, 3), equivalents(rng, 8, 3))
