"""Scenario files: exact round trips (YAML and JSON), versions and unknown keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from appa_engine.errors import ConfigError
from appa_engine.observations.observers import (
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    Profiles,
    SatelliteSwath,
    Stations,
    TrackSwath,
    WindSpeedStations,
)
from appa_engine.observations.orbits import CircularOrbit, TLEOrbit
from appa_engine.observations.scenario import (
    INLINE_LIMIT,
    SCENARIO_VERSION,
    GuidanceSettings,
    SamplerSettings,
    Scenario,
    observer_from_dict,
    observer_to_dict,
)

ISS = (
    "1 25544U 98067A   19343.69339541  .00001764  00000-0  38792-4 0  9991",
    "2 25544  51.6439 211.2001 0007417  17.6667  85.6398 15.50103472202482",
)


def scenario() -> Scenario:
    rng = np.random.default_rng(0)
    values = rng.normal(280, 5, (2, 3, 1))
    values[1, 2, 0] = np.nan
    observers = [
        Stations(
            name="synop",
            lon=[4.35, 0.1 + 0.2, -70.123456789012345],
            lat=[50.85, 1 / 3, -33.4],
            times=["2021-01-01T00:00", "2021-01-01T00:00:00.123456789"],
            variables=["2m_temperature"],
            errors={"2m_temperature": 0.5},
            names=["Brussels", "Null Island", "Santiago"],
            elevation=[76.0, np.nan, 570.0],
            values=values,
        ),
        Profiles(
            name="sondes",
            lon=[10.0],
            lat=[20.0],
            times=["2021-01-01T12"],
            variables=["temperature"],
            levels=[850, 500.5],
            errors=1.0,
        ),
        WindSpeedStations(
            name="anemo",
            lon=[1.0],
            lat=[2.0],
            times=["2021-01-01T03"],
            levels=[250],
            errors={"wind_speed": 2.5},
        ),
        SatelliteSwath(
            name="polar",
            orbit=CircularOrbit(800, 75, raan_deg=12.5, epoch="2021-01-01T00:00", j2=True),
            fov_radius_deg=5,
            samples_per_hour=60,
            start="2021-01-01T00",
            end="2021-01-02T00",
            variables=["temperature", "u_component_of_wind"],
            levels=[500],
            errors={"temperature": 0.7, "u_component_of_wind": 1.5},
            tolerance="1800s",
            values=rng.normal(size=50),
        ),
        SatelliteSwath(
            name="iss",
            orbit=TLEOrbit(*ISS),
            fov_radius_deg=3,
            samples_per_hour=6,
            start="2019-12-09T16:00",
            end="2019-12-09T18:00",
            variables=["2m_temperature"],
            errors=1.0,
        ),
        TrackSwath(
            name="drawn",
            lon=[350.0, 10.0],
            lat=[45.0, 50.0],
            width_deg=7.5,
            times=["2021-01-01T06"],
            variables=["2m_temperature"],
            errors=0.25,
        ),
        FullStateObserver(
            name="analysis",
            times=["2021-01-01T00"],
            errors=0.1,
            values=rng.normal(size=(1, 2, 101, 110)),
        ),
        LatentObserver(
            name="latent",
            times=["2021-01-01T00"],
            errors=0.05,
            values=rng.normal(size=(1, 2, 3, 4)),
        ),
    ]
    return Scenario(
        start="2021-01-01T00:00",
        observations=ObservationSet(observers),
        model="assets/default",
        task="forecast",
        hours=24,
        lead_hours=48,
        members=16,
        sampler=SamplerSettings(name="pc", steps=64, corrections=1, delta=0.05),
        guidance=GuidanceSettings(method="dps", iterations=3, solver="gmres"),
        seed=123,
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_is_exact(tmp_path, suffix):
    original = scenario()
    path = original.save(tmp_path / f"run{suffix}")
    loaded = Scenario.load(path)
    assert loaded == original
    assert loaded.start == np.datetime64("2021-01-01T00:00", "ns")
    synop = loaded.observations["synop"]
    assert synop.times[1] == np.datetime64("2021-01-01T00:00:00.123456789", "ns")
    assert synop.lon[2] == original.observations["synop"].lon[2] and np.isnan(synop.values[1, 2, 0])
    assert loaded.observations["polar"].orbit == original.observations["polar"].orbit
    assert loaded.observations["iss"].orbit.line1 == ISS[0]
    assert loaded.observations["analysis"].values.shape == (1, 2, 101, 110)
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary file left behind
    # Saving what was loaded gives the same file.
    again = loaded.save(tmp_path / f"again{suffix}")
    assert again.read_text() == path.read_text()


def test_yaml_is_readable(tmp_path):
    text = scenario().save(tmp_path / "run.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["version"] == SCENARIO_VERSION and list(data)[0] == "version"
    lon = scenario().observations["synop"].lon
    assert f"lon: [4.35, 0.30000000000000004, {float(lon[2])!r}]" in text
    assert list(data["observations"][0])[:3] == ["kind", "name", "lon"]
    assert list(data["observations"][0])[-2:] == ["errors", "values"]
    assert data["observations"][3]["orbit"]["type"] == "CircularOrbit"
    assert data["observations"][3]["tolerance"] == "1800s"
    assert data["observations"][0]["times"] == [
        "2021-01-01T00:00:00.000000000",
        "2021-01-01T00:00:00.123456789",
    ]
    big = data["observations"][6]["values"]
    assert set(big) == {"shape", "dtype", "base64"} and 2 * 101 * 110 > INLINE_LIMIT


def test_hand_written_file_with_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\n"
        "start: 2021-03-01 06:00\n"  # YAML reads this as a datetime
        "observations:\n"
        "  - kind: stations\n"
        "    name: paris\n"
        "    lon: [2.35]\n"
        "    lat: [48.86]\n"
        "    times: ['2021-03-01T06:00']\n"
        "    variables: [2m_temperature]\n"
        "    errors: 0.5\n"
    )
    s = Scenario.load(path)
    assert (
        s.start == np.datetime64("2021-03-01T06:00", "ns")
        and s.task == "reanalysis"
        and s.members == 8
    )
    assert s.sampler == SamplerSettings() and s.guidance.method == "mmps"
    assert s.observations["paris"].errors == 0.5
    assert s.end == np.datetime64("2021-03-02T05:00", "ns")


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**extra):
    return {"version": 1, "start": "2021-01-01T00:00", **extra}


@pytest.mark.parametrize(
    "data, match, hint",
    [
        (minimal(version=2), "format version 2, newer than the 1", "upgrade"),
        ({"start": "2021-01-01"}, "has no 'version'", "version: 1"),
        (minimal(version="one"), "invalid version", None),
        (minimal(members_count=3), "unknown key 'members_count'", "valid keys"),
        (minimal(sampler={"stepz": 3}), "unknown config key 'sampler.stepz'", "steps"),
        (minimal(guidance={"method": "magic"}), "guidance.method", None),
        (minimal(task="nowcast"), "task must be one of", None),
        (minimal(task="forecast"), "lead_hours ≥ 1", None),
        (minimal(hours=0), "hours must be an integer ≥ 1", None),
        (minimal(members=2.5), "members must be an integer", None),
        ({"version": 1}, "has no 'start'", None),
        (minimal(start="soon"), "is not a date", None),
        (minimal(observations=[{"name": "x"}]), "observer #1 has no kind", "stations"),
        (
            minimal(observations=[{"kind": "radar", "name": "x"}]),
            "unknown kind 'radar'",
            "satellite_swath",
        ),
        (
            minimal(
                observations=[
                    {
                        "kind": "stations",
                        "name": "x",
                        "lon": [0],
                        "lat": [0],
                        "times": ["2021-01-01"],
                        "variables": ["t"],
                        "errors": 1,
                        "colour": "red",
                    }
                ]
            ),
            "unknown key 'colour'",
            "valid keys",
        ),
        (
            minimal(
                observations=[
                    {
                        "kind": "stations",
                        "name": "x",
                        "lon": [0],
                        "lat": [0],
                        "variables": ["t"],
                        "errors": 1,
                    }
                ]
            ),
            "missing 1 required keyword-only argument: 'times'",
            "required keys",
        ),
        (
            minimal(
                observations=[
                    {
                        "kind": "stations",
                        "name": "x",
                        "lon": [0],
                        "lat": [99],
                        "times": ["2021-01-01"],
                        "variables": ["t"],
                        "errors": 1,
                    }
                ]
            ),
            "observer #1: stations 'x': station 0 has latitude 99",
            "swapped",
        ),
        (
            minimal(
                observations=[
                    {
                        "kind": "satellite_swath",
                        "name": "s",
                        "orbit": {"type": "Kepler"},
                        "fov_radius_deg": 5,
                        "samples_per_hour": 6,
                        "start": "2021-01-01",
                        "end": "2021-01-02",
                        "variables": ["t"],
                        "errors": 1,
                    }
                ]
            ),
            "unknown orbit type 'Kepler'",
            "CircularOrbit",
        ),
        (
            minimal(
                observations=[
                    {
                        "kind": "latent",
                        "name": "z",
                        "times": ["2021-01-01"],
                        "errors": 1,
                        "values": {"shape": [2], "dtype": "float64", "base64": "!!"},
                    }
                ]
            ),
            "base64 array is corrupted",
            None,
        ),
    ],
)
def test_bad_files_raise_config_errors(tmp_path, data, match, hint):
    with pytest.raises(ConfigError, match=match) as info:
        Scenario.load(write(tmp_path, data))
    if hint is not None:
        assert hint in (info.value.hint or "")


def test_bad_paths_and_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Scenario.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        Scenario.load(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        Scenario.load(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="use a .yaml or .json"):
        scenario().save(tmp_path / "run.txt")
    (tmp_path / "dup.json").write_text(
        json.dumps(minimal(observations=[observer_to_dict(scenario().observations[1])] * 2))
    )
    with pytest.raises(ConfigError, match="unique, repeated: 'sondes'"):
        Scenario.load(tmp_path / "dup.json")


def test_observer_dicts_round_trip():
    for obs in scenario().observations:
        assert observer_from_dict(observer_to_dict(obs)) == obs
