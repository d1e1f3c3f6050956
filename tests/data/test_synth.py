"""Tests of appa_engine.data.synth (the Held–Suarez synthetic planet) and ``appa data synth``.

Every generation uses the ``tiny`` model setting (T21, 10 layers, dt = 60 min, 6-hourly), so the
model is compiled once per process; the tiny preset itself is generated once per module.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from appa_engine.data.grid import Grid, area_weights
from appa_engine.data.synth import (
    EPOCH,
    PRESETS,
    SynthConfig,
    _model,
    _timeline,
    _times,
    generate_planet,
    log_pressure_interp,
    state_path,
)
from appa_engine.errors import ConfigError, DataError

pytestmark = pytest.mark.synth
pytest.importorskip("dinosaur")

TINY = PRESETS["tiny"]
LEVEL_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
SURFACE_VARS = (
    "surface_pressure",
    "mean_sea_level_pressure",
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
)
UNITS = {
    "geopotential": "m**2 s**-2",
    "temperature": "K",
    "u_component_of_wind": "m s**-1",
    "v_component_of_wind": "m s**-1",
    "surface_pressure": "Pa",
    "mean_sea_level_pressure": "Pa",
    "2m_temperature": "K",
    "10m_u_component_of_wind": "m s**-1",
    "10m_v_component_of_wind": "m s**-1",
}


def short(**kw) -> SynthConfig:
    """The tiny model setting, one day of spin-up and one written day unless told otherwise."""
    return SynthConfig.preset("tiny", **{"days": 1, "spinup_days": 1, "gap_days": 1, **kw})


def open_store(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> xr.Dataset:
    path = tmp_path_factory.mktemp("synth") / "tiny.zarr"
    generate_planet(path, TINY, progress=False)
    return xr.open_zarr(path, consolidated=False).load()


# --------------------------------------------------------------------------- config and helpers
def test_config_validation():
    with pytest.raises(ConfigError, match="unknown resolution"):
        SynthConfig(resolution="T63")
    with pytest.raises(ConfigError, match="does not divide a day"):
        SynthConfig(output_hours=5)
    with pytest.raises(ConfigError, match="does not divide the output interval"):
        SynthConfig(output_hours=6, dt_minutes=25)
    with pytest.raises(ConfigError, match="levels must lie between"):
        SynthConfig(layers=10, levels=(10, 500))  # top layer centre is at 50 hPa
    with pytest.raises(ConfigError, match="integers in hPa"):
        SynthConfig(levels=(500.5,))
    with pytest.raises(ConfigError, match="at least 1"):
        SynthConfig(days=0)
    with pytest.raises(ConfigError, match="unknown synth preset"):
        SynthConfig.preset("huge")
    config = SynthConfig(levels=[850, 250, 500, 250])
    assert config.levels == (250, 500, 850)  # sorted, unique, a tuple
    assert config.identity() == SynthConfig(levels=(250, 500, 850), days=7, runs=3).identity()
    assert PRESETS["tiny"].resolution == PRESETS["small"].resolution == "T21"
    assert PRESETS["default"].resolution == "T42"
    assert PRESETS["small"].spinup_days >= 200 and PRESETS["default"].spinup_days >= 200
    assert state_path("/a/planet.zarr").as_posix() == "/a/planet.zarr.synth-state.npz"


def test_timeline_and_times():
    config = SynthConfig(days=2, runs=3, spinup_days=3, gap_days=1)
    assert _timeline(config) == ["spinup"] * 3 + ["run0"] * 2 + [
        "gap1",
        "run1",
        "run1",
        "gap2",
        "run2",
        "run2",
    ]
    t = _times(config, 3)
    expected = np.datetime64("2000-01-04T00:00") + np.arange(4) * np.timedelta64(6, "h")
    np.testing.assert_array_equal(t, expected.astype("datetime64[ns]"))
    assert t[0] == EPOCH + np.timedelta64(3, "D")


def test_log_pressure_interp_against_numpy_interp(rng):
    L, P, n = 8, 5, 30
    sigma = (np.arange(L) + 0.5) / L
    log_sigma = np.log(sigma)
    f = rng.standard_normal((L, n))
    T = 250 + 10 * rng.standard_normal((L, n))
    x = rng.uniform(np.log(0.01), np.log(1.1), size=(P, n))  # beyond both ends sometimes
    got = log_pressure_interp(f, T, log_sigma, x)
    for j in range(n):  # brute force, column by column (np.interp holds the ends constant)
        np.testing.assert_allclose(got[:, j], np.interp(x[:, j], log_sigma, f[:, j]), rtol=1e-12)

    # geopotential: hydrostatic beyond the ends, Φ(p) = Φ_k − R T_k ln(p / p_k)
    R = 287.0
    phi = log_pressure_interp(f, T, log_sigma, x, R=R)
    for j in range(n):
        for k in range(P):
            xk = x[k, j]
            if xk > log_sigma[-1]:
                want = f[-1, j] - R * T[-1, j] * (xk - log_sigma[-1])
            elif xk < log_sigma[0]:
                want = f[0, j] - R * T[0, j] * (xk - log_sigma[0])
            else:
                want = np.interp(xk, log_sigma, f[:, j])
            assert phi[k, j] == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_spectral_fields_are_evaluated_on_the_regular_grid():
    """An exactly representable field, evaluated at the regular nodes, in canonical order."""

    config = TINY
    model = _model(
        config.resolution, config.layers, config.dt_minutes, config.output_hours, config.levels
    )
    lon, sin_lat = model.grid.nodal_mesh  # Gaussian grid, (lon, lat)
    lat = np.arcsin(sin_lat)

    def field(lon, lat):  # Y_1^0, Y_2^2 and Y_1^1 combined: asymmetric in lat and lon
        return np.sin(lat) + np.cos(lat) ** 2 * np.sin(2 * lon) + 0.5 * np.cos(lat) * np.cos(lon)

    modal = model.grid.to_modal(field(lon, lat).astype(np.float32))
    got = model.canonical(model.out_grid.to_nodal(modal))
    grid = config.grid
    assert got.shape == grid.shape == (32, 64)
    LAT, LON = np.meshgrid(np.deg2rad(grid.lat), np.deg2rad(grid.lon), indexing="ij")
    np.testing.assert_allclose(got, field(LON, LAT), atol=2e-5)


# --------------------------------------------------------------------------- the tiny planet
def test_store_is_canonical(tiny):
    ds = tiny
    assert set(ds.data_vars) == set(LEVEL_VARS + SURFACE_VARS)
    for name in LEVEL_VARS:
        assert ds[name].dims == ("time", "level", "latitude", "longitude")
    for name in SURFACE_VARS:
        assert ds[name].dims == ("time", "latitude", "longitude")
    for name, units in UNITS.items():
        assert ds[name].attrs["units"] == units
        assert ds[name].dtype == np.float32
    assert "lowest sigma level" in ds["2m_temperature"].attrs["long_name"]
    assert "no orography" in ds["mean_sea_level_pressure"].attrs["long_name"]

    grid = Grid.from_arrays(ds.latitude.values, ds.longitude.values)  # raises if not canonical
    assert grid == Grid.regular(32, 64, poles=False)
    assert ds.latitude.values[0] > 0 > ds.latitude.values[-1]
    assert ds.longitude.values[0] == 0 and ds.longitude.values[-1] < 360
    assert ds.level.dtype.kind == "i" and list(ds.level.values) == [100, 250, 500, 700, 850, 925]

    n = TINY.days * 4
    start = EPOCH + np.timedelta64(TINY.spinup_days, "D")
    expected = start + np.arange(n) * np.timedelta64(6, "h")
    np.testing.assert_array_equal(ds.time.values, expected.astype("datetime64[ns]"))
    np.testing.assert_array_equal(ds.run.values, np.zeros(n))

    config = json.loads(ds.attrs["synth_config"])
    assert SynthConfig(**config) == TINY
    assert ds.attrs["resolution"] == "T21" and ds.attrs["seed"] == 0
    assert "Held" in ds.attrs["forcing"] and "dinosaur" in ds.attrs["model"]
    assert "not in statistical equilibrium" in ds.attrs["spinup"]


def test_store_layout_on_disk(tmp_path):
    path = tmp_path / "one.zarr"
    assert generate_planet(path, short(), progress=True) == path
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    array = json.loads((path / "temperature" / "zarr.json").read_text())
    assert array["chunk_grid"]["configuration"]["chunk_shape"] == [1, 6, 32, 64]
    assert state_path(path).exists()


def test_tiny_planet_is_physically_sane(tiny):
    ds = tiny
    for name in ds.data_vars:
        assert np.isfinite(ds[name].values).all(), name
    w = xr.DataArray(area_weights(ds.latitude.values), dims="latitude")
    lat = ds.latitude.values

    # westerly jets of at least 10 m/s in both hemispheres' mid-latitudes, weaker at the equator
    u250 = ds.u_component_of_wind.sel(level=250).mean(("time", "longitude")).values
    north = u250[(lat > 20) & (lat < 60)].max()
    south = u250[(lat < -20) & (lat > -60)].max()
    equator = np.abs(u250[np.abs(lat) < 10]).max()
    assert north > 10 and south > 10
    assert equator < 0.5 * min(north, south)

    def mean(name):
        return ds[name].weighted(w).mean(("time", "latitude", "longitude"))

    T = mean("temperature").sel(level=[850, 500, 250]).values
    assert T[0] > T[1] > T[2]
    z = mean("geopotential").values  # levels ascending in pressure: geopotential decreasing
    assert np.all(np.diff(z) < 0)
    assert 5000 < mean("geopotential").sel(level=500).item() / 9.81 < 6000  # 500 hPa near 5.5 km
    assert float(mean("surface_pressure")) == pytest.approx(1e5, rel=0.01)
    np.testing.assert_array_equal(ds.mean_sea_level_pressure.values, ds.surface_pressure.values)
    assert float(mean("2m_temperature")) > float(mean("temperature").sel(level=850))
    # the forcing makes the tropics warmer than the poles at the lowest level
    t2m = ds["2m_temperature"].mean(("time", "longitude")).values
    assert t2m[np.abs(lat) < 10].mean() > t2m[np.abs(lat) > 70].mean() + 20
    # weather: the fields vary in longitude and time
    assert float(ds.surface_pressure.std("longitude").mean()) > 50  # Pa
    assert float(ds.temperature.sel(level=850).diff("time").std()) > 0.1


# --------------------------------------------------------------------------- determinism and resume
def test_same_seed_same_arrays_other_seed_other_arrays(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_planet(tmp_path / f"{name}.zarr", short(seed=seed), progress=False)
    a, b, c = (open_store(tmp_path / f"{n}.zarr") for n in "abc")
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.temperature.values, c.temperature.values)


def test_resume_equals_a_straight_run(tmp_path):
    straight, resumed = tmp_path / "straight.zarr", tmp_path / "resumed.zarr"
    generate_planet(straight, short(days=2), progress=False)
    generate_planet(resumed, short(days=1), progress=False)
    assert open_store(resumed).sizes["time"] == 4
    generate_planet(resumed, short(days=2), progress=False)  # asking for more days extends
    a, b = open_store(straight), open_store(resumed)
    assert np.all(np.diff(b.time.values) == np.timedelta64(6, "h"))
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    generate_planet(resumed, short(days=2), progress=False)  # nothing left to do
    generate_planet(resumed, short(days=1), progress=False)  # holds more than asked: untouched
    xr.testing.assert_identical(a.drop_attrs(), open_store(resumed).drop_attrs())


def test_interrupted_after_an_append_is_repaired(tmp_path):
    """A crash between the append and the state save: the extra times are dropped and redone."""

    straight, crashed = tmp_path / "straight.zarr", tmp_path / "crashed.zarr"
    generate_planet(straight, short(days=2), progress=False)
    generate_planet(crashed, short(days=1), progress=False)
    saved = state_path(crashed).read_bytes()
    generate_planet(crashed, short(days=2), progress=False)
    state_path(crashed).write_bytes(saved)  # the state of day 1, the store of day 2
    generate_planet(crashed, short(days=2), progress=False)
    xr.testing.assert_identical(open_store(straight).drop_attrs(), open_store(crashed).drop_attrs())


def test_interrupted_spinup_and_first_append_resume(tmp_path):
    """State files saved at the end of the spin-up, with no store or with an unsaved append."""

    from appa_engine.data.synth import _save_checkpoint

    config = short(spinup_days=2)
    straight = tmp_path / "straight.zarr"
    generate_planet(straight, config, progress=False)
    model = _model(config.resolution, config.layers, config.dt_minutes, 6, config.levels)
    state = model.initial_state(config.seed)
    for _ in range(2):
        state, _ = model.day(state)

    spinup = tmp_path / "spinup.zarr"  # interrupted after the spin-up: no store yet
    _save_checkpoint(state_path(spinup), model, state, config=config, day=2, n_times=0)
    generate_planet(spinup, config, progress=False)

    appended = tmp_path / "appended.zarr"  # the first day was appended, its state not saved
    generate_planet(appended, config, progress=False)
    _save_checkpoint(state_path(appended), model, state, config=config, day=2, n_times=0)
    generate_planet(appended, config, progress=False)

    for path in (spinup, appended):
        xr.testing.assert_identical(open_store(straight), open_store(path))


def test_runs_are_separated_by_a_gap_and_extend(tmp_path):
    path = tmp_path / "runs.zarr"
    generate_planet(path, short(runs=2), progress=False)
    ds = open_store(path)
    np.testing.assert_array_equal(ds.run.values, [0] * 4 + [1] * 4)
    steps = np.diff(ds.time.values)
    assert np.all(steps[:3] == np.timedelta64(6, "h")) and np.all(
        steps[4:] == np.timedelta64(6, "h")
    )
    assert steps[3] == np.timedelta64(30, "h")  # one gap day plus the 6 h step
    assert not np.allclose(ds.temperature.values[3], ds.temperature.values[4], atol=1.0)

    with pytest.raises(ConfigError, match="only the last run can be extended"):
        generate_planet(path, short(runs=2, days=2), progress=False)
    generate_planet(path, short(runs=3), progress=False)  # more runs extend
    ds3 = open_store(path)
    np.testing.assert_array_equal(ds3.run.values, [0] * 4 + [1] * 4 + [2] * 4)
    xr.testing.assert_identical(ds3.isel(time=slice(0, 8)).drop_attrs(), ds.drop_attrs())


def test_refuses_a_different_configuration_or_a_foreign_path(tmp_path):
    path = tmp_path / "p.zarr"
    generate_planet(path, short(), progress=False)
    with pytest.raises(ConfigError, match="different configuration: seed = 0 there, 3 asked"):
        generate_planet(path, short(seed=3), progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        generate_planet(path, short(levels=(250, 500)), progress=False)

    state_path(path).unlink()
    with pytest.raises(DataError, match="state file .* is missing"):
        generate_planet(path, short(), progress=False)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a zarr store"):
        generate_planet(foreign, short(), progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_stale_state_without_store_starts_over(tmp_path):
    path = tmp_path / "p.zarr"
    generate_planet(path, short(), progress=False)
    first = open_store(path)
    shutil.rmtree(path)  # the user deleted the store but not the state next to it
    generate_planet(path, short(), progress=False)
    xr.testing.assert_identical(first, open_store(path))


# --------------------------------------------------------------------------- command line
def test_cli_dry_run_and_run(tmp_path, capsys):
    from appa_engine.cli import main

    out = tmp_path / "cli.zarr"
    args = [
        "data",
        "synth",
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--days",
        "1",
        "--spinup-days",
        "1",
    ]
    assert main(args + ["--levels", "850,250,500", "--resolution", "T42", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["days"] == 1 and printed["spinup_days"] == 1 and printed["layers"] == TINY.layers
    assert printed["levels"] == [250, 500, 850] and printed["resolution"] == "T42"
    assert not out.exists()

    assert main(args + ["--seed", "2", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    ds = open_store(out)
    assert ds.sizes["time"] == 4 and json.loads(ds.attrs["synth_config"])["seed"] == 2
    # `appa data info` describes the synthetic store like any canonical source
    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "geopotential" in info and "2m_temperature" in info and "4 steps" in info

    assert main(args + ["--output-hours", "5"]) == 2
    assert "does not divide a day" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(out), "--days", "zero"])
