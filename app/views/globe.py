"""The globe: truth field, coastlines, graticule, observers, and the drawing tools.

The plot is rebuilt when the projection, the point of view, the variable/level or the observer
being edited change (its fixed geometry, coastlines and graticule, is projected for one point of
view); the time and the observers' geometry update in place through
:class:`holoviews.streams.Params` streams on ``truth.time_index`` and ``editor.revision``.

Everything is drawn in map coordinates (see :mod:`app.plots`). Drawing: the stations of the
network being edited are a point source with a ``PointDraw`` stream (click to add, drag to move,
select and press Backspace to delete); a drawn track is a path source with a ``PolyDraw`` stream
(press and hold to start, tap to add vertices, press again to finish). Their subscribers map
what was drawn back to lon/lat (:func:`app.geo.unproject`: NaN off the globe) and pass it to the
editor, which validates it; a click off the globe is refused there and the plot redrawn, which
removes the glyph the browser had kept.
"""

from __future__ import annotations

import warnings

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.core.validation import silence
from bokeh.core.validation.warnings import FIXED_SIZING_MODE
from holoviews.operation.datashader import rasterize

from app import geo, plots
from app.state import AppState, StationsDraft, TrackDraft
from app.state.drafts import PALETTE
from app.views.base import NoticeAlert

__all__ = ["GlobeView"]

# An empty footprint layer is an all-NaN image, whose colour range HoloViews computes with nanmin.
warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning, module="holoviews")
# The plot is sized by its frame (frame_width/frame_height), which Bokeh's validator does not count.
silence(FIXED_SIZING_MODE, True)

_HINTS = {
    "stations": "**Click** on the globe to add a station, **drag** one to move it, select one (tap) and press "
                "**Backspace** to delete it.",
    "track": "**Press and hold** to start a track, **tap** to add vertices, **press again** to finish it "
             "(Esc cancels). Drawing a new track replaces the old one.",
    "none": "Select or add an observer in the *Observations* tab to draw on the globe.",
}


class GlobeView(pn.viewable.Viewer):
    """The globe of one session (reads and edits an :class:`AppState`)."""

    def __init__(self, state: AppState, *, size: int = 600, **params):
        super().__init__(**params)
        self.state = state
        self.size = size
        self._shown_ids: list[int] = []
        self._footprint_cache: tuple[int, list] | None = None
        self._sampler_cache: tuple[tuple, geo.MapSampler] | None = None
        self._title = pn.pane.Markdown("", margin=(0, 10), sizing_mode="stretch_width")
        self._pane = pn.pane.HoloViews(None, linked_axes=False, margin=0)
        self._box = pn.Column(self._pane, margin=0)  # sized to hold the frame, colour bar and toolbar
        self._projection = self.projection  # of the plot shown (drawn points are mapped back with it)
        self._hint = pn.pane.Markdown("", margin=(0, 10), styles={"color": "#555", "font-size": "0.92em"},
                                      sizing_mode="stretch_width")
        self._notice = NoticeAlert(state.editor, "draw_notice")
        g, t, e = state.globe, state.truth, state.editor
        # Shared by every rebuilt plot (each plot subscribes while it is shown).
        self._time_stream = hv.streams.Params(t, ["time_index"])
        self._revision_stream = hv.streams.Params(e, ["revision"])
        g.param.watch(self._rebuild, ["projection", "central_longitude", "central_latitude", "show_field",
                                      "show_coastlines", "show_graticule", "show_footprints"])
        t.param.watch(self._rebuild, ["dataset", "variable", "level"])
        t.param.watch(self._update_title, ["time_index"])
        e.param.watch(self._rebuild, ["active", "drafts"])
        self._layout = pn.Column(self._title, self._box, self._notice, self._hint, margin=0)
        self._rebuild()

    def __panel__(self):
        return self._layout

    # -- helpers --------------------------------------------------------------------------------

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

    def _sampler(self, projection) -> geo.MapSampler | None:
        grid = self.state.editor.grid
        if grid is None:
            return None
        bounds, size = self._extent(projection)
        shape = (int(size["frame_height"]), int(size["frame_width"]))
        key = (str(projection.proj4_init), bounds, shape, grid.shape, grid.latitude[0], grid.longitude[0])
        if self._sampler_cache is None or self._sampler_cache[0] != key:
            self._sampler_cache = (key, geo.MapSampler(projection, grid.latitude, grid.longitude,
                                                       bounds=bounds, shape=shape))
        return self._sampler_cache[1]

    def _footprints(self) -> list:
        editor = self.state.editor
        if self._footprint_cache is None or self._footprint_cache[0] != editor.revision:
            self._footprint_cache = (editor.revision, editor.footprints())
        return self._footprint_cache[1]

    def _update_title(self, *_events) -> None:
        t = self.state.truth
        if not t.loaded:
            self._title.object = "#### No truth loaded"
            return
        meta = t.meta
        level = f" at {t.level} hPa" if t.has_levels else ""
        self._title.object = f"#### {meta.long_name}{level} · {t.time_label}"

    # -- layers ---------------------------------------------------------------------------------

    def _field_layer(self, sampler):
        def field(time_index=None):
            t = self.state.truth
            meta = t.meta
            return plots.field_image(t.field().values, sampler, label=meta.long_name, units=meta.units)
        return field

    def _footprint_layer(self, sampler):
        return lambda revision=None: plots.footprint_image(self._footprints(), sampler, list(PALETTE))

    def _lines_layer(self, projection):
        return lambda revision=None: plots.observer_lines(self._footprints(), projection)

    def _points_layer(self, projection):
        return lambda revision=None: plots.observer_points(self._footprints(), projection,
                                                           skip=self.state.editor.active)

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

    # -- drawing callbacks ----------------------------------------------------------------------

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

    # -- building -------------------------------------------------------------------------------

    def _rebuild(self, *_events) -> None:
        self._footprint_cache = None
        self._update_title()
        overlay = self._overlay()
        _, size = self._extent(self._projection)
        # Room for the colour bar and the toolbar beside the frame.
        self._box.param.update(width=size["frame_width"] + 150, height=size["frame_height"] + 20)
        self._pane.object = overlay
        draft = self.state.editor.active_draft
        key = "stations" if isinstance(draft, StationsDraft) else "track" if isinstance(draft, TrackDraft) else "none"
        self._hint.object = _HINTS[key]

    def _overlay(self):
        state = self.state
        g, t, e = state.globe, state.truth, state.editor
        projection = self._projection = self.projection
        bounds, size = self._extent(projection)
        sampler = self._sampler(projection)
        revision = self._revision_stream
        layers = []
        if t.loaded and g.show_field and sampler is not None:
            style = plots.field_style(t.variable)
            meta = t.meta
            field = hv.DynamicMap(self._field_layer(sampler), streams=[self._time_stream])
            layers.append(rasterize(field).opts(
                cmap=style.cmap, clim=t.value_range(symmetric=style.symmetric), colorbar=True,
                clabel=f"{meta.long_name} ({plots.units_label(meta.units)})" if meta.units else meta.long_name,
                colorbar_opts={"width": 12}))
        if g.show_footprints and sampler is not None:
            mask = hv.DynamicMap(self._footprint_layer(sampler), streams=[revision])
            # Already at the frame's resolution and rarely updated: no rasterization needed.
            layers.append(mask.opts(cmap=list(PALETTE), clim=(0, len(PALETTE)), alpha=0.35, colorbar=False))
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
        layers.append(hv.DynamicMap(self._points_layer(projection), streams=[revision]))

        draft = e.active_draft
        active_tools = ["pan"]
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
                                         vertex_style={"size": 8, "fill_color": "white", "line_color": draft.color},
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
