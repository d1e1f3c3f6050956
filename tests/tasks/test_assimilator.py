"""Reanalysis, filtering and forecasting with the real engine on the tiny model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr

from appa_engine.diffusion.samplers import Cancelled
from appa_engine.errors import ConfigError, ObservationError
from appa_engine.observations.observers import ObservationSet, Stations
from appa_engine.observations.scenario import SamplerSettings
from appa_engine.tasks.simulate import random_stations, simulate

FAST = SamplerSettings(name="pc", steps=4, corrections=1)
START = "2020-01-02T00"


@pytest.fixture(scope="module")
def stations(assim, truth):
    times = assim.window(START, 12)
    return simulate(assim.model, ObservationSet([random_stations(20, times=times, seed=1)]), truth, times, seed=2)


def test_window_includes_both_ends(assim):
    times = assim.window(START, 12)
    assert list(times) == list(np.datetime64(START, "ns") + np.arange(3) * np.timedelta64(6, "h"))


def test_prior_sampling_schema(assim):
    ds = assim.reanalysis(start=START, hours=6, members=2, sampler=FAST)
    assert ds.attrs["prior_only"] == 1 and "prior" in ds.attrs["comment"]
    assert ds["temperature"].dims == ("member", "time", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("member", "time", "latitude", "longitude")
    assert ds.sizes["time"] == 2 and ds.sizes["member"] == 2  # window shorter than a blanket: cropped
    assert list(ds["level"].values) == [500, 850]
    assert all(np.isfinite(ds[v]).all() for v in ds.data_vars)


def test_reanalysis_with_stations(assim, stations):
    ds = assim.reanalysis(stations, start=START, hours=12, members=3, sampler=FAST, seed=4)
    n = ds.sizes["obs"]
    assert n == 20 * 3 * 2  # stations × times × variables
    assert ds["obs_analysis"].dims == ("member", "obs") and ds.sizes["member"] == 3
    assert np.isfinite(ds["obs_analysis"]).all()
    assert set(np.unique(ds["observer"].values)) == {"stations"}
    assert ds["footprint"].sum() > 0
    # guidance pulls the analysis towards the observations, compared with the prior
    prior = assim.reanalysis(start=START, hours=12, members=3, sampler=FAST, seed=4)
    assert not np.allclose(prior["temperature"], ds["temperature"])


def test_same_seed_same_result_other_seed_differs(assim, stations):
    a = assim.reanalysis(stations, start=START, hours=12, members=2, sampler=FAST, seed=7)
    b = assim.reanalysis(stations, start=START, hours=12, members=2, sampler=FAST, seed=7)
    c = assim.reanalysis(stations, start=START, hours=12, members=2, sampler=FAST, seed=8)
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert not np.allclose(a["temperature"], c["temperature"])


def test_progress_and_cancel(assim):
    calls = []
    assim.reanalysis(start=START, hours=6, members=1, sampler=FAST, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 4) for i in range(1, 5)]
    cancel = threading.Event()

    def progress(i, n):
        calls.append(i)
        if i == 2:
            cancel.set()

    calls.clear()
    with pytest.raises(Cancelled):
        assim.reanalysis(start=START, hours=6, members=1, sampler=FAST, progress=progress, cancel=cancel)
    assert calls == [1, 2]


def test_progress_covers_the_background_pass(assim, stations):
    """With ``background=True`` the prior ensemble is a second pass: progress runs over both."""

    calls = []
    ds = assim.reanalysis(stations, start=START, hours=12, members=1, sampler=FAST, background=True,
                          progress=lambda i, n: calls.append((i, n)))
    assert "obs_background" in ds
    assert calls == [(i, 8) for i in range(1, 9)]


def test_filter_and_forecasts(assim, stations):
    f = assim.filter(stations, start=START, hours=12, members=2, sampler=FAST)
    assert f.sizes["time"] == 1 and f["time"].values[0] == np.datetime64("2020-01-02T12", "ns")
    for mode in ("all_at_once", "autoregressive"):
        fc = assim.forecast(stations, start=START, assimilation_hours=12, lead_hours=24, members=2,
                            sampler=FAST, mode=mode)
        assert fc.sizes["time"] == 3 + 4
        lead = fc["lead_time"].values / np.timedelta64(1, "h")
        assert list(lead) == [-12, -6, 0, 6, 12, 18, 24]
        assert fc.attrs["forecast_mode"] == mode and np.isfinite(fc["temperature"]).all()
    with pytest.raises(ConfigError, match="positive lead time"):
        assim.forecast(stations, start=START, assimilation_hours=12, lead_hours=0)


def test_bad_observations(assim):
    times = assim.window(START, 12)
    empty = Stations(name="s", lon=[10.0], lat=[45.0], times=times, variables=["2m_temperature"], errors=0.5)
    with pytest.raises(ObservationError, match="without values"):
        assim.reanalysis(ObservationSet([empty]), start=START, hours=12, sampler=FAST)
    late = Stations(name="late", lon=[10.0], lat=[45.0], times=[np.datetime64("2020-01-05T00")],
                    variables=["2m_temperature"], errors=0.5, values=np.ones((1, 1, 1)))
    with pytest.raises(ObservationError, match="window"):
        assim.reanalysis(ObservationSet([late]), start=START, hours=12, sampler=FAST)
    humid = Stations(name="q", lon=[10.0], lat=[45.0], times=times, variables=["specific_humidity"], errors=1e-3,
                     values=np.ones((3, 1, 1)))
    with pytest.raises(ObservationError, match="specific_humidity"):
        assim.reanalysis(ObservationSet([humid]), start=START, hours=12, sampler=FAST)


def test_outputs_round_trip(assim, stations, tmp_path):
    from appa_engine.io.outputs import open_output, write_dataset

    ds = assim.reanalysis(stations, start=START, hours=12, members=2, sampler=FAST)
    for name in ("run.zarr", "run.nc"):
        write_dataset(ds, tmp_path / name)
        back = open_output(tmp_path / name).load()
        np.testing.assert_array_equal(back["temperature"].values, ds["temperature"].values)
        np.testing.assert_array_equal(back["obs_value"].values, ds["obs_value"].values)
        assert list(back["observer"].values) == list(ds["observer"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc", "run.zarr"]
