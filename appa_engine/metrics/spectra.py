r"""Zonal power spectra: how the variance of a field splits across zonal wavenumbers.

Along each latitude row of :math:`W` longitudes the discrete Fourier transform
:math:`X_k = \sum_{n=0}^{W-1} x_n e^{-2\pi i k n / W}` gives the one-sided power per zonal
wavenumber :math:`k = 0, \dots, \lfloor W/2 \rfloor`

.. math:: P_k = \frac{c_k\,|X_k|^2}{W^2}, \qquad c_k = \begin{cases} 1 & k = 0
    \text{ or } k = W/2 \\ 2 & \text{otherwise} \end{cases}

(the factor 2 folds the negative wavenumbers of a real signal in). With this normalisation
Parseval's theorem reads :math:`\sum_k P_k = \frac{1}{W}\sum_n x_n^2`: the power sums to the
mean of the squared field along the row. The row spectra are then averaged over the latitudes of
a band with the area weights of :func:`appa_engine.data.grid.area_weights` (computed on the full
grid, so the rows of a band keep their true areas), hence the band spectrum sums to the
area-weighted mean of :math:`x^2` over the band.

Zonal wavenumber :math:`k` at latitude :math:`\phi` has wavelength
:math:`\lambda_k = 2\pi R\cos\phi / k` (:func:`wavelength_km`).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import xarray as xr

from appa_engine.data.grid import area_weights
from appa_engine.errors import DataError

__all__ = ["EARTH_RADIUS_KM", "wavelength_km", "zonal_spectrum"]

#: Mean Earth radius in km.
EARTH_RADIUS_KM = 6371.0

X = TypeVar("X", xr.Dataset, xr.DataArray)


def wavelength_km(wavenumber, latitude: float, *, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    r"""Wavelength in km of zonal wavenumber :math:`k` at a latitude, :math:`2\pi R\cos\phi / k`.

    Arguments:
        wavenumber: Zonal wavenumbers (array-like, ``k >= 0``); ``k = 0`` maps to ``inf``.
        latitude: Latitude in degrees.
        radius_km: Planet radius in km.
    """

    k = np.asarray(wavenumber, dtype=np.float64)
    circumference = 2 * np.pi * radius_km * np.cos(np.deg2rad(latitude))
    with np.errstate(divide="ignore"):
        return np.where(k > 0, circumference / np.where(k > 0, k, 1.0), np.inf)


def _power(x: np.ndarray) -> np.ndarray:
    """One-sided power of ``x`` along its last axis ``(..., W)`` → ``(..., W // 2 + 1)``."""

    W = x.shape[-1]
    p = np.abs(np.fft.rfft(x, axis=-1)) ** 2 / W**2
    p[..., 1:] *= 2
    if W % 2 == 0:
        p[..., -1] /= 2  # the Nyquist wavenumber has no negative twin
    return p


def zonal_spectrum(
    x: X,
    *,
    band: tuple[float, float] | None = None,
    wavelength_at: float | None = None,
) -> X:
    r"""Zonal power spectrum averaged over a latitude band.

    .. math:: \bar{P}_k = \frac{\sum_{i \in \text{band}} w_i P_k(\phi_i)}
        {\sum_{i \in \text{band}} w_i}, \qquad \sum_k \bar{P}_k = \langle x^2 \rangle_\text{band}

    Estimator: the one-sided FFT power of every row (see the module docstring), averaged over the
    rows of the band with area weights. The field is not detrended: :math:`k = 0` carries the
    squared zonal mean.

    Arguments:
        x: Field with dims ``(..., latitude, longitude)``, global and regular in longitude.
        band: ``(south, north)`` latitudes in degrees (inclusive); ``None`` for all rows.
        wavelength_at: If given, add a coordinate ``wavelength`` (km) along ``wavenumber``, the
            wavelength of each wavenumber at this latitude.

    Returns:
        Power with ``latitude`` and ``longitude`` replaced by ``wavenumber``
        (``0 … W // 2``), in squared units of the field.
    """

    for d in ("latitude", "longitude"):
        if d not in x.dims:
            raise DataError(f"a zonal spectrum needs a '{d}' dimension, got dims {tuple(x.dims)}")
    lat = x["latitude"].values
    w = xr.DataArray(
        area_weights(lat) if lat.size >= 2 else np.ones(1),
        dims="latitude",
        coords={"latitude": x["latitude"]},
    )
    if band is not None:
        south, north = sorted(band)
        keep = (lat >= south) & (lat <= north)
        if not keep.any():
            raise DataError(
                f"no latitude of the grid lies in the band {band}",
                hint=f"choose a band within [{lat.min():g}, {lat.max():g}]",
            )
        x, w = x.isel(latitude=keep), w.isel(latitude=keep)

    power = xr.apply_ufunc(
        _power, x, input_core_dims=[["longitude"]], output_core_dims=[["wavenumber"]]
    )
    W = x.sizes["longitude"]
    power = power.assign_coords(wavenumber=np.arange(W // 2 + 1))
    power = power.weighted(w).mean("latitude")
    if wavelength_at is not None:
        power = power.assign_coords(
            wavelength=("wavenumber", wavelength_km(power["wavenumber"].values, wavelength_at))
        )
        power["wavelength"].attrs = {
            "units": "km",
            "long_name": f"zonal wavelength at {wavelength_at:g}°",
        }
    power["wavenumber"].attrs = {"units": "1", "long_name": "zonal wavenumber"}

    def attrs(src: xr.DataArray) -> dict:
        u = src.attrs.get("units", "")
        return {
            "long_name": "zonal power spectrum",
            "definition": "one-sided |FFT_lon(x)|^2 / W^2 per zonal wavenumber, area-weighted mean "
            f"over latitudes {'all' if band is None else band}; sums to the mean of x^2",
            "units": f"({u})^2" if u else "",
        }

    if isinstance(power, xr.Dataset):
        for name in power.data_vars:
            power[name].attrs = attrs(x[name])
    else:
        power.attrs = attrs(x)
    return power
