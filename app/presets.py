r"""Preset station networks: airports thinned to a spread-out subset, and random points.

**Airports.** The ``airportsdata`` package (MIT) lists ~28,000 airports with ICAO codes; the
~8,000 that also have an IATA code are the commercial ones. They cluster (Europe, the US), so a
preset of ``N`` is chosen by *farthest-point sampling*: start from the airport nearest to a fixed
reference point, then repeatedly add the airport whose great-circle distance to the chosen set is
largest. The result is deterministic and spread over the populated land.

**Uniform on the sphere.** With :math:`u \sim \mathcal{U}(-1, 1)` and
:math:`\lambda \sim \mathcal{U}(0, 360°)`, the point :math:`(\lambda, \arcsin u)` is uniform on
the sphere (equal areas between equal steps of :math:`\sin\phi`, Archimedes' hat-box theorem).

Both return a :class:`pandas.DataFrame` with columns ``name``, ``lon`` (in [0, 360)), ``lat``,
``elevation`` (m, NaN when unknown), the layout of
:func:`appa_engine.observations.io.read_stations`.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

__all__ = ["airport_network", "random_network", "farthest_point_order", "unit_vectors"]

_FEET = 0.3048


def unit_vectors(lon, lat) -> np.ndarray:
    """Unit vectors of points on the sphere, shape ``(N, 3)``, from degrees of shape ``(N,)``."""

    lam, phi = np.deg2rad(np.asarray(lon, dtype=np.float64)), np.deg2rad(np.asarray(lat, dtype=np.float64))
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def farthest_point_order(lon, lat, n: int, *, start: int = 0) -> np.ndarray:
    """Indices of ``n`` points chosen by farthest-point sampling, starting at ``start``.

    Arguments:
        lon, lat: Candidate points in degrees, shape ``(M,)``.
        n: How many to choose (at most ``M``).
        start: Index of the first point.

    Returns:
        Indices, shape ``(min(n, M),)``; point ``k`` maximises the distance to points ``0..k-1``.
    """

    p = unit_vectors(lon, lat)
    n = min(int(n), p.shape[0])
    chosen = np.empty(n, dtype=np.int64)
    if n == 0:
        return chosen
    # Great-circle distance is monotone in the chord, so compare cosines: max distance = min cos.
    nearest_cos = np.full(p.shape[0], -np.inf)
    k = int(start)
    for i in range(n):
        chosen[i] = k
        nearest_cos = np.maximum(nearest_cos, p @ p[k])
        nearest_cos[chosen[: i + 1]] = np.inf
        k = int(np.argmin(nearest_cos))
    return chosen


@functools.lru_cache(maxsize=1)
def _airports() -> pd.DataFrame:
    import airportsdata

    table = pd.DataFrame.from_dict(airportsdata.load("ICAO"), orient="index")
    table = table[table["iata"].astype(str).str.len() == 3].sort_values("icao")
    return pd.DataFrame(
        {
            "name": table["icao"].astype(str).to_numpy(),
            "lon": np.mod(table["lon"].to_numpy(dtype=np.float64), 360.0),
            "lat": table["lat"].to_numpy(dtype=np.float64),
            "elevation": table["elevation"].to_numpy(dtype=np.float64) * _FEET,
        }
    ).reset_index(drop=True)


def airport_network(n: int, *, reference: tuple[float, float] = (0.0, 51.5)) -> pd.DataFrame:
    """``n`` commercial airports (ICAO codes as names) spread by farthest-point sampling.

    Arguments:
        n: Number of stations, ≥ 1 (at most the number of airports with an IATA code).
        reference: ``(lon, lat)`` of the point whose nearest airport is chosen first.
    """

    table = _airports()
    ref = unit_vectors([reference[0]], [reference[1]])[0]
    start = int(np.argmax(unit_vectors(table["lon"], table["lat"]) @ ref))
    order = farthest_point_order(table["lon"].to_numpy(), table["lat"].to_numpy(), n, start=start)
    return table.iloc[order].reset_index(drop=True)


def random_network(n: int, *, seed: int = 0) -> pd.DataFrame:
    """``n`` stations uniform on the sphere (seeded), named ``R0001``, ``R0002``, ..."""

    rng = np.random.default_rng(seed)
    lon = rng.uniform(0.0, 360.0, n)
    lat = np.rad2deg(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return pd.DataFrame(
        {"name": [f"R{k + 1:04d}" for k in range(n)], "lon": lon, "lat": lat, "elevation": np.full(n, np.nan)}
    )
