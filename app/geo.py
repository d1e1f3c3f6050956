r"""Display geometry of the globe: projections, coastlines, graticule, visibility, line cutting.

Everything here is plain NumPy and cartopy (no Panel, no HoloViews, no engine): the plots call it
to turn lon/lat geometry into the coordinates of the map they draw.

**Visibility on the orthographic globe.** Seen from above :math:`(\lambda_0, \phi_0)`, a point
:math:`(\lambda, \phi)` is on the near hemisphere when the cosine of its great-circle distance to
the centre is positive,

.. math:: \cos c = \sin\phi_0 \sin\phi + \cos\phi_0 \cos\phi \cos(\lambda - \lambda_0) > 0 .

Points on the far side have no orthographic image (cartopy returns NaN or inf), so lines are cut
there; a path lying entirely on the far side would crash a projection and is never handed to one.

**Lines** are stored as one pair of lon/lat arrays with NaN between segments (one glyph for all
coastlines). After projection they are cut again wherever a vertex is invisible and, on the flat
map, wherever consecutive vertices jump across the map edge (the antimeridian of the view).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "COASTLINE_FILE",
    "EARTH_RADIUS_M",
    "make_projection",
    "coastlines",
    "graticule",
    "visible",
    "project_points",
    "project_lines",
    "unproject",
    "limb",
    "join_nan",
    "great_circle",
    "MapSampler",
]

#: The coastline file shipped with the app (see ``scripts/make_coastlines.py``).
COASTLINE_FILE = Path(__file__).resolve().parents[1] / "assets" / "coastlines" / "ne_110m_coastline.npz"

#: Radius of cartopy's default globe (WGS84 semi-major axis), m.
EARTH_RADIUS_M = 6378137.0

Kind = Literal["orthographic", "flat"]


def make_projection(kind: Kind = "orthographic", *, central_longitude: float = 0.0, central_latitude: float = 0.0):
    """A cartopy projection: ``Orthographic(λ0, φ0)`` for the globe, ``PlateCarree(λ0)`` for the flat map."""

    import cartopy.crs as ccrs

    lon0 = float(((central_longitude + 180.0) % 360.0) - 180.0)
    if kind == "orthographic":
        return ccrs.Orthographic(central_longitude=lon0, central_latitude=float(np.clip(central_latitude, -90, 90)))
    if kind == "flat":
        return ccrs.PlateCarree(central_longitude=lon0)
    raise ValueError(f"unknown projection kind {kind!r}")


@functools.lru_cache(maxsize=4)
def coastlines(path: str | Path = COASTLINE_FILE) -> tuple[np.ndarray, np.ndarray]:
    """Coastline segments, ``(lon, lat)`` float64 degrees with NaN between segments (read-only)."""

    with np.load(path) as data:
        lon = np.asarray(data["lon"], dtype=np.float64)
        lat = np.asarray(data["lat"], dtype=np.float64)
    for a in (lon, lat):
        a.setflags(write=False)
    return lon, lat


def join_nan(segments: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(x, y)`` segments into one pair of arrays with a NaN between segments."""

    xs, ys = [], []
    for x, y in segments:
        xs += [np.asarray(x, dtype=np.float64), [np.nan]]
        ys += [np.asarray(y, dtype=np.float64), [np.nan]]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


@functools.lru_cache(maxsize=4)
def graticule(step: float = 30.0, *, resolution: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Meridians every ``step`` degrees (stopping short of the poles) and parallels every ``step``
    degrees, densified every ``resolution`` degrees; ``(lon, lat)`` with NaN between lines."""

    lat_line = np.arange(-90 + step / 2, 90 - step / 2 + 1e-9, resolution)
    lat_line = np.clip(np.concatenate([[-90 + step / 3], lat_line, [90 - step / 3]]), -90, 90)
    lon_line = np.arange(-180.0, 180.0 + 1e-9, resolution)
    segments = [(np.full_like(lat_line, lon), lat_line) for lon in np.arange(-180.0, 180.0, step)]
    segments += [(lon_line, np.full_like(lon_line, lat)) for lat in np.arange(-90 + step, 90 - 1e-9, step)]
    lon, lat = join_nan(segments)
    for a in (lon, lat):
        a.setflags(write=False)
    return lon, lat


def visible(lon, lat, *, central_longitude: float, central_latitude: float) -> np.ndarray:
    """Whether points lie on the near hemisphere of an orthographic view (``cos c > 0``).

    Arguments:
        lon: Longitudes in degrees, any shape.
        lat: Latitudes in degrees, same shape.

    Returns:
        Boolean array of that shape (False for NaN coordinates).
    """

    lam, phi = np.deg2rad(np.asarray(lon, dtype=np.float64)), np.deg2rad(np.asarray(lat, dtype=np.float64))
    lam0, phi0 = np.deg2rad(central_longitude), np.deg2rad(central_latitude)
    cos_c = np.sin(phi0) * np.sin(phi) + np.cos(phi0) * np.cos(phi) * np.cos(lam - lam0)
    with np.errstate(invalid="ignore"):
        return cos_c > 1e-9


def project_points(lon, lat, projection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project lon/lat points; returns ``(x, y, ok)`` with NaN where a point has no image.

    Arguments:
        lon, lat: Degrees, shape ``(N,)``.
        projection: A cartopy projection.
    """

    import cartopy.crs as ccrs

    lon = np.asarray(lon, dtype=np.float64).ravel()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if lon.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    xyz = projection.transform_points(ccrs.PlateCarree(), lon, lat)
    x, y = xyz[:, 0], xyz[:, 1]
    ok = np.isfinite(x) & np.isfinite(y)
    if isinstance(projection, ccrs.Orthographic):
        lon0, lat0 = _centre(projection)
        ok &= visible(lon, lat, central_longitude=lon0, central_latitude=lat0)
    return np.where(ok, x, np.nan), np.where(ok, y, np.nan), ok


def project_lines(lon, lat, projection) -> tuple[np.ndarray, np.ndarray]:
    """Project NaN-separated lines and cut them where they leave the visible map.

    On the orthographic globe a line is cut at its invisible vertices; on the flat map it is cut
    where consecutive vertices are more than half the map width apart (crossing the map edge).

    Arguments:
        lon, lat: Degrees, shape ``(N,)``, NaN between lines.
        projection: A cartopy projection.

    Returns:
        ``(x, y)`` in projection coordinates, shape ``(N',)``, NaN between pieces (runs of fewer
        than two vertices dropped).
    """

    x, y, ok = project_points(lon, lat, projection)
    if x.size == 0:
        return x, y
    x0, x1 = projection.x_limits
    jump = np.zeros(x.size, dtype=bool)
    jump[1:] = np.abs(np.diff(x)) > 0.5 * (x1 - x0)
    # Start a new piece at every jump; NaNs already separate pieces.
    x = np.insert(x, np.flatnonzero(jump), np.nan)
    y = np.insert(y, np.flatnonzero(jump), np.nan)
    return _drop_short(x, y)


def _drop_short(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(0), np.zeros(0)
    # Label runs of finite values; keep runs of >= 2 vertices, one NaN between kept runs.
    starts = np.flatnonzero(finite & ~np.concatenate([[False], finite[:-1]]))
    ends = np.flatnonzero(finite & ~np.concatenate([finite[1:], [False]])) + 1
    keep = [(s, e) for s, e in zip(starts, ends) if e - s >= 2]
    return join_nan([(x[s:e], y[s:e]) for s, e in keep])


def unproject(x, y, projection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse projection of map coordinates to ``(lon, lat, ok)``; lon in [0, 360), NaN off the globe."""

    import cartopy.crs as ccrs

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    (x0, x1), (y0, y1) = projection.x_limits, projection.y_limits
    inside = np.isfinite(x) & np.isfinite(y) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    lonlat = ccrs.PlateCarree().transform_points(projection, np.where(inside, x, 0.0), np.where(inside, y, 0.0))
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    ok = inside & np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90)
    return np.where(ok, np.mod(lon, 360.0), np.nan), np.where(ok, lat, np.nan), ok


def limb(projection, *, n: int = 361) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the map: the globe's limb (a circle) or the flat map's rectangle."""

    import cartopy.crs as ccrs

    if isinstance(projection, ccrs.Orthographic):
        r = EARTH_RADIUS_M
        t = np.linspace(0, 2 * np.pi, n)
        return r * np.cos(t), r * np.sin(t)
    (x0, x1), (y0, y1) = projection.x_limits, projection.y_limits
    return np.array([x0, x1, x1, x0, x0], dtype=np.float64), np.array([y0, y0, y1, y1, y0], dtype=np.float64)


def great_circle(lon, lat, *, step_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Densify a polyline along great circles (slerp between vertices) every ``step_deg`` degrees.

    Arguments:
        lon, lat: Vertices in degrees, shape ``(P,)``.

    Returns:
        ``(lon, lat)`` of the densified line in degrees (lon in [0, 360)), the vertices included.
    """

    lon = np.deg2rad(np.asarray(lon, dtype=np.float64))
    lat = np.deg2rad(np.asarray(lat, dtype=np.float64))
    if lon.size < 2:
        return np.mod(np.rad2deg(lon), 360.0), np.rad2deg(lat)
    p = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
    out = [p[:1]]
    for a, b in zip(p[:-1], p[1:]):
        omega = np.arccos(np.clip(a @ b, -1.0, 1.0))
        n = max(1, int(np.ceil(np.rad2deg(omega) / step_deg)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        if omega < 1e-12:
            seg = np.repeat(b[None], n, axis=0)
        else:
            seg = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
        out.append(seg)
    q = np.concatenate(out)
    return np.mod(np.rad2deg(np.arctan2(q[:, 1], q[:, 0])), 360.0), np.rad2deg(np.arcsin(np.clip(q[:, 2], -1, 1)))


def _centre(projection) -> tuple[float, float]:
    params = projection.proj4_params
    return float(params.get("lon_0", 0.0)), float(params.get("lat_0", 0.0))


class MapSampler:
    r"""Nearest-cell resampling of lat-lon fields onto the pixels of a map.

    For the centre :math:`(x, y)` of every pixel of an ``nx × ny`` image covering ``bounds`` in
    map coordinates, the inverse projection gives :math:`(\lambda, \phi)` (undefined off the
    globe's disk), and the pixel takes the value of the grid cell whose centre is nearest in
    latitude and in longitude (periodic). The indices are computed once per projection and grid;
    :meth:`sample` is then one gather per field, so stepping through time costs milliseconds.

    Arguments:
        projection: A cartopy projection (the map).
        latitude: Grid latitudes in degrees, shape ``(H,)`` (any monotonic order).
        longitude: Grid longitudes in degrees, shape ``(W,)``, ascending, periodic.
        bounds: ``(x0, y0, x1, y1)`` of the image in map coordinates.
        shape: ``(ny, nx)`` pixels.
    """

    def __init__(self, projection, latitude, longitude, *, bounds, shape: tuple[int, int]):
        self.bounds = tuple(float(b) for b in bounds)
        self.shape = (int(shape[0]), int(shape[1]))
        x0, y0, x1, y1 = self.bounds
        ny, nx = self.shape
        xs = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
        ys = y1 - (np.arange(ny) + 0.5) * (y1 - y0) / ny  # row 0 at the top
        X, Y = np.meshgrid(xs, ys)
        lon, lat, ok = unproject(X.ravel(), Y.ravel(), projection)
        lat_grid = np.asarray(latitude, dtype=np.float64)
        lon_grid = np.asarray(longitude, dtype=np.float64)
        self.i = _nearest(lat_grid, np.where(ok, lat, lat_grid[0])).reshape(ny, nx)
        W = lon_grid.size
        dlon = 360.0 / W
        j = np.round((np.where(ok, lon, lon_grid[0]) - lon_grid[0]) / dlon).astype(np.int64) % W
        self.j = j.reshape(ny, nx)
        self.valid = ok.reshape(ny, nx)

    def sample(self, values, dtype=np.float64) -> np.ndarray:
        """The field on the map's pixels, shape ``(ny, nx)``, NaN off the globe.

        Arguments:
            values: Field on the grid, shape ``(H, W)``.
            dtype: Floating type of the result.
        """

        out = np.asarray(values, dtype=dtype)[self.i, self.j]
        out[~self.valid] = np.nan
        return out


def _nearest(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest element of a monotonic 1-D ``grid`` for each of ``values``."""

    order = np.argsort(grid)
    g = grid[order]
    k = np.clip(np.searchsorted(g, values), 1, g.size - 1)
    left_closer = (values - g[k - 1]) <= (g[k] - values)
    return order[np.where(left_closer, k - 1, k)]
