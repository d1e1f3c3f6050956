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

from typing import NamedTuple

import numpy as np

from app import geo

__all__ = [
    "FieldStyle",
    "field_style",
    "units_label",
    "field_image",
    "line_layer",
    "observer_lines",
    "observer_points",
    "editable_points",
    "editable_track",
    "footprint_image",
    "bezel",
    "outline",
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


def field_image(values, sampler: geo.MapSampler, *, label: str, units: str):
    """The field on the map: ``hv.Image`` of ``sampler.sample(values)`` over ``sampler.bounds``.

    Arguments:
        values: Field on the grid, shape ``(H, W)``.
        sampler: Resampler of the grid onto the map's pixels.
        label, units: Name and units of the value (colour bar title).
    """

    import holoviews as hv

    vdim = hv.Dimension("value", label=label, unit=units_label(units) or None)
    return hv.Image(sampler.sample(values), bounds=sampler.bounds, kdims=["x", "y"], vdims=[vdim])


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
        color=hv.dim("color"), line_width=1.5, alpha=0.9, tools=["hover"], hover_tooltips=[("observer", "@observer")]
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
    observer plus one half (NaN elsewhere), for a categorical colour map over ``palette``."""

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
    return hv.Image(image, bounds=sampler.bounds, kdims=["x", "y"], vdims=["observer"])


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
