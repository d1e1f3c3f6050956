"""Static figures of the app, rendered on the server (no browser): a PNG of the current globe view.

:func:`render_png` draws a field the way the globe does (:mod:`app.views.globe`): the field is
resampled onto the map's pixels by nearest grid cell with :class:`app.geo.MapSampler` (the same
resampling as the interactive plot, NaN off the globe's disk), on a cartopy ``GeoAxes`` in the
same projection (orthographic globe or flat Plate Carrée, same point of view), with the same
colour map and colour range, a colour bar in physical units, the coastlines shipped with the app
(:func:`app.geo.coastlines`, projected and cut at the limb by :func:`app.geo.project_lines`;
cartopy's own Natural Earth features are never used, they would be downloaded), the graticule and
the observers' points.

Rendering uses matplotlib's object API (:class:`~matplotlib.figure.Figure` with the Agg canvas,
no ``pyplot``), so figures of concurrent sessions do not share global state.

:func:`current_view_png` reads what a session's globe shows (:class:`app.state.AppState`: truth or
results view, layer, variable, level, time, point of view, layers switched on) and renders it.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import xarray as xr

from app import geo, plots

__all__ = ["render_png", "current_view_png", "view_title", "view_style"]

_DPI = 100


def render_png(
    field: xr.DataArray,
    *,
    projection: str,
    central_longitude: float,
    central_latitude: float,
    title: str,
    units: str,
    cmap: str,
    clim: tuple[float, float],
    points: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    width_px: int = 900,
    coastlines: bool = True,
    graticule: bool = True,
    label: str = "",
) -> bytes:
    """A PNG of a field on the globe (or the flat map), with a colour bar and the observers.

    Arguments:
        field: The field, dims ``(latitude, longitude)`` (shape ``(H, W)``), degrees, longitudes
            ascending and periodic; NaN cells are left blank.
        projection: ``"orthographic"`` (the globe) or ``"flat"`` (Plate Carrée).
        central_longitude, central_latitude: Point of view in degrees (the latitude is ignored on
            the flat map).
        title: Title above the map.
        units: Physical units of the values (``"m s**-1"`` is written ``m s⁻¹``) for the colour bar.
        cmap: A matplotlib colour map name.
        clim: ``(low, high)`` of the colour range.
        points: ``(lon, lat, colour)`` per observer: degrees, each of shape ``(S,)``; points on the far
            side of the globe are left out.
        width_px: Width of the image in pixels (the height follows the projection's shape).
        coastlines, graticule: Draw the coastlines and the 30° graticule.
        label: What the values are (colour bar title, before the units).

    Returns:
        The PNG file's bytes.
    """

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if field.ndim != 2 or not {"latitude", "longitude"} <= set(field.dims):
        raise ValueError(f"render_png needs a (latitude, longitude) field, got dims {field.dims}")
    if projection not in ("orthographic", "flat"):
        raise ValueError(f"unknown projection {projection!r}: use 'orthographic' or 'flat'")
    width_px = int(width_px)
    if width_px < 200:
        raise ValueError(f"width_px must be at least 200, got {width_px}")
    field = field.transpose("latitude", "longitude")
    proj = geo.make_projection(projection, central_longitude=central_longitude, central_latitude=central_latitude)
    globe = projection == "orthographic"

    # Layout in pixels: title band, map, colour bar on the right.
    top, bottom, left, gap, bar, right = 48, 16, 16, 18, 16, 84
    map_w = width_px - left - gap - bar - right
    map_h = map_w if globe else map_w // 2
    height_px = top + map_h + bottom
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / width_px, bottom / height_px, map_w / width_px, map_h / height_px), projection=proj)
    ax.set_global()
    (x0, x1), (y0, y1) = proj.x_limits, proj.y_limits

    # The field, resampled onto the map's pixels exactly as the globe does.
    sampler = geo.MapSampler(proj, field["latitude"].values, field["longitude"].values,
                             bounds=(x0, y0, x1, y1), shape=(map_h, map_w))
    image = sampler.sample(field.values)
    lo, hi = (float(c) for c in clim)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        lo, hi = (lo - 0.5, lo + 0.5) if np.isfinite(lo) else (0.0, 1.0)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))  # NaN: off the globe
    mesh = ax.imshow(image, extent=(x0, x1, y0, y1), origin="upper", transform=proj, cmap=colours,
                     norm=Normalize(lo, hi), interpolation="nearest", zorder=1)

    if graticule:
        gx, gy = geo.project_lines(*geo.graticule(), proj)
        ax.plot(gx, gy, color="#777777", lw=0.5, ls=":", alpha=0.8, zorder=2)
    if coastlines:
        cx, cy = geo.project_lines(*geo.coastlines(), proj)
        ax.plot(cx, cy, color="#1a1a1a", lw=0.8, zorder=3)
    for lon, lat, colour in points:
        px, py, ok = geo.project_points(lon, lat, proj)
        if ok.any():
            ax.scatter(px[ok], py[ok], s=22, c=colour, edgecolors="white", linewidths=0.6,
                       zorder=4)
    ax.set_title(title, fontsize=12, pad=10)

    cax = fig.add_axes(((left + map_w + gap) / width_px, (bottom + 0.1 * map_h) / height_px, bar / width_px,
                        0.8 * map_h / height_px))
    colorbar = fig.colorbar(mesh, cax=cax)
    text = plots.units_label(units)
    colorbar.set_label(f"{label} ({text})" if label and text else (label or text), fontsize=9)
    colorbar.ax.tick_params(labelsize=8)

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


def current_view_png(state, *, width_px: int = 900) -> tuple[bytes, str]:
    """A PNG of what a session's globe shows, and a file name for it.

    Arguments:
        state: The session's :class:`app.state.AppState`.

    Returns:
        ``(png_bytes, "appa-<view>-<variable>[<level>]-<time>.png")``.

    Raises:
        DataError: nothing to draw (no truth loaded and no result, or a layer that cannot be computed).
    """

    from app import adapter

    g = state.globe
    if _shows_results(state):
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
    points = []
    for fp in state.editor.footprints():
        if fp.points is not None:
            points.append((np.asarray(fp.points[0]), np.asarray(fp.points[1]), fp.color))
    png = render_png(
        field,
        projection=g.projection,
        central_longitude=g.central_longitude,
        central_latitude=g.central_latitude,
        title=view_title(state),
        units=meta.units,
        cmap=cmap,
        clim=(lo, hi),
        points=points,
        width_px=width_px,
        coastlines=g.show_coastlines,
        graticule=g.show_graticule,
        label=what,
    )
    when = np.datetime_as_string(times[min(index, len(times) - 1)], unit="m").replace("-", "").replace(":", "") \
        if len(times) else "na"
    level_text = "" if level is None else str(level)
    return png, f"appa-{name}-{variable}{level_text}-{when}.png"
