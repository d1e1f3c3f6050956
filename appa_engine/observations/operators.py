r"""Observation operators as sparse stencils: interpolation weights in time and space.

Every linear observation is a weighted sum of entries of the standardised trajectory
:math:`x \in \mathbb{R}^{T \times C \times H \times W}`,

.. math:: \mathcal{A}(x)_n = \sum_{e \,:\, r_e = n} w_e \, x_{k_e, c_e, i_e, j_e},

stored once as index and weight arrays (a COO sparse matrix), so applying it is a gather and a
weighted scatter-add, batched over ``B`` and differentiable (forward and reverse mode). Because
the weights of each row sum to one, interpolating standardised values and then de-standardising
equals interpolating physical values.

**Time.** Between the bracketing model states :math:`t_k \le \tau \le t_{k+1}`,

.. math:: x(\tau) = (1 - \alpha)\, x_k + \alpha\, x_{k+1}, \qquad \alpha = \frac{\tau - t_k}{t_{k+1} - t_k},

exact (one entry, weight 1) on state times.

**Space (bilinear).** With latitude rows :math:`\phi_i` descending by :math:`\Delta\phi` and
longitude columns :math:`\lambda_j` ascending by :math:`\Delta\lambda`, a point
:math:`(\lambda, \phi)` has fractional indices :math:`u = ((\lambda - \lambda_0) \bmod 360) /
\Delta\lambda`, :math:`v = (\phi_0 - \phi) / \Delta\phi` and

.. math:: x(\lambda, \phi) = (1-\beta)(1-\gamma)\, x_{i,j} + (1-\beta)\gamma\, x_{i,j+1}
    + \beta(1-\gamma)\, x_{i+1,j} + \beta\gamma\, x_{i+1,j+1},

:math:`i = \lfloor v \rfloor`, :math:`\beta = v - i`, :math:`j = \lfloor u \rfloor`,
:math:`\gamma = u - j`, with :math:`j + 1` taken modulo :math:`W` (longitude is periodic: a point
at 359.5° on a 1° grid averages columns 359 and 0).

**Poles.** A grid with pole rows covers every latitude. On a grid *without* pole rows (cell
centres), a point poleward of the outermost row :math:`\phi_0` interpolates linearly in latitude
between the row (interpolated in longitude) and a pole value defined as the zonal mean of that
row,

.. math:: x(\lambda, \phi) = (1 - \rho)\, x_0(\lambda) + \rho\, \frac{1}{W} \sum_j x_{0,j},
    \qquad \rho = \frac{\phi - \phi_0}{90 - \phi_0},

(and symmetrically at the south pole); the value is continuous across the outermost row and
single-valued at the pole, and no extrapolation ever happens.
"""

from __future__ import annotations

import numpy as np
import torch

from appa_engine.data.grid import Grid
from appa_engine.errors import ObservationError

__all__ = [
    "time_stencil",
    "time_brackets",
    "nearest_state",
    "bilinear_stencil",
    "densify_polyline",
    "sparse_apply",
    "wind_speed",
    "WIND_EPS2",
]

#: Added to :math:`u^2 + v^2` (m²/s²) so that the wind speed is differentiable at calm (bias ≤ 1e-6 m/s).
WIND_EPS2 = 1e-12

#: Fractional index distance under which a coordinate snaps to a grid node (or a state).
_SNAP = 1e-9


def time_stencil(
    state_times: np.ndarray, obs_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation in time.

    Arguments:
        state_times: Model state times, strictly increasing, shape ``(T,)``, datetime64.
        obs_times: Observation times, shape ``(n,)``, all within ``[t_0, t_{T-1}]``.

    Returns:
        ``(obs, k, w)``: for each non-zero entry, the observation position, the state index and
        the weight; entries are sorted by observation. Also see :func:`time_brackets`.
    """

    k, alpha = time_brackets(state_times, obs_times)
    n = obs_times.size
    obs = np.concatenate([np.arange(n), np.arange(n)])
    ks = np.concatenate([k, np.minimum(k + 1, state_times.size - 1)])
    ws = np.concatenate([1.0 - alpha, alpha])
    keep = ws != 0
    order = np.argsort(obs[keep], kind="stable")
    return obs[keep][order], ks[keep][order], ws[keep][order]


def time_brackets(state_times: np.ndarray, obs_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower bracketing state ``k`` and weight ``alpha`` of the next state, each ``(n,)``."""

    t = state_times.astype("datetime64[ns]").astype(np.int64)
    s = obs_times.astype("datetime64[ns]").astype(np.int64)
    if np.any(s < t[0]) or np.any(s > t[-1]):
        raise ObservationError("observation times outside the window")  # callers check first
    k = np.clip(np.searchsorted(t, s, side="right") - 1, 0, t.size - 1)
    alpha = np.zeros(s.size)
    inner = k < t.size - 1
    kk = k[inner]
    alpha[inner] = (s[inner] - t[kk]) / (t[kk + 1] - t[kk])
    return k, alpha


def nearest_state(state_times: np.ndarray, obs_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest state (ties to the later one) and the offset ``obs - state`` in ns, each ``(n,)``."""

    t = state_times.astype("datetime64[ns]").astype(np.int64)
    s = obs_times.astype("datetime64[ns]").astype(np.int64)
    hi = np.clip(np.searchsorted(t, s, side="left"), 0, t.size - 1)
    lo = np.clip(hi - 1, 0, t.size - 1)
    k = np.where(np.abs(s - t[lo]) < np.abs(s - t[hi]), lo, hi)
    return k, s - t[k]


def bilinear_stencil(
    grid: Grid, lon: np.ndarray, lat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation weights at points, periodic in longitude, with the pole rule above.

    Arguments:
        grid: The grid.
        lon: Longitudes in degrees, shape ``(S,)``.
        lat: Latitudes in degrees in [-90, 90], shape ``(S,)``.

    Returns:
        ``(point, cell, w)``: for each non-zero entry the point index, the flat cell index
        ``i * W + j`` and the weight; the weights of each point sum to 1.
    """

    H, W = grid.shape
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lat0 = grid.latitude[0]

    u = np.mod(lon - grid.longitude[0], 360.0) / grid.dlon
    j0 = np.floor(u).astype(np.int64)
    gamma = u - j0
    up = gamma > 1 - _SNAP
    j0 = np.where(up, j0 + 1, j0) % W
    gamma = np.where(up | (gamma < _SNAP), 0.0, gamma)
    j1 = (j0 + 1) % W

    v = (lat0 - lat) / grid.dlat
    north = v < -_SNAP
    south = v > H - 1 + _SNAP
    inside = ~(north | south)
    i0 = np.clip(np.floor(v), 0, H - 2).astype(np.int64)
    beta = np.clip(v - i0, 0.0, 1.0)
    beta = np.where(beta < _SNAP, 0.0, np.where(beta > 1 - _SNAP, 1.0, beta))

    points, cells, weights = [], [], []
    p = np.flatnonzero(inside)
    if p.size:
        b, g = beta[p], gamma[p]
        for di, dj, w in (
            (0, j0, (1 - b) * (1 - g)),
            (0, j1, (1 - b) * g),
            (1, j0, b * (1 - g)),
            (1, j1, b * g),
        ):
            points.append(p)
            cells.append((i0[p] + di) * W + dj[p])
            weights.append(w)
    for cap, row, pole in ((north, 0, 90.0), (south, H - 1, -90.0)):
        p = np.flatnonzero(cap)
        if not p.size:
            continue
        edge = grid.latitude[row]
        rho = (lat[p] - edge) / (pole - edge)
        g = gamma[p]
        points += [p, p]
        cells += [row * W + j0[p], row * W + j1[p]]
        weights += [(1 - rho) * (1 - g), (1 - rho) * g]
        points.append(np.repeat(p, W))
        cells.append(np.tile(row * W + np.arange(W), p.size))
        weights.append(np.repeat(rho / W, W))
    if not points:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    point = np.concatenate(points)
    cell = np.concatenate(cells)
    w = np.concatenate(weights)
    keep = w != 0
    order = np.argsort(point[keep], kind="stable")
    return point[keep][order], cell[keep][order], w[keep][order]


def _unit(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lam, phi = np.deg2rad(lon), np.deg2rad(lat)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def densify_polyline(
    lon: np.ndarray, lat: np.ndarray, step_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points along the great-circle arcs between consecutive vertices, at most ``step_deg`` apart.

    Arguments:
        lon: Vertex longitudes in degrees, shape ``(P,)``.
        lat: Vertex latitudes in degrees, shape ``(P,)``.
        step_deg: Largest spacing between consecutive points (great-circle degrees).

    Returns:
        ``(lon, lat)`` of the points (vertices included), longitude in [0, 360).
    """

    xyz = _unit(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    out = [xyz[:1]]
    for a, b in zip(xyz[:-1], xyz[1:]):
        theta = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
        if theta > np.pi - 1e-6:
            raise ObservationError(
                "two consecutive track vertices are antipodal: the great circle between them is undefined",
                hint="add a vertex in between",
            )
        n = max(1, int(np.ceil(theta / np.deg2rad(step_deg) - 1e-9)))
        s = np.arange(1, n + 1) / n
        if theta < 1e-12:
            pts = np.repeat(b[None], n, axis=0)
        else:
            pts = (np.sin((1 - s) * theta)[:, None] * a + np.sin(s * theta)[:, None] * b) / np.sin(
                theta
            )
        out.append(pts)
    pts = np.concatenate(out)
    lat_out = np.rad2deg(np.arcsin(np.clip(pts[:, 2], -1.0, 1.0)))
    lon_out = np.mod(np.rad2deg(np.arctan2(pts[:, 1], pts[:, 0])), 360.0)
    lon_out = np.where(lon_out >= 360.0, 0.0, lon_out)
    return lon_out, lat_out


def sparse_apply(
    x_flat: torch.Tensor, rows: torch.Tensor | None, idx: torch.Tensor, w: torch.Tensor, n: int
) -> torch.Tensor:
    r"""Apply a COO operator: :math:`y_{b,r} = \sum_{e: r_e = r} w_e\, x_{b, \mathrm{idx}_e}`.

    Arguments:
        x_flat: Flattened input, shape ``(B, D)``.
        rows: Row of each entry, shape ``(E,)``, or None when entry ``e`` is row ``e`` (``E = n``).
        idx: Column of each entry in ``[0, D)``, shape ``(E,)``.
        w: Weight of each entry, shape ``(E,)``, on the device and dtype of ``x_flat``.
        n: Number of rows.

    Returns:
        The result, shape ``(B, n)``.
    """

    values = x_flat.index_select(1, idx) * w
    if rows is None:
        return values
    return x_flat.new_zeros(x_flat.shape[0], n).index_add(1, rows, values)


def wind_speed(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""Wind speed :math:`\sqrt{u^2 + v^2 + \epsilon}` in the units of ``u`` and ``v`` (m/s), any shape."""

    return torch.sqrt(u * u + v * v + WIND_EPS2)
