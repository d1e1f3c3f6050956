r"""Geostrophic balance: how far the wind is from the wind implied by the geopotential.

Away from the equator, large-scale flow on a pressure surface is close to geostrophic balance
between the Coriolis force and the geopotential gradient. On a sphere of radius :math:`a`
rotating at :math:`\Omega`, with :math:`f = 2\Omega\sin\phi`, the geostrophic wind of the
geopotential :math:`\Phi(\lambda, \phi)` is

.. math:: u_g = -\frac{1}{f a}\frac{\partial\Phi}{\partial\phi}, \qquad
    v_g = \frac{1}{f a\cos\phi}\frac{\partial\Phi}{\partial\lambda} .

Derivatives are centred differences: periodic in longitude, second order along latitude
(:func:`numpy.gradient`, one-sided at the first and last rows). Rows with :math:`|\phi|` below
``equator_band`` (where :math:`f \to 0` makes :math:`u_g, v_g` blow up) and pole rows (where
:math:`\cos\phi = 0`) are excluded (NaN).

The diagnostic reports, per level (and time, member), the RMS of the ageostrophic wind relative to
the RMS wind,

.. math:: r = \sqrt{\frac{\langle (u - u_g)^2 + (v - v_g)^2 \rangle}{\langle u^2 + v^2 \rangle}},

(0 for a balanced field, about 1 or more for a wind unrelated to :math:`\Phi`), and the
area-weighted Pearson correlation between the wind components :math:`(u, v)` and
:math:`(u_g, v_g)` (pooled). Fields must be in physical units (:math:`\Phi` in m² s⁻², wind in
m s⁻¹), not standardised.

References:
    | An Introduction to Dynamic Meteorology, 5th ed., §3.2 (Holton & Hakim, 2013)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import SPATIAL_DIMS, _as_dims, area_mean

__all__ = ["EARTH_RADIUS", "OMEGA", "geostrophic_balance", "geostrophic_wind"]

#: Mean Earth radius in m.
EARTH_RADIUS = 6.371e6
#: Earth's rotation rate in rad s⁻¹.
OMEGA = 7.292e-5


def _check_horizontal(x: xr.DataArray, name: str) -> float:
    """Return the longitude spacing in radians after checking the grid is global and regular."""

    for d in ("latitude", "longitude"):
        if d not in x.dims:
            raise DataError(f"'{name}' needs a '{d}' dimension, got dims {tuple(x.dims)}")
    lon = np.asarray(x["longitude"].values, dtype=np.float64)
    step = np.diff(lon)
    if lon.size < 3 or not np.allclose(step, step[0]) or not np.isclose(step[0] * lon.size, 360.0):
        raise DataError(
            f"'{name}' is not on a global grid regular in longitude ({lon.size} longitudes)",
            hint="geostrophic balance needs global fields (periodic longitude)",
        )
    return float(np.deg2rad(step[0]))


def geostrophic_wind(
    geopotential: xr.DataArray,
    *,
    equator_band: float = 15.0,
    radius: float = EARTH_RADIUS,
    omega: float = OMEGA,
) -> tuple[xr.DataArray, xr.DataArray]:
    r"""Geostrophic wind :math:`(u_g, v_g)` of a geopotential field on pressure levels.

    .. math:: u_g = -\frac{1}{f a}\frac{\partial\Phi}{\partial\phi}, \quad
        v_g = \frac{1}{f a\cos\phi}\frac{\partial\Phi}{\partial\lambda}, \quad f = 2\Omega\sin\phi

    Arguments:
        geopotential: :math:`\Phi` in m² s⁻², dims ``(..., latitude, longitude)``.
        equator_band: Rows with :math:`|\phi|` below this (degrees) are NaN.
        radius: Planet radius :math:`a` in m.
        omega: Rotation rate :math:`\Omega` in rad s⁻¹.

    Returns:
        ``(u_g, v_g)`` in m s⁻¹, dims of ``geopotential``; NaN in the equatorial band and on
        pole rows.
    """

    dlon = _check_horizontal(geopotential, "geopotential")
    phi = np.deg2rad(np.asarray(geopotential["latitude"].values, dtype=np.float64))
    if phi.size < 3:
        raise DataError("geostrophic balance needs at least three latitudes")

    # ∂Φ/∂λ: centred, periodic in longitude.
    dphi_dlon = (
        geopotential.roll(longitude=-1, roll_coords=False)
        - geopotential.roll(longitude=1, roll_coords=False)
    ) / (2 * dlon)
    # ∂Φ/∂φ: centred along latitude (np.gradient handles the descending order through φ).
    dphi_dlat = xr.apply_ufunc(
        lambda a: np.gradient(a, phi, axis=-1, edge_order=2),
        geopotential,
        input_core_dims=[["latitude"]],
        output_core_dims=[["latitude"]],
    ).transpose(*geopotential.dims)

    lat = geopotential["latitude"]
    f = 2 * omega * np.sin(np.deg2rad(lat))
    cos = np.cos(np.deg2rad(lat))
    valid = (abs(lat) >= equator_band) & (cos > 1e-6)
    u_g = (-dphi_dlat / (f * radius)).where(valid)
    v_g = (dphi_dlon / (f * radius * cos)).where(valid)
    for a, name in ((u_g, "eastward"), (v_g, "northward")):
        a.attrs = {"units": "m s-1", "long_name": f"{name} geostrophic wind"}
    return u_g.rename("u_geostrophic"), v_g.rename("v_geostrophic")


def geostrophic_balance(
    ds: xr.Dataset,
    *,
    dims: str | Iterable[str] = SPATIAL_DIMS,
    equator_band: float = 15.0,
    radius: float = EARTH_RADIUS,
    omega: float = OMEGA,
    geopotential: str = "geopotential",
    u: str = "u_component_of_wind",
    v: str = "v_component_of_wind",
) -> xr.Dataset:
    r"""Geostrophic-balance diagnostic: relative ageostrophic wind and wind correlation.

    .. math:: r = \sqrt{\frac{\langle (u - u_g)^2 + (v - v_g)^2 \rangle}
        {\langle u^2 + v^2 \rangle}}, \qquad \rho = \mathrm{corr}_w\big((u, v), (u_g, v_g)\big)

    Estimator: :func:`geostrophic_wind` with centred differences; both means are area-weighted
    over ``dims`` restricted to the rows where :math:`(u_g, v_g)` is defined; :math:`\rho` is the
    area-weighted Pearson correlation of the pooled :math:`u` and :math:`v` samples.

    Arguments:
        ds: Dataset with geopotential (m² s⁻²) and wind components (m s⁻¹) on the same grid, dims
            ``(..., level, latitude, longitude)`` (``member`` and ``time`` are kept).
        dims: Reduced dims (must include latitude and longitude or be a subset of them).
        equator_band: Rows with :math:`|\phi|` below this (degrees) are excluded.
        radius: Planet radius in m.
        omega: Rotation rate in rad s⁻¹.
        geopotential, u, v: Variable names in ``ds``.

    Returns:
        Dataset with ``ageostrophic_ratio`` and ``geostrophic_correlation`` (dimensionless), one
        value per remaining index (e.g. member, time, level).
    """

    missing = [name for name in (geopotential, u, v) if name not in ds.data_vars]
    if missing:
        raise DataError(
            f"geostrophic balance needs the variables {missing}, which the dataset lacks",
            hint=f"the dataset has {list(ds.data_vars)}; pass geopotential=, u=, v= to rename",
        )
    dims = _as_dims(dims)
    u_g, v_g = geostrophic_wind(
        ds[geopotential], equator_band=equator_band, radius=radius, omega=omega
    )
    wind = xr.concat([ds[u], ds[v]], dim="component", coords="minimal", compat="override")
    wind_g = xr.concat([u_g, v_g], dim="component", coords="minimal", compat="override")
    wind = wind.where(wind_g.notnull())
    wind_g = wind_g.where(wind.notnull())
    pooled = dims + ("component",)

    ratio = np.sqrt(area_mean((wind - wind_g) ** 2, dims=pooled) / area_mean(wind**2, dims=pooled))
    a = wind - area_mean(wind, dims=pooled)
    b = wind_g - area_mean(wind_g, dims=pooled)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = area_mean(a * b, dims=pooled) / np.sqrt(
            area_mean(a**2, dims=pooled) * area_mean(b**2, dims=pooled)
        )
    ratio.attrs = {
        "long_name": "RMS ageostrophic wind relative to the RMS wind",
        "definition": "sqrt(<(u-u_g)^2 + (v-v_g)^2> / <u^2 + v^2>), area-weighted over "
        f"{dims} with |lat| >= {equator_band:g}",
        "units": "1",
    }
    corr.attrs = {
        "long_name": "correlation of the wind with the geostrophic wind",
        "definition": "area-weighted Pearson correlation of pooled (u, v) with (u_g, v_g) over "
        f"{dims} with |lat| >= {equator_band:g}",
        "units": "1",
    }
    return xr.Dataset({"ageostrophic_ratio": ratio, "geostrophic_correlation": corr})
