"""evaluate(): alignment of the truth, clear errors, the output schema and the text table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import mae, rmse
from appa_engine.metrics.evaluate import METRICS, evaluate, format_table
from appa_engine.metrics.probabilistic import crps, spread

NLAT, NLON, M = 6, 12, 4
LAT = 90 - (np.arange(NLAT) + 0.5) * 180 / NLAT
LON = np.arange(NLON) * 360 / NLON
TIME = pd.date_range("2020-01-01", periods=6, freq="6h")
LEVELS = [250, 500, 850]


def truth_store(rng) -> xr.Dataset:
    coords = {"time": TIME, "level": LEVELS, "latitude": LAT, "longitude": LON}
    return xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                rng.normal(size=(6, 3, NLAT, NLON)),
                {"units": "K"},
            ),
            "2m_temperature": (
                ("time", "latitude", "longitude"),
                rng.normal(size=(6, NLAT, NLON)),
                {"units": "K"},
            ),
            "geopotential": (
                ("time", "level", "latitude", "longitude"),
                rng.normal(size=(6, 3, NLAT, NLON)),
                {"units": "m2 s-2"},
            ),
        },
        coords=coords,
    )


def ensemble_of(truth: xr.Dataset, rng, *, times=slice(2, 5), levels=(500, 850)) -> xr.Dataset:
    """An ensemble on a subset of the truth's times and levels, plus an observation table."""
    t = truth[["temperature", "2m_temperature"]].isel(time=times).sel(level=list(levels))
    ens = xr.Dataset(
        {
            name: (("member",) + a.dims, a.values[None] + rng.normal(size=(M,) + a.shape), a.attrs)
            for name, a in t.data_vars.items()
        },
        coords=t.coords,
    )
    return ens.assign(obs_value=("obs", rng.normal(size=7)))


def test_scores_match_the_metric_functions(rng):
    truth = truth_store(rng)
    ens = ensemble_of(truth, rng)
    out = evaluate(ens, truth)
    assert list(out.data_vars) == ["temperature", "2m_temperature"]  # obs_value is skipped
    assert list(out["metric"].values) == list(METRICS)
    assert out["temperature"].dims == ("metric", "time", "level")
    assert out["2m_temperature"].dims == ("metric", "time")
    e = ens[["temperature", "2m_temperature"]]
    t = truth[["temperature", "2m_temperature"]].sel(time=e.time, level=e.level)
    for name, fn in (("rmse", rmse), ("crps", crps)):
        np.testing.assert_allclose(
            out.sel(metric=name)["temperature"], fn(e, t)["temperature"], rtol=1e-12
        )
    np.testing.assert_allclose(
        out.sel(metric="spread")["2m_temperature"], spread(e)["2m_temperature"], rtol=1e-12
    )
    np.testing.assert_allclose(
        out.sel(metric="ssr")["temperature"],
        spread(e)["temperature"] / rmse(e, t)["temperature"] * np.sqrt((M + 1) / M),
        rtol=1e-12,
    )
    assert out.attrs["ensemble_size"] == M
    assert out["temperature"].attrs["units"] == "K"
    assert all(f"definition_{m}" in out.attrs for m in METRICS)


def test_truth_in_another_layout_is_normalised(rng):
    truth = truth_store(rng)
    ens = ensemble_of(truth, rng)
    reference = evaluate(ens, truth)
    # Latitude ascending, longitudes in -180..180, dims transposed, extra times kept around.
    other = truth.assign_coords(longitude=((truth.longitude + 180) % 360) - 180).sortby("longitude")
    other = other.sortby("latitude").transpose("time", "level", "longitude", "latitude")
    xr.testing.assert_allclose(evaluate(ens, other), reference)


def test_variables_and_deterministic_run(rng):
    truth = truth_store(rng)
    ens = ensemble_of(truth, rng)
    out = evaluate(ens, truth, variables=["2m_temperature"])
    assert list(out.data_vars) == ["2m_temperature"]
    single = ens[["2m_temperature"]].isel(member=0, drop=True)
    out = evaluate(single, truth)
    t = truth["2m_temperature"].sel(time=single.time)
    np.testing.assert_allclose(
        out["2m_temperature"].sel(metric="crps"), mae(single["2m_temperature"], t), rtol=1e-12
    )
    assert bool(out["2m_temperature"].sel(metric=["spread", "ssr"]).isnull().all())
    assert out.attrs["ensemble_size"] == 1


def test_lead_time(rng):
    truth = truth_store(rng)
    out = evaluate(ensemble_of(truth, rng), truth, lead_dim="lead_time")
    assert out["temperature"].dims == ("metric", "lead_time", "level")
    np.testing.assert_array_equal(
        out["lead_time"].values, np.array([0, 6, 12], dtype="timedelta64[h]")
    )
    np.testing.assert_array_equal(out["time"].values, TIME[2:5].values)


def test_errors_are_clear(rng):
    truth = truth_store(rng)
    ens = ensemble_of(truth, rng)
    coarse = truth.coarsen(latitude=2, longitude=2).mean()
    with pytest.raises(DataError, match=r"truth store on another grid.*6×12.*3×6"):
        evaluate(ens, coarse)
    with pytest.raises(DataError, match="lacks 1 of the ensemble's time"):
        evaluate(ens, truth.isel(time=slice(0, 4)))
    with pytest.raises(DataError, match="lacks 1 of the ensemble's level values"):
        evaluate(ens, truth.sel(level=[250, 500]))
    with pytest.raises(DataError, match=r"truth has no variable\(s\) \['2m_temperature'\]"):
        evaluate(ens, truth.drop_vars("2m_temperature"))
    with pytest.raises(DataError, match="no gridded variable"):
        evaluate(ens, truth, variables=["obs_value"])
    with pytest.raises(DataError, match="in the ensemble but"):
        evaluate(ens, truth.assign(**{"2m_temperature": truth["temperature"]}))


def test_format_table(rng):
    truth = truth_store(rng)
    out = evaluate(ensemble_of(truth, rng), truth, lead_dim="lead_time")
    text = format_table(out)
    lines = text.splitlines()
    assert lines[0].split() == ["variable", "level", "lead_time", *METRICS]
    assert (
        len(lines) == 2 + 3 * 2 + 3
    )  # header, rule, temperature (3 times × 2 levels), 2m (3 times)
    row = next(
        line
        for line in lines
        if line.startswith("temperature") and "+12h" in line and " 850 " in line
    )
    value = float(out["temperature"].sel(metric="rmse", level=850).isel(lead_time=2))
    assert float(row.split()[3]) == pytest.approx(value, rel=1e-3)
    summary = format_table(out, aggregate_time=True).splitlines()
    assert len(summary) == 2 + 2 + 1
    row = next(line for line in summary if line.startswith("2m_temperature")).split()
    r = out["2m_temperature"].sel(metric="rmse")
    s = out["2m_temperature"].sel(metric="spread")
    assert float(row[1]) == pytest.approx(float(np.sqrt((r**2).mean())), rel=1e-3)
    assert float(row[4]) == pytest.approx(
        float(np.sqrt((s**2).mean() / (r**2).mean()) * np.sqrt(5 / 4)), rel=1e-3
    )
    with pytest.raises(DataError, match="metric"):
        format_table(truth)
