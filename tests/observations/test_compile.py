"""Compiling observations against a model: validation, y/Σ_y, table, footprint, simulate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from appa_engine.data.grid import Grid
from appa_engine.errors import ObservationError
from appa_engine.observations.compile import compile_observations
from appa_engine.observations.observers import (
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    SatelliteSwath,
    Stations,
    TrackSwath,
    WindSpeedStations,
    time_range,
)
from appa_engine.observations.orbits import CircularOrbit

CHANNELS = (
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
    "temperature_850",
)
C = len(CHANNELS)
MEAN = np.array([280.0, 0.5, -0.3, 270.0])
STD = np.array([10.0, 4.0, 5.0, 8.0])
TIMES = time_range("2021-01-01T00", "2021-01-01T03", "1h")
GRID = Grid.regular(18, 36)


def compile_(observers, **kw):
    args = dict(grid=GRID, channels=CHANNELS, times=TIMES, mean=MEAN, std=STD)
    args.update(kw)
    return ObservationSet(observers).compile(**args)


def synop(**kw):
    args = dict(
        name="synop",
        lon=[4.35, 200.0],
        lat=[50.85, -12.0],
        times=["2021-01-01T00", "2021-01-01T02"],
        variables=["2m_temperature", "temperature_850"],
        errors={"2m_temperature": 0.5, "temperature_850": 2.0},
    )
    args.update(kw)
    return Stations(**args)


def test_y_and_cov_are_standardised_per_channel():
    values = np.array(
        [[[281.0, 262.0], [290.0, 270.0]], [[279.0, 266.0], [300.0, 254.0]]]
    )  # (T, S, V)
    compiled = compile_([synop(values=values)])
    flat = values.reshape(-1)
    c = np.tile([0, 3], 4)
    np.testing.assert_allclose(compiled.y.numpy(), (flat - MEAN[c]) / STD[c])
    np.testing.assert_allclose(compiled.cov_y.numpy(), (np.tile([0.5, 2.0], 4) / STD[c]) ** 2)
    np.testing.assert_allclose(compiled.to_physical(compiled.y.numpy()), flat)
    np.testing.assert_allclose(compiled.to_physical(compiled.y).numpy(), flat)
    np.testing.assert_allclose(compiled.to_standardised(flat), compiled.y.numpy())
    assert compiled.y.dtype == torch.float64 and compiled.cov_y.shape == (8,)


def test_without_values_y_is_nan():
    compiled = compile_([synop()])
    assert torch.isnan(compiled.y).all() and torch.isfinite(compiled.cov_y).all()


def test_table_has_one_row_per_observation():
    compiled = compile_(
        [
            synop(names=["Brussels", "Pacific"]),
            WindSpeedStations(
                name="w", lon=[10.0], lat=[0.0], times=["2021-01-01T01:30"], errors=1.5
            ),
        ]
    )
    table = compiled.table
    assert list(table.columns) == [
        "observer",
        "kind",
        "variable",
        "level",
        "channel",
        "lon",
        "lat",
        "time",
        "time_index",
        "time_weight",
        "value",
        "error",
    ]
    assert len(table) == len(compiled) == 9
    first = table.iloc[1]
    assert (first.observer, first.kind, first.variable, first.level, first.channel) == (
        "synop",
        "stations",
        "temperature",
        850.0,
        "temperature_850",
    )
    assert (first.lon, first.lat, first.time, first.error) == (
        4.35,
        50.85,
        np.datetime64("2021-01-01T00", "ns"),
        2.0,
    )
    assert np.isnan(table.iloc[0].level)
    wind = table.iloc[-1]
    assert (wind.channel, wind.time_index, wind.time_weight, wind.error) == (
        "10m_wind_speed",
        1,
        0.5,
        1.5,
    )
    assert table.observer.tolist() == ["synop"] * 8 + ["w"]


def test_channel_the_model_does_not_have_lists_the_available_ones():
    with pytest.raises(
        ObservationError, match="'geopotential_500', which the model does not have"
    ) as info:
        compile_([synop(variables=["geopotential"], levels=[500], errors=1.0)])
    assert "2m_temperature, 10m_u_component_of_wind" in info.value.hint
    with pytest.raises(ObservationError, match="u_component_of_wind_850"):
        compile_(
            [
                WindSpeedStations(
                    name="w", lon=[0], lat=[0], times=["2021-01-01T00"], levels=[850], errors=1.0
                )
            ]
        )


def test_times_outside_the_window_name_the_observer_and_window():
    with pytest.raises(
        ObservationError,
        match=(r"stations 'synop' has 1 observation times outside the model window "
               r"2021-01-01T00:00 – 2021-01-01T03:00 \(first: 2021-01-01T05:00\)"),
    ):
        compile_([synop(times=["2021-01-01T00", "2021-01-01T05"])])
    sat = SatelliteSwath(
        name="polar",
        orbit=CircularOrbit(800, 75),
        fov_radius_deg=5,
        samples_per_hour=4,
        start="2021-01-01T02",
        end="2021-01-01T06",
        variables=["2m_temperature"],
        errors=1.0,
    )
    with pytest.raises(
        ObservationError,
        match="satellite_swath 'polar' samples from 2021-01-01T02:00 to 2021-01-01T06:00",
    ):
        compile_([sat])
    with pytest.raises(ObservationError, match="tolerance"):
        compile_([sat], times=TIMES[2:3])


def test_nan_values_raise_or_are_dropped():
    values = np.array([[[281.0, np.nan], [290.0, 270.0]], [[np.nan, 266.0], [300.0, 254.0]]])
    with pytest.raises(
        ObservationError, match="stations 'synop' has 2 missing \\(NaN\\) values"
    ) as info:
        compile_([synop(values=values)])
    assert "drop_missing=True" in info.value.hint
    compiled = compile_([synop(values=values)], drop_missing=True)
    full = compile_([synop(values=np.nan_to_num(values))])
    keep = ~np.isnan(values.reshape(-1))
    assert len(compiled) == 6
    x = torch.randn(2, TIMES.size, C, *GRID.shape, dtype=torch.float64)
    torch.testing.assert_close(compiled.A(x), full.A(x)[:, torch.as_tensor(keep)])
    np.testing.assert_allclose(compiled.to_physical(compiled.y.numpy()), values.reshape(-1)[keep])
    back = compiled.with_values(compiled.values)
    np.testing.assert_array_equal(back["synop"].values, values)  # dropped rows come back as NaN


def test_values_of_the_wrong_size_for_the_grid():
    track = TrackSwath(
        name="t",
        lon=[0],
        lat=[0],
        width_deg=30,
        times=["2021-01-01T00"],
        variables=["2m_temperature"],
        errors=1.0,
        values=np.ones(3),
    )
    with pytest.raises(ObservationError, match="track_swath 't' has 3 values for"):
        compile_([track])
    fs = FullStateObserver(
        name="an", times=["2021-01-01T00"], errors=1.0, values=np.ones((1, C, 5, 5))
    )
    with pytest.raises(ObservationError, match=r"expected \(1, 4, 18, 36\)"):
        compile_([fs])


def test_model_inputs_are_validated():
    with pytest.raises(ObservationError, match="mean has 3 entries for 4 channels"):
        compile_([synop()], mean=MEAN[:3])
    with pytest.raises(ObservationError, match="std must be positive"):
        compile_([synop()], std=np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ObservationError, match="strictly increasing"):
        compile_([synop()], times=TIMES[::-1])
    with pytest.raises(ObservationError, match="expected a Grid"):
        compile_([synop()], grid=(18, 36))
    with pytest.raises(ObservationError, match="latent shape is unknown") as info:
        compile_([LatentObserver(name="z", times=["2021-01-01T00"], errors=0.1)])
    assert "latent_shape" in info.value.hint


def test_bad_trajectories_are_refused_with_a_message():
    compiled = compile_(
        [synop(), LatentObserver(name="z", times=["2021-01-01T01"], errors=0.1)],
        latent_shape=(2, 3, 4),
    )
    x = torch.randn(1, TIMES.size, C, *GRID.shape)
    z = torch.randn(1, TIMES.size, 2, 3, 4)
    with pytest.raises(ObservationError, match="need the latent trajectory"):
        compiled.A(x)
    with pytest.raises(ObservationError, match=r"x must have shape \(B, T, 4, 18, 36\)"):
        compiled.A(x[:, :, :3], z=z)
    with pytest.raises(
        ObservationError, match="has 3 states, but the observations were compiled for 4"
    ):
        compiled.A(x[:, :3], z=z)


def test_operator_on_the_channels_it_reads_equals_the_full_one():
    """A(x restricted to some channels, channels=...) is A(x): every kind of physical observer,
    on the whole window and on the observed states only."""

    observers = [
        synop(),  # 2m_temperature, temperature_850
        WindSpeedStations(
            name="w", lon=[10.0, 20.0], lat=[0.0, 5.0], times=["2021-01-01T01"], errors=1.0
        ),  # both 10 m wind components
        TrackSwath(name="tr", lon=[0.0, 40.0], lat=[0.0, 20.0], width_deg=10,
                   times=["2021-01-01T02:30"], variables=["temperature_850"], errors=1.0),
        FullStateObserver(name="fs", times=["2021-01-01T03"], variables=["temperature_850"],
                          errors=1.0),
        LatentObserver(name="la", times=["2021-01-01T01"], errors=0.1),
    ]
    compiled = compile_(observers, latent_shape=(2, 3, 4))
    np.testing.assert_array_equal(compiled.physical_channels, [0, 1, 2, 3])
    only_temperature = compile_([observers[0], observers[3]])
    np.testing.assert_array_equal(only_temperature.physical_channels, [0, 3])
    assert compile_([observers[4]], latent_shape=(2, 3, 4)).physical_channels.size == 0

    x = torch.randn(3, TIMES.size, C, *GRID.shape, dtype=torch.float64)
    z = torch.randn(3, TIMES.size, 2, 3, 4, dtype=torch.float64)
    for order in ([3, 2, 0, 1], [0, 1, 2, 3]):
        torch.testing.assert_close(compiled.A(x[:, :, order], z=z, channels=order),
                                   compiled.A(x, z=z), rtol=0, atol=1e-12)
    sub = x[:, only_temperature.state_indices]
    for order in ([3, 0], [0, 2, 3]):
        torch.testing.assert_close(only_temperature.A(sub[:, :, order], channels=order),
                                   only_temperature.A(x), rtol=0, atol=1e-12)
    lacks = r"read channels \['temperature_850'\], which x lacks"
    with pytest.raises(ObservationError, match=lacks):
        only_temperature.A(x[:, :, [0]], channels=[0])
    with pytest.raises(ObservationError, match="distinct indices of the 4 model channels"):
        only_temperature.A(x[:, :, [0, 3]], channels=[0, 4])
    with pytest.raises(ObservationError, match=r"x must have shape \(B, T, 2, 18, 36\)"):
        only_temperature.A(x, channels=[0, 3])


def test_empty_set_compiles_to_no_observation():
    compiled = compile_([])
    x = torch.randn(2, TIMES.size, C, *GRID.shape)
    assert len(compiled) == 0 and compiled.A(x).shape == (2, 0) and compiled.state_indices.size == 0
    assert len(compiled.table) == 0


def test_simulate_draws_noise_with_the_right_std_and_is_seeded():
    rng = np.random.default_rng(3)
    S = 400
    stations = Stations(
        name="dense",
        lon=rng.uniform(0, 360, S),
        lat=rng.uniform(-80, 80, S),
        times=list(TIMES),
        variables=["2m_temperature", "temperature_850"],
        errors={"2m_temperature": 0.5, "temperature_850": 3.0},
    )
    compiled = compile_([stations])
    truth = torch.randn(TIMES.size, C, *GRID.shape, dtype=torch.float64)
    clean = compiled.simulate(truth, noise=False)
    np.testing.assert_allclose(clean, compiled.to_physical(compiled.A(truth[None])[0].numpy()))
    a = compiled.simulate(truth, generator=torch.Generator().manual_seed(7))
    b = compiled.simulate(truth, generator=7)
    c = compiled.simulate(truth, generator=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    residual = (a - clean).reshape(TIMES.size, S, 2)
    n = (
        TIMES.size * S
    )  # 1600 draws per channel: the sample std is within ~5 % (≈ 3 standard errors)
    for v, sigma in enumerate([0.5, 3.0]):
        assert abs(residual[..., v].std() / sigma - 1) < 3 / np.sqrt(2 * n)
        assert abs(residual[..., v].mean()) < 3 * sigma / np.sqrt(n)
    # In standardised units the residuals have variance cov_y.
    z = (compiled.to_standardised(a) - compiled.to_standardised(clean)) / np.sqrt(
        compiled.cov_y.numpy()
    )
    assert abs(z.std() - 1) < 0.05


def test_with_values_round_trips_every_kind():
    observers = [
        synop(),
        WindSpeedStations(
            name="w", lon=[10.0, 20.0], lat=[0.0, 5.0], times=["2021-01-01T01"], errors=1.0
        ),
        SatelliteSwath(
            name="sat",
            orbit=CircularOrbit(800, 75),
            fov_radius_deg=10,
            samples_per_hour=6,
            start="2021-01-01T00",
            end="2021-01-01T02",
            variables=["temperature_850"],
            errors=0.5,
        ),
        TrackSwath(
            name="tr",
            lon=[0.0, 40.0],
            lat=[0.0, 20.0],
            width_deg=10,
            times=["2021-01-01T02:30"],
            variables=["2m_temperature"],
            errors=1.0,
        ),
        FullStateObserver(
            name="fs", times=["2021-01-01T03"], variables=["2m_temperature"], errors=1.0
        ),
        LatentObserver(name="la", times=["2021-01-01T01"], errors=0.1),
    ]
    compiled = compile_(observers, latent_shape=(2, 3, 4))
    truth = torch.randn(TIMES.size, C, *GRID.shape, dtype=torch.float64)
    truth_z = torch.randn(TIMES.size, 2, 3, 4, dtype=torch.float64)
    values = compiled.simulate(truth, truth_z=truth_z, generator=0)
    with_values = compiled.with_values(values)
    assert with_values["synop"].values.shape == (2, 2, 2)
    assert with_values["fs"].values.shape == (1, 1, 18, 36)
    assert with_values["la"].values.shape == (1, 2, 3, 4)
    again = with_values.compile(grid=GRID, channels=CHANNELS, times=TIMES, mean=MEAN, std=STD)
    np.testing.assert_allclose(again.to_physical(again.y.numpy()), values)
    torch.testing.assert_close(again.cov_y, compiled.cov_y)


def test_footprint_marks_the_touched_cells_times_and_levels():
    station = Stations(
        name="one",
        lon=[GRID.lon[3]],
        lat=[GRID.lat[4]],
        times=["2021-01-01T01:30"],
        variables=["temperature_850"],
        errors=1.0,
    )
    interp = Stations(
        name="interp",
        lon=[GRID.lon[3] + 5],
        lat=[GRID.lat[4] - 5],
        times=["2021-01-01T00"],
        variables=["2m_temperature"],
        errors=1.0,
    )
    latent = LatentObserver(name="la", times=["2021-01-01T03"], errors=0.1)
    fp = compile_([station, interp, latent], latent_shape=(1, 2, 2)).footprint()
    assert fp["one"].dims == ("time", "latitude", "longitude") and fp["one"].dtype == bool
    touched = np.argwhere(fp["one"].values)
    assert touched.tolist() == [[1, 4, 3], [2, 4, 3]]
    assert fp["one"].attrs["levels"] == [850.0] and fp["one"].attrs["channels"] == [
        "temperature_850"
    ]
    assert np.argwhere(fp["interp"].values).tolist() == [[0, 4, 3], [0, 4, 4], [0, 5, 3], [0, 5, 4]]
    assert fp["interp"].attrs["levels"] == []
    assert (
        fp["la"].attrs["on_latent"] == 1
        and fp["la"].values[3].all()
        and not fp["la"].values[:3].any()
    )
    np.testing.assert_array_equal(fp.latitude.values, GRID.lat)


def test_estimated_bytes_grows_with_batch_and_observations():
    small = compile_([synop()])
    big = compile_([synop(lon=np.linspace(0, 350, 200), lat=np.zeros(200))])
    assert 0 < small.estimated_bytes(1) < small.estimated_bytes(64) < big.estimated_bytes(64)
    assert big.estimated_bytes(64, itemsize=8) > big.estimated_bytes(64, itemsize=4)


def test_compile_observations_accepts_a_list():
    compiled = compile_observations(
        [synop()], grid=GRID, channels=CHANNELS, times=TIMES, mean=MEAN, std=STD
    )
    assert len(compiled) == 8 and list(compiled.slices) == ["synop"]
