r"""Probabilistic scores of an ensemble: fair CRPS, spread, spread-skill ratio, rank histogram.

An ensemble :math:`x_1, \dots, x_M` (dim ``member``) is compared with the truth :math:`y` point by
point; spatial reductions use the area-weighted mean :math:`\langle\cdot\rangle` of
:func:`appa_engine.metrics.deterministic.area_mean` (weights from
:func:`appa_engine.data.grid.area_weights`), over ``(latitude, longitude)`` by default.

The continuous ranked probability score of a predictive distribution :math:`F` is

.. math:: \mathrm{CRPS}(F, y) = \int_{-\infty}^{\infty} \big(F(z) - \mathbb{1}\{z \ge y\}\big)^2\,dz
    = \mathbb{E}|X - y| - \tfrac{1}{2}\mathbb{E}|X - X'|

with :math:`X, X'` independent draws of :math:`F`. Plugging in the empirical distribution of the
members biases the score in favour of small ensembles; the *fair* estimator replaces the second
expectation by its unbiased U-statistic, so that its expectation is the CRPS of the distribution
the members are drawn from, whatever :math:`M`:

.. math:: \mathrm{CRPS}_\mathrm{fair} = \frac{1}{M}\sum_m |x_m - y|
    - \frac{1}{2M(M-1)}\sum_{m,m'} |x_m - x_{m'}|

References:
    | Strictly Proper Scoring Rules, Prediction, and Estimation (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

    | Estimation of the Continuous Ranked Probability Score with Limited Information and
      Applications to Ensemble Weather Forecasts (Zamo & Naveau, 2018)
    | https://doi.org/10.1007/s11004-017-9709-7

    | Why Should Ensemble Spread Match the RMSE of the Ensemble Mean? (Fortin et al., 2014)
    | https://doi.org/10.1175/JHM-D-14-0008.1
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import (
    SPATIAL_DIMS,
    _annotate,
    _as_dims,
    _check_pair,
    area_mean,
    rmse,
)

__all__ = ["crps", "crps_fair_pointwise", "rank_histogram", "spread", "spread_skill_ratio"]

X = TypeVar("X", xr.Dataset, xr.DataArray)


def _members(forecast: xr.Dataset | xr.DataArray, member_dim: str) -> int:
    if member_dim not in forecast.dims:
        raise DataError(
            f"the forecast has no '{member_dim}' dimension (dims {tuple(forecast.dims)})",
            hint=f"add one with forecast.expand_dims('{member_dim}') for a deterministic forecast",
        )
    return int(forecast.sizes[member_dim])


def _crps_fair_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Fair CRPS of members ``x`` of shape ``(..., M)`` against ``y`` of shape ``(...)``.

    The pair term is computed in :math:`O(M \log M)` by sorting: with :math:`x_{(1)} \le \dots
    \le x_{(M)}` the order statistics, :math:`x_{(i)}` is larger than :math:`i - 1` members and
    smaller than :math:`M - i`, so

    .. math:: \sum_{m,m'} |x_m - x_{m'}| = 2 \sum_{i=1}^{M} (2i - M - 1)\, x_{(i)} .

    For :math:`M = 1` the pair term vanishes (no pair) and the score is :math:`|x_1 - y|`.
    """

    M = x.shape[-1]
    skill = np.mean(np.abs(x - y[..., None]), axis=-1)
    if M == 1:
        return skill
    coef = 2.0 * np.arange(1, M + 1) - M - 1  # (M,)
    pair = np.sum(coef * np.sort(x, axis=-1), axis=-1) / (M * (M - 1))
    return skill - pair


def crps_fair_pointwise(forecast: X, truth: X, *, member_dim: str = "member") -> X:
    r"""Fair CRPS at every point (no spatial reduction).

    .. math:: \mathrm{CRPS}_\mathrm{fair} = \frac{1}{M}\sum_m |x_m - y|
        - \frac{1}{2M(M-1)}\sum_{m,m'} |x_m - x_{m'}|

    The pair sum is evaluated in :math:`O(M \log M)` by sorting the members,
    :math:`\sum_{m,m'}|x_m - x_{m'}| = 2\sum_i (2i - M - 1)\,x_{(i)}`; with one member the pair term
    is zero and the score is the absolute error.

    Arguments:
        forecast: Ensemble with a ``member`` dim, e.g.
            ``(member, time, level, latitude, longitude)``.
        truth: Truth with the dims of ``forecast`` minus ``member``.
        member_dim: Name of the ensemble dim.

    Returns:
        Fair CRPS with ``member`` removed, in the units of the field.
    """

    _members(forecast, member_dim)
    truth = _check_pair(forecast, truth, member_dim=member_dim)
    result = xr.apply_ufunc(
        _crps_fair_numpy,
        forecast,
        truth,
        input_core_dims=[[member_dim], []],
        output_core_dims=[[]],
        join="exact",
        dataset_join="exact",
    )
    return _annotate(
        result,
        forecast,
        long_name="continuous ranked probability score (fair estimator), point-wise",
        definition="mean_m|x_m - y| - sum_{m,m'}|x_m - x_m'| / (2 M (M - 1))",
    )


def crps(
    forecast: X, truth: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Area-weighted mean of the fair CRPS.

    .. math:: \mathrm{CRPS} = \Big\langle \frac{1}{M}\sum_m |x_m - y|
        - \frac{1}{2M(M-1)}\sum_{m,m'} |x_m - x_{m'}| \Big\rangle

    Estimator: the fair (unbiased in :math:`M`) point-wise estimator of
    :func:`crps_fair_pointwise`, then the area-weighted mean over ``dims``. One member gives the
    MAE of that member.

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)``.
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        CRPS with ``dims`` and ``member`` removed, in the units of the field.
    """

    result = area_mean(crps_fair_pointwise(forecast, truth, member_dim=member_dim), dims=dims)
    return _annotate(
        result,
        forecast,
        long_name="continuous ranked probability score (fair estimator)",
        definition=f"area-weighted mean over {_as_dims(dims)} of mean_m|x_m - y| "
        "- sum_{m,m'}|x_m - x_m'| / (2 M (M - 1))",
    )


def _unbiased_variance(x: np.ndarray) -> np.ndarray:
    """Variance with 1/(M-1) along the last axis ``(..., M)``, two-pass on data shifted by the
    first member: accurate, and exactly 0 for identical members."""

    d = x - x[..., :1]
    d = d - d.mean(axis=-1, keepdims=True)
    return np.sum(d**2, axis=-1) / (x.shape[-1] - 1)


def spread(
    forecast: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Ensemble spread: the square root of the area-weighted mean ensemble variance.

    .. math:: \mathrm{spread} = \sqrt{\Big\langle \frac{1}{M-1}\sum_m (x_m - \bar{x})^2 \Big\rangle}

    Estimator: the unbiased (:math:`1/(M-1)`) member variance at every point, its area-weighted
    mean over ``dims``, then the square root. Identical members give 0; with a single member the
    variance is undefined and the spread is NaN (no warning).

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        Spread with ``dims`` and ``member`` removed, in the units of the field.
    """

    M = _members(forecast, member_dim)
    if M < 2:
        result = xr.full_like(
            area_mean(forecast.isel({member_dim: 0}, drop=True), dims=dims), np.nan
        )
    else:
        variance = xr.apply_ufunc(_unbiased_variance, forecast, input_core_dims=[[member_dim]])
        result = np.sqrt(area_mean(variance, dims=dims))
    return _annotate(
        result,
        forecast,
        long_name="ensemble spread",
        definition=f"sqrt(area-weighted mean over {_as_dims(dims)} of the member variance with "
        "the unbiased 1/(M-1) estimator)",
    )


def _ratio(spread_: X, skill: X, M: int) -> X:
    with np.errstate(divide="ignore", invalid="ignore"):
        return spread_ / skill * np.sqrt((M + 1) / M)


def spread_skill_ratio(
    forecast: X, truth: X, *, dims: str | Iterable[str] = SPATIAL_DIMS, member_dim: str = "member"
) -> X:
    r"""Spread-skill ratio, corrected for the ensemble size.

    .. math:: \mathrm{SSR} = \frac{\mathrm{spread}}{\mathrm{RMSE}}\sqrt{\frac{M+1}{M}}

    For a statistically consistent ensemble (truth and members exchangeable) the expected squared
    error of the ensemble mean is :math:`\frac{M+1}{M}` times the expected ensemble variance, so
    the ratio is close to 1; below 1 the ensemble is under-dispersive. Estimator: :func:`spread`
    over :func:`~appa_engine.metrics.deterministic.rmse`, both reduced over ``dims``.

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)``.
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims.
        member_dim: Name of the ensemble dim.

    Returns:
        Dimensionless ratio with ``dims`` and ``member`` removed (NaN for one member).
    """

    M = _members(forecast, member_dim)
    result = _ratio(
        spread(forecast, dims=dims, member_dim=member_dim),
        rmse(forecast, truth, dims=dims, member_dim=member_dim),
        M,
    )
    return _annotate(
        result,
        forecast,
        long_name="spread-skill ratio",
        definition="spread / rmse * sqrt((M + 1) / M)",
        units="1",
    )


def rank_histogram(
    forecast: X,
    truth: X,
    *,
    dims: str | Iterable[str] | None = None,
    member_dim: str = "member",
    seed: int = 0,
) -> X:
    r"""Rank histogram: how often the truth falls at each rank among the members.

    The rank of :math:`y` is the number of members below it, :math:`r = \#\{m : x_m < y\}`, plus,
    when :math:`k` members equal :math:`y`, a uniform random integer in :math:`\{0, \dots, k\}`
    (ties broken at random with a NumPy generator seeded by ``seed``, so a degenerate ensemble gives
    a flat rather than a piled-up histogram). Ranks lie in :math:`\{0, \dots, M\}`. For a
    consistent ensemble the histogram is flat; U-shaped means under-dispersive.

    Estimator: plain counts of grid points (no area weighting) over ``dims``; NaN truths are not
    counted.

    Arguments:
        forecast: Ensemble ``(member, time, level, latitude, longitude)``.
        truth: Truth with the dims of ``forecast`` minus ``member``.
        dims: Reduced dims; by default all dims of the truth except ``level``.
        member_dim: Name of the ensemble dim.
        seed: Seed of the tie-breaking generator.

    Returns:
        Integer counts with ``dims`` removed and a new dim ``rank`` of size :math:`M + 1`.
    """

    M = _members(forecast, member_dim)
    truth = _check_pair(forecast, truth, member_dim=member_dim)
    rng = np.random.default_rng(seed)

    def one(x: xr.DataArray, y: xr.DataArray) -> xr.DataArray:
        reduce = tuple(d for d in y.dims if d != "level") if dims is None else _as_dims(dims)
        below = (x < y).sum(member_dim)
        ties = (x == y).sum(member_dim)
        u = xr.DataArray(rng.random(ties.shape), dims=ties.dims, coords=ties.coords)
        rank = below + np.floor(u * (ties + 1)).astype(np.int64)
        valid = y.notnull()
        counts = [((rank == r) & valid).sum(reduce) for r in range(M + 1)]
        out = xr.concat(counts, dim="rank", coords="minimal", compat="override")
        out = out.assign_coords(rank=np.arange(M + 1))
        out.attrs = {
            "long_name": "rank histogram of the truth among the members",
            "definition": "counts of #{m: x_m < y} (+ uniform tie-breaking) over "
            f"{reduce}; seed {seed}",
            "units": "1",
        }
        return out

    if isinstance(forecast, xr.Dataset):
        return xr.Dataset({name: one(forecast[name], truth[name]) for name in forecast.data_vars})
    return one(forecast, truth).rename(forecast.name)
