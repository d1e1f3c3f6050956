"""Static figures of the app, rendered on the server (no browser): a PNG of the current globe view.

:func:`render_figure` draws what the globe draws (:mod:`app.views.globe`), layer by layer and in
the same order, on a cartopy ``GeoAxes`` in the same projection (orthographic globe or flat
Plate Carrée, same point of view):

1. the field, resampled onto the map's pixels by nearest grid cell with :class:`app.geo.MapSampler`
   (the same resampling as the interactive plot, NaN off the globe's disk), with the same colour
   map and range and a colour bar in physical units;
2. the cells the swaths observe (:attr:`app.state.Footprint.mask`), valued per observer by
   :func:`app.plots.footprint_image` (the globe's own function) and shown in the observer's
   palette colour at the globe's opacity;
3. the graticule and the coastlines shipped with the app (:func:`app.geo.coastlines`; cartopy's
   Natural Earth features are never used, they would be downloaded) and the limb
   (:func:`app.geo.limb`);
4. the ground tracks and drawn tracks, the stations (circles) and profiles (triangles), and the
   meteogram's point (a cross) in the results view.

Lines are projected and cut at the limb by :func:`app.geo.project_lines`, points by
:func:`app.geo.project_points` (points on the far side of the globe are left out), exactly as the
interactive plot does. A legend below the map names the observers.

Rendering uses matplotlib's object API (:class:`~matplotlib.figure.Figure` with the Agg canvas,
no ``pyplot``), so figures of concurrent sessions do not share global state.

:func:`current_view_png` reads what a session's globe shows (:class:`app.state.AppState`: truth or
results view, layer, variable, level, time, point of view, layers switched on, observers, the
meteogram's point) and renders it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Sequence

import numpy as np
import xarray as xr

from app import geo, plots

if TYPE_CHECKING:
    from appa_engine.data.grid import Grid

    from app.state import Footprint

__all__ = ["render_figure", "render_png", "current_view_figure", "current_view_png", "view_title", "view_style"]

_DPI = 100
# The globe's styles, shared with the interactive plot.
FOOTPRINT_ALPHA, TRACK_ALPHA, MARKER_COLOUR = plots.FOOTPRINT_ALPHA, plots.TRACK_ALPHA, plots.MARKER_COLOUR
_POINT_KINDS = {"stations": "o", "profiles": "^"}


def _pt(px: float) -> float:
    """Pixels of the PNG in typographic points (matplotlib's unit for sizes and line widths)."""

    return px * 72.0 / _DPI


def render_figure(
    field: xr.DataArray | None,
    *,
    projection: str,
    central_longitude: float,
    central_latitude: float,
    title: str = "",
    units: str = "",
    cmap: str = "viridis",
    clim: tuple[float, float] = (0.0, 1.0),
    footprints: Sequence[Footprint] = (),
    grid: Grid | None = None,
    active: str = "",
    marker: tuple[float, float] | None = None,
    points: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    width_px: int = 900,
    coastlines: bool = True,
    graticule: bool = True,
    label: str = "",
    legend: bool = True,
):
    """The globe (or the flat map) as a matplotlib figure: field, colour bar, observers, legend.

    Arguments:
        field: The field, dims ``(latitude, longitude)`` (shape ``(H, W)``), degrees, longitudes
            ascending and periodic; NaN cells are left blank. None: no field and no colour bar
            (the globe with its field switched off).
        projection: ``"orthographic"`` (the globe) or ``"flat"`` (Plate Carrée).
        central_longitude, central_latitude: Point of view in degrees (the latitude is ignored on
            the flat map).
        title: Title above the map.
        units: Physical units of the values (``"m s**-1"`` is written ``m s⁻¹``) for the colour bar.
        cmap: A matplotlib colour map name.
        clim: ``(low, high)`` of the colour range.
        footprints: The observers as the globe shows them (:class:`app.state.Footprint`, from
            :meth:`app.state.ObservationEditor.footprints`): points, tracks and swath cells, each
            in the observer's colour; each is named in the legend.
        grid: The grid of the footprints' masks (:class:`appa_engine.data.grid.Grid`, latitudes
            ``(H,)`` and longitudes ``(W,)``), or None to leave the swath cells out (as the globe
            does without a grid, or with *Swath footprints* switched off).
        active: Label of the observer being edited: its points are drawn larger (the globe's
            editable points).
        marker: ``(lon, lat)`` of the meteogram's point in degrees (a cross, and a legend entry;
            nothing when it is behind the globe), or None.
        points: More points, ``(lon, lat, colour)``: degrees, each of shape ``(S,)``, not in the legend.
        width_px: Width of the image in pixels (the height follows the projection's shape).
        coastlines, graticule: Draw the coastlines and the 30° graticule.
        label: What the values are (colour bar title, before the units).
        legend: Name the observers (and the meteogram's point) below the map.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas (its first axes is the map).
    """

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    if field is not None and (field.ndim != 2 or not {"latitude", "longitude"} <= set(field.dims)):
        raise ValueError(f"the figure needs a (latitude, longitude) field, got dims {field.dims}")
    if projection not in ("orthographic", "flat"):
        raise ValueError(f"unknown projection {projection!r}: use 'orthographic' or 'flat'")
    width_px = int(width_px)
    if width_px < 200:
        raise ValueError(f"width_px must be at least 200, got {width_px}")
    proj = geo.make_projection(projection, central_longitude=central_longitude, central_latitude=central_latitude)
    globe = projection == "orthographic"
    footprints = list(footprints)
    if marker is not None:  # the meteogram's point, unless it is behind the globe
        mx, my, ok = geo.project_points([marker[0]], [marker[1]], proj)
        marker = (float(marker[0]), float(marker[1])) if ok.all() else None
    entries = _legend_entries(footprints, marker, grid is not None) if legend else []

    # Layout in pixels: title band, map, colour bar on the right, legend band below.
    top, bottom, left, gap, bar, right = 48, 16, 16, 18, 16, 84
    map_w = width_px - left - gap - bar - right
    map_h = map_w if globe else map_w // 2
    ncol = max(1, min(len(entries), map_w // 200))
    band = 12 + 20 * -(-len(entries) // ncol) if entries else 0
    height_px = top + map_h + bottom + band
    map_bottom = bottom + band
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width_px, map_bottom / height_px, map_w / width_px, map_h / height_px), projection=proj)
    ax.set_global()
    ax.spines["geo"].set_visible(False)  # the limb is drawn below, as on the globe
    (x0, x1), (y0, y1) = proj.x_limits, proj.y_limits
    extent, shape = (x0, x1, y0, y1), (map_h, map_w)
    sampler = None

    # 1. The field, resampled onto the map's pixels exactly as the globe does.
    if field is not None:
        field = field.transpose("latitude", "longitude")
        sampler = geo.MapSampler(proj, field["latitude"].values, field["longitude"].values,
                                 bounds=(x0, y0, x1, y1), shape=shape)
        lo, hi = (float(c) for c in clim)
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            lo, hi = (lo - 0.5, lo + 0.5) if np.isfinite(lo) else (0.0, 1.0)
        colours = matplotlib.colormaps[cmap].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))  # NaN: off the globe
        mesh = ax.imshow(sampler.sample(field.values), extent=extent, origin="upper", transform=proj, cmap=colours,
                         norm=Normalize(lo, hi), interpolation="nearest", zorder=1)

    # 2. The swath cells, valued by the globe's own function, in the palette colours.
    if grid is not None and any(fp.mask is not None for fp in footprints):
        from app.state.drafts import PALETTE

        lat, lon = np.asarray(grid.latitude, dtype=np.float64), np.asarray(grid.longitude, dtype=np.float64)
        same = sampler is not None and np.array_equal(lat, field["latitude"].values) and \
            np.array_equal(lon, field["longitude"].values)
        if not same:
            sampler = geo.MapSampler(proj, lat, lon, bounds=(x0, y0, x1, y1), shape=shape)
        cells = plots.footprint_image(footprints, sampler, list(PALETTE)).dimension_values("observer", flat=False)
        # HoloViews hands the image back with its first row at the bottom (y ascending).
        ax.imshow(cells, extent=extent, origin="lower", transform=proj, interpolation="nearest", zorder=1.5,
                  cmap=ListedColormap(list(PALETTE)).with_extremes(bad=(1.0, 1.0, 1.0, 0.0)),
                  norm=Normalize(0, len(PALETTE)), alpha=FOOTPRINT_ALPHA)

    # 3. Graticule, coastlines, limb.
    if graticule:
        gx, gy = geo.project_lines(*geo.graticule(), proj)
        ax.plot(gx, gy, color="#777777", lw=_pt(0.6), ls=":", alpha=0.6, zorder=2)
    if coastlines:
        cx, cy = geo.project_lines(*geo.coastlines(), proj)
        ax.plot(cx, cy, color="#1a1a1a", lw=_pt(1.0), zorder=3)
    lx, ly = geo.limb(proj)
    ax.plot(lx, ly, color="#444444", lw=_pt(1.2), zorder=3, clip_on=False)

    # 4. Tracks, points, the meteogram's point.
    for fp in footprints:
        if fp.lines is not None:
            tx, ty = geo.project_lines(fp.lines[0], fp.lines[1], proj)
            if tx.size:
                ax.plot(tx, ty, color=fp.color, lw=_pt(1.5), alpha=TRACK_ALPHA, zorder=4)
    for fp in footprints:
        if fp.points is not None:
            big = bool(active) and fp.label == active
            _scatter(ax, fp.points[0], fp.points[1], proj, color=fp.color, marker=_POINT_KINDS.get(fp.kind, "o"),
                     size_px=11 if big else 7, edge_px=1.5 if big else 0.5)
    for lon_pts, lat_pts, colour in points:
        _scatter(ax, lon_pts, lat_pts, proj, color=colour, marker="o", size_px=7, edge_px=0.5)
    if marker is not None:
        ax.scatter(mx, my, marker="x", s=_pt(18) ** 2, c=MARKER_COLOUR, linewidths=_pt(4), zorder=6)
    if title:
        ax.set_title(title, fontsize=12, pad=10)

    if field is not None:
        cax = fig.add_axes(((left + map_w + gap) / width_px, (map_bottom + 0.1 * map_h) / height_px,
                            bar / width_px, 0.8 * map_h / height_px))
        colorbar = fig.colorbar(mesh, cax=cax)
        text = plots.units_label(units)
        colorbar.set_label(f"{label} ({text})" if label and text else (label or text), fontsize=9)
        colorbar.ax.tick_params(labelsize=8)
    if entries:
        handles, names = zip(*entries)
        fig.legend(handles, names, loc="upper left", bbox_to_anchor=(left / width_px, (band - 4) / height_px),
                   ncol=ncol, frameon=False, fontsize=9, handlelength=1.6, columnspacing=1.6, borderaxespad=0.0)
    return fig


def _scatter(ax, lon, lat, proj, *, color: str, marker: str, size_px: float, edge_px: float) -> None:
    """Points on the map, those on the far side of the globe left out."""

    x, y, ok = geo.project_points(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64), proj)
    if ok.any():
        ax.scatter(x[ok], y[ok], s=_pt(size_px) ** 2, c=color, marker=marker, edgecolors="white",
                   linewidths=_pt(edge_px), zorder=5)


def _legend_entries(footprints, marker, cells: bool) -> list[tuple[object, str]]:
    """``(handle, text)`` per observer (in the globe's style) and for the meteogram's point."""

    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from app.state.editor import KIND_LABELS

    entries = []
    for fp in footprints:
        kind = KIND_LABELS.get(fp.kind, fp.kind).lower()
        if fp.kind in _POINT_KINDS:
            handle = Line2D([], [], ls="none", marker=_POINT_KINDS[fp.kind], ms=_pt(9), mfc=fp.color, mec="white",
                            mew=_pt(0.5))
        elif cells and fp.mask is not None:
            handle = Patch(facecolor=to_rgba(fp.color, FOOTPRINT_ALPHA), edgecolor=fp.color, lw=_pt(1.5))
        else:
            handle = Line2D([], [], color=fp.color, lw=_pt(1.5), alpha=TRACK_ALPHA)
        entries.append((handle, f"{fp.label} ({kind})" if kind not in fp.label.lower() else fp.label))
    if marker is not None:
        handle = Line2D([], [], ls="none", marker="x", ms=_pt(12), mec=MARKER_COLOUR, mew=_pt(3))
        entries.append((handle, f"meteogram at {plots.lonlat_label(*marker)}"))
    return entries


def render_png(field: xr.DataArray | None, **options) -> bytes:
    """A PNG of the globe (or the flat map): :func:`render_figure` with the same arguments.

    Returns:
        The PNG file's bytes.
    """

    return _png_bytes(render_figure(field, **options))


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def view_style(variable: str, layer: str | None) -> tuple[str, bool]:
    """Colour map of a variable as shown (``layer`` None for the truth view), and whether its
    range is centred on 0: the error diverges (``RdBu_r``), the spread is sequential
    (``YlOrRd``), other layers use the variable's map (:func:`app.plots.field_style`)."""

    from app.views.globe import ERROR_CMAP, SPREAD_CMAP  # one definition, the globe's

    if layer == "error":
        return ERROR_CMAP, True
    if layer == "spread":
        return SPREAD_CMAP, False
    style = plots.field_style(variable)
    return style.cmap, style.symmetric


def view_title(state) -> str:
    """What the globe shows, e.g. ``"Ensemble mean · Temperature 500 hPa · 2002-05-18 06:00 UTC"``."""

    from app.views.globe import LAYER_TITLES

    if _shows_results(state):
        r = state.results
        layer = LAYER_TITLES.get(r.layer, r.layer) + (f" {r.member}" if r.layer == "member" else "")
        level = f" {r.level} hPa" if r.has_levels else ""
        return f"{layer} · {r.meta.long_name.capitalize()}{level} · {r.time_label}"
    t = state.truth
    level = f" {t.level} hPa" if t.has_levels else ""
    return f"Truth · {t.meta.long_name.capitalize()}{level} · {t.time_label}"


def _shows_results(state) -> bool:
    results = getattr(state, "results", None)
    return getattr(state, "view", "truth") == "results" and results is not None and results.available


def current_view_figure(state, *, width_px: int = 900):
    """What a session's globe shows, as a figure, and a file name for its PNG.

    The field (unless *Field* is switched off), the swath cells (unless *Swath footprints* is
    switched off), the coastlines and graticule as switched, every observer's footprint in its
    colour (the one being edited drawn larger in the truth view) and, in the results view, the
    meteogram's point.

    Arguments:
        state: The session's :class:`app.state.AppState`.

    Returns:
        ``(figure, "appa-<view>-<variable>[<level>]-<time>.png")`` (see :func:`render_figure`).

    Raises:
        DataError: nothing to draw (no truth loaded and no result, or a layer that cannot be computed).
    """

    from app import adapter

    g = state.globe
    results = _shows_results(state)
    if results:
        r = state.results
        field = r.field()
        variable, level, layer, times, index = r.variable, (r.level if r.has_levels else None), r.layer, r.times, \
            r.time_index
        lo, hi = r.value_range()
        meta = r.meta
        what = {"spread": f"Spread of {meta.long_name}", "error": f"Error in {meta.long_name}"}.get(
            layer, meta.long_name)
        name = "results-" + (f"member{r.member}" if layer == "member" else layer)
    else:
        t = state.truth
        if not t.loaded or t.variable is None:
            raise adapter.DataError("there is nothing to draw: no truth is loaded and no run has finished",
                                    hint="load a truth dataset or run the model first")
        field = t.field()
        variable, level, layer, times, index = t.variable, (t.level if t.has_levels else None), None, t.times, \
            t.time_index
        meta = t.meta
        lo, hi = t.value_range(symmetric=plots.field_style(variable).symmetric)
        what = meta.long_name
        name = "truth"
    if field is None:  # the state has set a notice saying why
        raise adapter.DataError(f"the field {variable} cannot be drawn", hint="choose another layer or variable")
    cmap, symmetric = view_style(variable, layer)
    if symmetric:
        bound = max(abs(lo), abs(hi))
        lo, hi = -bound, bound
    editor = state.editor
    fig = render_figure(
        field if g.show_field else None,
        projection=g.projection,
        central_longitude=g.central_longitude,
        central_latitude=g.central_latitude,
        title=view_title(state),
        units=meta.units,
        cmap=cmap,
        clim=(lo, hi),
        footprints=editor.footprints(),
        grid=editor.grid if g.show_footprints else None,
        active="" if results else (editor.active or ""),
        marker=state.results.point if results else None,
        width_px=width_px,
        coastlines=g.show_coastlines,
        graticule=g.show_graticule,
        label=what,
    )
    when = np.datetime_as_string(times[min(index, len(times) - 1)], unit="m").replace("-", "").replace(":", "") \
        if len(times) else "na"
    level_text = "" if level is None else str(level)
    return fig, f"appa-{name}-{variable}{level_text}-{when}.png"


def current_view_png(state, *, width_px: int = 900) -> tuple[bytes, str]:
    """A PNG of what a session's globe shows, and a file name for it (:func:`current_view_figure`).

    Returns:
        ``(png_bytes, "appa-<view>-<variable>[<level>]-<time>.png")``.

    Raises:
        DataError: nothing to draw (no truth loaded and no result, or a layer that cannot be computed).
    """

    fig, filename = current_view_figure(state, width_px=width_px)
    return _png_bytes(fig), filename
