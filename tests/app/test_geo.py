"""Display geometry: projections, visibility, line cutting, map resampling, coastline file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app import geo

ROOT = Path(__file__).resolve().parents[2]


def _unit(lon, lat):
    lam, phi = np.deg2rad(lon), np.deg2rad(lat)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def test_visible_is_the_near_hemisphere(rng):
    lon, lat = rng.uniform(-180, 180, 2000), np.rad2deg(np.arcsin(rng.uniform(-1, 1, 2000)))
    lon0, lat0 = 30.0, -20.0
    expected = _unit(lon, lat) @ _unit(lon0, lat0) > 0
    assert np.array_equal(geo.visible(lon, lat, central_longitude=lon0, central_latitude=lat0), expected)


@pytest.mark.parametrize("kind", ["orthographic", "flat"])
def test_project_then_unproject_is_the_identity_on_visible_points(rng, kind):
    projection = geo.make_projection(kind, central_longitude=-40.0, central_latitude=25.0)
    lon, lat = rng.uniform(0, 360, 500), rng.uniform(-89, 89, 500)
    x, y, ok = geo.project_points(lon, lat, projection)
    if kind == "orthographic":
        assert np.array_equal(ok, geo.visible(lon, lat, central_longitude=-40.0, central_latitude=25.0))
        assert np.all(np.hypot(x[ok], y[ok]) <= geo.EARTH_RADIUS_M * (1 + 1e-9))
    else:
        assert ok.all()
    lon2, lat2, ok2 = geo.unproject(x[ok], y[ok], projection)
    assert ok2.all()
    np.testing.assert_allclose(lat2, lat[ok], atol=1e-7)
    np.testing.assert_allclose(((lon2 - lon[ok] + 180) % 360) - 180, 0, atol=1e-7)


def test_unproject_off_the_globe_is_nan():
    ortho = geo.make_projection("orthographic", central_longitude=0, central_latitude=0)
    r = geo.EARTH_RADIUS_M
    lon, lat, ok = geo.unproject([0.0, 1.01 * r, 0.72 * r], [0.0, 0.0, 0.72 * r], ortho)
    assert ok.tolist() == [True, False, False] and np.isnan(lon[1:]).all()
    assert (lon[0], lat[0]) == (0.0, 0.0)
    flat = geo.make_projection("flat", central_longitude=150)
    lon, lat, ok = geo.unproject([0.0, 10.0, 185.0], [0.0, 95.0, 0.0], flat)
    assert ok.tolist() == [True, False, False] and lon[0] == pytest.approx(150.0)


def test_project_lines_never_crosses_the_far_side_or_the_map_edge():
    lon, lat = geo.coastlines()
    ortho = geo.make_projection("orthographic", central_longitude=120.0, central_latitude=-30.0)
    x, y = geo.project_lines(lon, lat, ortho)
    finite = np.isfinite(x)
    assert finite.sum() > 1000 and np.all(np.hypot(x[finite], y[finite]) <= geo.EARTH_RADIUS_M * (1 + 1e-9))
    # Every piece has at least two vertices; consecutive vertices are close (no chord across the disk).
    step = np.hypot(np.diff(x), np.diff(y))
    assert np.nanmax(step) < 0.3 * geo.EARTH_RADIUS_M
    starts = finite & ~np.concatenate([[False], finite[:-1]])
    ends = finite & ~np.concatenate([finite[1:], [False]])
    assert np.all(np.flatnonzero(ends) > np.flatnonzero(starts))
    flat = geo.make_projection("flat", central_longitude=150.0)
    x, y = geo.project_lines(lon, lat, flat)
    assert np.nanmax(np.abs(np.diff(x))) < 180.0  # cut where lines wrap around the map edge
    # A path entirely on the far side gives nothing (and no error).
    x, y = geo.project_lines(np.array([170.0, 175.0, 180.0]), np.zeros(3),
                             geo.make_projection("orthographic", central_longitude=0, central_latitude=0))
    assert x.size == 0


def test_map_sampler_matches_brute_force_nearest_cell(rng):
    lat = 90.0 - (np.arange(32) + 0.5) * 180 / 32
    lon = np.arange(64) * 360 / 64
    values = rng.normal(size=(32, 64))
    projection = geo.make_projection("orthographic", central_longitude=200.0, central_latitude=50.0)
    r = geo.EARTH_RADIUS_M * 1.03
    sampler = geo.MapSampler(projection, lat, lon, bounds=(-r, -r, r, r), shape=(40, 50))
    image = sampler.sample(values)
    assert image.shape == (40, 50)
    ys = r - (np.arange(40) + 0.5) * 2 * r / 40
    xs = -r + (np.arange(50) + 0.5) * 2 * r / 50
    X, Y = np.meshgrid(xs, ys)
    plon, plat, ok = geo.unproject(X.ravel(), Y.ravel(), projection)
    assert np.array_equal(np.isfinite(image).ravel(), ok)
    i = np.abs(plat[ok, None] - lat[None]).argmin(axis=1)
    dlon = np.abs(((plon[ok, None] - lon[None]) + 180) % 360 - 180)
    j = dlon.argmin(axis=1)
    np.testing.assert_array_equal(image.ravel()[ok], values[i, j])


def test_great_circle_densification_stays_on_the_great_circle():
    lon, lat = geo.great_circle([0.0, 90.0], [0.0, 0.0], step_deg=1.0)
    assert lon.size == 91 and np.allclose(lat, 0, atol=1e-12) and np.allclose(lon, np.arange(91))
    lon, lat = geo.great_circle([0.0, 180.0], [45.0, 45.0], step_deg=5.0)
    # The short way between opposite meridians at 45°N runs over the pole, in steps of <= 5°.
    assert np.all(np.isclose(lon, 0) | np.isclose(lon, 180)) and lat.min() >= 45 - 1e-9 and lat.max() > 85
    p = np.stack([np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon)), np.cos(np.deg2rad(lat)) * np.sin(np.deg2rad(lon)),
                  np.sin(np.deg2rad(lat))], axis=-1)
    steps = np.rad2deg(np.arccos(np.clip(np.sum(p[1:] * p[:-1], axis=-1), -1, 1)))
    assert steps.max() <= 5.0 + 1e-9 and np.isclose(steps.sum(), 90.0)


def test_coastline_file():
    path = geo.COASTLINE_FILE
    assert path.is_file() and path.stat().st_size < 300_000
    lon, lat = geo.coastlines()
    finite = np.isfinite(lon)
    assert finite.sum() > 4000 and np.all(np.abs(lon[finite]) <= 180) and np.all(np.abs(lat[finite]) <= 90)
    # No segment crosses or runs along the antimeridian.
    dlon = np.abs(np.diff(lon))
    assert np.nanmax(dlon) < 180
    both_on_edge = (np.abs(np.abs(lon[:-1]) - 180) < 1e-6) & (np.abs(np.abs(lon[1:]) - 180) < 1e-6)
    assert not both_on_edge.any()
    # Somewhere near Brussels (4.35°E, 50.85°N) lies the North Sea coast.
    d = np.hypot(lon[finite] - 3.0, lat[finite] - 51.3)
    assert d.min() < 1.5


def test_make_coastlines_decodes_and_cuts_topojson():
    from tests.scripts import load_file

    module = load_file(ROOT / "scripts" / "make_coastlines.py", "make_coastlines", cached=False)
    # Two arcs in a quantised frame: scale (0.5, 0.25), translate (-180, -90); deltas after the first.
    topology = {
        "transform": {"scale": [0.5, 0.25], "translate": [-180.0, -90.0]},
        "arcs": [[[10, 400], [2, 0], [0, 4]], [[0, 400], [0, 8], [720, 0], [-700, 0]]],
    }
    arcs = module.decode_arcs(topology)
    np.testing.assert_allclose(arcs[0], [[-175.0, 10.0], [-174.0, 10.0], [-174.0, 11.0]])
    np.testing.assert_allclose(arcs[1], [[-180.0, 10.0], [-180.0, 12.0], [180.0, 12.0], [-170.0, 12.0]])
    segments = module.coastline_segments(topology)
    # Arc 0 is a coastline; arc 1 runs along the antimeridian, then jumps across it (artificial
    # edges of a polygon cut at 180°), and its last leg, from 180° to -170°, crosses it too.
    assert len(segments) == 1
    np.testing.assert_allclose(segments[0], arcs[0])
    lon, lat = module.join_nan([arcs[0], arcs[0][::-1]])
    assert lon.size == 7 and np.isnan(lon[3]) and lon.dtype == np.float32


def test_units_and_colour_maps():
    from app import plots

    assert plots.units_label("m**2 s**-2") == "m² s⁻²" and plots.units_label("K") == "K"
    assert plots.field_style("10m_u_component_of_wind") == ("RdBu_r", True)  # diverging, centred on 0
    assert plots.field_style("2m_temperature") == ("coolwarm", False)
    assert plots.field_style("geopotential").cmap == "viridis"


def test_editable_points_leave_out_the_far_side():
    import holoviews.plotting.bokeh  # noqa: F401  (options need a plotting backend)
    import pandas as pd

    from app import plots

    table = pd.DataFrame({"id": [0, 1, 2], "name": ["a", "b", "c"], "lon": [10.0, 190.0, 30.0],
                          "lat": [0.0, 0.0, 60.0]})
    projection = geo.make_projection("orthographic", central_longitude=10.0, central_latitude=0.0)
    element, shown = plots.editable_points(table, projection, color="#000000", kind="stations")
    assert shown == [0, 2] and len(element) == 2
    np.testing.assert_allclose(element.dimension_values("x")[0], 0.0, atol=1e-6)


def test_footprint_image_indexes_the_palette_and_maps_it_without_swaths():
    """Cells take their observer's palette index plus one half (the first observer wins where
    swaths overlap); the colour map spans the palette even when no swath is drawn, and the empty
    image renders without HoloViews scanning an all-NaN array (which warns)."""

    import warnings

    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (a plotting backend for the renderer)

    from app import plots
    from app.state.drafts import Footprint

    palette = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    lat = 90.0 - (np.arange(8) + 0.5) * 180 / 8
    lon = np.arange(16) * 360 / 16
    projection = geo.make_projection("orthographic", central_longitude=0.0, central_latitude=0.0)
    r = geo.EARTH_RADIUS_M * 1.03
    sampler = geo.MapSampler(projection, lat, lon, bounds=(-r, -r, r, r), shape=(30, 30))
    a = np.zeros((8, 16), dtype=bool)
    a[2:5, :3] = True
    b = np.zeros((8, 16), dtype=bool)
    b[4:7, 1:5] = True
    footprints = [Footprint("a", "satellite_swath", palette[2], mask=a),
                  Footprint("s", "stations", palette[1]),  # no mask: not drawn
                  Footprint("b", "satellite_swath", palette[0], mask=b)]
    expected = np.where(a, 2.5, np.where(b, 0.5, np.nan))
    image = plots.footprint_image(footprints, sampler, palette)
    np.testing.assert_array_equal(image.dimension_values("observer", flat=False),
                                  sampler.sample(expected)[::-1])  # HoloViews stores rows bottom-up
    assert image.range("observer") == (0, 3)

    empty = plots.footprint_image(footprints[1:2], sampler, palette)
    assert np.isnan(empty.dimension_values("observer")).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        plot = hv.renderer("bokeh").get_plot(empty.opts(cmap=palette))
    mapper = plot.handles["color_mapper"]
    assert (mapper.low, mapper.high) == (0, 3)
