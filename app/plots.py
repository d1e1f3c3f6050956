"""HoloViews elements of the globe (no Panel): field, coastlines, graticule, observers.

Everything is drawn in the *map's* coordinates (metres on the orthographic globe, degrees on the
flat map), as plain HoloViews elements: the geometry is projected here with cartopy
(:mod:`app.geo`), once per point of view, and nothing is left for GeoViews to project at render
time. Measured on a 2-core machine, letting GeoViews project a ``gv.Image`` and the extents of
every geographic element cost 1-2 s per time step and 4-15 s per redraw; resampling with a
precomputed :class:`app.geo.MapSampler` costs milliseconds.

- The field is resampled onto the map's pixels (nearest grid cell; NaN off the disk) and shown
  as an ``hv.Image`` rasterized by datashader to the plot's size (``rasterize``), with a colour
  bar in physical units.
- Lines (coastlines, graticule, ground tracks) become one NaN-separated path per layer, cut
  where they leave the visible hemisphere, so that no path is ever projected from the far side.
- Stations are points in map coordinates; the drawing streams report map coordinates, which
  :func:`app.geo.unproject` turns back into lon/lat (NaN off the globe).

Colour maps per variable: temperatures on a cool-to-warm diverging map, winds on a diverging
map centred on 0 (symmetric range), geopotential and pressure on viridis, humidity and
precipitation on sequential blues.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from app import geo

__all__ = [
    "FieldStyle",
    "field_style",
    "units_label",
    "field_image",
    "field_pixels",
    "line_layer",
    "observer_lines",
    "observer_points",
    "editable_points",
    "editable_track",
    "footprint_image",
    "bezel",
    "outline",
    "lonlat_label",
    "channel_label",
    "plume",
    "meteogram_plot",
    "metric_panels",
    "symmetric_limit",
    "innovation_map",
    "innovation_histograms",
    "innovation_summary",
    "innovation_channels",
    "select_channel",
    "warm_results",
]


class FieldStyle(NamedTuple):
    """How a variable is coloured: the colour map and whether its range is centred on 0."""

    cmap: str
    symmetric: bool


_STYLES = {
    "temperature": FieldStyle("coolwarm", False),
    "2m_temperature": FieldStyle("coolwarm", False),
    "2m_dewpoint_temperature": FieldStyle("coolwarm", False),
    "skin_temperature": FieldStyle("coolwarm", False),
    "sea_surface_temperature": FieldStyle("coolwarm", False),
    "geopotential": FieldStyle("viridis", False),
    "mean_sea_level_pressure": FieldStyle("viridis", False),
    "surface_pressure": FieldStyle("viridis", False),
    "specific_humidity": FieldStyle("Blues", False),
    "relative_humidity": FieldStyle("Blues", False),
    "total_column_water_vapour": FieldStyle("Blues", False),
    "total_precipitation": FieldStyle("Blues", False),
    "total_precipitation_6hr": FieldStyle("Blues", False),
}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def units_label(units: str) -> str:
    """Units as people write them: ``"m s**-1"`` → ``"m s⁻¹"``, ``"m**2 s**-2"`` → ``"m² s⁻²"``."""

    words = []
    for word in (units or "").split():
        base, _, power = word.partition("**")
        words.append(base + power.translate(_SUPERSCRIPT))
    return " ".join(words)


def field_style(variable: str) -> FieldStyle:
    """Colour map of a variable: winds (``*u_component*``, ``*v_component*``, vertical velocity)
    diverge around 0 on ``RdBu_r``; unknown variables get ``viridis``."""

    if variable in _STYLES:
        return _STYLES[variable]
    if "component_of_wind" in variable or variable == "vertical_velocity":
        return FieldStyle("RdBu_r", True)
    return FieldStyle("viridis", False)


def field_pixels(values, sampler: geo.MapSampler) -> np.ndarray:
    """The field on the map's pixels as float32 (half the bytes sent to the browser per frame),
    NaN off the globe.

    Arguments:
        values: Field on the grid, shape ``(H, W)``.
        sampler: Resampler of the grid onto the map's pixels.
    """

    return sampler.sample(values, dtype=np.float32)


def field_image(pixels: np.ndarray, bounds: tuple[float, float, float, float], *, label: str, units: str):
    """The field on the map: ``hv.Image`` of ``pixels`` (:func:`field_pixels`) over ``bounds``
    ``(x0, y0, x1, y1)``.

    Arguments:
        pixels: The field on the map's pixels, shape ``(ny, nx)``, row 0 at the top.
        bounds: Map coordinates the image covers.
        label, units: Name and units of the value (colour bar title).
    """

    import holoviews as hv

    vdim = hv.Dimension("value", label=label, unit=units_label(units) or None)
    return hv.Image(pixels, bounds=bounds, kdims=["x", "y"], vdims=[vdim])


def line_layer(lon, lat, projection, *, color: str, width: float = 1.0, alpha: float = 1.0, dash: str = "solid"):
    """One path of NaN-separated lon/lat lines, projected and cut at the map's edge."""

    import holoviews as hv

    x, y = geo.project_lines(lon, lat, projection)
    data = [np.column_stack([x, y])] if x.size else []
    return hv.Path(data).opts(color=color, line_width=width, alpha=alpha, line_dash=dash)


def observer_lines(footprints, projection):
    """Ground tracks and drawn tracks of the observers, coloured per observer."""

    import holoviews as hv

    paths = []
    for fp in footprints:
        if fp.lines is None:
            continue
        x, y = geo.project_lines(fp.lines[0], fp.lines[1], projection)
        if x.size:
            paths.append({"x": x, "y": y, "observer": fp.label, "color": fp.color})
    if not paths:  # an empty Path with value dims cannot be drawn: use an invisible one
        paths = [{"x": np.full(2, np.nan), "y": np.full(2, np.nan), "observer": "", "color": "#000000"}]
    return hv.Path(paths, kdims=["x", "y"], vdims=["observer", "color"]).opts(
        color=hv.dim("color"), line_width=1.5, alpha=TRACK_ALPHA, tools=["hover"],
        hover_tooltips=[("observer", "@observer")]
    )


def observer_points(footprints, projection, *, skip: str = ""):
    """Stations and profiles of every observer but ``skip`` (the one being edited), coloured."""

    import holoviews as hv

    xs, ys, names, colors, markers = [], [], [], [], []
    for fp in footprints:
        if fp.points is None or fp.label == skip:
            continue
        x, y, ok = geo.project_points(fp.points[0], fp.points[1], projection)
        xs.append(x[ok])
        ys.append(y[ok])
        names += [fp.label] * int(ok.sum())
        colors += [fp.color] * int(ok.sum())
        markers += ["triangle" if fp.kind == "profiles" else "circle"] * int(ok.sum())
    data = {
        "x": np.concatenate(xs) if xs else np.zeros(0),
        "y": np.concatenate(ys) if ys else np.zeros(0),
        "observer": names,
        "color": colors,
        "marker": markers,
    }
    return hv.Points(data, kdims=["x", "y"], vdims=["observer", "color", "marker"]).opts(
        color=hv.dim("color"), marker=hv.dim("marker"), size=7, line_color="white", line_width=0.5, tools=["hover"],
        hover_tooltips=[("observer", "@observer")],
    )


def editable_points(table, projection, *, color: str, kind: str):
    """The stations of the network being edited, in map coordinates, for the point-draw tool.

    Stations on the far side of the globe are left out (they cannot be clicked).

    Arguments:
        table: DataFrame with ``id, name, lon, lat``.

    Returns:
        ``(points, shown_ids)``: the element (value dims ``id``, ``name``) and the ids it shows.
    """

    import holoviews as hv

    x, y, ok = geo.project_points(table["lon"].to_numpy(dtype=np.float64), table["lat"].to_numpy(dtype=np.float64),
                                  projection)
    ids = table["id"].to_numpy(dtype=np.float64)[ok]
    data = {"x": x[ok], "y": y[ok], "id": ids, "name": table["name"].astype(str).to_numpy()[ok].tolist()}
    points = hv.Points(data, kdims=["x", "y"], vdims=["id", "name"]).opts(
        color=color, size=11, marker="triangle" if kind == "profiles" else "circle",
        line_color="white", line_width=1.5, tools=["hover"], hover_tooltips=[("station", "@name")],
        hooks=[_new_point_defaults],
    )
    return points, [int(i) for i in ids]


def _new_point_defaults(plot, element) -> None:
    """Points added by the draw tool get ``id = -1`` (bokeh would infer 0 from the column,
    a valid station id) and an empty name; the editor gives them their ids."""

    plot.handles["source"].default_values = {"id": -1.0, "name": ""}


def editable_track(lon, lat, projection, *, color: str):
    """The drawn track being edited, in map coordinates, for the poly-draw tool (empty when a
    vertex is hidden behind the globe: the track then shows as a footprint only)."""

    import holoviews as hv

    data = []
    if len(lon) >= 2:
        x, y, ok = geo.project_points(lon, lat, projection)
        if ok.all():
            data = [{"x": x, "y": y}]
    return hv.Path(data, kdims=["x", "y"]).opts(color=color, line_width=3, line_dash="dashed")


def footprint_image(footprints, sampler: geo.MapSampler, palette):
    """Cells observed by the swaths on the map's pixels, valued by the palette index of their
    observer plus one half (NaN elsewhere), for a categorical colour map over ``palette``.

    The value dimension carries its range, ``(0, len(palette))``: it maps the palette's colours
    onto the indices, and HoloViews takes it instead of scanning the image (all NaN while no swath
    is drawn)."""

    import holoviews as hv

    values = None
    for fp in footprints:
        if fp.mask is None:
            continue
        if values is None:
            values = np.full(fp.mask.shape, np.nan)
        index = palette.index(fp.color) if fp.color in palette else 0
        values[fp.mask & np.isnan(values)] = index + 0.5
    image = np.full(sampler.shape, np.nan) if values is None else sampler.sample(values)
    observer = hv.Dimension("observer", range=(0, len(palette)))
    return hv.Image(image, bounds=sampler.bounds, kdims=["x", "y"], vdims=[observer])


def bezel(projection, *, color: str = "white", pad: float = 1.15):
    """A ring from the globe's limb outwards, in the page colour, hiding raster cells that
    spill over the limb (None on the flat map)."""

    import cartopy.crs as ccrs
    import holoviews as hv

    if not isinstance(projection, ccrs.Orthographic):
        return None
    r = geo.EARTH_RADIUS_M
    t = np.linspace(0, 2 * np.pi, 361)
    outer = pad * r
    square = np.array([[-outer, -outer], [outer, -outer], [outer, outer], [-outer, outer]])
    hole = np.column_stack([r * np.cos(t), r * np.sin(t)])
    data = [{"x": square[:, 0], "y": square[:, 1], "holes": [[hole]]}]
    return hv.Polygons(data, kdims=["x", "y"]).opts(color=color, line_alpha=0, tools=[])


def outline(projection, *, color: str = "#444444"):
    """The limb of the globe (or the frame of the flat map)."""

    import holoviews as hv

    x, y = geo.limb(projection)
    return hv.Path([np.column_stack([x, y])]).opts(color=color, line_width=1.2)


# -- results: meteogram, metric curves, observation-space diagnostics ------------------------------
#
# These draw what :class:`app.state.results.ResultsState` returns (a Meteogram, DataFrames of
# metrics and innovations); the only computations here are display ones (colour limits,
# histogram bins, the mean and standard deviation printed under the histograms).

#: Colours of the results plots: members (density), truth, observations, the two residuals.
#: Opacity of the observers' swath cells and of their tracks, and the colour of the meteogram
#: point's cross, on the globe and in its PNG (:mod:`app.figures`).
FOOTPRINT_ALPHA = 0.35
TRACK_ALPHA = 0.9
MARKER_COLOUR = "#111111"

RESULT_COLOURS = {"plume": "Blues", "truth": "#111111", "obs": "#d95f02", "o_minus_b": "#7570b3",
                  "o_minus_a": "#1b9e77", "mean": "#1f5f8b", "spread": "#d95f02", "ideal": "#666666"}
#: Colours of the plume, from one member (mid blue, visible) to all of them (navy).
PLUME_CMAP = ["#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"]
#: Width of the members' lines in the plume (pixels, antialiased).
PLUME_LINE_WIDTH = 2.0
#: Names of the residual columns as people write them.
RESIDUALS = {"o_minus_b": "O−B", "o_minus_a": "O−A"}


def _size(width: int | None, height: int) -> dict:
    """Plot size options: a fixed frame, or (``width`` None) as wide as the container."""

    if width is None:
        return dict(responsive=True, height=height, min_width=280)
    return dict(frame_width=width, frame_height=height)


def lonlat_label(lon: float, lat: float) -> str:
    """``(350.0, -12.5)`` → ``"10.0°W, 12.5°S"`` (longitudes shown in [-180, 180))."""

    lon = ((float(lon) + 180.0) % 360.0) - 180.0
    ew = "E" if lon >= 0 else "W"
    ns = "N" if lat >= 0 else "S"
    return f"{abs(lon):.1f}°{ew}, {abs(float(lat)):.1f}°{ns}"


def channel_label(variable: str, level) -> str:
    """``("temperature", 500)`` → ``"temperature 500 hPa"``; a missing level (None, NaN) → the variable."""

    if level is None or (isinstance(level, float) and not np.isfinite(level)):
        return variable
    return f"{variable} {int(level) if float(level).is_integer() else level} hPa"


def _time_dim():
    import holoviews as hv

    return hv.Dimension("time", label="Time (UTC)")


def _value_dim(label: str, units: str, name: str = "value"):
    import holoviews as hv

    return hv.Dimension(name, label=label, unit=units_label(units) or None)


def plume(times, members, *, label: str = "value", units: str = ""):
    """The members of an ensemble as one path each over time.

    Arguments:
        times: Times, shape ``(T,)`` (datetime64).
        members: Values, shape ``(M, T)``.
        label, units: What the values are (axis title).

    Returns:
        An ``hv.Path`` with ``M`` paths of ``T`` vertices, kdims ``time`` and ``value`` (datashaded
        by :func:`meteogram_plot`: many members read as a density).
    """

    import holoviews as hv

    members = np.asarray(members, dtype=np.float64)
    if members.ndim != 2 or members.shape[1] != len(times):
        raise ValueError(f"members must be (M, T) with T = {len(times)}, got {members.shape}")
    paths = [{"time": np.asarray(times), "value": row} for row in members]
    return hv.Path(paths, kdims=[_time_dim(), _value_dim(label, units)])


def meteogram_plot(m, *, long_name: str | None = None, hooks: Sequence = (), width: int | None = None,
                   height: int = 320):
    """The meteogram of one grid cell: the ensemble as a datashaded plume (pixels counted over
    members, so the colour reads as density), the truth as a line, the observations near the
    cell as points with error bars (±1 standard deviation).

    Arguments:
        m: An :class:`app.adapter.Meteogram` (``times (T,)``, ``members (M, T)``, ``truth (T,)`` or
            None, ``obs`` DataFrame with ``time, value, error, observer``).
        long_name: Name of the variable for titles (default: the variable).
        hooks: Bokeh plot hooks ``hook(plot, element)`` of the overlay (e.g. the Results tab's
            time marker, :class:`app.views.results.TimeMarker`).
        width, height: Size in pixels (``width`` None: as wide as the page allows).

    Returns:
        A ``DynamicMap`` (the plume is rasterized to the plot's range) of an overlay: the plume's
        ``hv.Image``, [truth ``hv.Curve``], [``hv.ErrorBars``, ``hv.Scatter``].
    """

    import holoviews as hv
    from holoviews.operation.datashader import rasterize

    name = long_name or m.variable.replace("_", " ")
    level = f" {m.level} hPa" if m.level is not None else ""
    label = f"{name.capitalize()}{level}"
    vdim = _value_dim(label, m.units)
    layers = [rasterize(plume(m.times, m.members, label=label, units=m.units), aggregator="count",
                        line_width=PLUME_LINE_WIDTH, pixel_ratio=1).opts(
        cmap=PLUME_CMAP, cnorm="linear", colorbar=False, tools=[],
        clipping_colors={"NaN": (0, 0, 0, 0), "min": (0, 0, 0, 0)}, clim=(0.2, None))]
    # A legend entry for the plume (the raster has none): one vertex draws no line.
    layers.append(hv.Curve(([m.times[0]], [float(np.nanmean(m.members[:, 0]))]), _time_dim(), vdim,
                           label=f"{m.members.shape[0]} members (density)").opts(color=PLUME_CMAP[len(PLUME_CMAP) // 3],
                                                                                   line_width=6))
    if m.truth is not None:
        layers.append(hv.Curve((m.times, np.asarray(m.truth, dtype=np.float64)), _time_dim(), vdim,
                               label="truth").opts(color=RESULT_COLOURS["truth"], line_width=2))
    obs = m.obs
    if obs is not None and len(obs):
        t = obs["time"].to_numpy("datetime64[ns]")
        v = obs["value"].to_numpy(np.float64)
        e = obs["error"].to_numpy(np.float64)
        layers.append(hv.ErrorBars((t, v, e), _time_dim(), [vdim, "error"]).opts(
            color=RESULT_COLOURS["obs"], line_width=1.5))
        data = {"time": t, "value": v, "error": e, "observer": obs["observer"].astype(str).to_numpy()}
        layers.append(hv.Scatter(data, _time_dim(), [vdim, "error", "observer"], label="observations").opts(
            color=RESULT_COLOURS["obs"], size=7, line_color="white", tools=["hover"]))
    title = f"{label} at {lonlat_label(m.lon, m.lat)}" + (f" ({units_label(m.units)})" if m.units else "")
    return hv.Overlay(layers).collate().opts(
        title=title, show_grid=True, legend_position="top_left", **_size(width, height),
        toolbar="right", default_tools=["save", "reset", "wheel_zoom", "pan"], hooks=list(hooks),
    )


def metric_panels(metrics, *, units: str = "", label: str = "", hooks: Sequence = (), width: int | None = None,
                  height: int = 220) -> list:
    """Scores of the ensemble over time, one panel each: RMSE of the mean with the spread, CRPS,
    and the spread–skill ratio with its ideal value 1 (dashed).

    Arguments:
        metrics: DataFrame indexed by time with columns ``rmse, spread, crps, ssr``
            (:meth:`app.state.results.ResultsState.metrics`).
        units: Units of the variable (RMSE, spread and CRPS share them).
        label: The variable and level, for the titles.
        hooks: Bokeh plot hooks ``hook(plot, element)`` of each panel (e.g. the Results tab's
            time marker, :class:`app.views.results.TimeMarker`).
        width, height: Size of each panel in pixels (``width`` None: as wide as the page allows).

    Returns:
        Three ``hv.Overlay`` panels.
    """

    import holoviews as hv

    times = np.asarray(metrics.index.to_numpy(), dtype="datetime64[ns]")
    tdim = _time_dim()

    def curve(column, name, color, ydim):
        values = metrics[column].to_numpy(np.float64)
        line = hv.Curve((times, values), tdim, ydim, label=name).opts(color=color, line_width=2)
        if len(times) > 2:
            return line
        return line * hv.Scatter((times, values), tdim, ydim, label=name).opts(color=color, size=6)  # visible dots

    score = _value_dim("score", units, "score")
    skill = curve("rmse", "RMSE of the mean", RESULT_COLOURS["mean"], score) * \
        curve("spread", "spread", RESULT_COLOURS["spread"], score)
    crps = curve("crps", "CRPS", RESULT_COLOURS["mean"], _value_dim("CRPS", units, "crps"))
    ratio = hv.Dimension("ssr", label="spread / skill")
    ideal = hv.HLine(1.0, kdims=[tdim, ratio]).opts(color=RESULT_COLOURS["ideal"], line_dash="dashed", line_width=1.5)
    ssr = curve("ssr", "spread–skill ratio", RESULT_COLOURS["mean"], ratio) * ideal
    top = float(np.nanmax(metrics["ssr"].to_numpy(np.float64), initial=1.0))
    limits = [{}, {}, {"ylim": (0.0, 1.15 * max(top, 1.0))}]  # the ideal 1 always in view
    titles = ["RMSE and spread", "CRPS", "Spread–skill ratio (ideal 1)"]
    panels = []
    for panel, title, extra in zip([skill, crps, ssr], titles, limits):
        panel = panel if isinstance(panel, hv.Overlay) else hv.Overlay([panel])  # legend options need one
        panels.append(panel.opts(
            title=f"{title} · {label}" if label else title, show_grid=True, legend_position="top_left",
            toolbar=None, hooks=list(hooks), **_size(width, height), **extra,
        ))
    panels[2].opts(legend_position="bottom_left")
    return panels


def symmetric_limit(*values, q: float = 99.0) -> float:
    """The ``q``-th percentile of ``|x|`` over all finite values given (1 when there are none):
    the half-width of a diverging colour range centred on 0."""

    flat = np.concatenate([np.abs(np.asarray(v, dtype=np.float64)).ravel() for v in values]) if values else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 1.0
    limit = float(np.percentile(flat, q))
    return limit if limit > 0 else (float(flat.max()) or 1.0)


def innovation_map(innovations, column: str, *, limit: float, units: str = "", title: str = "",
                   width: int | None = None, height: int = 220, max_points: int = 20_000):
    """Residuals of the observations on a flat map: points coloured by ``column`` on a diverging
    colour map centred on 0 (range ``±limit``), over the coastlines.

    Arguments:
        innovations: DataFrame with ``lon, lat, time, observer, value`` and ``column``
            (:meth:`app.state.results.ResultsState.innovations`).
        column: ``"o_minus_b"`` or ``"o_minus_a"``.
        limit: Half-width of the colour range.
        max_points: Above this many observations, the map shows the mean residual per pixel
            (datashader) instead of one glyph per observation.
    """

    import holoviews as hv
    from holoviews.operation.datashader import rasterize

    projection = geo.make_projection("flat", central_longitude=0.0)
    lon = innovations["lon"].to_numpy(np.float64)
    lat = innovations["lat"].to_numpy(np.float64)
    x, y, ok = geo.project_points(lon, lat, projection)
    values = innovations[column].to_numpy(np.float64)
    ok &= np.isfinite(values)
    vdim = _value_dim(RESIDUALS.get(column, column), units, column)
    data = {"x": x[ok], "y": y[ok], column: values[ok],
            "observer": innovations["observer"].astype(str).to_numpy()[ok],
            "time": np.datetime_as_string(innovations["time"].to_numpy("datetime64[m]")[ok], unit="m"),
            "value": innovations["value"].to_numpy(np.float64)[ok]}
    points = hv.Points(data, kdims=["x", "y"], vdims=[vdim, "observer", "time", "value"])
    style = dict(cmap="RdBu_r", clim=(-limit, limit), colorbar=True, colorbar_opts={"width": 10})
    if int(ok.sum()) > max_points:
        import datashader as ds

        shown = rasterize(points, aggregator=ds.mean(column)).opts(**style)
    else:
        shown = points.opts(color=column, size=6, line_color="#555555", line_width=0.3, tools=["hover"],
                            hover_tooltips=[("observer", "@observer"), ("time", "@time"), ("value", "@value"),
                                            (RESIDUALS.get(column, column), f"@{column}")], **style)
    coast = line_layer(*geo.coastlines(), projection, color="#333333", width=0.7)
    (x0, x1), (y0, y1) = projection.x_limits, projection.y_limits
    return (coast * shown * outline(projection)).opts(
        title=title, xaxis=None, yaxis=None, xlim=(x0, x1), ylim=(y0, y1),
        **(dict(responsive=True, aspect=2, min_width=280) if width is None else _size(width, height)),
        show_frame=False, toolbar="right", default_tools=["save", "reset", "wheel_zoom", "pan"], bgcolor="white",
    )


def innovation_histograms(innovations, *, units: str = "", bins: int = 40, width: int | None = None,
                          height: int = 240):
    """Histograms of O−B and O−A over the same bins, overlaid (a good analysis moves the O−A
    histogram towards a narrow peak at 0)."""

    import holoviews as hv

    columns = [c for c in RESIDUALS if c in innovations]
    arrays = {c: innovations[c].to_numpy(np.float64) for c in columns}
    arrays = {c: a[np.isfinite(a)] for c, a in arrays.items()}
    limit = symmetric_limit(*arrays.values(), q=100.0)
    edges = np.linspace(-limit, limit, bins + 1)
    xdim = _value_dim("residual", units, "residual")
    layers = []
    for column, values in arrays.items():
        counts, _ = np.histogram(np.clip(values, -limit, limit), bins=edges)
        layers.append(hv.Histogram((edges, counts), kdims=[xdim], vdims=["count"], label=RESIDUALS[column]).opts(
            fill_color=RESULT_COLOURS[column], fill_alpha=0.45, line_color=RESULT_COLOURS[column]))
    layers.append(hv.VLine(0.0).opts(color="#444444", line_dash="dashed", line_width=1))
    return hv.Overlay(layers).opts(
        title="O−B and O−A", legend_position="top_right", show_grid=True, **_size(width, height),
        toolbar=None,
    )


def innovation_summary(innovations):
    """Count, mean and standard deviation of O−B and O−A (finite values), a DataFrame indexed by
    ``"O−B"``, ``"O−A"`` with columns ``n, mean, std``."""

    import pandas as pd

    rows = {}
    for column, name in RESIDUALS.items():
        values = innovations[column].to_numpy(np.float64) if column in innovations else np.zeros(0)
        values = values[np.isfinite(values)]
        rows[name] = {"n": int(values.size), "mean": float(values.mean()) if values.size else np.nan,
                      "std": float(values.std(ddof=1)) if values.size > 1 else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def innovation_channels(innovations) -> dict[str, tuple[str, float | None]]:
    """The fields observed in a table of innovations, in order of appearance:
    ``{"temperature 500 hPa": ("temperature", 500.0), "2m_temperature": ("2m_temperature", None)}``
    (residuals of different fields have different units, so they are shown one field at a time)."""

    out: dict[str, tuple[str, float | None]] = {}
    if not len(innovations):
        return out
    levels = innovations["level"].to_numpy(np.float64)
    for variable, level in zip(innovations["variable"].astype(str).to_numpy(), levels):
        key = (variable, None if not np.isfinite(level) else float(level))
        label = channel_label(*key)
        if label not in out:
            out[label] = key
    return out


def select_channel(innovations, variable: str, level: float | None):
    """The rows of ``innovations`` observing ``variable`` at ``level`` (None: a surface field)."""

    levels = innovations["level"].to_numpy(np.float64)
    same = ~np.isfinite(levels) if level is None else np.isclose(levels, float(level))
    keep = (innovations["variable"].astype(str).to_numpy() == variable) & same
    return innovations[keep].reset_index(drop=True)


def warm_results() -> None:
    """Compile datashader's antialiased line kernels (the plume) once, at server start: the first
    meteogram would otherwise wait for numba (seconds)."""

    from holoviews.operation.datashader import rasterize

    times = np.datetime64("2000-01-01") + np.arange(3) * np.timedelta64(6, "h")
    path = plume(times, np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]))
    rasterize(path, dynamic=False, aggregator="count", line_width=PLUME_LINE_WIDTH, width=16, height=16)
