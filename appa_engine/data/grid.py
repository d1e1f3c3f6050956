r"""The regular latitude-longitude grid, and the one place where area weights are defined.

Latitudes run from north to south (90 → −90), longitudes east from 0 to < 360, as in
WeatherBench2 (DESIGN.md §4). A grid of H latitudes and W longitudes covers the sphere either
*with* the poles (``lat = linspace(90, -90, H)``, e.g. ERA5 721×1440, WB2 240×121) or *without*
(cell centres, ``lat = 90 - (i + 1/2)·180/H``, e.g. WB2 64×32).

Area weights follow WeatherBench2: each latitude row is weighted by the area of the band it
represents, normalised to mean 1,

.. math:: w_i = \frac{\sin\phi_i^+ - \sin\phi_i^-}{\frac{1}{H}\sum_j (\sin\phi_j^+ - \sin\phi_j^-)}

where :math:`\phi_i^\pm` are the band edges (half-way to the neighbouring rows, clipped at ±90°).
For cell-centred grids this is proportional to :math:`\cos\phi_i` up to O(Δφ²); unlike plain
:math:`\cos\phi`, it gives the pole rows of a grid with poles a small non-zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appa_engine.errors import DataError

__all__ = ["Grid", "area_weights"]


def area_weights(latitude: np.ndarray) -> np.ndarray:
    """Area weight of each latitude row, with mean 1.

    Arguments:
        latitude: Latitudes in degrees, shape ``(H,)``, regularly spaced, either order.

    Returns:
        Weights, shape ``(H,)``, float64, in the order of ``latitude``.
    """

    lat = np.asarray(latitude, dtype=np.float64)
    if lat.ndim != 1 or lat.size < 2:
        raise DataError(f"area weights need at least two latitudes, got shape {lat.shape}")
    order = np.argsort(lat)
    s = lat[order]
    mid = (s[1:] + s[:-1]) / 2
    lower = np.concatenate([[-90.0], mid])
    upper = np.concatenate([mid, [90.0]])
    band = np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower))
    w = np.empty_like(band)
    w[order] = band
    return w / w.mean()


@dataclass(frozen=True)
class Grid:
    """A regular latitude-longitude grid.

    Arguments:
        latitude: Latitudes in degrees, descending, shape ``(H,)``.
        longitude: Longitudes in degrees, ascending in [0, 360), shape ``(W,)``.
    """

    latitude: tuple[float, ...]
    longitude: tuple[float, ...]

    def __post_init__(self):
        lat = np.asarray(self.latitude, dtype=np.float64)
        lon = np.asarray(self.longitude, dtype=np.float64)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
            raise DataError("a grid needs at least two latitudes and two longitudes")
        if np.any(np.abs(lat) > 90):
            raise DataError("latitudes must lie in [-90, 90]")
        if not np.all(np.diff(lat) < 0):
            raise DataError("grid latitudes must be strictly descending (90 → -90)")
        if not (np.all(np.diff(lon) > 0) and lon[0] >= 0 and lon[-1] < 360):
            raise DataError("grid longitudes must be strictly ascending in [0, 360)")
        for name, values in (("latitude", lat), ("longitude", lon)):
            step = np.diff(values)
            if not np.allclose(step, step[0], rtol=1e-4, atol=1e-6):
                raise DataError(
                    f"the {name} spacing is irregular (from {abs(step).min():.4g}° to "
                    f"{abs(step).max():.4g}°); a Gaussian or irregular grid is not supported",
                    hint="regrid to a regular lat-lon grid first (e.g. xarray's interp, or "
                    "WeatherBench2's regridded stores)",
                )
        if not np.isclose((lon[1] - lon[0]) * lon.size, 360.0, rtol=1e-4):
            raise DataError(
                f"longitudes do not cover the globe ({lon.size} points spaced "
                f"{lon[1] - lon[0]:.4g}°); only global grids are supported"
            )

    @classmethod
    def from_arrays(cls, latitude, longitude) -> "Grid":
        return cls(tuple(float(v) for v in np.asarray(latitude)), tuple(float(v) for v in np.asarray(longitude)))

    @classmethod
    def regular(cls, nlat: int, nlon: int, *, poles: bool = False) -> "Grid":
        """A global grid of ``nlat × nlon`` points, with rows on the poles or cell-centred."""

        if poles:
            lat = np.linspace(90.0, -90.0, nlat)
        else:
            lat = 90.0 - (np.arange(nlat) + 0.5) * 180.0 / nlat
        lon = np.arange(nlon) * 360.0 / nlon
        return cls.from_arrays(lat, lon)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return len(self.latitude), len(self.longitude)

    @property
    def lat(self) -> np.ndarray:
        return np.asarray(self.latitude)

    @property
    def lon(self) -> np.ndarray:
        return np.asarray(self.longitude)

    @property
    def dlat(self) -> float:
        return float(self.latitude[0] - self.latitude[1])

    @property
    def dlon(self) -> float:
        return float(self.longitude[1] - self.longitude[0])

    @property
    def has_poles(self) -> bool:
        return bool(np.isclose(self.latitude[0], 90.0) and np.isclose(self.latitude[-1], -90.0))

    def weights(self) -> np.ndarray:
        """Area weights per latitude row, shape ``(H,)``, mean 1 (see :func:`area_weights`)."""
        return area_weights(self.lat)

    def to_dict(self) -> dict:
        return {"latitude": list(self.latitude), "longitude": list(self.longitude)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls.from_arrays(d["latitude"], d["longitude"])

    def __repr__(self) -> str:
        h, w = self.shape
        return f"Grid({h}×{w}, lat {self.latitude[0]:g}→{self.latitude[-1]:g}, dlon {self.dlon:g}°)"
