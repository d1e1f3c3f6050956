"""Orbits, ground tracks and swaths against closed forms, brute force and SGP4's own output."""

from __future__ import annotations

import numpy as np
import pytest

from appa_engine.data.grid import Grid, area_weights
from appa_engine.errors import ObservationError
from appa_engine.observations.orbits import (
    CircularOrbit,
    TLEOrbit,
    cells_within,
    coverage_fraction,
    gmst,
    sample_times,
    swath_mask,
)

MU = 398600.4418  # km³/s²
R = 6371.0  # km
OMEGA = 7.2921159e-5  # rad/s

# The ISS example TLE reproduced in many textbooks and on Wikipedia's "Two-line element set" page.
ISS_1 = "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927"
ISS_2 = "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537"
# Vanguard 1, the first case of the SGP4 verification set (Vallado et al. 2006, SGP4-VER.TLE).
VANGUARD_1 = "1 00005U 58002B   00179.78495062  .00000023  00000-0  28098-4 0  4753"
VANGUARD_2 = "2 00005  34.2682 348.7242 1859667 331.7664  19.3264 10.82419157413667"


def dense_period(orbit, step_s: float = 10.0) -> np.ndarray:
    seconds = np.arange(0, orbit.period_s + step_s, step_s).astype(np.int64)
    return orbit.epoch + seconds * np.timedelta64(1, "s")


def circular_difference(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------------------------
# Circular orbits


def test_period_is_kepler():
    orbit = CircularOrbit(800.0, 75.0)
    a = R + 800.0
    assert orbit.period_s == pytest.approx(2 * np.pi * np.sqrt(a**3 / MU), rel=1e-12)
    assert orbit.period_s == pytest.approx(6043.4, abs=0.5)  # 100.72 min, by hand
    # The satellite comes back to the same latitude one period later, and to the opposite one
    # half a period later.
    t = sample_times("2000-01-01T00:00", "2000-01-01T03:00", 60)
    _, lat = orbit.ground_track(t)
    _, lat_T = orbit.ground_track(t + np.timedelta64(int(orbit.period_s * 1e9), "ns"))
    _, lat_half = orbit.ground_track(t + np.timedelta64(int(orbit.period_s * 0.5e9), "ns"))
    np.testing.assert_allclose(lat_T, lat, atol=1e-6)
    np.testing.assert_allclose(lat_half, -lat, atol=1e-6)


@pytest.mark.parametrize("inclination", [0.0, 30.0, 51.6, 75.0, 90.0, 98.6, 120.0, 180.0])
def test_latitude_is_bounded_by_inclination_and_reaches_it(inclination):
    orbit = CircularOrbit(800.0, inclination, raan_deg=40.0, phase_deg=123.0)
    lon, lat = orbit.ground_track(dense_period(orbit))
    bound = min(inclination, 180.0 - inclination)
    assert np.all(np.abs(lat) <= bound + 1e-9)
    assert np.abs(lat).max() >= bound - 0.5
    assert lat.max() >= bound - 0.5 and lat.min() <= -bound + 0.5  # both hemispheres
    assert np.all((lon >= 0) & (lon < 360))


def test_track_shifts_west_by_earth_rotation_each_orbit():
    orbit = CircularOrbit(800.0, 75.0, raan_deg=10.0, phase_deg=5.0)
    t = sample_times("2000-01-01T00:00", "2000-01-01T02:00", 30)
    for k in (1, 2, 7):
        later = t + np.timedelta64(round(k * orbit.period_s * 1e9), "ns")
        lon, lat = orbit.ground_track(t)
        lon_k, lat_k = orbit.ground_track(later)
        shift = np.rad2deg(OMEGA * k * orbit.period_s)  # 25.25° per orbit at 800 km
        np.testing.assert_allclose(lat_k, lat, atol=1e-6)
        assert np.all(circular_difference(lon_k, lon - shift) < 1e-6)
    assert np.rad2deg(OMEGA * orbit.period_s) == pytest.approx(25.25, abs=0.01)


def test_equatorial_orbit_stays_on_the_equator_and_drifts_east():
    orbit = CircularOrbit(1000.0, 0.0, raan_deg=30.0, phase_deg=20.0, epoch="2021-06-01T00:00")
    t = sample_times("2021-06-01T00:00", "2021-06-02T00:00", 12)
    lon, lat = orbit.ground_track(t)
    np.testing.assert_allclose(lat, 0.0, atol=1e-12)
    seconds = (t - t[0]) / np.timedelta64(1, "s")
    n = np.sqrt(MU / (R + 1000.0) ** 3)
    expected = 50.0 + np.rad2deg((n - OMEGA) * seconds)
    assert np.all(circular_difference(lon, expected) < 1e-6)


def test_epoch_raan_and_phase_place_the_satellite():
    orbit = CircularOrbit(800.0, 75.0, raan_deg=200.0, phase_deg=90.0, epoch="2010-03-04T05:06")
    lon, lat = orbit.ground_track(np.datetime64("2010-03-04T05:06"))
    # A quarter orbit after the node: at the northernmost point, 90° east of the node (before the
    # Earth has turned), at latitude i.
    assert float(lat) == pytest.approx(75.0, abs=1e-9)
    assert float(lon) == pytest.approx(290.0, abs=1e-9)
    same = CircularOrbit(800.0, 75.0, 200.0, 90.0, epoch=np.datetime64("2010-03-04T05:06"))
    assert orbit == same and hash(orbit) == hash(same)


def test_j2_node_precession_makes_98_6_degrees_sun_synchronous():
    orbit = CircularOrbit(800.0, 98.6, j2=True)
    d_raan, d_u = orbit.rates
    per_day = np.rad2deg(d_raan) * 86400.0
    assert per_day == pytest.approx(360.0 / 365.2422, rel=0.01)  # +0.9856°/day, eastwards
    assert CircularOrbit(800.0, 90.0, j2=True).rates[0] == pytest.approx(0.0, abs=1e-18)
    assert CircularOrbit(800.0, 98.6).rates == (0.0, pytest.approx(2 * np.pi / orbit.period_s))
    # The drift is visible in the track but stays bounded by the inclination.
    t = sample_times("2000-01-01", "2000-01-02", 60)
    lon_j2, lat_j2 = orbit.ground_track(t)
    lon, lat = CircularOrbit(800.0, 98.6).ground_track(t)
    assert np.all(np.abs(lat_j2) <= 81.4 + 1e-9)
    assert circular_difference(lon_j2, lon).max() > 0.5


def nodal_period(orbit) -> float:
    """Mean time between ascending equator crossings of the ground track, over 10 orbits."""

    seconds = np.arange(0.0, 10.5 * orbit.period_s, 1.0)
    times = orbit.epoch + (seconds * 1e9).astype(np.int64) * np.timedelta64(1, "ns")
    _, lat = orbit.ground_track(times)
    k = np.flatnonzero((lat[:-1] < 0) & (lat[1:] >= 0))
    crossings = seconds[k] - lat[k] / (lat[k + 1] - lat[k])  # linear interpolation
    return float(np.diff(crossings).mean())


def test_j2_nodal_period():
    # J2 changes the rate of the argument of latitude by (3/4)·J2·(Re/a)²·(8cos²i − 2), which
    # vanishes at i = 60°; a polar orbit's nodal period is longer by 1/(1 − 1.5·J2·(Re/a)²).
    k = 1.08262668e-3 * (6378.137 / (R + 800.0)) ** 2
    kepler = CircularOrbit(800.0, 60.0, phase_deg=-10.0).period_s
    for j2 in (True, False):
        orbit = CircularOrbit(800.0, 60.0, phase_deg=-10.0, j2=j2)
        assert nodal_period(orbit) == pytest.approx(kepler, abs=0.01)
    polar = nodal_period(CircularOrbit(800.0, 90.0, phase_deg=-10.0, j2=True))
    assert polar == pytest.approx(kepler / (1 - 1.5 * k), abs=0.01)
    assert polar - kepler == pytest.approx(7.8, abs=0.1)  # seconds, by hand


def test_sample_times():
    t = sample_times("2021-01-01T00:00", "2021-01-02T00:00", 60)
    assert t.shape == (1440,) and t.dtype == np.dtype("datetime64[ns]")
    assert t[0] == np.datetime64("2021-01-01T00:00") and t[-1] == np.datetime64("2021-01-01T23:59")
    assert np.all(np.diff(t) == np.timedelta64(60, "s"))
    assert sample_times(np.datetime64("2021-01-01"), "2021-01-01T01:00", 7).size == 7


# ---------------------------------------------------------------------------------------------
# TLE orbits


def test_gmst_against_published_values_and_sgp4():
    from sgp4.api import jday
    from sgp4.propagation import gstime

    assert float(gmst(np.datetime64("2000-01-01T12:00"))) == pytest.approx(280.46061837, abs=1e-7)
    # Vallado, Fundamentals of Astrodynamics, Example 3-5: 1992-08-20 12:14 UT1.
    assert float(gmst(np.datetime64("1992-08-20T12:14"))) == pytest.approx(152.578787810, abs=1e-6)
    rng = np.random.default_rng(1)
    seconds = rng.integers(0, 40 * 365 * 86400, 50)
    times = np.datetime64("1990-01-01") + seconds * np.timedelta64(1, "s")
    ours = gmst(times)
    for time_, value in zip(times.astype("datetime64[s]").tolist(), ours):
        jd, fr = jday(time_.year, time_.month, time_.day, time_.hour, time_.minute, time_.second)
        assert circular_difference(value, np.rad2deg(gstime(jd + fr))) < 1e-6


def test_tle_matches_the_sgp4_verification_vector():
    orbit = TLEOrbit(VANGUARD_1, VANGUARD_2)
    # tcppver.out, first line: t = 0 min, r = (7022.46529266, -1400.08296755, 0.03995155) km.
    expected = [7022.46529266, -1400.08296755, 0.03995155]
    np.testing.assert_allclose(orbit.teme(orbit.epoch), expected, atol=1e-5)
    # Day 179.78495062 of 2000 = 27 June, 18:50:19.733568 UTC.
    assert abs(orbit.epoch - np.datetime64("2000-06-27T18:50:19.733568")) < np.timedelta64(1, "us")


def test_tle_ground_track_matches_independent_conversion():
    from sgp4.api import Satrec, jday
    from sgp4.propagation import gstime

    orbit = TLEOrbit(ISS_1, ISS_2)
    assert orbit.period_s / 60 == pytest.approx(1440 / 15.72125391, rel=1e-6)  # 91.6 min
    t = sample_times(orbit.epoch, orbit.epoch + np.timedelta64(1, "D"), 30)
    lon, lat = orbit.ground_track(t)

    satrec = Satrec.twoline2rv(ISS_1, ISS_2)
    for time_, lon_k, lat_k in zip(t.astype("datetime64[us]").tolist(), lon, lat):
        seconds = time_.second + time_.microsecond * 1e-6
        jd, fr = jday(time_.year, time_.month, time_.day, time_.hour, time_.minute, seconds)
        error, r, _ = satrec.sgp4(jd, fr)
        assert error == 0
        expected_lon = np.rad2deg(np.arctan2(r[1], r[0]) - gstime(jd + fr))
        expected_lat = np.rad2deg(np.arcsin(r[2] / np.linalg.norm(r)))
        assert circular_difference(lon_k, expected_lon) < 0.1
        assert abs(lat_k - expected_lat) < 0.1
    # A near-circular orbit: latitude reaches but never exceeds the inclination.
    assert 51.0 < np.abs(lat).max() <= 51.6416 + 0.05
    assert np.all((lon >= 0) & (lon < 360))


def test_tle_from_text_with_a_name_line():
    orbit = TLEOrbit.from_text(f"ISS (ZARYA)\n{ISS_1}\n{ISS_2}\n")
    assert orbit == TLEOrbit(ISS_1, ISS_2)


# ---------------------------------------------------------------------------------------------
# Swaths


def brute_force(grid: Grid, lon0: float, lat0: float, radius_deg: float) -> np.ndarray:
    phi = np.deg2rad(grid.lat)[:, None]
    lam = np.deg2rad(grid.lon)[None, :]
    phi_0, lam_0 = np.deg2rad(lat0), np.deg2rad(lon0)
    hav = np.sin((phi - phi_0) / 2) ** 2
    hav = hav + np.cos(phi_0) * np.cos(phi) * np.sin((lam - lam_0) / 2) ** 2
    return hav <= np.sin(np.deg2rad(radius_deg) / 2) ** 2


GRIDS = {
    "1deg-poles": Grid.regular(181, 360, poles=True),
    "64x32-centred": Grid.regular(32, 64),
    "shifted-lon": Grid.from_arrays(89.5 - np.arange(180.0), np.arange(0.5, 360.0, 1.0)),
}


@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("radius", [0.7, 5.0, 23.0, 75.0])
def test_cells_within_equals_brute_force(grid_name, radius, rng):
    grid = GRIDS[grid_name]
    # Random points (uniform on the sphere, longitudes in any range), then poles and dateline.
    lon = rng.uniform(-180, 540, 25)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 25)))
    lon = np.concatenate([lon, [0.0, 359.99, 180.0, -0.3, 0.2, 12.0, 200.0, 77.7]])
    lat = np.concatenate([lat, [90.0, -90.0, 89.9, -89.95, 0.0, 88.0, -87.5, 45.0]])
    cells = cells_within(grid, lon, lat, radius)
    assert len(cells) == lon.size
    union = np.zeros(grid.shape, dtype=bool)
    for (i, j), lon0, lat0 in zip(cells, lon, lat):
        expected = brute_force(grid, lon0, lat0, radius)
        got = np.zeros(grid.shape, dtype=bool)
        got[i, j] = True
        assert got.sum() == i.size, "duplicated cells"
        np.testing.assert_array_equal(got, expected, err_msg=f"point ({lon0}, {lat0})")
        flat = i * grid.shape[1] + j
        assert np.all(np.diff(flat) > 0), "cells are sorted by row, then column"
        union |= expected
    np.testing.assert_array_equal(swath_mask(grid, lon, lat, radius), union)


def test_swath_crossing_the_dateline_wraps():
    grid = Grid.regular(181, 360, poles=True)
    (i, j), = cells_within(grid, [359.6], [0.0], 3.0)
    assert set(j.tolist()) == {357, 358, 359, 0, 1, 2}
    mask = swath_mask(grid, [0.4], [0.0], 3.0)
    assert mask[90, [358, 359, 0, 1, 2, 3]].all() and not mask[90, [357, 4]].any()
    assert not swath_mask(grid, [], [], 3.0).any() and cells_within(grid, [], [], 3.0) == []


@pytest.fixture(scope="module")
def appa_day():
    """The paper's orbiter (800 km, 75°, 5° radius, 60 samples per hour) on the 0.25° grid."""

    grid = Grid.regular(721, 1440, poles=True)
    orbit = CircularOrbit(800.0, 75.0)
    times = sample_times("2021-01-01", "2021-01-02", 60)
    lon, lat = orbit.ground_track(times)
    return grid, orbit, lon, lat, swath_mask(grid, lon, lat, 5.0)


def test_swath_mask_is_the_union_of_the_cells_of_each_sample_on_the_era5_grid(appa_day):
    """One day at 60 samples per hour on ERA5's grid (bench/operators.py times both)."""

    grid, _, lon, lat, mask = appa_day
    cells = cells_within(grid, lon, lat, 5.0)
    union = np.zeros(grid.shape, dtype=bool)
    for i, j in cells:
        union[i, j] = True
    np.testing.assert_array_equal(union, mask)


def test_daily_coverage_matches_the_swath_geometry(appa_day):
    r"""Bounds from the swath width and the number of passes, latitude by latitude.

    The naive ratio (swath width × track length / band area) is 2·sin(5°)·2π·14.3 / (4π·sin 80°)
    ≈ 1.26 > 1: the passes overlap heavily, so the estimate has to be made per latitude. At a
    latitude φ the track crosses with northward and eastward speeds (Earth-fixed)
    v_n = n·sqrt(1 − cos²i/cos²φ), v_e = n·cos i/cos φ − ω·cos φ, so a strip of half-width ρ
    covers w = 2ρ·|v|/v_n / cos φ degrees of longitude. A day holds 14.3 orbits. Successive
    ascending crossings of a latitude are ω·T = 25.25° apart, so 14 of them never overlap while
    w < 25.25°: the row is covered at least 14·w(ρ_min)/360, where ρ_min = sqrt(r² − (s/2)²) is
    the narrowest point of a chain of disks s = 3.8° apart (one sample per minute). At most 15
    ascending plus 15 descending crossings of width w(r) cover at most min(1, 30·w(r)/360). The
    tolerance (0.015 plus 3 %) covers the cell discretisation (≤ one 0.25° cell per crossing)
    and the small-disk approximation (relative error O(r²) ≈ 1 %).
    """

    grid, orbit, lon, lat, mask = appa_day
    n = 2 * np.pi / orbit.period_s
    i = np.deg2rad(75.0)
    r = 5.0
    spacing = np.rad2deg(OMEGA * orbit.period_s)
    s = np.rad2deg((n + OMEGA) * 60.0)  # upper bound of the ground arc between samples
    rho_min = np.sqrt(r**2 - (s / 2) ** 2)
    orbits_per_day = 86400.0 / orbit.period_s
    assert 14 < orbits_per_day < 15

    row_cover = mask.mean(axis=1)
    band = np.abs(grid.lat) <= 60.0
    phi = np.deg2rad(grid.lat[band])
    v_n = n * np.sqrt(1 - np.cos(i) ** 2 / np.cos(phi) ** 2)
    v_e = n * np.cos(i) / np.cos(phi) - OMEGA * np.cos(phi)
    width = 2 * np.hypot(v_n, v_e) / v_n / np.cos(phi)  # degrees of longitude per degree of ρ
    assert np.all(width * r < spacing)
    lower = 14 * width * rho_min / 360
    upper = np.minimum(1.0, 30 * width * r / 360)
    assert np.all(row_cover[band] >= lower * 0.97 - 0.015)
    assert np.all(row_cover[band] <= upper * 1.03 + 0.015)
    # Nothing beyond i + r; the band between 60° and i is crossed so steeply it is covered.
    assert not mask[np.abs(grid.lat) > 80.0 + 1e-9].any()
    assert row_cover[(np.abs(grid.lat) >= 62.0) & (np.abs(grid.lat) <= 75.0)].min() == 1.0

    # Hence the global fraction: area-weighted bounds (rows 60°-80° counted as 0 and 1).
    w = area_weights(grid.lat)
    lo = np.sum(w[band] * lower) / w.sum()
    polar = (np.abs(grid.lat) > 60) & (np.abs(grid.lat) <= 80)
    hi = (np.sum(w[band] * upper) + np.sum(w[polar])) / w.sum()
    fraction = coverage_fraction(grid, mask)
    assert lo * 0.97 - 0.015 <= fraction <= hi * 1.03 + 0.015
    assert 0.55 < fraction < 0.95


def test_daily_coverage_matches_monte_carlo(appa_day):
    """Uniform random points on the sphere, each tested against every track sample (dot products,
    independent of the haversine test used by the library).

    With 20 000 points the binomial standard deviation is ≤ 0.0035; the tolerance is 4σ plus 0.005
    for the cell-centre quadrature of the 0.25° grid.
    """

    grid, _, lon, lat, mask = appa_day
    rng = np.random.default_rng(7)
    m = 20_000
    p_lat = np.arcsin(rng.uniform(-1, 1, m))
    p_lon = rng.uniform(0, 2 * np.pi, m)
    # Unit vectors: a point is seen when cos(distance) = p·q >= cos(r) for some track sample q.
    def unit(lat_, lon_):
        return np.stack([np.cos(lat_) * np.cos(lon_), np.cos(lat_) * np.sin(lon_), np.sin(lat_)])

    p = unit(p_lat, p_lon).T  # (m, 3)
    q = unit(np.deg2rad(lat), np.deg2rad(lon))  # (3, N)
    cos_r = np.cos(np.deg2rad(5.0))
    seen = np.concatenate([(p[k : k + 4000] @ q).max(axis=1) >= cos_r for k in range(0, m, 4000)])
    expected = seen.mean()
    sigma = np.sqrt(expected * (1 - expected) / m)
    assert abs(coverage_fraction(grid, mask) - expected) < 4 * sigma + 0.005


def test_coverage_fraction_of_simple_masks():
    grid = Grid.regular(181, 360, poles=True)
    mask = np.zeros(grid.shape, dtype=bool)
    assert coverage_fraction(grid, mask) == 0.0
    assert coverage_fraction(grid, ~mask) == pytest.approx(1.0)
    mask[grid.lat > 0] = True
    mask[grid.lat == 0, :180] = True  # half of the equator row
    assert coverage_fraction(grid, mask) == pytest.approx(0.5, abs=1e-12)
    north_of_30 = grid.lat[:, None] >= 30.0 - 1e-9
    # Area above 30°N is (1 - sin 30°)/2 = 1/4 of the sphere, up to the half-row at the edge.
    cap = np.broadcast_to(north_of_30, grid.shape)
    assert coverage_fraction(grid, cap) == pytest.approx(0.25, abs=0.005)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"altitude_km": 0.0, "inclination_deg": 75.0}, "altitude"),
        ({"altitude_km": -5.0, "inclination_deg": 75.0}, "altitude"),
        ({"altitude_km": 50000.0, "inclination_deg": 75.0}, "altitude"),
        ({"altitude_km": float("nan"), "inclination_deg": 75.0}, "finite"),
        ({"altitude_km": 800.0, "inclination_deg": -1.0}, "inclination"),
        ({"altitude_km": 800.0, "inclination_deg": 181.0}, "inclination"),
        ({"altitude_km": 800.0, "inclination_deg": 75.0, "epoch": "not a date"}, "dates"),
    ],
)
def test_bad_circular_orbit(kwargs, match):
    with pytest.raises(ObservationError, match=match) as info:
        CircularOrbit(**kwargs)
    assert info.value.hint


def _with_checksum(line: str) -> str:
    from sgp4.io import compute_checksum

    return line[:68] + str(compute_checksum(line))


@pytest.mark.parametrize(
    "line1, line2, match",
    [
        (ISS_1[:-1] + "0", ISS_2, "checksum as 0 but in fact tallies to 7"),
        (ISS_1[:40], ISS_2, "out of its column"),
        ("ISS (ZARYA)", ISS_1, "out of its column"),
        (_with_checksum(ISS_1.replace("25544U", "25545U")), ISS_2, "do not match"),
    ],
)
def test_bad_tle(line1, line2, match):
    with pytest.raises(ObservationError, match=match) as info:
        TLEOrbit(line1, line2)
    assert "CelesTrak" in info.value.hint
    with pytest.raises(ObservationError, match="no TLE"):
        TLEOrbit.from_text("just a name")


def test_sgp4_failure_is_explained():
    # A drag term 4000 times the ISS's: the satellite decays within days.
    orbit = TLEOrbit(_with_checksum(ISS_1.replace("-11606-4", " 50000-1")), ISS_2)
    times = sample_times(orbit.epoch, orbit.epoch + np.timedelta64(20, "D"), 1)
    with pytest.raises(ObservationError, match="decayed"):
        orbit.ground_track(times)


def test_bad_swath_input():
    grid = Grid.regular(32, 64)
    for radius in (0.0, -1.0, 90.0, float("nan")):
        with pytest.raises(ObservationError, match="radius"):
            swath_mask(grid, [0.0], [0.0], radius)
    with pytest.raises(ObservationError, match="shape"):
        cells_within(grid, [0.0, 1.0], [0.0], 5.0)
    with pytest.raises(ObservationError, match=r"\[-90, 90\]"):
        cells_within(grid, [10.0], [95.0], 5.0)
    with pytest.raises(ObservationError, match="NaN"):
        swath_mask(grid, [np.nan], [0.0], 5.0)
    with pytest.raises(ObservationError, match="shape"):
        coverage_fraction(grid, np.zeros((3, 3), dtype=bool))
    with pytest.raises(ObservationError, match="not after"):
        sample_times("2021-01-02", "2021-01-01", 60)
    with pytest.raises(ObservationError, match="positive"):
        sample_times("2021-01-01", "2021-01-02", 0)
