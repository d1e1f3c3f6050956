"""Frames of the time player on the globe (:class:`app.views.globe.FrameFeed`), without a browser.

The globe is rendered into a Bokeh document as a session would; a new time writes the frame into
the rendered image in place, and the image must be exactly what HoloViews' own update (the
datashader raster of the frame) draws. When the rendered raster is on another grid (zoomed in),
the frame goes through HoloViews instead.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytest.fixture
def rendered(truth_store):
    """``(state, globe, doc)``: a truth view rendered into a document that acts as the session's."""

    import holoviews as hv
    import panel as pn
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from app.state import AppState
    from app.views.globe import GlobeView

    pn.extension()
    hv.extension("bokeh", logo=False)
    state = AppState(truth=truth_store)
    globe = GlobeView(state)
    doc = Document()
    with set_curdoc(doc):
        doc.add_root(pn.panel(globe).get_root(doc))
        yield state, globe, doc


def _image_sources(globe):
    return [s for s in globe._feed._sources if s.document is not None]


def _render_fresh(state, time_index):
    """The image HoloViews draws for ``time_index`` in a new plot (its own document)."""

    import panel as pn
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from app.views.globe import GlobeView

    state.truth.time_index = time_index
    doc = Document()
    with set_curdoc(doc):
        globe = GlobeView(state)
        doc.add_root(pn.panel(globe).get_root(doc))
        source, = _image_sources(globe)
        return np.asarray(source.data["image"][0], dtype=np.float64), globe


def test_a_frame_is_written_in_place_and_equals_the_holoviews_raster(rendered):
    state, globe, _ = rendered
    truth = state.truth
    assert truth.times.size >= 3
    source, = _image_sources(globe)
    feed, before = globe._feed, np.asarray(source.data["image"][0], dtype=np.float64)
    rebuilds = globe.rebuilds
    truth.time_index = 2
    assert feed.patched == 1 and globe.rebuilds == rebuilds and globe._feed is feed
    assert feed.stream.time_index == 2  # a later HoloViews update (a zoom) draws this frame too
    shown = np.asarray(source.data["image"][0], dtype=np.float64)
    assert np.isfinite(shown).mean() > 0.5  # the globe's disk
    assert not np.allclose(shown, before, equal_nan=True)  # a new field
    # The same frame drawn from scratch by HoloViews and datashader: identical pixels.
    fresh, other = _render_fresh(state, 2)
    assert other._feed.patched == 0
    np.testing.assert_array_equal(shown, fresh)


def test_a_zoomed_raster_takes_the_holoviews_update(rendered):
    state, globe, _ = rendered
    source, = _image_sources(globe)
    feed = globe._feed
    # A raster on another grid, as after a zoom (datashader regridded the view).
    source.data.update(dw=[source.data["dw"][0] / 2])
    state.truth.time_index = 1
    assert feed.patched == 0  # not written in place
    # HoloViews drew the frame: the raster of the whole view again, with time 1's field.
    l, b, r, t = feed.image().bounds.lbrt()
    assert source.data["dw"][0] == pytest.approx(r - l)
    fresh, _ = _render_fresh(state, 1)
    np.testing.assert_array_equal(np.asarray(source.data["image"][0], dtype=np.float64), fresh)
    # Back on the grid: the next frame is written in place again.
    state.truth.time_index = 2
    assert feed.patched == 1


def test_a_rebuilt_plot_gets_its_own_feed(rendered):
    state, globe, _ = rendered
    old = globe._feed
    state.globe.central_longitude = 100.0  # a new point of view: a new plot
    assert globe._feed is not old and globe._feed.patched == 0
    state.truth.time_index = 3
    assert old.patched == 0
