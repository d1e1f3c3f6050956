"""Observation operators against hand-computed values, and JVP/VJP consistency for every kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jvp, vjp

from appa_engine.data.grid import Grid
from appa_engine.observations.observers import (
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    Profiles,
    SatelliteSwath,
    Stations,
    TrackSwath,
    WindSpeedStations,
    time_range,
)
from appa_engine.observations.operators import bilinear_stencil, densify_polyline, time_stencil
from appa_engine.observations.orbits import CircularOrbit

CHANNELS = (
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
    "temperature_850",
    "u_component_of_wind_850",
    "v_component_of_wind_850",
)
C = len(CHANNELS)
TIMES = time_range("2021-01-01T00", "2021-01-01T05", "1h")
T = TIMES.size


def compile_(observers, grid, *, mean=None, std=None, **kw):
    mean = np.zeros(C) if mean is None else mean
    std = np.ones(C) if std is None else std
    return ObservationSet(observers).compile(
        grid=grid, channels=CHANNELS, times=TIMES, mean=mean, std=std, **kw
    )


def station(lon, lat, *, times=("2021-01-01T00",), variables=("2m_temperature",), **kw):
    return Stations(
        name=kw.pop("name", "s"),
        lon=lon,
        lat=lat,
        times=list(times),
        variables=list(variables),
        errors=1.0,
        **kw,
    )


def haversine_deg(lon1, lat1, lon2, lat2):
    lon1, lat1, lon2, lat2 = map(np.deg2rad, (lon1, lat1, lon2, lat2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


# Space ---------------------------------------------------------------------------------------


def test_bilinear_reproduces_linear_fields_exactly(rng):
    grid = Grid.regular(18, 36)  # 10°, cell-centred: lat 85 .. -85, lon 0 .. 350
    a, b, c = 2.0, 0.03, -0.05
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    field = a + b * lon + c * lat
    x = torch.zeros(1, T, C, *grid.shape, dtype=torch.float64)
    x[0, 0, 0] = torch.as_tensor(field)
    s_lon = rng.uniform(0, 350, 200)  # not across the dateline, where the field itself jumps
    s_lat = rng.uniform(-85, 85, 200)  # between the outermost rows
    y = compile_([station(s_lon, s_lat)], grid).A(x)[0].numpy()
    np.testing.assert_allclose(y, a + b * s_lon + c * s_lat, rtol=0, atol=1e-12)


def test_station_on_a_node_returns_the_node():
    grid = Grid.regular(721 // 10 + 1, 144, poles=True)  # 2.5° with poles
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    i, j = 7, 101
    lon, lat = grid.lon[j], grid.lat[i]
    point, cell, w = bilinear_stencil(grid, np.array([lon]), np.array([lat]))
    assert (
        point.tolist() == [0] and cell.tolist() == [i * grid.shape[1] + j] and w.tolist() == [1.0]
    )
    y = compile_([station([lon], [lat])], grid).A(x)[0]
    assert y.item() == x[0, 0, 0, i, j].item()


def test_longitude_is_periodic():
    grid = Grid.regular(180, 360)  # 1°
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    i = int(np.flatnonzero(grid.lat == 0.5)[0])
    obs = station([359.5, -0.5, 359.75], [0.5, 0.5, 0.5])
    y = compile_([obs], grid).A(x)[0]
    row = x[0, 0, 0, i]
    expected = torch.stack(
        [(row[359] + row[0]) / 2, (row[359] + row[0]) / 2, 0.25 * row[359] + 0.75 * row[0]]
    )
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_pole_rule_on_a_grid_without_pole_rows():
    grid = Grid.regular(18, 36)  # outermost rows at ±85°
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    north, south = x[0, 0, 0, 0], x[0, 0, 0, -1]
    obs = station([15.0, 123.0, 250.0, 15.0, 0.0], [87.5, 90.0, 90.0, -89.0, 85.0])
    y = compile_([obs], grid).A(x)[0]
    rho = 2.5 / 5
    expected = [
        (1 - rho) * (north[1] + north[2]) / 2 + rho * north.mean(),  # halfway to the pole
        north.mean(),  # the pole: zonal mean, whatever the longitude
        north.mean(),
        (1 - 4 / 5) * (south[1] + south[2]) / 2 + (4 / 5) * south.mean(),
        north[0],  # on the outermost row: plain interpolation (continuity)
    ]
    torch.testing.assert_close(y, torch.stack(expected), rtol=0, atol=1e-12)


def test_grid_with_pole_rows_interpolates_to_the_pole_row():
    grid = Grid.regular(19, 36, poles=True)  # 10°: rows at 90 .. -90
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    obs = station([10.0, 5.0], [90.0, 85.0])
    y = compile_([obs], grid).A(x)[0]
    torch.testing.assert_close(y[0], x[0, 0, 0, 0, 1])
    expected = (
        0.5 * (x[0, 0, 0, 0, 0] + x[0, 0, 0, 0, 1]) / 2
        + 0.5 * (x[0, 0, 0, 1, 0] + x[0, 0, 0, 1, 1]) / 2
    )
    torch.testing.assert_close(y[1], expected)


def test_bilinear_weights_sum_to_one_everywhere(rng):
    for grid in (Grid.regular(18, 36), Grid.regular(19, 36, poles=True)):
        lon, lat = rng.uniform(-180, 540, 500), rng.uniform(-90, 90, 500)
        lat[:4] = [90, -90, 89.999, -89.999]
        point, cell, w = bilinear_stencil(grid, lon, lat)
        np.testing.assert_allclose(np.bincount(point, weights=w, minlength=500), 1.0, atol=1e-12)
        assert np.all(w > 0) and np.all((cell >= 0) & (cell < grid.shape[0] * grid.shape[1]))


# Time ----------------------------------------------------------------------------------------


def test_time_interpolation_between_states_and_exact_on_states():
    obs_times = np.array(
        ["2021-01-01T01:30", "2021-01-01T03", "2021-01-01T05", "2021-01-01T00:15"], "datetime64[ns]"
    )
    o, k, w = time_stencil(TIMES, obs_times)
    assert list(zip(o.tolist(), k.tolist(), w.tolist())) == [
        (0, 1, 0.5),
        (0, 2, 0.5),
        (1, 3, 1.0),
        (2, 5, 1.0),
        (3, 0, 0.75),
        (3, 1, 0.25),
    ]
    grid = Grid.regular(18, 36)
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    lon, lat = grid.lon[3], grid.lat[4]
    compiled = compile_([station([lon], [lat], times=obs_times)], grid)
    y = compiled.A(x)[0]
    node = x[0, :, 0, 4, 3]
    torch.testing.assert_close(
        y, torch.stack([(node[1] + node[2]) / 2, node[3], node[5], 0.75 * node[0] + 0.25 * node[1]])
    )
    assert compiled.state_indices.tolist() == [0, 1, 2, 3, 5]


def test_only_the_observed_states_can_be_passed():
    grid = Grid.regular(18, 36)
    x = torch.randn(2, T, C, *grid.shape, dtype=torch.float64)
    compiled = compile_(
        [station([12.0, 200.0], [3.0, -40.0], times=["2021-01-01T01:30", "2021-01-01T04"])], grid
    )
    assert compiled.state_indices.tolist() == [1, 2, 4]
    torch.testing.assert_close(compiled.A(x[:, compiled.state_indices]), compiled.A(x))


# Kinds ---------------------------------------------------------------------------------------


def test_profiles_are_stations_at_each_level():
    grid = Grid.regular(18, 36)
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    prof = Profiles(
        name="p",
        lon=[33.0],
        lat=[-12.0],
        times=["2021-01-01T02"],
        variables=["u_component_of_wind", "temperature"],
        levels=[850],
        errors=1.0,
    )
    y = compile_([prof], grid).A(x)[0]
    expect_u = compile_(
        [station([33.0], [-12.0], times=["2021-01-01T02"], variables=["u_component_of_wind_850"])],
        grid,
    ).A(x)[0]
    expect_t = compile_(
        [station([33.0], [-12.0], times=["2021-01-01T02"], variables=["temperature_850"])], grid
    ).A(x)[0]
    torch.testing.assert_close(y, torch.cat([expect_u, expect_t]))


def test_wind_speed_hand_computed_in_physical_units():
    grid = Grid.regular(18, 36)
    mean, std = np.array([0, 1.0, -2.0, 0, 0.5, 0.0]), np.array([1, 2.0, 4.0, 1, 3.0, 5.0])
    x = torch.zeros(1, T, C, *grid.shape, dtype=torch.float64)
    x[0, :, 1] = 1.0  # u10 = 1 * 2 + 1 = 3 m/s
    x[0, :, 2] = 1.5  # v10 = 1.5 * 4 - 2 = 4 m/s
    x[0, :, 4] = -0.5  # u850 = -1.5 * ... = -1.0 m/s
    x[0, :, 5] = 0.0  # v850 = 0 m/s
    w10 = WindSpeedStations(name="w10", lon=[17.0], lat=[22.0], times=["2021-01-01T03"], errors=1.0)
    w850 = WindSpeedStations(
        name="w850", lon=[17.0], lat=[22.0], times=["2021-01-01T03"], levels=[850], errors=2.0
    )
    compiled = compile_([w10, w850], grid, mean=mean, std=std)
    y = compiled.A(x)[0]
    s10, s850 = (2.0 + 4.0) / 2, (3.0 + 5.0) / 2  # reference scales (s_u + s_v) / 2
    torch.testing.assert_close(
        y, torch.tensor([5.0 / s10, 1.0 / s850], dtype=torch.float64), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(compiled.to_physical(y.numpy()), [5.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(compiled.cov_y.numpy(), [(1.0 / s10) ** 2, (2.0 / s850) ** 2])


def test_wind_speed_is_differentiable_at_calm():
    grid = Grid.regular(18, 36)
    x = torch.zeros(1, T, C, *grid.shape, dtype=torch.float64, requires_grad=True)
    compiled = compile_(
        [WindSpeedStations(name="w", lon=[0.0], lat=[5.0], times=["2021-01-01T00"], errors=1.0)],
        grid,
    )
    y = compiled.A(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all() and y.item() < 1e-5


def test_satellite_swath_binning_and_cells_match_brute_force():
    grid = Grid.regular(36, 72)  # 5°
    orbit = CircularOrbit(800, 75, raan_deg=30)
    sat = SatelliteSwath(
        name="polar",
        orbit=orbit,
        fov_radius_deg=8,
        samples_per_hour=12,
        start="2021-01-01T00:00",
        end="2021-01-01T02:40",
        variables=["temperature"],
        levels=[850],
        errors=0.5,
    )
    compiled = compile_([sat], grid)
    table = compiled.table
    samples = sat.times
    lon_s, lat_s = orbit.ground_track(samples)
    # Half-hour bins around each state: [t_k - 30 min, t_k + 30 min).
    offset = (samples - TIMES[0]) / np.timedelta64(1, "h")
    bins = np.floor(offset + 0.5).astype(int)
    assert sorted(set(bins)) == [0, 1, 2, 3]
    lat_c, lon_c = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    for k in range(4):
        d = haversine_deg(
            lon_c[..., None], lat_c[..., None], lon_s[bins == k], lat_s[bins == k]
        ).min(-1)
        expected = set(zip(lat_c[d <= 8].tolist(), lon_c[d <= 8].tolist()))
        rows = table[table.time_index == k]
        got = list(zip(rows.lat.tolist(), rows.lon.tolist()))
        assert len(got) == len(set(got)), "duplicate (state, cell, channel) observations"
        assert set(got) == expected
        assert (rows.time == TIMES[k]).all() and (rows.time_weight == 0).all()
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    y = compiled.A(x)[0].numpy()
    i = np.rint((grid.lat[0] - np.array(table.lat)) / grid.dlat).astype(int)
    j = np.rint(np.array(table.lon) / grid.dlon).astype(int)
    np.testing.assert_array_equal(y, x[0, np.array(table.time_index), 3, i, j].numpy())
    assert compiled.state_indices.tolist() == [0, 1, 2, 3]


def test_satellite_tolerance_drops_far_samples():
    grid = Grid.regular(36, 72)
    base = dict(
        name="polar",
        orbit=CircularOrbit(800, 75),
        fov_radius_deg=5,
        samples_per_hour=60,
        start="2021-01-01T00:00",
        end="2021-01-01T01:00",
        variables=["2m_temperature"],
        errors=1.0,
    )
    tight = compile_([SatelliteSwath(**base, tolerance="5min")], grid)
    loose = compile_([SatelliteSwath(**base)], grid)
    assert tight.state_indices.tolist() == [0, 1] and loose.state_indices.tolist() == [0, 1]
    assert len(tight) < len(loose)


def test_track_swath_cells_match_brute_force():
    grid = Grid.regular(36, 72)
    track = TrackSwath(
        name="t",
        lon=[350.0, 20.0, 40.0],
        lat=[10.0, 30.0, 30.0],
        width_deg=12,
        times=["2021-01-01T02:30"],
        variables=["2m_temperature"],
        errors=1.0,
    )
    compiled = compile_([track], grid)
    lon_d, lat_d = densify_polyline(track.lon, track.lat, 0.05)
    lat_c, lon_c = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    d = haversine_deg(lon_c[..., None], lat_c[..., None], lon_d, lat_d).min(-1)
    table = compiled.table
    assert set(zip(table.lat, table.lon)) == set(
        zip(lat_c[d <= 6].tolist(), lon_c[d <= 6].tolist())
    )
    assert (table.time_index == 2).all() and (table.time_weight == 0.5).all()
    x = torch.randn(1, T, C, *grid.shape, dtype=torch.float64)
    i = np.rint((grid.lat[0] - np.array(table.lat)) / grid.dlat).astype(int)
    j = np.rint(np.array(table.lon) / grid.dlon).astype(int)
    expected = 0.5 * (x[0, 2, 0, i, j] + x[0, 3, 0, i, j])
    torch.testing.assert_close(compiled.A(x)[0], expected)


def test_densify_polyline_follows_great_circles():
    lon, lat = densify_polyline(np.array([0.0, 90.0]), np.array([0.0, 0.0]), 1.0)
    assert (
        lon.size == 91
        and np.allclose(lat, 0, atol=1e-12)
        and np.allclose(lon, np.arange(91), atol=1e-9)
    )
    lon, lat = densify_polyline(np.array([350.0, 10.0]), np.array([0.0, 0.0]), 5.0)
    assert np.allclose(
        np.sort(np.mod(lon + 180, 360) - 180), [-10, -5, 0, 5, 10], atol=1e-9
    )  # across the dateline


def test_full_state_and_latent_are_identities():
    grid = Grid.regular(18, 36)
    x = torch.randn(2, T, C, *grid.shape, dtype=torch.float64)
    z = torch.randn(2, T, 4, 3, 5, dtype=torch.float64)
    full = FullStateObserver(
        name="an",
        times=["2021-01-01T00", "2021-01-01T01:30"],
        variables=["temperature"],
        levels=[850],
        errors=1.0,
    )
    every = FullStateObserver(name="all", times=["2021-01-01T05"], errors=1.0)
    latent = LatentObserver(name="z", times=["2021-01-01T02"], errors=0.1)
    compiled = compile_([full, every, latent], grid, latent_shape=(4, 3, 5))
    y = compiled.A(x, z=z)
    n1, n2 = 2 * grid.shape[0] * grid.shape[1], C * grid.shape[0] * grid.shape[1]
    expect_full = torch.stack([x[:, 0, 3], (x[:, 1, 3] + x[:, 2, 3]) / 2], 1).reshape(2, -1)
    torch.testing.assert_close(y[:, :n1], expect_full)
    torch.testing.assert_close(y[:, n1 : n1 + n2], x[:, 5].reshape(2, -1))
    torch.testing.assert_close(y[:, n1 + n2 :], z[:, 2].reshape(2, -1))
    assert compiled.has_latent and compiled.latent_state_indices.tolist() == [2]
    assert compiled.state_indices.tolist() == [0, 1, 2, 5]
    torch.testing.assert_close(compiled.A(x[:, [0, 1, 2, 5]], z=z[:, [2]]), y)


# Adjoints ------------------------------------------------------------------------------------


def all_kinds():
    return [
        Stations(
            name="st",
            lon=[3.3, 359.7, 100.0],
            lat=[45.2, 88.0, -89.5],
            times=["2021-01-01T00:20", "2021-01-01T04"],
            variables=["2m_temperature", "temperature_850"],
            errors=1.0,
        ),
        Profiles(
            name="pr",
            lon=[200.0],
            lat=[-10.0],
            times=["2021-01-01T02:45"],
            variables=["temperature", "u_component_of_wind"],
            levels=[850],
            errors=1.0,
        ),
        WindSpeedStations(
            name="ws10",
            lon=[12.0, 250.0],
            lat=[40.0, -70.0],
            times=["2021-01-01T01:10"],
            errors=1.0,
        ),
        WindSpeedStations(
            name="ws850", lon=[99.0], lat=[10.0], times=["2021-01-01T03"], levels=[850], errors=1.0
        ),
        SatelliteSwath(
            name="sat",
            orbit=CircularOrbit(800, 75),
            fov_radius_deg=10,
            samples_per_hour=6,
            start="2021-01-01T00",
            end="2021-01-01T02",
            variables=["temperature"],
            levels=[850],
            errors=1.0,
        ),
        TrackSwath(
            name="tr",
            lon=[0.0, 30.0],
            lat=[0.0, 10.0],
            width_deg=15,
            times=["2021-01-01T04:30"],
            variables=["2m_temperature"],
            errors=1.0,
        ),
        FullStateObserver(
            name="fs", times=["2021-01-01T01:30"], variables=["10m_u_component_of_wind"], errors=1.0
        ),
        LatentObserver(name="la", times=["2021-01-01T00:40"], errors=0.1),
    ]


@pytest.mark.parametrize("index", range(8))
def test_jvp_vjp_adjoint_consistency(index):
    torch.manual_seed(index)
    grid = Grid.regular(18, 36)
    observer = all_kinds()[index]
    mean, std = np.linspace(-1, 1, C), np.linspace(0.5, 2, C)
    compiled = compile_([observer], grid, mean=mean, std=std, latent_shape=(2, 3, 4))
    B = 2
    if observer.on_latent:
        z = torch.randn(B, T, 2, 3, 4, dtype=torch.float64)

        def f(z):
            return compiled.A(None, z=z)

        point = z
    else:
        f = compiled.A
        point = torch.randn(B, T, C, *grid.shape, dtype=torch.float64)
    v = torch.randn_like(point)
    y, Jv = jvp(f, (point,), (v,))
    w = torch.randn_like(y)
    _, pullback = vjp(f, point)
    (JTw,) = pullback(w)
    assert y.shape == (B, len(compiled)) and len(compiled) > 0
    lhs, rhs = (Jv * w).sum(), (v * JTw).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    # And the JVP is the derivative (finite differences, central).
    eps = 1e-6
    fd = (f(point + eps * v) - f(point - eps * v)) / (2 * eps)
    torch.testing.assert_close(Jv, fd, rtol=1e-5, atol=1e-6)


def test_composition_order_and_covariance():
    grid = Grid.regular(18, 36)
    mean, std = np.linspace(-1, 1, C), np.linspace(0.5, 2, C)
    kinds = all_kinds()
    compiled = compile_(kinds, grid, mean=mean, std=std, latent_shape=(2, 3, 4))
    x = torch.randn(2, T, C, *grid.shape, dtype=torch.float64)
    z = torch.randn(2, T, 2, 3, 4, dtype=torch.float64)
    parts, covs = [], []
    for obs in kinds:
        single = compile_([obs], grid, mean=mean, std=std, latent_shape=(2, 3, 4))
        parts.append(single.A(None if obs.on_latent else x, z=z if obs.on_latent else None))
        covs.append(single.cov_y)
        assert compiled.slices[obs.name].stop - compiled.slices[obs.name].start == len(single)
    torch.testing.assert_close(compiled.A(x, z=z), torch.cat(parts, 1))
    torch.testing.assert_close(compiled.cov_y, torch.cat(covs))
    assert (
        compiled.observer_index.tolist()
        == np.repeat(np.arange(len(kinds)), [len(c) for c in covs]).tolist()
    )
    # Linear rows: (error / std_c)²; the station observer sees 2m_temperature and temperature_850.
    st = compiled.cov_y[compiled.slices["st"]].numpy()
    np.testing.assert_allclose(st, np.tile([(1 / std[0]) ** 2, (1 / std[3]) ** 2], 6))
    np.testing.assert_allclose(compiled.cov_y[compiled.slices["la"]].numpy(), 0.01)


def test_follows_device_and_dtype():
    grid = Grid.regular(18, 36)
    compiled = compile_(all_kinds()[:4], grid)
    x = torch.randn(3, T, C, *grid.shape)
    y32 = compiled.A(x)
    y64 = compiled.A(x.double())
    assert (
        y32.dtype == torch.float32
        and y64.dtype == torch.float64
        and y32.shape == (3, len(compiled))
    )
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-5)


def test_many_stations_compile_to_one_row_per_value():
    """5,000 stations (bench/operators.py times the compilation and A)."""

    grid = Grid.regular(64, 128)
    rng = np.random.default_rng(1)
    obs = Stations(
        name="dense",
        lon=rng.uniform(0, 360, 5000),
        lat=rng.uniform(-90, 90, 5000),
        times=list(TIMES),
        variables=["2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind"],
        errors=1.0,
    )
    compiled = compile_([obs], grid)
    assert len(compiled) == 5000 * T * 3  # 90,000 observations
    table = compiled.table
    assert not table.duplicated(["lon", "lat", "time", "channel"]).any()
    assert (table["time_weight"] == 0).all()  # observed at the states' times
    # A field constant over the globe for each (member, state, channel) is read exactly at every
    # station, the poles and the periodic seam included.
    level = 1000.0 * torch.arange(2.0)[:, None, None] + 10.0 * torch.arange(float(T))[:, None] + torch.arange(float(C))
    x = level[..., None, None].expand(2, T, C, *grid.shape).contiguous()
    channel = np.array([CHANNELS.index(c) for c in table["channel"]], dtype=np.float64)
    expected = 10.0 * table["time_index"].to_numpy() + channel + np.array([[0.0], [1000.0]])
    torch.testing.assert_close(compiled.A(x.double()), torch.as_tensor(expected), rtol=0, atol=1e-9)
