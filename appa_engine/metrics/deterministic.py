r"""Deterministic scores of the ensemble mean: RMSE ("skill"), bias and MAE.

Every score compares the ensemble mean :math:`\bar{x} = \frac{1}{M}\sum_m x_m` (or the forecast
itself when it has no ``member`` dimension) with the truth :math:`y`, point by point, and reduces
the point-wise error with the area-weighted mean

.. math:: \langle e \rangle = \frac{\sum_{i,j} w_i\, e_{ij}}{\sum_{i,j} w_i}

over latitude rows :math:`i` and longitudes :math:`j` (by default; ``dims=`` chooses the reduced
dimensions). The weights :math:`w_i` come from :func:`appa_engine.data.grid.area_weights`, the one
place where area weighting is defined. Missing values (NaN) are skipped and the weights
renormalised over the valid points.

Inputs are :class:`xarray.Dataset` or :class:`xarray.DataArray` objects in the canonical layout
(dims ``(member, time, level, latitude, longitude)``, ``member`` optional, latitude descending);
the truth has the same dims minus ``member`` and the same coordinates (select it at the forecast's
times and levels first, as :func:`appa_engine.metrics.evaluate.evaluate` does). Outputs have the
reduced dims removed, e.g. one value per variable, time and level.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import xarray as xr

from appa_engine.data.grid import area_weights
from appa_engine.errors import DataError

__all__ = ["SPATIAL_DIMS", "area_mean", "bias", "ensemble_mean", "mae", "rmse"]

#: Dims reduced by default: the horizontal grid.
SPATIAL_DIMS = ("latitude", "longitude")

X = TypeVar("X", xr.Dataset, xr.DataArray)


def _as_dims(dims: str | Iterable[str]) -> tuple[str, ...]:
    return (dims,) if isinstance(dims, str) else tuple(dims)


def area_mean(x: X, *, dims: str | Iterable[str] = SPATIAL_DIMS) -> X:
    r"""Area-weighted mean over ``dims``.

    When ``latitude`` is among ``dims`` each latitude row is weighted by
    :func:`~appa_engine.data.grid.area_weights` (computed on the latitudes of ``x``); otherwise
    this is the plain mean. NaNs are skipped.

    Arguments:
        x: Field with (at least) the dims ``dims``.
        dims: Dims to reduce.

    Returns:
        ``x`` with ``dims`` removed.
    """

    dims = _as_dims(dims)
    names = list(x.data_vars) if isinstance(x, xr.Dataset) else [x.name or "field"]
    arrays = x.data_vars.values() if isinstance(x, xr.Dataset) else [x]
    for name, a in zip(names, arrays, strict=True):
        missing = [d for d in dims if d not in a.dims]
        if missing:
            raise DataError(
                f"'{name}' has dims {tuple(a.dims)}, so it cannot be reduced over {missing}",
                hint="pass dims= naming dimensions the data has",
            )
    if "latitude" in dims and x.sizes["latitude"] >= 2:
        w = xr.DataArray(
            area_weights(x["latitude"].values), dims="latitude", coords={"latitude": x["latitude"]}
        )
        return x.weighted(w).mean(dims)
    return x.mean(dims)


def ensemble_mean(x: X, *, member_dim: str = "member") -> X:
    """Mean over ``member_dim``, or ``x`` itself when it has no such dim (a deterministic run)."""

    return x.mean(member_dim) if member_dim in x.dims else x


def _check_pair(forecast: X, truth: X, *, member_dim: str = "member") -> X:
    """Return ``truth`` restricted to ``forecast``'s variables, or raise if they do not line up."""

    if isinstance(forecast, xr.Dataset):
        if not isinstance(truth, xr.Dataset):
            raise DataError(
                "the forecast is a Dataset but the truth is not", hint="pass both as xr.Dataset"
            )
        missing = [v for v in forecast.data_vars if v not in truth.data_vars]
        if missing:
            raise DataError(
                f"the truth has no variable(s) {missing}; it has {list(truth.data_vars)}",
                hint="select the common variables first (e.g. forecast[names])",
            )
        truth = truth[list(forecast.data_vars)]
    if member_dim in truth.dims:
        raise DataError(
            f"the truth has a '{member_dim}' dimension", hint="pass a single truth state"
        )
    try:
        xr.align(forecast, truth, join="exact", exclude={member_dim})
    except ValueError as e:
        raise DataError(
            f"the forecast and truth coordinates differ ({e})",
            hint="select the truth at the forecast's times, levels and grid first "
            "(appa_engine.metrics.evaluate.evaluate does this for you)",
        ) from e
    return truth


def _annotate(
    result: X, source: X, *, long_name: str, definition: str, units: str | None = None
) -> X:
    """Set ``long_name``, ``definition`` and ``units`` on each output variable.

    ``units=None`` copies the units of the source variable (scores in the units of the field).
    """

    def attrs(src: xr.DataArray) -> dict:
        u = units if units is not None else src.attrs.get("units", "")
        return {"long_name": long_name, "definition": definition, "units": u}

    if isinstance(result, xr.Dataset):
        for name in result.data_vars:
            result[name].attrs = attrs(source[name])
    else:
        result.attrs = attrs(source)
    return result


def rmse(
    forecast: X, truth: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Root-mean-square error of the ensemble mean ("skill").

    .. math:: \mathrm{RMSE} = \sqrt{\big\langle (\bar{x} - y)^2 \big\rangle}

    Estimator: the ensemble mean over members, then the area-weighted mean over ``dims`` of the
    squared error, then the square root (one value per remaining index, e.g. time and level).

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)`` (``member`` optional).
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        RMSE with ``dims`` (and ``member``) removed, in the units of the field.
    """

    truth = _check_pair(forecast, truth, member_dim=member_dim)
    error = ensemble_mean(forecast, member_dim=member_dim) - truth
    result = np.sqrt(area_mean(error**2, dims=dims))
    return _annotate(
        result,
        forecast,
        long_name="root-mean-square error of the ensemble mean",
        definition=f"sqrt(area-weighted mean over {_as_dims(dims)} of (mean_member(x) - y)^2)",
    )


def bias(
    forecast: X, truth: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Mean error (bias) of the ensemble mean.

    .. math:: \mathrm{bias} = \big\langle \bar{x} - y \big\rangle

    Estimator: the area-weighted mean over ``dims`` of the ensemble-mean error; positive when the
    forecast is too high.

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)`` (``member`` optional).
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        Bias with ``dims`` (and ``member``) removed, in the units of the field.
    """

    truth = _check_pair(forecast, truth, member_dim=member_dim)
    result = area_mean(ensemble_mean(forecast, member_dim=member_dim) - truth, dims=dims)
    return _annotate(
        result,
        forecast,
        long_name="bias of the ensemble mean",
        definition=f"area-weighted mean over {_as_dims(dims)} of (mean_member(x) - y)",
    )


def mae(
    forecast: X, truth: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Mean absolute error of the ensemble mean.

    .. math:: \mathrm{MAE} = \big\langle |\bar{x} - y| \big\rangle

    Estimator: the area-weighted mean over ``dims`` of the absolute ensemble-mean error. For a
    one-member ensemble it equals the CRPS (:func:`appa_engine.metrics.probabilistic.crps`).

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)`` (``member`` optional).
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        MAE with ``dims`` (and ``member``) removed, in the units of the field.
    """

    truth = _check_pair(forecast, truth, member_dim=member_dim)
    result = area_mean(abs(ensemble_mean(forecast, member_dim=member_dim) - truth), dims=dims)
    return _annotate(
        result,
        forecast,
        long_name="mean absolute error of the ensemble mean",
        definition=f"area-weighted mean over {_as_dims(dims)} of |mean_member(x) - y|",
    )
