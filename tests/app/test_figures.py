"""The PNG of the globe (:mod:`app.figures`) draws what the interactive globe draws.

A session on the mock truth with three observers (a satellite, a drawn track, a station network)
is rendered through :func:`app.figures.current_view_figure`; pixels of the PNG are then sampled
where the map's own projection puts a swath cell, a track, a station or the meteogram's point
(geometry from :mod:`app.geo`, pixels from the axes' data transform), and compared with colours
computed by hand: a swath cell is its observer's palette colour at the globe's opacity over
what lies beneath (white, or the field of the same figure drawn without footprints).

The time players of the sidebar are checked here too: never an empty range (Bokeh's E-1021).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

FRONT = (10.0, 35.0)  # the default point of view (GlobeState), so the centre of the disk
BEHIND = (190.0, -35.0)  # its antipode
WIDTH = 640  # pixels of the PNGs (the app draws 900: smaller is faster; a grid cell still spans 8-20)


@pytest.fixture(scope="module")
def state(truth_store):
    """A session on the mock truth with a satellite (1 hour of track), a drawn track and two stations."""

    from app.state import AppState

    state = AppState(truth=truth_store)
    editor = state.editor
    satellite = editor.add_observer("satellite_swath")
    satellite.param.update(start_hour=0, end_hour=0, fov_radius_deg=8.0)
    editor.add_observer("track_swath")
    assert editor.set_track([-20.0, 20.0, 40.0], [20.0, 25.0, 55.0])
    editor.add_observer("stations")
    assert editor.add_stations([FRONT[0], BEHIND[0]], [FRONT[1], BEHIND[1]])
    assert [fp.label for fp in editor.footprints()] == ["satellite", "track", "stations"]
    return state


@pytest.fixture()
def globe(state):
    """The session's globe settings, restored after each test."""

    g = state.globe
    saved = {k: getattr(g, k) for k in g.param if k != "name"}
    yield g
    g.param.update(**saved)
    state.view = "truth"


def _render(state):
    """``(figure, rgb)``: the current view and its PNG as an ``(H, W, 3)`` int array."""

    from PIL import Image

    from app.figures import current_view_figure

    fig, filename = current_view_figure(state, width_px=WIDTH)
    assert filename.endswith(".png") and round(fig.get_figwidth() * fig.dpi) == WIDTH
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)  # as current_view_png does
    rgb = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.int64)
    assert rgb.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    return fig, rgb


def _pixels(fig, lon, lat):
    """``(rows, cols, ok)``: where lon/lat land in the PNG, through the map's projection (app.geo)
    and the axes' data transform; ``ok`` False behind the globe."""

    from app import geo

    ax = fig.axes[0]
    x, y, ok = geo.project_points(np.atleast_1d(lon), np.atleast_1d(lat), ax.projection)
    xy = ax.transData.transform(np.column_stack([np.where(ok, x, 0.0), np.where(ok, y, 0.0)]))
    height = round(fig.get_figheight() * fig.dpi)
    return (height - xy[:, 1]).astype(int), xy[:, 0].astype(int), ok


def _rgb(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.round(np.asarray(to_rgb(colour)) * 255).astype(np.int64)


def _owner_of_cells(footprints) -> np.ndarray:
    """Index (into ``footprints``) of the observer each grid cell is coloured by: the first whose
    swath covers it (-1: none)."""

    owner = None
    for k, fp in enumerate(footprints):
        if fp.mask is None:
            continue
        if owner is None:
            owner = np.full(fp.mask.shape, -1)
        owner[fp.mask & (owner < 0)] = k
    return owner


def _quiet(rgb, rows, cols, radius=2) -> np.ndarray:
    """Whether the ``(2r+1)²`` neighbourhood of each pixel is one flat colour (no line, no edge)."""

    out = []
    for r, c in zip(rows, cols):
        patch = rgb[r - radius:r + radius + 1, c - radius:c + radius + 1].reshape(-1, 3)
        out.append(bool((np.ptp(patch, axis=0) <= 2).all()))
    return np.asarray(out)


def _cell_centres(state, owner):
    grid = state.editor.grid
    i, j = np.nonzero(owner >= 0)
    return np.asarray(grid.longitude)[j], np.asarray(grid.latitude)[i], owner[i, j]


def _in_map(fig, mask: np.ndarray) -> np.ndarray:
    """``mask`` (over the PNG's pixels) kept only inside the map's axes (not the colour bar, the
    title or the legend)."""

    height = round(fig.get_figheight() * fig.dpi)
    bbox = fig.axes[0].get_window_extent()
    inside = np.zeros_like(mask)
    rows, cols = slice(int(height - bbox.y1), int(height - bbox.y0)), slice(int(bbox.x0), int(bbox.x1))
    inside[rows, cols] = mask[rows, cols]
    return inside


def _below_map(fig, rgb: np.ndarray) -> np.ndarray:
    """The PNG's rows below the map (the legend's band)."""

    height = round(fig.get_figheight() * fig.dpi)
    return rgb[int(height - fig.axes[0].get_window_extent().y0):]


@pytest.mark.parametrize("projection", ["orthographic", "flat"])
def test_swath_cells_have_their_observer_colour_over_white(state, globe, projection):
    """Field off: a swath cell is 0.35 × its observer's colour + 0.65 × white, for both swaths."""

    from app.figures import FOOTPRINT_ALPHA

    globe.param.update(projection=projection, show_field=False, show_graticule=False, show_coastlines=False)
    fig, rgb = _render(state)
    footprints = state.editor.footprints()
    lon, lat, who = _cell_centres(state, _owner_of_cells(footprints))
    rows, cols, ok = _pixels(fig, lon, lat)
    quiet = np.zeros_like(ok)
    quiet[ok] = _quiet(rgb, rows[ok], cols[ok])
    for k in (0, 1):  # the satellite and the drawn track
        sel = quiet & (who == k)
        assert sel.sum() >= 3, f"too few clean cells of {footprints[k].label}: {sel.sum()}"
        expected = FOOTPRINT_ALPHA * _rgb(footprints[k].color) + (1 - FOOTPRINT_ALPHA) * 255
        np.testing.assert_allclose(rgb[rows[sel], cols[sel]], np.broadcast_to(expected, (sel.sum(), 3)), atol=3)
    # Outside every swath (and off the lines), the map stays white.
    owner = _owner_of_cells(footprints)
    i, j = np.nonzero(owner < 0)
    grid = state.editor.grid
    rows, cols, ok = _pixels(fig, np.asarray(grid.longitude)[j], np.asarray(grid.latitude)[i])
    clean = np.zeros_like(ok)
    clean[ok] = _quiet(rgb, rows[ok], cols[ok])
    assert clean.sum() > 20 and (rgb[rows[clean], cols[clean]] >= 253).all()


def test_swath_cells_blend_over_the_field_and_switch_off(state, globe):
    """Field on: with footprints, a swath pixel is 0.35 × colour + 0.65 × the same pixel without
    footprints (the field beneath); elsewhere both images are equal."""

    from app.figures import FOOTPRINT_ALPHA

    globe.param.update(show_graticule=False, show_coastlines=False)
    fig, with_cells = _render(state)
    globe.show_footprints = False
    _, without = _render(state)
    footprints = state.editor.footprints()
    lon, lat, who = _cell_centres(state, _owner_of_cells(footprints))
    rows, cols, ok = _pixels(fig, lon, lat)
    quiet = np.zeros_like(ok)
    quiet[ok] = _quiet(without, rows[ok], cols[ok]) & _quiet(with_cells, rows[ok], cols[ok])
    assert quiet.sum() >= 5
    colours = np.stack([_rgb(footprints[k].color) for k in who[quiet]])
    expected = FOOTPRINT_ALPHA * colours + (1 - FOOTPRINT_ALPHA) * without[rows[quiet], cols[quiet]]
    np.testing.assert_allclose(with_cells[rows[quiet], cols[quiet]], expected, atol=3)
    # Switched off, the swath cells are gone: the image differs only at those cells.
    changed = (np.abs(with_cells - without).sum(axis=-1) > 6)
    assert changed.sum() > 500


def test_tracks_and_stations_are_drawn_in_their_colour_on_the_near_side_only(state, globe):
    """Field and swath cells off: the ground track and the drawn track run through pixels of their
    colour, the station in front is drawn; what lies behind the globe is not."""

    from app import geo

    globe.param.update(show_field=False, show_footprints=False, show_graticule=False, show_coastlines=False)
    fig, rgb = _render(state)
    for fp in state.editor.footprints()[:2]:
        lon, lat = fp.lines
        rows, cols, ok = _pixels(fig, lon, lat)
        assert ok.sum() >= 5, fp.label
        colour = _rgb(fp.color)
        # Each visible vertex has a pixel of the line's colour (0.9 opaque over white) within 1 px.
        target = 0.9 * colour + 0.1 * 255
        near = [np.abs(rgb[r - 1:r + 2, c - 1:c + 2] - target).sum(axis=-1).min() for r, c in zip(rows[ok], cols[ok])]
        assert np.median(near) < 40 and np.mean(np.asarray(near) < 60) > 0.8, (fp.label, near)
    # The satellite's hour of track has a part behind the globe; no pixel of its colour lies there:
    # every orange pixel of the map is within a few pixels of a segment between visible vertices.
    fp = state.editor.footprints()[0]
    assert not geo.visible(*fp.lines, central_longitude=globe.central_longitude,
                           central_latitude=globe.central_latitude).all()
    rows, cols, ok = _pixels(fig, *fp.lines)
    both = ok[:-1] & ok[1:]
    t = np.linspace(0.0, 1.0, 33)[:, None]
    seg_r = (rows[:-1][both] * (1 - t) + rows[1:][both] * t).ravel()
    seg_c = (cols[:-1][both] * (1 - t) + cols[1:][both] * t).ravel()
    line = _in_map(fig, np.abs(rgb - (0.9 * _rgb(fp.color) + 0.1 * 255)).sum(axis=-1) < 60)
    pr, pc = np.nonzero(line)
    assert pr.size > 50
    distance = np.min(np.hypot(pr[:, None] - seg_r[None], pc[:, None] - seg_c[None]), axis=1)
    assert distance.max() < 4

    # The stations: the one in front is drawn (its pixels all at its place), the one behind is not.
    stations = state.editor.footprints()[2]
    rows, cols, ok = _pixels(fig, [FRONT[0], BEHIND[0]], [FRONT[1], BEHIND[1]])
    assert ok.tolist() == [True, False]
    purple = _in_map(fig, np.abs(rgb - _rgb(stations.color)).sum(axis=-1) < 30)  # not the legend's marker
    pr, pc = np.nonzero(purple)
    assert 10 < pr.size < 400
    assert np.hypot(pr - rows[0], pc - cols[0]).max() < 8  # all at the station in front


def test_legend_names_every_observer_in_its_colour(state, globe):
    from matplotlib.colors import to_hex

    from app.figures import FOOTPRINT_ALPHA

    fig, rgb = _render(state)
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["satellite", "track (drawn track)", "stations"]
    handles = legend.legend_handles
    colours = [fp.color for fp in state.editor.footprints()]
    assert to_hex(handles[0].get_edgecolor()) == colours[0] and to_hex(handles[1].get_edgecolor()) == colours[1]
    assert to_hex(handles[2].get_markerfacecolor()) == colours[2]
    # The legend is drawn below the map: its band holds the swaths' fill (their colour at the
    # globe's opacity over white) and the stations' marker.
    band = _below_map(fig, rgb)
    fills = [FOOTPRINT_ALPHA * _rgb(c) + (1 - FOOTPRINT_ALPHA) * 255 for c in colours[:2]] + [_rgb(colours[2])]
    for colour, fill in zip(colours, fills):
        assert (np.abs(band - fill).sum(axis=-1) < 12).sum() > 20, colour


def test_results_view_marks_the_meteogram_point(state, globe):
    """A run's output (here the truth as a 2-member ensemble): the cross at the selected point,
    none when the point is behind the globe; the swaths and stations are drawn there too."""

    from app import adapter

    truth = state.truth.dataset
    ensemble = truth.expand_dims(member=2).transpose("member", "time", ...)
    output = adapter.RunOutput(dataset=ensemble, truth=truth, scenario=None, seconds=0.0)
    state.results.set_output(output)
    state.view = "results"
    globe.param.update(show_graticule=False, show_coastlines=False)
    assert state.results.select_point(*FRONT)
    fig, rgb = _render(state)
    assert fig.axes[0].get_title().startswith("Ensemble mean")
    (row,), (col,), ok = _pixels(fig, *state.results.point)
    assert ok
    dark = rgb.sum(axis=-1) < 150  # the cross is #111111; no colour of the field or the observers is that dark
    # An "x": its diagonals are dark, its vertical and horizontal arms are not.
    assert dark[row - 5, col - 5] and dark[row + 5, col + 5] and dark[row - 5, col + 5] and dark[row + 5, col - 5]
    assert not dark[row - 7, col] and not dark[row, col + 7]
    assert _in_map(fig, dark).sum() > 60
    assert any(t.get_text().startswith("meteogram at") for t in fig.legends[0].get_texts())

    assert state.results.select_point(*BEHIND)
    fig, rgb = _render(state)
    assert _in_map(fig, rgb.sum(axis=-1) < 150).sum() == 0
    assert not any(t.get_text().startswith("meteogram") for t in fig.legends[0].get_texts())


def test_time_players_never_have_an_empty_range(truth_store):
    """Before any run the results have one time (bounds (0, 0)): the player keeps end > start and
    is disabled; with an output it spans the output's times, and it and the state follow each other."""

    import panel as pn

    from app import adapter
    from app.state import AppState
    from app.views.controls import ResultsControls, TruthControls

    pn.extension()
    state = AppState(truth=truth_store)
    results = ResultsControls(state)._player
    truth = TruthControls(state.truth)._player
    assert (results.start, results.end, results.disabled) == (0, 1, True)
    n = state.truth.times.size
    assert (truth.start, truth.end, truth.disabled) == (0, n - 1, False)
    truth.value = 2
    assert state.truth.time_index == 2
    state.truth.time_index = 1
    assert truth.value == 1

    ds = state.truth.dataset
    state.results.set_output(adapter.RunOutput(dataset=ds.expand_dims(member=1).transpose("member", "time", ...),
                                               truth=ds, scenario=None, seconds=0.0))
    assert (results.start, results.end, results.disabled) == (0, n - 1, False)
    results.value = n - 1
    assert state.results.time_index == n - 1
    state.results.clear()
    assert (results.end, results.value, results.disabled) == (1, 0, True)
