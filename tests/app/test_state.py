"""The app's state without a browser: edits, validation messages, presets, uploads, footprints,
and the scenario round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from app import adapter
from app.presets import farthest_point_order, random_network
from app.state import AppState, SatelliteDraft, StationsDraft, TrackDraft, Window
from appa_engine.observations.observers import LatentObserver


@pytest.fixture
def state(truth_store) -> AppState:
    return AppState(truth=truth_store)


@pytest.fixture
def editor(state):
    return state.editor


def _haversine_deg(lon1, lat1, lon2, lat2):
    lam1, phi1, lam2, phi2 = map(np.deg2rad, (lon1, lat1, lon2, lat2))
    h = np.sin((phi2 - phi1) / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin((lam2 - lam1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


# -- truth and vocabulary ---------------------------------------------------------------------


def test_truth_selection_and_vocabulary(state):
    t, e = state.truth, state.editor
    assert t.variable == "2m_temperature" and not t.has_levels
    assert t.times.size == 4 and t.time_label == "2020-01-01 00:00 UTC"
    field = t.field()
    assert field.dims == ("latitude", "longitude") and field.shape == (32, 64)
    t.param.update(variable="temperature", level=850, time_index=2)
    expected = t.dataset["temperature"].isel(time=2).sel(level=850).values
    np.testing.assert_array_equal(t.field().values, expected.astype(np.float64))
    lo, hi = t.value_range()
    assert lo < np.median(expected) < hi
    t.variable = "u_component_of_wind"
    lo, hi = t.value_range(symmetric=True)
    assert lo == -hi > -100
    # The editor offers the truth's variables, levels and grid; the window starts at its first time.
    assert "temperature" in e.variables and e.levels == [500.0, 850.0]
    assert e.grid.shape == (32, 64) and e.window.start == t.times[0]
    assert state.model.loaded is False and "No model" in state.model.text


def test_bad_truth_keeps_the_current_one_and_says_why(state, tmp_path):
    assert not state.truth.load(tmp_path / "missing.zarr")
    assert state.truth.notice.is_error and "missing.zarr" in state.truth.notice.text
    assert state.truth.variable == "2m_temperature" and state.truth.loaded


# -- stations: add, move, delete, validate ----------------------------------------------------


def test_add_move_delete_stations_through_the_draw_tool(editor):
    draft = editor.add_observer("stations")
    assert isinstance(draft, StationsDraft) and editor.active == "stations"
    assert editor.apply_drawn([-1, -1], [10.0, -20.0], [45.0, 50.0], shown_ids=[])
    assert draft.table["id"].tolist() == [0, 1] and draft.table["name"].tolist() == ["S1", "S2"]
    np.testing.assert_allclose(draft.table["lon"], [10.0, 340.0])  # stored in [0, 360)
    # Move station 1, keep 0, add one.
    assert editor.apply_drawn([0, 1, -1], [10.0, 5.0, 100.0], [45.0, 40.0, -30.0], shown_ids=[0, 1])
    np.testing.assert_allclose(draft.table[["lon", "lat"]].to_numpy(), [[10, 45], [5, 40], [100, -30]])
    # Station 0 missing from the drawn points: deleted; a hidden station (2, not shown) is kept.
    assert editor.apply_drawn([1], [5.0], [40.0], shown_ids=[0, 1])
    assert draft.table["id"].tolist() == [1, 2]
    # The same points again: nothing changes.
    revision = editor.revision
    assert not editor.apply_drawn([1], [5.0], [40.0], shown_ids=[1])
    assert editor.revision == revision


def test_click_off_the_globe_is_refused_with_a_message(editor):
    draft = editor.add_observer("stations")
    editor.add_stations([10.0], [45.0])
    before = draft.table.copy()
    revision = editor.revision
    assert not editor.apply_drawn([0, -1], [10.0, 12.0], [45.0, 46.0], shown_ids=[0], dropped=1)
    assert editor.draw_notice.is_error and "off the globe" in editor.draw_notice.text
    pd.testing.assert_frame_equal(draft.table, before)
    assert editor.revision > revision  # redrawn, which removes the browser's leftover glyph
    # A point beyond a pole (the flat map's margin) is refused too.
    assert not editor.apply_drawn([0, -1], [10.0, 12.0], [45.0, 95.0], shown_ids=[0])
    pd.testing.assert_frame_equal(draft.table, before)
    # A valid edit clears the message.
    assert editor.apply_drawn([0, -1], [10.0, 12.0], [45.0, 46.0], shown_ids=[0])
    assert editor.draw_notice is None and draft.n_stations == 2


def test_station_table_edits_are_validated(editor):
    draft = editor.add_observer("stations")
    editor.add_stations([10.0, 20.0], [45.0, 50.0], names=["A", "B"])
    assert editor.edit_station(1, "lat", "-33.5") and draft.table.loc[1, "lat"] == -33.5
    assert editor.edit_station(1, "lon", -70) and draft.table.loc[1, "lon"] == 290.0
    assert editor.edit_station(0, "name", "Brussels") and draft.table.loc[0, "name"] == "Brussels"
    before = draft.table.copy()
    for column, value, words in (("lat", 91, "outside [-90, 90]"), ("lon", "east", "must be a number"),
                                 ("name", "  ", "cannot be empty")):
        assert not editor.edit_station(0, column, value)
        assert editor.table_notice.is_error and words in editor.table_notice.text
        pd.testing.assert_frame_equal(draft.table, before)
    assert editor.delete_stations([0]) and draft.table["name"].tolist() == ["B"]


def test_non_positive_error_is_refused(editor):
    draft = editor.add_observer("stations")
    assert draft.error_of("2m_temperature") == 1.0
    assert draft.set_error("2m_temperature", 0.25) and draft.error_of("2m_temperature") == 0.25
    for bad in (0, -1, "abc", float("nan")):
        assert not draft.set_error("2m_temperature", bad)
        assert draft.notice.is_error
        assert draft.errors == {"2m_temperature": 0.25}


def test_time_window_of_an_observer(editor):
    draft = editor.add_observer("stations")
    assert draft.hours(editor.window).tolist() == list(range(24))
    assert draft.set_times(2, 20, 6, hours=editor.hours)
    np.testing.assert_array_equal(draft.times(editor.window),
                                  editor.window.start + np.array([2, 8, 14, 20]) * np.timedelta64(1, "h"))
    assert not draft.set_times(10, 5, 1, hours=24) and draft.notice.is_error
    assert not draft.set_times(0, 30, 1, hours=24)
    assert (draft.start_hour, draft.end_hour, draft.every_hours) == (2, 20, 6)


def test_observation_limit_refuses_edits_and_changes_nothing(editor):
    editor.max_observations = 24 * 3  # three stations of one channel over 24 hours
    draft = editor.add_observer("stations")
    assert editor.add_stations([0.0, 10.0, 20.0], [0.0, 0.0, 0.0])
    assert not editor.add_stations([30.0], [0.0])
    assert editor.draw_notice.is_error and "over the limit" in editor.draw_notice.text
    assert draft.n_stations == 3
    assert not editor.apply_drawn([0, 1, 2, -1], [0, 10, 20, 40.0], [0, 0, 0, 0.0], shown_ids=[0, 1, 2])
    assert draft.n_stations == 3
    # A second variable would double the count: reverted by the editor, with a message.
    draft.variables = ["2m_temperature", "mean_sea_level_pressure"]
    assert draft.variables == ["2m_temperature"] and "over the limit" in draft.notice.text
    # Longer window: refused too.
    assert not editor.set_window(hours=48) and editor.hours == 24 and editor.window_notice.is_error


def test_satellite_parameter_over_the_limit_is_reverted(editor):
    sat = editor.add_observer("satellite_swath")
    n = editor.n_observations()
    assert n > 0
    editor.max_observations = n
    sat.fov_radius_deg = 20.0
    assert sat.fov_radius_deg == 5.0 and "over the limit" in sat.notice.text
    assert editor.n_observations() == n
    assert not sat.set_orbit(altitude_km=-5) and sat.altitude_km == 800.0 and sat.notice.is_error


# -- presets ----------------------------------------------------------------------------------


def test_presets_airports_and_random(editor):
    assert editor.load_preset("airports", 40)
    airports = editor.active_draft
    assert airports.label == "airports-40" and airports.n_stations == 40
    names = airports.table["name"].tolist()
    assert len(set(names)) == 40 and all(len(n) == 4 for n in names)  # ICAO codes
    assert editor.load_preset("airports", 40)  # deterministic
    assert editor.active_draft.label == "airports-40-2" and editor.active_draft.table["name"].tolist() == names
    # Spread out: the closest pair is far apart (airports cluster; 40 spread ones do not).
    lon, lat = airports.table["lon"].to_numpy(), airports.table["lat"].to_numpy()
    d = _haversine_deg(lon[:, None], lat[:, None], lon[None], lat[None]) + np.eye(40) * 999
    assert d.min() > 5.0
    assert editor.load_preset("random", 500, seed=7, kind="profiles")
    random = editor.active_draft
    assert random.kind == "profiles" and random.n_stations == 500
    np.testing.assert_allclose(random.table["lat"], random_network(500, seed=7)["lat"])
    assert not editor.load_preset("random", 0) and editor.preset_notice.is_error
    assert not editor.load_preset("volcanoes", 5) and "Unknown preset" in editor.preset_notice.text


def test_farthest_point_order_matches_brute_force(rng):
    lon, lat = rng.uniform(0, 360, 60), np.rad2deg(np.arcsin(rng.uniform(-1, 1, 60)))
    order = farthest_point_order(lon, lat, 10, start=3)
    assert order[0] == 3 and len(set(order)) == 10
    d = _haversine_deg(lon[:, None], lat[:, None], lon[None], lat[None])
    for k in range(1, 10):
        nearest = d[:, order[:k]].min(axis=1)
        nearest[order[:k]] = -1
        assert np.isclose(nearest[order[k]], nearest.max())


def test_random_network_is_uniform_on_the_sphere():
    table = random_network(20_000, seed=1)
    z = np.sin(np.deg2rad(table["lat"].to_numpy()))
    # Uniform on the sphere <=> z = sin(lat) uniform on [-1, 1]: mean 0, variance 1/3.
    assert abs(z.mean()) < 4 * np.sqrt(1 / 3 / 20_000)
    assert abs(z.var() - 1 / 3) < 0.01
    assert abs(np.mean(np.abs(z) < 0.5) - 0.5) < 0.02  # half the area lies within 30° of the equator
    assert table["lon"].between(0, 360).all()


# -- uploads ----------------------------------------------------------------------------------


def test_upload_valid_csv_and_geojson(editor):
    csv = b"name,lon,lat,elevation\nBrussels,4.35,50.85,77\nQuito,-78.5,-0.22,2850\n"
    assert editor.upload_stations(csv, "belgium.csv")
    draft = editor.active_draft
    assert draft.label == "belgium" and draft.table["name"].tolist() == ["Brussels", "Quito"]
    np.testing.assert_allclose(draft.table["lon"], [4.35, 281.5])
    assert editor.upload_notice.level == "success"
    geojson = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [139.7, 35.7]},
         "properties": {"name": "Tokyo"}},
    ]}).encode()
    assert editor.upload_stations(geojson, "asia.geojson")
    assert editor.active_draft.table["name"].tolist() == ["Tokyo"]


@pytest.mark.parametrize(
    "data, filename, words",
    [
        (b"name,longitude,height\nA,4.35,10\n", "a.csv", "no lat column"),
        (b"lon,lat\n4.35,95\n", "b.csv", "row 1"),
        (b"lon,lat\nx,y\n", "c.csv", "not numbers"),
        (b'{"type": "Feature"}', "d.geojson", "not a GeoJSON FeatureCollection"),
        (b"lon,lat\n1,2\n", "e.xlsx", "only .csv and .geojson"),
        (b"", "f.csv", "empty"),
        (b"\xff\xfe\x00bad", "g.csv", "UTF-8"),
    ],
)
def test_invalid_uploads_are_refused_and_change_nothing(editor, data, filename, words):
    editor.add_observer("stations")
    before = (list(editor.labels), editor.active, editor.revision)
    assert not editor.upload_stations(data, filename)
    assert editor.upload_notice.is_error and words in editor.upload_notice.text
    assert (list(editor.labels), editor.active, editor.revision) == before


def test_upload_size_limit(editor):
    editor.max_upload_bytes = 100
    data = b"lon,lat\n" + b"1.0,2.0\n" * 20
    assert not editor.upload_stations(data, "big.csv")
    assert "limit" in editor.upload_notice.text and editor.labels == []


# -- satellite and track footprints -----------------------------------------------------------


def test_satellite_preview_footprint_matches_brute_force(editor):
    sat = editor.add_observer("satellite_swath")
    assert isinstance(sat, SatelliteDraft)
    sat.param.update(end_hour=2, samples_per_hour=30.0)
    fp = next(f for f in editor.footprints() if f.label == sat.label)
    times, lon, lat = sat.track(editor.window)
    assert times.size == 3 * 30 and np.array_equal(fp.lines[0], lon)
    # The orbit's ground track: latitude never exceeds the inclination (75°).
    assert np.abs(lat).max() <= 75.0 + 1e-9 and np.abs(lat).max() > 70.0
    grid = editor.grid
    glon, glat = np.meshgrid(grid.lon, grid.lat)
    d = _haversine_deg(glon[..., None], glat[..., None], lon, lat).min(axis=-1)
    expected = d <= sat.fov_radius_deg
    assert np.array_equal(fp.mask, expected)
    # Observation count: per hourly state, the cells of the samples binned to it (|s - t| < 30 min).
    k = np.floor((times - editor.window.start) / np.timedelta64(1, "h") + 0.5).astype(int)
    cells = sum(int((_haversine_deg(glon[..., None], glat[..., None], lon[k == s], lat[k == s]).min(axis=-1)
                     <= sat.fov_radius_deg).sum()) for s in np.unique(k))
    assert fp.n_observations == cells * len(sat.channels()) == editor.n_observations()
    assert sat.channels() == ["temperature_500", "temperature_850"]


def test_track_footprint(editor):
    track = editor.add_observer("track_swath")
    assert isinstance(track, TrackDraft)
    assert not editor.set_track([0.0, np.nan], [0.0, 10.0]) and editor.draw_notice.is_error
    assert not editor.set_track([0.0], [0.0])
    assert editor.set_track([0.0, 40.0], [0.0, 0.0])
    fp = next(f for f in editor.footprints() if f.label == track.label)
    grid = editor.grid
    glon, glat = np.meshgrid(grid.lon, grid.lat)
    # Along the equator from 0 to 40°E, half-width 5°: cells with |lat| <= 5 and lon in [0, 40] are in,
    # cells with |lat| > 5 are out.
    inside = (np.abs(glat) <= 5) & (glon >= 0) & (glon <= 40)
    assert fp.mask[inside].all() and not fp.mask[np.abs(glat) > 5.01].any()
    assert fp.n_observations == 24 * int(fp.mask.sum()) * 2


# -- observation set and scenario -------------------------------------------------------------


def _build_session(editor):
    editor.add_observer("stations")
    editor.add_stations([4.35, -70.0], [50.85, -33.4], names=["BRU", "SCL"])
    editor.active_draft.set_error("2m_temperature", 0.7)
    editor.active_draft.set_times(0, 18, 6, hours=24)
    sat = editor.add_observer("satellite_swath")
    sat.param.update(inclination_deg=98.6, phase_deg=30.0, end_hour=11, fov_radius_deg=4.0)
    editor.add_observer("track_swath")
    editor.set_track([-30.0, 0.0, 20.0], [10.0, 20.0, 25.0])
    editor.load_preset("random", 5, seed=2, kind="profiles")


def test_observation_set_from_the_state(editor):
    _build_session(editor)
    obs = editor.observation_set()
    assert [o.kind for o in obs] == ["stations", "satellite_swath", "track_swath", "profiles"]
    stations = obs["stations"]
    assert stations.names == ("BRU", "SCL") and stations.error_of("2m_temperature") == 0.7
    assert stations.times.size == 4 and stations.channels == ("2m_temperature",)
    sat = obs["satellite"]
    assert sat.orbit.inclination_deg == 98.6 and sat.end - sat.start == np.timedelta64(12, "h")
    assert obs["random-5"].levels == (500.0, 850.0)


def test_incomplete_observer_is_named_in_the_error(editor):
    editor.add_observer("stations", label="empty")
    with pytest.raises(adapter.ObservationError, match="'empty' has no station"):
        editor.observation_set()
    assert editor.export_scenario() is None and "'empty' has no station" in editor.scenario_notice.text


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_scenario_round_trip_through_the_state(state, truth_store, fmt):
    editor = state.editor
    _build_session(editor)
    original = editor.scenario(members=4, seed=3)
    data = editor.export_scenario(fmt, members=4, seed=3)
    assert editor.scenario_notice.level == "success"
    fresh = AppState(truth=truth_store).editor
    assert fresh.import_scenario(data, f"session.{fmt}")
    assert fresh.scenario_notice.level == "success", fresh.scenario_notice
    restored = fresh.scenario()
    assert restored.observations == original.observations
    assert (restored.members, restored.seed, restored.start, restored.hours) == (4, 3, original.start, 24)
    assert fresh.labels == editor.labels and fresh.active == "stations"
    assert fresh.draft("stations").table["name"].tolist() == ["BRU", "SCL"]


def test_scenario_values_survive_a_round_trip(state):
    editor = state.editor
    window = Window(np.datetime64("2020-01-01T00:00", "ns"), 24)
    times = window.start + np.arange(0, 24, 12) * np.timedelta64(1, "h")
    values = np.array([[[271.0], [280.5]], [[272.0], [np.nan]]])
    scenario = adapter.Scenario(start=window.start, hours=24, observations=[adapter.Stations(
        name="synop", lon=[4.35, 2.35], lat=[50.85, 48.86], names=["BRU", "CDG"], times=times,
        variables=["2m_temperature"],
        errors={"2m_temperature": 0.5}, values=values)])
    assert editor.restore(scenario) == []
    assert editor.scenario().observations == scenario.observations
    # Editing the network drops the values (they belonged to the old stations).
    editor.add_stations([10.0], [10.0])
    assert editor.scenario().observations["synop"].values is None


def test_invalid_scenario_files_change_nothing(editor):
    editor.add_observer("stations")
    before = list(editor.labels)
    for data, name, words in (
        (b"version: 9\nstart: '2020-01-01'\n", "new.yaml", "newer"),
        (b"version: 1\nstart: '2020-01-01'\ncolour: red\n", "odd.yaml", "unknown key"),
        (b"{not json", "bad.json", "cannot parse"),
        (b"version: 1\n", "a.txt", "cannot read"),
    ):
        assert not editor.import_scenario(data, name)
        assert editor.scenario_notice.is_error and words in editor.scenario_notice.text, editor.scenario_notice
        assert editor.labels == before


def test_unsupported_observer_kinds_are_skipped_with_a_warning(editor):
    start = np.datetime64("2020-01-01T00:00", "ns")
    scenario = adapter.Scenario(start=start, hours=6, observations=[
        adapter.Stations(name="s", lon=[1.0], lat=[2.0], times=[start], variables=["2m_temperature"], errors=1.0),
        LatentObserver(name="latent", times=[start], errors=0.1),
    ])
    warnings = editor.restore(scenario)
    assert editor.labels == ["s"] and any("latent" in w for w in warnings)
