"""Observers as data: normalisation, channels, errors and validation messages."""

from __future__ import annotations

import numpy as np
import pytest

from appa_engine.errors import ObservationError
from appa_engine.observations.observers import (
    OBSERVER_KINDS,
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    Profiles,
    SatelliteSwath,
    Stations,
    TrackSwath,
    WindSpeedStations,
    channel_name,
    split_channel,
    time_range,
)
from appa_engine.observations.orbits import CircularOrbit

T0 = "2021-01-01T00:00"


def stations(**kw):
    args = dict(
        name="syn",
        lon=[4.35, -70.0],
        lat=[50.85, -33.4],
        times=[T0],
        variables=["2m_temperature"],
        errors=0.5,
    )
    args.update(kw)
    return Stations(**args)


def test_channel_names_round_trip():
    assert channel_name("temperature", 850) == "temperature_850"
    assert channel_name("temperature", 7.5) == "temperature_7.5"
    assert channel_name("2m_temperature", None) == "2m_temperature"
    assert split_channel("temperature_850") == ("temperature", 850.0)
    assert split_channel("10m_u_component_of_wind") == ("10m_u_component_of_wind", None)
    assert split_channel("total_precipitation_6hr") == ("total_precipitation_6hr", None)


def test_time_range_is_inclusive_and_regular():
    t = time_range("2021-01-01T00", "2021-01-01T06", "3h")
    assert t.dtype == np.dtype("datetime64[ns]")
    assert (
        t.tolist()
        == np.array(["2021-01-01T00", "2021-01-01T03", "2021-01-01T06"], "datetime64[ns]").tolist()
    )
    assert time_range(T0, T0, "1h").size == 1
    with pytest.raises(ObservationError, match="before the start"):
        time_range("2021-01-02", "2021-01-01")
    with pytest.raises(ObservationError, match="not a duration"):
        time_range("2021-01-01", "2021-01-02", "often")


def test_stations_normalise_longitude_and_types():
    s = stations(lon=[-10.0, 360.0, 725.5, -1e-17], lat=[0, 0, 0, 0])
    np.testing.assert_allclose(s.lon, [350.0, 0.0, 5.5, 0.0])
    assert np.all((s.lon >= 0) & (s.lon < 360))
    assert s.times.dtype == np.dtype("datetime64[ns]")
    assert s.channels == ("2m_temperature",)
    assert s.kind == "stations" and not s.on_latent
    with pytest.raises(ValueError):  # arrays are frozen
        s.lon[0] = 1.0


def test_levels_expand_channels_variable_major():
    p = Profiles(
        name="sonde",
        lon=[0],
        lat=[0],
        times=[T0],
        variables=["temperature", "u_component_of_wind"],
        levels=[850, 500],
        errors={"temperature": 1.0, "u_component_of_wind_500": 3.0, "u_component_of_wind": 2.0},
    )
    assert p.channels == (
        "temperature_850",
        "temperature_500",
        "u_component_of_wind_850",
        "u_component_of_wind_500",
    )
    assert [p.error_of(c) for c in p.channels] == [1.0, 1.0, 2.0, 3.0]  # the channel key wins


def test_values_shape_per_kind():
    s = stations(times=[T0, "2021-01-01T01"], values=np.ones((2, 2)))  # (T, S) accepted when V = 1
    assert s.values.shape == (2, 2, 1)
    with pytest.raises(ObservationError, match=r"expected \(2, 2, 1\)"):
        stations(times=[T0, "2021-01-01T01"], values=np.ones((2, 3)))
    with pytest.raises(ObservationError, match="expected"):
        FullStateObserver(name="an", times=[T0], errors=1.0, values=np.ones((2, 3, 4, 5)))
    with pytest.raises(ObservationError, match="1-D"):
        TrackSwath(
            name="t",
            lon=[0],
            lat=[0],
            width_deg=5,
            times=[T0],
            variables=["x"],
            errors=1.0,
            values=np.ones((2, 2)),
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lat=[95.0, 0.0]), r"station 0 has latitude 95 outside \[-90, 90\]"),
        (dict(lat=[np.nan, 0.0]), "station 0 has a NaN"),
        (dict(lon=[0.0, np.inf]), "station 1 has a NaN or infinite"),
        (dict(lon=[0.0, 1.0, 2.0]), "3 longitudes but 2 latitudes"),
        (dict(lon=[], lat=[]), "has no station"),
        (dict(times=[]), "no observation time"),
        (dict(times=[T0, T0]), "duplicates"),
        (dict(times=["yesterday"]), "could not be read as dates"),
        (dict(errors=0.0), "positive finite std"),
        (dict(errors=-1.0), "positive finite std"),
        (dict(errors=float("nan")), "positive finite std"),
        (dict(errors={"2m_temperature": 1.0, "t2m": 2.0}), "'t2m', which it does not observe"),
        (dict(errors={}), "errors is empty"),
        (dict(variables=[]), "observes no variable"),
        (dict(variables=["a", "a"], errors=1.0), "duplicates"),
        (dict(name=""), "non-empty name"),
        (dict(names=["one"]), "1 names for 2 stations"),
        (dict(elevation=[1.0]), "1 elevations for 2 stations"),
        (dict(levels=[850, -1]), "positive pressures"),
    ],
)
def test_stations_validation(kwargs, match):
    with pytest.raises(ObservationError, match=match) as info:
        stations(**kwargs)
    assert "syn" in str(info.value) or kwargs.get("name") == ""


def test_validation_errors_carry_hints():
    with pytest.raises(ObservationError) as info:
        stations(lat=[95.0, 0.0])
    assert "swapped" in info.value.hint
    with pytest.raises(ObservationError) as info:
        stations(errors={"2m_temperature": 1.0, "t2m": 2.0})
    assert "2m_temperature" in info.value.hint


def test_profiles_need_levels_and_missing_errors_are_named():
    with pytest.raises(ObservationError, match="needs levels"):
        Profiles(name="p", lon=[0], lat=[0], times=[T0], variables=["temperature"], errors=1.0)
    with pytest.raises(ObservationError, match="no error is given for 'u_component_of_wind'"):
        stations(
            variables=["2m_temperature", "u_component_of_wind"], errors={"2m_temperature": 1.0}
        )


def test_wind_speed_channels_and_components():
    w = WindSpeedStations(name="anemo", lon=[0], lat=[0], times=[T0], errors={"wind_speed": 1.5})
    assert w.channels == ("10m_wind_speed",)
    assert w.components == (("10m_u_component_of_wind", "10m_v_component_of_wind"),)
    assert w.error_of("10m_wind_speed") == 1.5
    w = WindSpeedStations(
        name="a",
        lon=[0],
        lat=[0],
        times=[T0],
        levels=[850, 250],
        errors={"wind_speed_250": 3.0, "wind_speed": 1.0},
    )
    assert w.channels == ("wind_speed_850", "wind_speed_250")
    assert w.components[1] == ("u_component_of_wind_250", "v_component_of_wind_250")
    assert [w.error_of(c) for c in w.channels] == [1.0, 3.0]


def test_satellite_swath_validation_and_times():
    orbit = CircularOrbit(800, 75)
    sat = SatelliteSwath(
        name="polar",
        orbit=orbit,
        fov_radius_deg=5,
        samples_per_hour=60,
        start=T0,
        end="2021-01-01T02:00",
        variables=["temperature"],
        levels=[500],
        errors=0.1,
        tolerance="10min",
    )
    assert sat.times.size == 120 and sat.times[0] == np.datetime64(T0, "ns")
    assert sat.tolerance == np.timedelta64(600, "s")
    assert sat.channels == ("temperature_500",)
    base = dict(
        name="s",
        orbit=orbit,
        fov_radius_deg=5,
        samples_per_hour=60,
        start=T0,
        end="2021-01-01T02",
        variables=["t"],
        errors=1.0,
    )
    for bad, match in [
        (dict(orbit="polar"), "no ground_track"),
        (dict(fov_radius_deg=0), "must be positive"),
        (dict(fov_radius_deg=95), "below 90"),
        (dict(samples_per_hour=-1), "must be positive"),
        (dict(end=T0), "not after start"),
        (dict(tolerance="-5min"), "must be positive"),
    ]:
        with pytest.raises(ObservationError, match=match):
            SatelliteSwath(**{**base, **bad})


def test_track_full_and_latent_validation():
    with pytest.raises(ObservationError, match=r"width_deg must lie in \(0, 180\)"):
        TrackSwath(
            name="t", lon=[0, 10], lat=[0, 0], width_deg=0, times=[T0], variables=["x"], errors=1.0
        )
    with pytest.raises(ObservationError, match="vertex 1 has latitude"):
        TrackSwath(
            name="t",
            lon=[0, 10],
            lat=[0, 100],
            width_deg=5,
            times=[T0],
            variables=["x"],
            errors=1.0,
        )
    with pytest.raises(ObservationError, match="levels are given without variables"):
        FullStateObserver(name="a", times=[T0], levels=[850], errors=1.0)
    assert FullStateObserver(name="a", times=[T0], errors=1.0).resolve_channels(["x", "y"]) == (
        "x",
        "y",
    )
    lat = LatentObserver(name="z", times=[T0], errors=0.1)
    assert lat.on_latent and lat.kind == "latent"
    with pytest.raises(ObservationError, match="one number"):
        LatentObserver(name="z", times=[T0], errors={"latent": 0.1})


def test_equality_compares_arrays_with_nan():
    a = stations(values=[[np.nan, 1.0]])
    b = stations(values=[[np.nan, 1.0]])
    c = stations(values=[[np.nan, 2.0]])
    assert a == b and a != c and a != stations()
    assert "syn" in repr(a)


def test_observation_set_names_unique_and_lookup():
    s = ObservationSet(
        [stations(), WindSpeedStations(name="w", lon=[0], lat=[0], times=[T0], errors=1.0)]
    )
    assert len(s) == 2 and s.names == ("syn", "w") and s["w"].kind == "wind_speed_stations"
    with pytest.raises(ObservationError, match="unique, repeated: 'syn'"):
        ObservationSet([stations(), stations()])
    with pytest.raises(ObservationError, match="not an observer"):
        ObservationSet([stations(), "synop"])
    assert set(OBSERVER_KINDS) == {
        "stations",
        "profiles",
        "wind_speed_stations",
        "satellite_swath",
        "track_swath",
        "full_state",
        "latent",
    }


def test_inputs_are_copied_not_frozen():
    lat, values, times = (
        np.array([0.0, 1.0]),
        np.zeros((1, 2, 1)),
        np.array(["2021-01-01"], "datetime64[ns]"),
    )
    s = stations(lat=lat, values=values, times=times)
    lat[0], values[0, 0, 0], times[0] = 5.0, 1.0, np.datetime64("2022-01-01")  # still writable
    assert (
        s.lat[0] == 0.0 and s.values[0, 0, 0] == 0.0 and s.times[0] == np.datetime64("2021-01-01")
    )
