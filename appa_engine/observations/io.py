"""Station locations from CSV and GeoJSON files (e.g. a network uploaded in the app).

CSV: a header row with columns ``lon``/``lat`` or ``longitude``/``latitude`` (any case, spaces
ignored), optionally ``name`` (or ``id``/``station``) and ``elevation`` (or ``elev``/``altitude``,
metres). GeoJSON: a ``FeatureCollection`` of ``Point`` features (``[lon, lat]`` or
``[lon, lat, elevation]``) whose ``properties`` may hold ``name`` and ``elevation``.

Both return a :class:`pandas.DataFrame` with columns ``name``, ``lon`` (in [0, 360)), ``lat``
and ``elevation`` (NaN when unknown); :func:`stations_from_file` builds a
:class:`~appa_engine.observations.observers.Stations` directly. Bad rows raise
:class:`~appa_engine.errors.ObservationError` naming the row (or feature) and the file line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from appa_engine.errors import ObservationError

__all__ = ["read_stations_csv", "read_stations_geojson", "read_stations", "stations_from_file"]

#: Default limits on what a file may hold.
MAX_STATIONS = 100_000
MAX_BYTES = 50 * 2**20

_LON = ("lon", "longitude", "lng", "long")
_LAT = ("lat", "latitude")
_NAME = ("name", "id", "station", "station_id", "icao")
_ELEV = ("elevation", "elev", "altitude", "alt", "height")


def _read_source(
    source: str | os.PathLike | bytes, *, max_bytes: int, label: str
) -> tuple[str, str]:
    """The text of ``source`` (a path, or the raw bytes of an upload) and a label for messages."""

    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ObservationError(
                f"the {label} is {len(data) / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.1f} MiB",
                hint="upload a smaller network, or raise max_bytes",
            )
        name = f"the uploaded {label}"
    else:
        path = Path(source)
        if not path.is_file():
            raise ObservationError(f"station file '{path}' does not exist", hint="check the path")
        size = path.stat().st_size
        if size > max_bytes:
            raise ObservationError(
                f"station file '{path}' is {size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.1f} MiB",
                hint="thin the network, or raise max_bytes",
            )
        data = path.read_bytes()
        name = f"'{path}'"
    try:
        return data.decode("utf-8-sig"), name
    except UnicodeDecodeError as e:
        raise ObservationError(f"{name} is not UTF-8 text ({e})", hint="save it as UTF-8") from e


def _number(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError("a boolean is not a number")
    return float(text.strip()) if isinstance(text, str) else float(text)


def _check_point(lon: float, lat: float, where: str) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ObservationError(
            f"{where}: the coordinates must be finite numbers, got ({lon}, {lat})",
            hint="drop or fix the row",
        )
    if abs(lat) > 90:
        raise ObservationError(
            f"{where}: latitude {lat:g} is outside [-90, 90]",
            hint="check that longitude and latitude are not swapped",
        )


def _frame(names, lon, lat, elevation):
    import pandas as pd

    lon = np.mod(np.asarray(lon, dtype=np.float64), 360.0)
    lon = np.where(lon >= 360.0, 0.0, lon)
    return pd.DataFrame(
        {
            "name": pd.Series(names, dtype=object),
            "lon": lon,
            "lat": np.asarray(lat, dtype=np.float64),
            "elevation": np.asarray(elevation, dtype=np.float64),
        }
    )


def _too_many(n: int, max_stations: int, name: str):
    raise ObservationError(
        f"{name} holds more than {max_stations} stations",
        hint="thin the network, or raise max_stations",
    )


def read_stations_csv(
    source: str | os.PathLike | bytes,
    *,
    max_stations: int = MAX_STATIONS,
    max_bytes: int = MAX_BYTES,
):
    """Stations from a CSV file (path or bytes); see the module docstring for the columns.

    Returns:
        A DataFrame with columns ``name``, ``lon``, ``lat``, ``elevation``, one row per station.
    """

    text, name = _read_source(source, max_bytes=max_bytes, label="CSV file")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise ObservationError(f"{name} is empty", hint="give a header row such as 'name,lon,lat'")
    keys = [h.strip().lower().replace(" ", "_") for h in header]

    def column(options: Sequence[str], required: bool) -> int | None:
        for option in options:
            if option in keys:
                return keys.index(option)
        if required:
            raise ObservationError(
                f"{name} has no {options[0]} column (found: {', '.join(h.strip() for h in header)})",
                hint=f"name the columns {'/'.join(_LON[:2])} and {'/'.join(_LAT)} (any case)",
            )
        return None

    i_lon, i_lat = column(_LON, True), column(_LAT, True)
    i_name, i_elev = column(_NAME, False), column(_ELEV, False)
    names, lons, lats, elevs = [], [], [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        where = f"{name}, row {len(lons) + 1} (line {line})"
        if len(lons) >= max_stations:
            _too_many(len(lons) + 1, max_stations, name)
        if len(row) < len(header):
            raise ObservationError(
                f"{where} has {len(row)} fields, the header {len(header)}",
                hint="fill every column (empty is fine)",
            )
        try:
            lon, lat = _number(row[i_lon]), _number(row[i_lat])
        except ValueError:
            raise ObservationError(
                f"{where}: the coordinates ({row[i_lon]!r}, {row[i_lat]!r}) are not numbers",
                hint="write decimal degrees, e.g. 4.35 and 50.85",
            ) from None
        _check_point(lon, lat, where)
        elev = math.nan
        if i_elev is not None and row[i_elev].strip():
            try:
                elev = _number(row[i_elev])
            except ValueError:
                raise ObservationError(
                    f"{where}: elevation {row[i_elev]!r} is not a number", hint="give metres"
                ) from None
        label = (
            row[i_name].strip()
            if i_name is not None and row[i_name].strip()
            else f"station {len(lons) + 1}"
        )
        names.append(label)
        lons.append(lon)
        lats.append(lat)
        elevs.append(elev)
    if not lons:
        raise ObservationError(
            f"{name} has a header but no station", hint="add one row per station"
        )
    return _frame(names, lons, lats, elevs)


def read_stations_geojson(
    source: str | os.PathLike | bytes,
    *,
    max_stations: int = MAX_STATIONS,
    max_bytes: int = MAX_BYTES,
):
    """Stations from a GeoJSON ``FeatureCollection`` of points (path or bytes).

    Returns:
        A DataFrame with columns ``name``, ``lon``, ``lat``, ``elevation``, one row per feature.
    """

    text, name = _read_source(source, max_bytes=max_bytes, label="GeoJSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ObservationError(
            f"{name} is not valid JSON: {e}", hint="export it again as GeoJSON"
        ) from e
    if (
        not isinstance(data, dict)
        or data.get("type") != "FeatureCollection"
        or not isinstance(data.get("features"), list)
    ):
        raise ObservationError(
            f"{name} is not a GeoJSON FeatureCollection",
            hint='expected {"type": "FeatureCollection", "features": [...]}',
        )
    features = data["features"]
    if len(features) > max_stations:
        _too_many(len(features), max_stations, name)
    if not features:
        raise ObservationError(f"{name} has no feature", hint="add one Point feature per station")
    names, lons, lats, elevs = [], [], [], []
    for k, feature in enumerate(features):
        where = f"{name}, feature {k}"
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") != "Point":
            kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
            raise ObservationError(
                f"{where} is a {kind}, not a Point", hint="give stations as Point features"
            )
        coords = geometry.get("coordinates")
        if not isinstance(coords, list) or len(coords) not in (2, 3):
            raise ObservationError(
                f"{where}: coordinates must be [lon, lat] or [lon, lat, elevation], got {coords!r}"
            )
        try:
            lon, lat = _number(coords[0]), _number(coords[1])
        except (TypeError, ValueError):
            raise ObservationError(f"{where}: coordinates {coords!r} are not numbers") from None
        _check_point(lon, lat, where)
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise ObservationError(f"{where}: properties must be an object")
        elev = props.get("elevation", coords[2] if len(coords) == 3 else None)
        try:
            elev = math.nan if elev is None else _number(elev)
        except (TypeError, ValueError):
            raise ObservationError(
                f"{where}: elevation {elev!r} is not a number", hint="give metres"
            ) from None
        label = props.get("name")
        names.append(str(label) if label not in (None, "") else f"station {k + 1}")
        lons.append(lon)
        lats.append(lat)
        elevs.append(elev)
    return _frame(names, lons, lats, elevs)


def read_stations(
    source: str | os.PathLike | bytes,
    *,
    format: str | None = None,
    max_stations: int = MAX_STATIONS,
    max_bytes: int = MAX_BYTES,
):
    """Stations from a CSV or GeoJSON file, by ``format`` (``"csv"``/``"geojson"``) or the suffix."""

    if format is None:
        if isinstance(source, (bytes, bytearray)):
            raise ObservationError(
                "the format of uploaded bytes is unknown", hint="pass format='csv' or 'geojson'"
            )
        suffix = Path(source).suffix.lower()
        format = {
            ".csv": "csv",
            ".txt": "csv",
            ".tsv": "csv",
            ".geojson": "geojson",
            ".json": "geojson",
        }.get(suffix)
        if format is None:
            raise ObservationError(
                f"cannot tell the format of '{source}' from its suffix",
                hint="use .csv or .geojson, or pass format=",
            )
    readers = {"csv": read_stations_csv, "geojson": read_stations_geojson}
    if format not in readers:
        raise ObservationError(
            f"unknown station file format {format!r}", hint="use 'csv' or 'geojson'"
        )
    return readers[format](source, max_stations=max_stations, max_bytes=max_bytes)


def stations_from_file(
    source: str | os.PathLike | bytes,
    *,
    name: str,
    variables: Sequence[str],
    errors: Any,
    times: Any,
    levels: Sequence[float] | None = None,
    format: str | None = None,
    max_stations: int = MAX_STATIONS,
    max_bytes: int = MAX_BYTES,
):
    """A :class:`~appa_engine.observations.observers.Stations` observer at the stations of a file."""

    from appa_engine.observations.observers import Stations

    table = read_stations(source, format=format, max_stations=max_stations, max_bytes=max_bytes)
    return Stations(
        name=name,
        lon=table["lon"].to_numpy(),
        lat=table["lat"].to_numpy(),
        names=tuple(table["name"]),
        elevation=table["elevation"].to_numpy(),
        times=times,
        variables=variables,
        levels=levels,
        errors=errors,
    )
