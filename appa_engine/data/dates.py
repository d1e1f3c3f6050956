r"""Date features: the position of a time in the seasonal and diurnal cycles.

The prior is conditioned on D = 4 features per state,

.. math:: \big(\sin 2\pi y,\ \cos 2\pi y,\ \sin 2\pi h,\ \cos 2\pi h\big)

where :math:`h \in [0, 1)` is the UTC hour of day over 24 h and :math:`y \in [0, 1)` is the
progress through the **tropical year** (365.24219 days, the mean time between two March
equinoxes), counted from 2000-01-01 00:00 UTC:

.. math:: y = \frac{t - t_{2000}}{365.24219\ \mathrm{days}} \bmod 1 .

Unlike "day of year over the length of the calendar year", this phase is continuous across
years and leap days and follows the Sun: the same phase falls at the same point of the seasons
every year (to within the 0.24-day drift the Gregorian calendar corrects). y = 0 at 2000-01-01
00:00 UTC; y = 1/4 about 91.31 days later.

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data Assimilation
    | Andry et al. (2025)
    | https://arxiv.org/abs/2504.18720
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appa_engine.errors import DataError

__all__ = ["date_features", "DATE_FEATURES", "TROPICAL_YEAR_DAYS"]

#: Number of date features (D in :mod:`appa_engine.dims`) and their names, in order.
DATE_FEATURES = ("sin_year", "cos_year", "sin_hour", "cos_hour")
#: Mean tropical year, in days.
TROPICAL_YEAR_DAYS = 365.24219

_EPOCH = np.datetime64("2000-01-01T00:00:00", "ns")
_DAY_NS = 86_400 * 10**9
_YEAR_NS = TROPICAL_YEAR_DAYS * _DAY_NS


def _as_datetime64(times: Any) -> np.ndarray:
    if hasattr(times, "values") and not isinstance(times, np.ndarray):  # xarray / pandas
        times = times.values
    try:
        arr = np.asarray(times)
        if arr.dtype.kind != "M":
            arr = arr.astype("datetime64[ns]")
        return arr.astype("datetime64[ns]")
    except (TypeError, ValueError) as e:
        raise DataError(
            f"cannot read {type(times).__name__} values as dates: {e}",
            hint="pass numpy datetime64 values, a pandas DatetimeIndex, an xarray time "
            "coordinate or ISO strings; convert cftime calendars with .to_datetimeindex()",
        ) from e


def date_features(times: Any, *, like: Any = None) -> Any:
    """Date features of each time.

    Arguments:
        times: Times, shape ``(T,)`` or scalar: ``datetime64``, pandas, xarray or ISO strings.
        like: A tensor; if given, the result is a tensor with its dtype and device.

    Returns:
        Features ``(T, D)`` (``(D,)`` for a scalar), float32, in the order of
        :data:`DATE_FEATURES`.
    """

    t = _as_datetime64(times)
    if np.isnat(t).any():
        raise DataError("times contain NaT (missing dates)")
    ns = (t - _EPOCH).astype(np.int64)
    hour = np.mod(ns, _DAY_NS).astype(np.float64) / _DAY_NS
    year = np.mod(ns.astype(np.float64), _YEAR_NS) / _YEAR_NS
    angle_y, angle_h = 2 * np.pi * year, 2 * np.pi * hour
    out = np.stack([np.sin(angle_y), np.cos(angle_y), np.sin(angle_h), np.cos(angle_h)], axis=-1)
    out = out.astype(np.float32)
    if like is not None:
        import torch

        return torch.as_tensor(out, dtype=like.dtype, device=like.device)
    return out
