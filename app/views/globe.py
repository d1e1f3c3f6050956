"""The globe: truth or results field, coastlines, graticule, observers, and the drawing tools.

It shows one of two views (``state.view``):

- **truth**: the truth field and the drawing tools of the observer being edited;
- **results**: a layer of the run's ensemble (mean, spread, a member, the truth, or the error
  mean − truth, :meth:`~app.state.results.ResultsState.field`) with a colour range fixed over time
  (diverging and centred on 0 for the error, sequential for the spread), the observers'
  footprints, and a tap that picks the point of the meteogram
  (:meth:`~app.state.results.ResultsState.select_point`), marked on the globe.

The plot is rebuilt when the view, the projection, the point of view, the variable/level/layer or
the observer being edited change (its fixed geometry, coastlines and graticule, is projected for
one point of view); the observers' geometry updates in place through a
:class:`holoviews.streams.Params` stream on ``editor.revision``, and a frame of the time player
(``truth.time_index``; ``results.time_index`` and ``results.member``) is one resampling of a 2-D
field written into the rendered image (:class:`FrameFeed`), not a new plot.

Everything is drawn in map coordinates (see :mod:`app.plots`). Drawing: the stations of the
network being edited are a point source with a ``PointDraw`` stream (click to add, drag to move,
select and press Backspace to delete); a drawn track is a path source with a ``PolyDraw`` stream
(press and hold to start, tap to add vertices, press again to finish). Their subscribers map
what was drawn back to lon/lat (:func:`app.geo.unproject`: NaN off the globe) and pass it to the
editor, which validates it; a click off the globe is refused there and the plot redrawn, which
removes the glyph the browser had kept.
"""

from __future__ import annotations

import weakref
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.core.validation import silence
from bokeh.core.validation.warnings import FIXED_SIZING_MODE
from holoviews.operation.datashader import rasterize

from app import geo, plots
from app.state import AppState, StationsDraft, TrackDraft
from app.state.drafts import PALETTE
from app.views.base import NoticeAlert, change_models

__all__ = ["GlobeView", "FrameFeed"]

# The plot is sized by its frame (frame_width/frame_height), which Bokeh's validator does not count.
silence(FIXED_SIZING_MODE, True)

_HINTS = {
    "stations": "**Click** on the globe to add a station, **drag** one to move it, select one (tap) and press "
                "**Backspace** to delete it.",
    "track": "**Press and hold** to start a track, **tap** to add vertices, **press again** to finish it "
             "(Esc cancels). Drawing a new track replaces the old one.",
    "none": "Select or add an observer in the *Observations* tab to draw on the globe.",
    "results": "**Click** on the globe for a meteogram of that point (*Results* tab). Switch the sidebar back "
               "to **Truth (draw)** to edit the observers.",
}

#: Pixels of the field image per pixel of the plot's frame. A grid cell of the default model spans
#: ~20 frame pixels, so half the resolution looks the same, and a frame of the time player sends
#: 300 × 300 float32 values (360 kB) instead of 600 × 600 float64 (2.9 MB): measured on 2 loaded
#: cores, the websocket send alone took ~0.3 s at full resolution. A fixed size also keeps hi-DPI
#: browsers from asking for 4× the pixels.
FIELD_PIXEL_RATIO = 0.5

#: Titles of the results layers (the member's number is added).
LAYER_TITLES = {
    "mean": "Ensemble mean",
    "spread": "Ensemble spread",
    "member": "Member",
    "truth": "Truth",
    "error": "Error (mean − truth)",
}
#: Colour map of the spread (sequential from 0) and of the error (diverging around 0).
SPREAD_CMAP = "YlOrRd"
ERROR_CMAP = "RdBu_r"


#: The frame a field layer shows; its DynamicMap is keyed on these values.
TruthFrame = hv.streams.Stream.define("TruthFrame", time_index=0)
ResultsFrame = hv.streams.Stream.define("ResultsFrame", time_index=0, member=0)


class FrameFeed:
    """Feeds the frames of the time player (and the member shown) to a rasterized field layer.

    HoloViews updates a frame by evaluating the globe's whole overlay again (field, footprints,
    coastlines, graticule, observers, marker): 100-150 ms of server time per frame on 2 cores, and
    the page's layout computed again (``bench/app_latency.py``). Yet on a globe that is not zoomed
    in, the rendered raster *is* the resampled image: same pixels, same bounds (datashader's regrid
    onto its own grid changes nothing). So :meth:`show` writes the new pixels straight into the
    data source(s) of the rendered image glyph, which the plot hook :meth:`hook` collected (no
    HoloViews element is built: one gather per frame), and only updates the stream's values
    silently, so that a later HoloViews update (a zoom) draws the same frame. When the rendered
    raster is on another grid (zoomed in: datashader regrids the view), :meth:`show` falls back
    to HoloViews (a stream event).

    Arguments:
        stream: The stream (:data:`TruthFrame` or :data:`ResultsFrame`) keying the field's DynamicMap.
        pixels: Returns the current frame on the map's pixels (:func:`app.plots.field_pixels`).
        bounds: ``(x0, y0, x1, y1)``: the map coordinates the pixels cover.
        label, units: Name and units of the field (colour bar title).
    """

    def __init__(self, stream: hv.streams.Stream, pixels: Callable[[], np.ndarray],
                 bounds: tuple[float, float, float, float], *, label: str, units: str):
        self.stream = stream
        self.pixels = pixels
        self.bounds = tuple(bounds)
        self.label, self.units = label, units
        self._sources: weakref.WeakSet = weakref.WeakSet()
        self.patched = 0  # frames written in place (the rest went through HoloViews)

    def image(self, **_key) -> hv.Image:
        """The current frame's ``hv.Image`` over the whole map (the DynamicMap's callback)."""

        return plots.field_image(self.pixels(), self.bounds, label=self.label, units=self.units)

    def hook(self, plot, element) -> None:
        """HoloViews plot hook of the rasterized field: remember the image glyph's data source."""

        source = plot.handles.get("source")
        if source is not None:
            self._sources.add(source)

    def show(self, **key) -> None:
        """Show the frame ``key`` (the stream's parameters, e.g. ``time_index=3``)."""

        if key == {k: getattr(self.stream, k) for k in key}:
            return
        sources = [s for s in self._sources if s.document is not None]
        self.stream.update(**key)  # the callback reads the state; the stream keys its cache
        values = self.pixels() if sources else None
        if values is None or not all(_same_grid(s, self.bounds, values.shape) for s in sources):
            self.stream.event(**key)
            return
        # Bokeh's image rows run south to north (the pixels' row 0 is at the top).
        values = np.ascontiguousarray(values[::-1])
        change_models(sources, lambda source: source.data.update(image=[values]))
        self.patched += 1


def _same_grid(source, lbrt: tuple[float, float, float, float], shape: tuple[int, ...]) -> bool:
    """Whether the rendered image in ``source`` has these bounds and this shape."""

    data = source.data
    try:
        x, y, dw, dh, shown = data["x"][0], data["y"][0], data["dw"][0], data["dh"][0], data["image"][0]
    except (KeyError, IndexError):
        return False
    l, b, r, t = lbrt
    scale = max(abs(r - l), abs(t - b))
    return np.shape(shown) == tuple(shape) and np.allclose([x, y, dw, dh], [l, b, r - l, t - b], rtol=0,
                                                           atol=1e-9 * scale)


class GlobeView(pn.viewable.Viewer):
    """The globe of one session (reads and edits an :class:`AppState`)."""

    def __init__(self, state: AppState, *, size: int = 600, **params):
        super().__init__(**params)
        self.state = state
        self.size = size
        self.rebuilds = 0  # plots built so far (a frame of the player must not add one)
        self._shown_ids: list[int] = []
        self._footprint_cache: tuple[int, list] | None = None
        self._sampler_cache: dict[tuple, geo.MapSampler] = {}
        self._title = pn.pane.Markdown("", margin=(0, 10), sizing_mode="stretch_width")
        self._pane = pn.pane.HoloViews(None, linked_axes=False, margin=0)
        self._box = pn.Column(self._pane, margin=0)  # sized to hold the frame, colour bar and toolbar
        self._projection = self.projection  # of the plot shown (drawn points are mapped back with it)
        self._hint = pn.pane.Markdown("", margin=(0, 10), styles={"color": "#555", "font-size": "0.92em"},
                                      sizing_mode="stretch_width")
        # Viewers have no `visible`: the layouts around them are shown or hidden.
        self._notice = pn.Column(NoticeAlert(state.editor, "draw_notice"), margin=0, sizing_mode="stretch_width")
        self._results_notice = pn.Column(NoticeAlert(state.results, "notice"), margin=0,
                                         sizing_mode="stretch_width")
        g, t, e, r = state.globe, state.truth, state.editor, state.results
        # Shared by every rebuilt plot (each plot subscribes while it is shown).
        self._feed: FrameFeed | None = None  # of the field shown
        self._point_stream = hv.streams.Params(r, ["point"])
        self._revision_stream = hv.streams.Params(e, ["revision"])
        g.param.watch(self._rebuild, ["projection", "central_longitude", "central_latitude", "show_field",
                                      "show_coastlines", "show_graticule", "show_footprints"])
        state.param.watch(self._rebuild, ["view"])
        t.param.watch(self._if_view("truth", self._rebuild), ["dataset", "variable", "level"])
        t.param.watch(self._if_view("truth", self._update_title), ["time_index"])
        t.param.watch(self._if_view("truth", lambda *_: self._show_frame(time_index=t.time_index)), ["time_index"])
        e.param.watch(self._if_view("truth", self._rebuild), ["active", "drafts"])
        r.param.watch(self._if_view("results", self._rebuild), ["revision", "layer", "variable", "level"])
        r.param.watch(self._if_view("results", self._update_title), ["time_index", "member"])
        r.param.watch(self._if_view("results", lambda *_: self._show_frame(time_index=r.time_index, member=r.member)),
                      ["time_index", "member"])
        self._layout = pn.Column(self._title, self._box, self._notice, self._results_notice, self._hint, margin=0)
        self._rebuild()

    def __panel__(self):
        return self._layout

    # -- helpers --------------------------------------------------------------------------------

    @property
    def view(self) -> str:
        """What the globe shows: ``"results"`` when asked and a result exists, else ``"truth"``."""

        return "results" if self.state.view == "results" and self.state.results.available else "truth"

    def _if_view(self, view: str, fn):
        """``fn``, called only while the globe shows ``view`` (for ``"results"``: while the results
        view is asked for, so that a cleared result takes the globe back to the truth)."""

        def guarded(*events):
            if (self.state.view if view == "results" else self.view) == view:
                fn(*events)
        return guarded

    @property
    def projection(self):
        g = self.state.globe
        return geo.make_projection(g.projection, central_longitude=g.central_longitude,
                                   central_latitude=g.central_latitude)

    def _extent(self, projection) -> tuple[tuple[float, float, float, float], dict]:
        """Map bounds and plot size of the current projection."""

        if self.state.globe.projection == "orthographic":
            r = geo.EARTH_RADIUS_M * 1.03
            return (-r, -r, r, r), dict(frame_width=self.size, frame_height=self.size)
        (x0, x1), (y0, y1) = projection.x_limits, projection.y_limits
        return (x0, y0, x1, y1), dict(frame_width=int(self.size * 1.1), frame_height=int(self.size * 0.55))

    def _sampler(self, projection, latitude, longitude) -> geo.MapSampler:
        """The resampler of a grid (latitudes, longitudes) onto the field image's pixels (cached)."""

        bounds, size = self._extent(projection)
        shape = (round(size["frame_height"] * FIELD_PIXEL_RATIO), round(size["frame_width"] * FIELD_PIXEL_RATIO))
        lat, lon = np.asarray(latitude, dtype=np.float64), np.asarray(longitude, dtype=np.float64)
        key = (str(projection.proj4_init), bounds, shape, lat.tobytes(), lon.tobytes())
        if key not in self._sampler_cache:
            if len(self._sampler_cache) >= 4:
                self._sampler_cache.clear()
            self._sampler_cache[key] = geo.MapSampler(projection, lat, lon, bounds=bounds, shape=shape)
        return self._sampler_cache[key]

    def _editor_sampler(self, projection) -> geo.MapSampler | None:
        grid = self.state.editor.grid
        return None if grid is None else self._sampler(projection, grid.latitude, grid.longitude)

    def _footprints(self) -> list:
        editor = self.state.editor
        if self._footprint_cache is None or self._footprint_cache[0] != editor.revision:
            self._footprint_cache = (editor.revision, editor.footprints())
        return self._footprint_cache[1]

    def _update_title(self, *_events) -> None:
        if self.view == "results":
            self._title.object = f"#### {self.results_title()}"
            return
        t = self.state.truth
        if not t.loaded:
            self._title.object = "#### No truth loaded"
            return
        meta = t.meta
        level = f" at {t.level} hPa" if t.has_levels else ""
        self._title.object = f"#### {meta.long_name}{level} · {t.time_label}"

    def results_title(self) -> str:
        """What the results view shows, e.g. ``"Ensemble mean · Temperature 500 hPa · 2002-05-18 06:00 UTC"``."""

        r = self.state.results
        layer = LAYER_TITLES[r.layer] + (f" {r.member}" if r.layer == "member" else "")
        level = f" {r.level} hPa" if r.has_levels else ""
        return f"{layer} · {r.meta.long_name.capitalize()}{level} · {r.time_label}"

    # -- layers ---------------------------------------------------------------------------------

    def _truth_pixels(self, sampler):
        return lambda: plots.field_pixels(self.state.truth.field().values, sampler)

    def _results_pixels(self, sampler, *, shape: tuple[int, int]):
        def pixels():
            da = self.state.results.field()
            values = np.full(shape, np.nan) if da is None else da.values  # None: cleared meanwhile
            return plots.field_pixels(values, sampler)
        return pixels

    def _footprint_layer(self, sampler):
        return lambda revision=None: plots.footprint_image(self._footprints(), sampler, list(PALETTE))

    def _lines_layer(self, projection):
        return lambda revision=None: plots.observer_lines(self._footprints(), projection)

    def _points_layer(self, projection, *, skip: str):
        return lambda revision=None: plots.observer_points(self._footprints(), projection, skip=skip)

    def _editable_points(self, projection):
        def points(revision=None):
            draft = self.state.editor.active_draft
            table = draft.table if isinstance(draft, StationsDraft) else StationsDraft().table
            element, self._shown_ids = plots.editable_points(
                table, projection, color=getattr(draft, "color", "#000"), kind=getattr(draft, "kind", "stations"))
            return element
        return points

    def _editable_track(self, projection):
        def track(revision=None):
            draft = self.state.editor.active_draft
            if not isinstance(draft, TrackDraft):
                return plots.editable_track([], [], projection, color="#000")
            return plots.editable_track(draft.lon, draft.lat, projection, color=draft.color)
        return track

    def _marker_layer(self, projection):
        """The point of the meteogram: a cross on the globe (nothing when it is on the far side)."""

        def marker(point=None):
            lon, lat = ([], []) if point is None else ([point[0]], [point[1]])
            x, y, ok = geo.project_points(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64),
                                          projection)
            return hv.Points((x[ok], y[ok]), kdims=["x", "y"]).opts(
                marker="x", size=18, line_width=4, color=plots.MARKER_COLOUR, tools=[])
        return marker

    # -- drawing and tap callbacks --------------------------------------------------------------

    def _on_points(self, data=None, **_):
        if data is None:
            return
        lon, lat, ok = geo.unproject(data.get("x", []), data.get("y", []), self._projection)
        ids = np.asarray([-1 if v is None else v for v in data.get("id", [])], dtype=np.float64)
        self.state.editor.apply_drawn(ids[ok], lon[ok], lat[ok], shown_ids=list(self._shown_ids),
                                      dropped=int((~ok).sum()))

    def _on_track(self, data=None, **_):
        if not data:
            return
        paths = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(data.get("xs", []), data.get("ys", []))
                 if len(x) >= 2]
        if paths:
            lon, lat, ok = geo.unproject(*paths[-1], self._projection)
            self.state.editor.set_track(lon, lat)  # NaN vertices (off the globe) are refused there

    def _on_tap(self, x=None, y=None, **_):
        if x is None or y is None or self.view != "results":
            return
        lon, lat, _ok = geo.unproject([x], [y], self._projection)
        self.state.results.select_point(float(lon[0]), float(lat[0]))  # NaN off the globe: refused there

    # -- building -------------------------------------------------------------------------------

    def _show_frame(self, **key) -> None:
        if self._feed is not None:
            self._feed.show(**key)

    def _rebuild(self, *_events) -> None:
        self.rebuilds += 1
        self._footprint_cache = None
        self._feed = None
        self._update_title()
        results = self.view == "results"
        overlay = self._overlay(results=results)
        _, size = self._extent(self._projection)
        # Room for the colour bar and the toolbar beside the frame.
        self._box.param.update(width=size["frame_width"] + 150, height=size["frame_height"] + 20)
        self._pane.object = overlay
        self._notice.visible = not results
        self._results_notice.visible = results
        if results:
            key = "results"
        else:
            draft = self.state.editor.active_draft
            key = "stations" if isinstance(draft, StationsDraft) else "track" if isinstance(draft, TrackDraft) \
                else "none"
        self._hint.object = _HINTS[key]

    def _truth_field(self, projection):
        t = self.state.truth
        sampler = self._editor_sampler(projection)
        if not t.loaded or sampler is None:
            return None
        style = plots.field_style(t.variable)
        meta = t.meta
        feed = self._feed = FrameFeed(TruthFrame(time_index=t.time_index), self._truth_pixels(sampler),
                                      sampler.bounds, label=meta.long_name, units=meta.units)
        return _rasterize(feed, sampler).opts(
            cmap=style.cmap, clim=t.value_range(symmetric=style.symmetric), colorbar=True,
            clabel=f"{meta.long_name} ({plots.units_label(meta.units)})" if meta.units else meta.long_name,
            colorbar_opts={"width": 12}, hooks=[feed.hook])

    def _results_field(self, projection):
        r = self.state.results
        first = r.field()
        if first is None:
            return None
        sampler = self._sampler(projection, first["latitude"].values, first["longitude"].values)
        meta = r.meta
        label = {"spread": f"Spread of {meta.long_name}", "error": f"Error in {meta.long_name}"}.get(
            r.layer, meta.long_name)
        units = plots.units_label(meta.units)
        lo, hi = r.value_range()
        if r.diverging:
            cmap = ERROR_CMAP
        elif r.layer == "spread":
            cmap = SPREAD_CMAP
        else:
            style = plots.field_style(r.variable)
            cmap = style.cmap
            if style.symmetric:  # winds: centred on 0, as on the truth view
                lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        feed = self._feed = FrameFeed(ResultsFrame(time_index=r.time_index, member=r.member),
                                      self._results_pixels(sampler, shape=first.shape), sampler.bounds,
                                      label=label, units=meta.units)
        return _rasterize(feed, sampler).opts(
            cmap=cmap, clim=(lo, hi), colorbar=True, clabel=f"{label} ({units})" if units else label,
            colorbar_opts={"width": 12}, hooks=[feed.hook])

    def _overlay(self, *, results: bool = False):
        state = self.state
        g, e = state.globe, state.editor
        projection = self._projection = self.projection
        bounds, size = self._extent(projection)
        sampler = self._editor_sampler(projection)
        revision = self._revision_stream
        layers = []
        if g.show_field:
            field = self._results_field(projection) if results else self._truth_field(projection)
            if field is not None:
                layers.append(field)
        if g.show_footprints and sampler is not None:
            mask = hv.DynamicMap(self._footprint_layer(sampler), streams=[revision])
            # Already at the frame's resolution and rarely updated: no rasterization needed.
            layers.append(mask.opts(cmap=list(PALETTE), alpha=plots.FOOTPRINT_ALPHA, colorbar=False))
        ring = plots.bezel(projection)
        if ring is not None:
            layers.append(ring)
        if g.show_graticule:
            layers.append(plots.line_layer(*geo.graticule(), projection, color="#777777", width=0.6, alpha=0.6,
                                           dash="dotted"))
        if g.show_coastlines:
            layers.append(plots.line_layer(*geo.coastlines(), projection, color="#1a1a1a", width=1.0))
        layers.append(plots.outline(projection))
        layers.append(hv.DynamicMap(self._lines_layer(projection), streams=[revision]))
        layers.append(hv.DynamicMap(self._points_layer(projection, skip="" if results else e.active),
                                    streams=[revision]))

        active_tools = ["pan"]
        if results:
            marker = hv.DynamicMap(self._marker_layer(projection), streams=[self._point_stream])
            tap = hv.streams.SingleTap(source=marker)
            tap.add_subscriber(self._on_tap)
            layers.append(marker)
        else:
            draft = e.active_draft
            if isinstance(draft, StationsDraft):
                source = hv.DynamicMap(self._editable_points(projection), streams=[revision])
                stream = hv.streams.PointDraw(source=source,
                                              tooltip="Add, move (drag) or delete (Backspace) stations")
                stream.add_subscriber(self._on_points)
                layers.append(source)
                active_tools = ["point_draw"]
            elif isinstance(draft, TrackDraft):
                source = hv.DynamicMap(self._editable_track(projection), streams=[revision])
                stream = hv.streams.PolyDraw(source=source, num_objects=1, show_vertices=True,
                                             vertex_style={"size": 8, "fill_color": "white",
                                                           "line_color": draft.color},
                                             tooltip="Draw a track")
                stream.add_subscriber(self._on_track)
                layers.append(source)
                active_tools = ["poly_draw"]

        x0, y0, x1, y1 = bounds
        return hv.Overlay(layers).collate().opts(
            xaxis=None, yaxis=None, show_frame=False, toolbar="right", xlim=(x0, x1), ylim=(y0, y1),
            default_tools=["save", "reset", "wheel_zoom", "pan"], active_tools=active_tools,
            bgcolor="white", show_grid=False, **size,
        )


def _rasterize(feed: FrameFeed, sampler: geo.MapSampler):
    """The field of ``feed`` rasterized with datashader onto the view's range, at the resolution of
    the sampler's image (``FIELD_PIXEL_RATIO`` of the frame's pixels, whatever the screen): the
    whole map is then rasterized onto the image's own grid, which :class:`FrameFeed` relies on."""

    field = hv.DynamicMap(feed.image, streams=[feed.stream])
    height, width = sampler.shape
    return rasterize(field, width=width, height=height, pixel_ratio=1, streams=[hv.streams.RangeXY])
