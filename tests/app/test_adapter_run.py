"""The adapter's run/results part on the real tiny model: loading, running, errors users can cause,
and every number the results views show, checked against brute force on a real output."""

from __future__ import annotations

import dataclasses
import shutil
import threading

import numpy as np
import pytest
import xarray as xr

from app import adapter
from appa_engine import metrics
from appa_engine.data.grid import area_weights

STEPS, MEMBERS = 3, 3


@pytest.fixture(scope="module")
def engine(tiny_package):
    return adapter.load_engine(tiny_package)


@pytest.fixture(scope="module")
def truth(tiny_store):
    return adapter.open_truth(tiny_store)


def _scenario(truth, *, start_index: int = 4, hours: int = 18, seed: int = 1, **settings) -> adapter.Scenario:
    start = truth["time"].values[start_index]
    times = start + np.arange(0, hours, 3) * np.timedelta64(1, "h")
    observers = [
        adapter.Stations(name="synop", lon=[4.0, 100.0, 200.0], lat=[50.0, -10.0, 30.0], times=times,
                         variables=["2m_temperature"], errors={"2m_temperature": 0.5}),
        adapter.Profiles(name="sondes", lon=[4.0, 300.0], lat=[50.0, -40.0], times=times, variables=["temperature"],
                         levels=[500, 850], errors=0.5),
        adapter.SatelliteSwath(name="sat", orbit=adapter.CircularOrbit(800.0, 75.0, epoch=start), fov_radius_deg=10.0,
                               samples_per_hour=6, start=start, end=start + np.timedelta64(hours - 1, "h"),
                               variables=["temperature"], levels=[500], errors=0.5),
    ]
    kw = dict(members=MEMBERS, seed=seed, sampler=adapter.SamplerSettings(name="ddim", steps=STEPS))
    kw.update(settings)
    return adapter.Scenario(start=start, hours=hours, observations=observers, **kw)


@pytest.fixture(scope="module")
def output(engine, truth):
    steps: list[tuple[int, int]] = []
    out = adapter.run_scenario(engine, _scenario(truth), truth, progress=lambda i, n: steps.append((i, n)))
    # the guided pass, then the prior pass (O - B): progress runs over both
    assert steps == [(i, 2 * STEPS) for i in range(1, 2 * STEPS + 1)]
    return out


# -- loading ----------------------------------------------------------------------------------


def test_engine_is_loaded_once_per_path(engine, tiny_package):
    assert adapter.load_engine(str(tiny_package) + "/") is engine
    found = []
    threads = [threading.Thread(target=lambda: found.append(adapter.load_engine(tiny_package))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(e is engine for e in found)
    assert engine.variables == ("geopotential", "temperature", "u_component_of_wind", "2m_temperature",
                                "mean_sea_level_pressure")
    assert engine.levels == (500, 850) and engine.grid.shape == (16, 32) and engine.blanket == 4
    assert engine.status.loaded and engine.status.text == (
        "Model 'package': tiny preset, 8 channels on a 16 × 32 grid, 6-hourly, blankets of 4 states; running on cpu.")
    assert adapter.describe_model(tiny_package) is engine.status


def test_bad_packages_are_refused_with_hints(tmp_path, tiny_package, monkeypatch):
    with pytest.raises(adapter.CheckpointError, match="does not exist") as e:
        adapter.load_engine(tmp_path / "missing")
    assert e.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(adapter.CheckpointError, match="not a model package"):
        adapter.load_engine(tmp_path / "empty")
    copy = shutil.copytree(tiny_package, tmp_path / "copy")
    monkeypatch.setenv("APPA_THREADS", "many")
    with pytest.raises(adapter.ConfigError, match="APPA_THREADS") as e:
        adapter.load_engine(copy)
    assert "unset" in e.value.hint


# -- running ----------------------------------------------------------------------------------


def test_run_output(output, engine, truth):
    ds = output.dataset
    assert ds.sizes["member"] == MEMBERS and ds.sizes["time"] == 4 and "obs_background" in ds
    assert ds["obs_background"].dims == ("member", "obs") and ds.sizes["obs"] > 50
    assert sorted(adapter.output_variables(ds)) == sorted(engine.variables)
    # The scenario carries the simulated values: seed-reproducible, noise of the stated size.
    sc = output.scenario
    assert all(obs.values is not None for obs in sc.observations)
    again = adapter._simulate_missing(engine, _scenario(truth), truth)
    for a, b in zip(sc.observations, again.observations):
        np.testing.assert_array_equal(a.values, b.values)
    # Stations at a grid cell would see the truth exactly; the noise has std 0.5 (error).
    synop = np.asarray(sc.observations["synop"].values).ravel()
    assert np.isfinite(synop).all() and synop.size == 6 * 3
    # The truth: the store at the output's times, NaN-free.
    assert output.truth is not None and not any(bool(output.truth[v].isnull().any()) for v in output.truth.data_vars)
    for v in output.truth.data_vars:
        expected = truth[v].sel(time=ds["time"].values).values
        np.testing.assert_array_equal(output.truth[v].values, expected)


def test_a_rerun_from_the_exported_scenario_gives_identical_arrays(output, engine, truth):
    scenario = adapter.scenario_from_bytes(adapter.scenario_to_bytes(output.scenario), "run.yaml")
    again = adapter.run_scenario(engine, scenario, truth)
    for v in [*adapter.output_variables(output.dataset), "obs_value", "obs_analysis", "obs_background"]:
        np.testing.assert_array_equal(again.dataset[v].values, output.dataset[v].values, err_msg=v)


def test_the_guided_output_is_published_before_the_background_pass(output, engine, truth):
    steps: list[tuple[int, int]] = []
    published: list[tuple[int, adapter.RunOutput]] = []
    final = adapter.run_scenario(engine, _scenario(truth), truth, progress=lambda i, n: steps.append((i, n)),
                                 publish=lambda out: published.append((len(steps), out)))
    assert steps == [(i, 2 * STEPS) for i in range(1, 2 * STEPS + 1)]
    # Published once, after the guided pass and before the first step of the background pass.
    assert len(published) == 1 and published[0][0] == STEPS
    guided = published[0][1]
    assert "obs_background" not in guided.dataset and "obs_analysis" in guided.dataset
    assert final.truth is guided.truth and final.scenario is guided.scenario
    assert 0 < guided.seconds <= final.seconds
    # The final output is the published one plus O - B, nothing else changed.
    xr.testing.assert_identical(final.dataset.drop_vars("obs_background"), guided.dataset)
    # Same arrays as the run without publish (the fixture) and as the engine's one-call path.
    one_call = engine.assimilator.run(final.scenario, background=True)
    for v in [*adapter.output_variables(output.dataset), "obs_value", "obs_analysis", "obs_background"]:
        np.testing.assert_array_equal(final.dataset[v].values, output.dataset[v].values, err_msg=v)
        np.testing.assert_array_equal(final.dataset[v].values, one_call[v].values, err_msg=v)
    assert final.dataset["obs_background"].attrs == one_call["obs_background"].attrs


def test_a_run_of_the_prior_publishes_nothing_and_has_one_pass(engine, truth):
    steps, published = [], []
    prior = dataclasses.replace(_scenario(truth), observations=adapter.ObservationSet(()))
    out = adapter.run_scenario(engine, prior, truth, progress=lambda i, n: steps.append((i, n)),
                               publish=published.append)
    assert published == [] and steps == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert "obs_background" not in out.dataset and out.dataset.attrs["prior_only"] == 1


def test_cancel_in_the_background_pass_after_the_publish(engine, truth):
    cancel = threading.Event()
    published = []

    def progress(i, n):
        if i == STEPS + 1:  # the first step of the background pass
            cancel.set()

    with pytest.raises(adapter.Cancelled):
        adapter.run_scenario(engine, _scenario(truth, members=1), truth, progress=progress, cancel=cancel,
                             publish=published.append)
    assert len(published) == 1 and published[0].dataset.sizes["member"] == 1


def test_cancel_stops_at_the_next_step(engine, truth):
    cancel = threading.Event()
    seen = []

    def progress(i, n):
        seen.append(i)
        cancel.set()

    with pytest.raises(adapter.Cancelled):
        adapter.run_scenario(engine, _scenario(truth, members=1), truth, progress=progress, cancel=cancel)
    assert seen == [1]


def test_errors_users_can_cause(engine, truth):
    with pytest.raises(adapter.ObservationError, match="outside the truth") as e:
        adapter.run_scenario(engine, dataclasses.replace(_scenario(truth), start=np.datetime64("1990-01-01T00", "ns")),
                             truth)
    assert "window" in e.value.hint
    with pytest.raises(adapter.ObservationError, match="no state at 1 of the window's 4 times"):
        adapter.check_run(engine, _scenario(truth), truth.isel(time=slice(0, 7)))
    with pytest.raises(adapter.ObservationError, match="no values and there is no truth") as e:
        adapter.check_run(engine, _scenario(truth), None)
    assert "truth" in e.value.hint
    start = truth["time"].values[4]
    humid = adapter.Scenario(start=start, hours=6, observations=[adapter.Stations(
        name="wet", lon=[1.0], lat=[2.0], times=[start], variables=["specific_humidity"], errors=1e-3)])
    with pytest.raises(adapter.ObservationError,
                       match="'wet' observes specific_humidity, which the model does not have") as e:
        adapter.run_scenario(engine, humid, truth)
    assert "2m_temperature" in e.value.hint
    with pytest.raises(adapter.ConfigError, match="shorter than the model's time step"):
        adapter.check_run(engine, _scenario(truth, task="forecast", lead_hours=3), truth)
    coarse = truth.isel(latitude=slice(0, None, 2))
    with pytest.raises(adapter.DataError, match="grid"):
        adapter.check_run(engine, _scenario(truth), coarse)
    small = dataclasses.replace(engine, assimilator=type(engine.assimilator)(engine.model, max_bytes=10_000))
    with pytest.raises(adapter.ObservationError, match="guidance buffers") as e:
        adapter.run_scenario(small, _scenario(truth), truth)
    assert "thin the observers" in e.value.hint


# -- results: numerics against brute force ----------------------------------------------------


def test_layers_against_numpy(output):
    ds, truth = output.dataset, output.truth
    x = ds["temperature"].sel(level=850).values.astype(np.float64)  # (M, T, H, W)
    y = truth["temperature"].sel(level=850).values.astype(np.float64)
    kw = dict(variable="temperature", level=850, time_index=2)
    mean = adapter.ensemble_layer(ds, truth, layer="mean", **kw)
    assert mean.dims == ("latitude", "longitude") and mean.dtype == np.float64
    np.testing.assert_allclose(mean.values, x[:, 2].mean(0), rtol=1e-12)
    spread = adapter.ensemble_layer(ds, truth, layer="spread", **kw).values
    brute = np.sqrt(((x[:, 2] - x[:, 2].mean(0)) ** 2).sum(0) / (MEMBERS - 1))
    np.testing.assert_allclose(spread, brute, rtol=1e-10)
    np.testing.assert_array_equal(adapter.ensemble_layer(ds, truth, layer="member", member=2, **kw).values, x[2, 2])
    np.testing.assert_array_equal(adapter.ensemble_layer(ds, truth, layer="truth", **kw).values, y[2])
    np.testing.assert_allclose(adapter.ensemble_layer(ds, truth, layer="error", **kw).values, x[:, 2].mean(0) - y[2],
                               rtol=1e-12)
    # One member: spread 0; surface variable: no level.
    one = ds.isel(member=[1])
    assert np.all(adapter.ensemble_layer(one, truth, layer="spread", **kw).values == 0)
    t2m = adapter.ensemble_layer(ds, truth, layer="mean", variable="2m_temperature", level=None, time_index=0)
    np.testing.assert_allclose(t2m.values, ds["2m_temperature"].values[:, 0].astype(np.float64).mean(0))
    with pytest.raises(adapter.DataError, match="no truth"):
        adapter.ensemble_layer(ds, None, layer="error", **kw)
    with pytest.raises(adapter.DataError, match="member 3 does not exist"):
        adapter.ensemble_layer(ds, truth, layer="member", member=3, variable="temperature", level=850, time_index=0)
    with pytest.raises(adapter.DataError, match="no level 700"):
        adapter.ensemble_layer(ds, truth, layer="mean", variable="temperature", level=700, time_index=0)


def test_layer_ranges_against_numpy(output):
    ds, truth = output.dataset, output.truth
    x = ds["geopotential"].sel(level=500).values.astype(np.float64)
    y = truth["geopotential"].sel(level=500).values.astype(np.float64)
    kw = dict(variable="geopotential", level=500)
    mean = x.mean(0)
    expected = np.percentile(np.concatenate([mean.ravel(), y.ravel()]), [1, 99])
    for layer in ("mean", "member", "truth"):
        np.testing.assert_allclose(adapter.layer_range(ds, truth, layer=layer, **kw), expected)
    spread = x.std(0, ddof=1)
    np.testing.assert_allclose(adapter.layer_range(ds, truth, layer="spread", **kw), (0, np.percentile(spread, 99)))
    hi = np.percentile(np.abs(mean - y), 99)
    np.testing.assert_allclose(adapter.layer_range(ds, truth, layer="error", **kw), (-hi, hi))
    np.testing.assert_allclose(adapter.layer_range(ds, None, layer="mean", **kw), np.percentile(mean, [1, 99]))


def test_metric_curves_equal_the_engine_metrics_and_brute_force(output):
    ds, truth = output.dataset, output.truth
    curves = adapter.metric_curves(ds, truth, variable="temperature", level=500)
    assert list(curves.columns) == ["rmse", "spread", "crps", "ssr"]
    np.testing.assert_array_equal(curves.index.values, ds["time"].values)
    x = ds["temperature"].sel(level=500).astype(np.float64).reset_coords(drop=True)
    y = truth["temperature"].sel(level=500).astype(np.float64).reset_coords(drop=True)
    np.testing.assert_allclose(curves["rmse"], metrics.rmse(x, y).values, rtol=1e-12)
    np.testing.assert_allclose(curves["spread"], metrics.spread(x).values, rtol=1e-12)
    np.testing.assert_allclose(curves["crps"], metrics.crps(x, y).values, rtol=1e-12)
    np.testing.assert_allclose(curves["ssr"], metrics.spread_skill_ratio(x, y).values, rtol=1e-12)
    # Brute force: area-weighted RMSE of the ensemble mean, spread and fair CRPS by double loops.
    w = area_weights(ds["latitude"].values)[:, None] * np.ones(ds.sizes["longitude"])
    xv, yv = x.values, y.values
    M = MEMBERS
    for t in range(ds.sizes["time"]):
        err = xv[:, t].mean(0) - yv[t]
        rmse = np.sqrt((w * err**2).sum() / w.sum())
        var = ((xv[:, t] - xv[:, t].mean(0)) ** 2).sum(0) / (M - 1)
        spread = np.sqrt((w * var).sum() / w.sum())
        skill = np.mean([np.abs(xv[m, t] - yv[t]) for m in range(M)], axis=0)
        pairs = sum(np.abs(xv[m, t] - xv[k, t]) for m in range(M) for k in range(M)) / (2 * M * (M - 1))
        crps = ((skill - pairs) * w).sum() / w.sum()
        np.testing.assert_allclose(curves["rmse"].iloc[t], rmse, rtol=1e-10)
        np.testing.assert_allclose(curves["spread"].iloc[t], spread, rtol=1e-10)
        np.testing.assert_allclose(curves["crps"].iloc[t], crps, rtol=1e-10)
        np.testing.assert_allclose(curves["ssr"].iloc[t], spread / rmse * np.sqrt((M + 1) / M), rtol=1e-10)
    assert adapter.metric_curves(ds, None, variable="temperature", level=500) is None


def test_innovations_against_numpy(output):
    ds = output.dataset
    table = adapter.innovations(ds)
    assert list(table.columns) == ["observer", "variable", "level", "lon", "lat", "time", "value", "error",
                                   "o_minus_b", "o_minus_a"]
    assert len(table) == ds.sizes["obs"] and set(table["observer"]) == {"synop", "sondes", "sat"}
    value = ds["obs_value"].values
    np.testing.assert_allclose(table["o_minus_a"], value - ds["obs_analysis"].values.mean(0), rtol=1e-12)
    np.testing.assert_allclose(table["o_minus_b"], value - ds["obs_background"].values.mean(0), rtol=1e-12)
    assert np.isnan(table.loc[table["observer"] == "synop", "level"]).all()
    assert set(table.loc[table["observer"] == "sondes", "level"]) == {500.0, 850.0}
    no_b = adapter.innovations(ds.drop_vars("obs_background"))
    assert no_b["o_minus_b"].isna().all() and np.array_equal(no_b["o_minus_a"], table["o_minus_a"])
    assert len(adapter.innovations(None)) == 0


def test_meteogram_at_the_nearest_cell(output):
    ds, truth = output.dataset, output.truth
    m = adapter.meteogram(ds, truth, variable="temperature", level=500, lon=-356.5, lat=49.0)  # 3.5°E
    lats, lons = ds["latitude"].values, ds["longitude"].values
    i = np.argmin(np.abs(lats - 49.0))
    j = np.argmin(np.minimum(np.abs(lons - 3.5), 360 - np.abs(lons - 3.5)))
    assert (m.lon, m.lat) == (lons[j], lats[i]) == (0.0, 50.625)
    assert m.units == "K" and m.level == 500 and m.members.shape == (MEMBERS, 4)
    np.testing.assert_array_equal(m.members, ds["temperature"].sel(level=500).values[:, :, i, j])
    np.testing.assert_array_equal(m.truth, truth["temperature"].sel(level=500).values[:, i, j])
    np.testing.assert_array_equal(m.times, ds["time"].values)
    # Observations of temperature at 500 hPa strictly within one grid spacing, found by a loop.
    dlat, dlon = 180 / 16, 360 / 32
    expected = []
    for k in range(ds.sizes["obs"]):
        if ds["obs_variable"].values[k] != "temperature" or ds["obs_level"].values[k] != 500:
            continue
        d_lon = abs((ds["obs_lon"].values[k] - m.lon + 180) % 360 - 180)
        if abs(ds["obs_lat"].values[k] - m.lat) < dlat and d_lon < dlon - 1e-6:
            expected.append(ds["obs_value"].values[k])
    assert sorted(m.obs["value"]) == sorted(expected) and len(expected) > 0
    assert set(m.obs["observer"]) <= {"sondes", "sat"} and list(m.obs.columns) == ["time", "value", "error",
                                                                                     "observer", "lon", "lat"]
    surface = adapter.meteogram(ds, None, variable="2m_temperature", level=None, lon=100.0, lat=-10.0)
    assert surface.truth is None and set(surface.obs["observer"]) == {"synop"}
    with pytest.raises(adapter.DataError, match="not a point of the globe"):
        adapter.meteogram(ds, truth, variable="temperature", level=500, lon=np.nan, lat=0.0)


def test_truth_alignment_partial_and_outside(output, truth):
    ds = output.dataset
    covered = ds["time"].values[:3]
    part = adapter.align_truth(ds, truth.sel(time=slice(None, covered[-1])))
    assert part["temperature"].isel(time=slice(0, 3)).notnull().all()
    assert part["temperature"].isel(time=slice(3, None)).isnull().all()
    curves = adapter.metric_curves(ds, part, variable="temperature", level=500)
    np.testing.assert_array_equal(curves.index.values, covered)
    assert adapter.align_truth(ds, truth.isel(time=slice(0, 2))) is None
    assert adapter.align_truth(ds, None) is None
    only_t2m = adapter.align_truth(ds, truth[["2m_temperature"]])
    assert list(only_t2m.data_vars) == ["2m_temperature"]
    assert adapter.truth_field(only_t2m, variable="temperature", level=500) is None


@pytest.mark.parametrize("fmt, suffix", [("netcdf", ".nc"), ("zarr", ".zarr.zip")])
def test_export_round_trips(output, tmp_path, fmt, suffix):
    data, name = adapter.export_result(output.dataset, fmt)
    assert name == f"appa-reanalysis-2020-01-02T00{suffix}"
    path = tmp_path / name
    path.write_bytes(data)
    back = adapter.open_export(path)
    xr.testing.assert_identical(back, output.dataset)
    assert "synop" in back.attrs["scenario"]
    if fmt == "zarr":
        import zarr

        with xr.open_zarr(zarr.storage.ZipStore(path, mode="r"), consolidated=False) as direct:
            assert set(direct.data_vars) == set(output.dataset.data_vars)
    with pytest.raises(adapter.ConfigError, match="unknown export format"):
        adapter.export_result(output.dataset, "csv")
