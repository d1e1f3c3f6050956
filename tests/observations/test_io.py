"""Station networks from CSV and GeoJSON files, and their validation messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from appa_engine.errors import ObservationError
from appa_engine.observations.io import (
    read_stations,
    read_stations_csv,
    read_stations_geojson,
    stations_from_file,
)


def test_csv_with_any_case_and_optional_columns(tmp_path):
    path = tmp_path / "net.csv"
    path.write_text(
        "Name,Longitude,LATITUDE,Elevation\nBrussels,4.35,50.85,76\nSantiago,-70.65,-33.45,\n\n"
    )
    table = read_stations_csv(path)
    assert table["name"].tolist() == ["Brussels", "Santiago"]
    np.testing.assert_allclose(table["lon"], [4.35, 289.35])
    np.testing.assert_allclose(table["lat"], [50.85, -33.45])
    assert table["elevation"].iloc[0] == 76.0 and np.isnan(table["elevation"].iloc[1])


def test_csv_from_bytes_semicolons_and_no_names():
    table = read_stations_csv(b"lat;lon\n10;20\n-5;359.5\n")
    assert table["name"].tolist() == ["station 1", "station 2"]
    np.testing.assert_allclose(table["lon"], [20.0, 359.5])
    assert np.isnan(table["elevation"]).all()


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,x,y\na,1,2\n", "has no lon column"),
        (
            "lon,lat\n1,2\nabc,3\n",
            r"row 2 \(line 3\): the coordinates \('abc', '3'\) are not numbers",
        ),
        ("lon,lat\n1,95\n", r"row 1 \(line 2\): latitude 95 is outside \[-90, 90\]"),
        ("lon,lat\n1,nan\n", "must be finite numbers"),
        ("lon,lat,elevation\n1,2,high\n", "elevation 'high' is not a number"),
        ("lon,lat,name\n1,2\n", "has 2 fields, the header 3"),
        ("lon,lat\n", "has a header but no station"),
        ("", "is empty"),
    ],
)
def test_csv_bad_rows_are_named(text, match):
    with pytest.raises(ObservationError, match=match):
        read_stations_csv(text.encode())


def test_csv_limits():
    text = "lon,lat\n" + "1,2\n" * 11
    with pytest.raises(ObservationError, match="more than 10 stations") as info:
        read_stations_csv(text.encode(), max_stations=10)
    assert "max_stations" in info.value.hint
    assert len(read_stations_csv(text.encode(), max_stations=11)) == 11
    with pytest.raises(ObservationError, match="over the limit"):
        read_stations_csv(text.encode(), max_bytes=10)


def feature(lon, lat, **props):
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": props,
    }


def test_geojson_points(tmp_path):
    data = {
        "type": "FeatureCollection",
        "features": [feature(-3.7, 40.4, name="Madrid", elevation=667), feature(139.7, 35.7)],
    }
    data["features"][1]["geometry"]["coordinates"].append(40.0)
    path = tmp_path / "net.geojson"
    path.write_text(json.dumps(data))
    table = read_stations(path)
    assert table["name"].tolist() == ["Madrid", "station 2"]
    np.testing.assert_allclose(table["lon"], [356.3, 139.7])
    np.testing.assert_allclose(table["elevation"], [667.0, 40.0])


@pytest.mark.parametrize(
    "data, match",
    [
        ({"type": "Feature"}, "not a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection", "features": []}, "has no feature"),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    feature(0, 0),
                    {
                        "type": "Feature",
                        "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
                    },
                ],
            },
            "feature 1 is a LineString, not a Point",
        ),
        (
            {"type": "FeatureCollection", "features": [feature(0, -91)]},
            r"feature 0: latitude -91 is outside",
        ),
        (
            {"type": "FeatureCollection", "features": [feature("east", 0)]},
            "feature 0: coordinates .* are not numbers",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1]}}
                ],
            },
            r"must be \[lon, lat\]",
        ),
    ],
)
def test_geojson_bad_features_are_named(data, match):
    with pytest.raises(ObservationError, match=match):
        read_stations_geojson(json.dumps(data).encode())


def test_geojson_syntax_and_format_detection(tmp_path):
    with pytest.raises(ObservationError, match="not valid JSON"):
        read_stations_geojson(b"{oops")
    with pytest.raises(ObservationError, match="format of uploaded bytes"):
        read_stations(b"lon,lat\n1,2\n")
    (tmp_path / "net.xlsx").write_bytes(b"")
    with pytest.raises(ObservationError, match="cannot tell the format"):
        read_stations(tmp_path / "net.xlsx")
    with pytest.raises(ObservationError, match="does not exist"):
        read_stations(tmp_path / "missing.csv")


def test_stations_from_file(tmp_path):
    path = tmp_path / "net.csv"
    path.write_text("name,lon,lat,elevation\nA,10,20,5\nB,-10,-20,\n")
    obs = stations_from_file(
        path, name="net", variables=["2m_temperature"], errors=0.5, times=["2021-01-01T00"]
    )
    assert obs.names == ("A", "B") and obs.lon.tolist() == [10.0, 350.0] and obs.elevation[0] == 5.0
    assert obs.channels == ("2m_temperature",)
