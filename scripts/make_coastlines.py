"""Build ``assets/coastlines/ne_110m_coastline.npz`` from Natural Earth 1:110m land (TopoJSON).

The app draws coastlines offline (nothing is downloaded at run time), so it ships a small file of
coastline segments. The source is the Natural Earth 1:110m land layer (public domain), as packed
in the npm package ``world-atlas`` (``land-110m.json``, TopoJSON)::

    cd /tmp && npm pack world-atlas && tar xzf world-atlas-*.tgz
    python scripts/make_coastlines.py /tmp/package/land-110m.json

TopoJSON stores each boundary once as an *arc*: a list of integer positions, the first absolute
and the others deltas, in a quantised frame ``x = q * scale + translate``. Every arc of the land
layer is a coastline (land polygons only border the sea), so the coastlines are the decoded arcs,
minus the artificial edges where Natural Earth cuts polygons: segments along the antimeridian
(both ends at ±180°), segments jumping across it, and the closure of Antarctica along the pole.

The decoder is written here (a dozen lines) rather than imported: the TopoJSON packages on PyPI
are encoders built on shapely/geopandas, far heavier than what decoding arcs needs.

Output: ``lon``, ``lat`` (float32 degrees, longitude in [-180, 180]), one array each, with NaN
between segments; ``source`` (a string naming the data).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from appa_engine.io.atomic import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "assets" / "coastlines" / "ne_110m_coastline.npz"


def decode_arcs(topology: dict) -> list[np.ndarray]:
    """Every arc of a quantised TopoJSON topology, as ``(n, 2)`` arrays of (lon, lat) degrees."""

    transform = topology.get("transform")
    arcs = []
    for arc in topology["arcs"]:
        q = np.asarray(arc, dtype=np.float64)[:, :2]
        if transform is not None:  # delta-encoded, quantised positions
            q = np.cumsum(q, axis=0) * transform["scale"] + transform["translate"]
        arcs.append(q)
    return arcs


def cut_artificial(line: np.ndarray, *, tol: float = 1e-6) -> list[np.ndarray]:
    """Split a line at its artificial segments (along or across the antimeridian, at the pole)."""

    lon, lat = line[:, 0], line[:, 1]
    on_edge = np.abs(np.abs(lon) - 180.0) < tol
    along = on_edge[:-1] & on_edge[1:]
    across = np.abs(np.diff(lon)) > 180.0
    polar = (lat[:-1] < -90 + 1e-3) & (lat[1:] < -90 + 1e-3)
    bad = np.flatnonzero(along | across | polar)
    pieces = np.split(line, bad + 1)
    # Bad segment k joins the last point of pieces[k] to the first of pieces[k + 1]: splitting
    # there drops it and keeps both ends. Single points left over carry no line.
    return [piece for piece in pieces if len(piece) >= 2]


def coastline_segments(topology: dict) -> list[np.ndarray]:
    segments = []
    for arc in decode_arcs(topology):
        segments.extend(cut_artificial(arc))
    return segments


def join_nan(segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One (lon, lat) pair of arrays with a NaN row between segments."""

    parts = []
    for seg in segments:
        parts.append(seg)
        parts.append(np.full((1, 2), np.nan))
    xy = np.concatenate(parts[:-1]) if parts else np.zeros((0, 2))
    return xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topojson", type=Path, help="land-110m.json from the npm package world-atlas")
    parser.add_argument("--output", type=Path, default=TARGET, help=f"output .npz (default: {TARGET})")
    args = parser.parse_args(argv)
    topology = json.loads(args.topojson.read_text())
    segments = coastline_segments(topology)
    lon, lat = join_nan(segments)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    source = "Natural Earth 1:110m land boundaries (public domain), via world-atlas 2"
    np.savez_compressed(buffer, lon=lon, lat=lat, source=np.array(source))
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"{len(segments)} segments, {np.isfinite(lon).sum()} points -> {args.output} "
          f"({args.output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
