r"""Observation-space statistics: innovations (O−B), residuals (O−A) and a χ² consistency check.

Given observations :math:`y_n` with error standard deviations :math:`\sigma_{o,n}` and the model
equivalents :math:`H(x_m)_n` of the prior ensemble (background, B) and of the posterior ensemble
(analysis, A), with :math:`\bar{H}_n` their member means,

.. math:: d^b_n = y_n - \bar{H}^b_n, \qquad d^a_n = y_n - \bar{H}^a_n .

Per group of observations (per observer and variable by default) this reports the mean and RMS
of :math:`d^b` and :math:`d^a`, and the normalised χ² of the innovations

.. math:: \chi^2 = \frac{1}{N}\sum_n \frac{(d^b_n)^2}{\sigma_{o,n}^2 + \sigma_{b,n}^2},

where :math:`\sigma_{b,n}^2 = \frac{1}{M-1}\sum_m (H(x^b_m)_n - \bar{H}^b_n)^2` is the unbiased
ensemble variance of the equivalents (0 for a single member). When the stated observation and
background errors are consistent with the innovations, :math:`\mathbb{E}[\chi^2] \approx 1`
(exactly :math:`(\sigma_o^2 + \frac{M+1}{M}\sigma_b^2)/(\sigma_o^2 + \sigma_b^2)` for an
exchangeable ensemble of :math:`M` members); :math:`\chi^2 \gg 1` means errors are understated,
:math:`\chi^2 \ll 1` overstated.

References:
    | Diagnosis of observation, background and analysis-error statistics in observation space
      (Desroziers, Berre, Chapnik & Poli, 2005)
    | https://doi.org/10.1256/qj.05.108
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.errors import ObservationError

__all__ = ["innovation_statistics"]


def _equivalents(
    h: xr.DataArray, n: int, name: str, member_dim: str
) -> tuple[np.ndarray, np.ndarray]:
    """Member mean and unbiased variance of model equivalents ``(member, obs)``, each ``(N,)``."""

    if not isinstance(h, xr.DataArray) or "obs" not in h.dims:
        raise ObservationError(
            f"the {name} equivalents must be an xr.DataArray with an 'obs' dimension",
            hint="pass dims (member, obs) (or (obs,) for a deterministic state)",
        )
    extra = [d for d in h.dims if d not in ("obs", member_dim)]
    if extra:
        raise ObservationError(
            f"the {name} equivalents have unexpected dims {extra}", hint="use dims (member, obs)"
        )
    if h.sizes["obs"] != n:
        raise ObservationError(
            f"the {name} equivalents have {h.sizes['obs']} observations but the table has {n}",
            hint="compute the equivalents with the same observation table",
        )
    h = h.expand_dims(member_dim) if member_dim not in h.dims else h
    values = np.asarray(h.transpose(member_dim, "obs").values, dtype=np.float64)  # (M, N)
    mean = values.mean(axis=0)
    var = values.var(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return mean, var


def innovation_statistics(
    observations: xr.Dataset,
    background: xr.DataArray,
    analysis: xr.DataArray | None = None,
    *,
    by: str | Iterable[str] = ("observer", "variable"),
    member_dim: str = "member",
) -> xr.Dataset:
    r"""O−B and O−A statistics and the normalised innovation χ², per group of observations.

    Estimators (over the :math:`N` observations of a group): mean :math:`\frac{1}{N}\sum_n d_n`,
    RMS :math:`\sqrt{\frac{1}{N}\sum_n d_n^2}`, and :math:`\chi^2 = \frac{1}{N}\sum_n
    (d^b_n)^2/(\sigma_{o,n}^2 + \sigma_{b,n}^2)` with the unbiased ensemble variance
    :math:`\sigma_{b,n}^2` (see the module docstring).

    Arguments:
        observations: Table with dim ``obs``, data variables ``value`` and ``error`` (standard
            deviation, same units), and the coordinates along ``obs`` named in ``by``
            (``observer``, ``variable``).
        background: Prior-ensemble equivalents, dims ``(member, obs)`` (``member`` optional).
        analysis: Posterior-ensemble equivalents, dims ``(member, obs)``, or ``None``.
        by: Coordinates to group by; ``()`` for one group of all observations.
        member_dim: Name of the ensemble dim.

    Returns:
        Dataset with dims ``by`` (one entry per group present) and variables ``count``,
        ``omb_mean``, ``omb_rms``, ``chi2`` and, with an analysis, ``oma_mean``, ``oma_rms``.
        Groups with no observations have ``count`` 0 and NaN statistics.
    """

    by = (by,) if isinstance(by, str) else tuple(by)
    if not isinstance(observations, xr.Dataset) or "obs" not in observations.dims:
        raise ObservationError(
            "the observation table must be an xr.Dataset with an 'obs' dimension"
        )
    missing = [k for k in ("value", "error", *by) if k not in observations.variables]
    if missing:
        raise ObservationError(
            f"the observation table lacks {missing}",
            hint="it needs data variables 'value' and 'error' "
            "and the grouping coordinates along 'obs'",
        )
    n = observations.sizes["obs"]
    y = np.asarray(observations["value"].values, dtype=np.float64)
    sigma_o = np.asarray(observations["error"].values, dtype=np.float64)
    if np.any(~(sigma_o > 0)):
        raise ObservationError(
            "observation errors must be positive and finite",
            hint="set a positive 'error' (standard deviation) for every observation",
        )

    mean_b, var_b = _equivalents(background, n, "background", member_dim)
    d_b = y - mean_b
    columns = {"omb": d_b, "omb2": d_b**2, "chi2": d_b**2 / (sigma_o**2 + var_b)}
    if analysis is not None:
        mean_a, _ = _equivalents(analysis, n, "analysis", member_dim)
        d_a = y - mean_a
        columns.update(oma=d_a, oma2=d_a**2)
    frame = pd.DataFrame(columns)

    if by:
        for k in by:
            frame[k] = np.asarray(observations[k].values)
        grouped = frame.groupby(list(by), sort=True)
        means = grouped.mean()
        means["count"] = grouped.size()
        out = xr.Dataset.from_dataframe(means)
        out["count"] = out["count"].fillna(0).astype(np.int64)
    else:
        out = xr.Dataset({k: ((), frame[k].mean()) for k in columns})
        out["count"] = ((), np.int64(n))

    out["omb_rms"] = np.sqrt(out["omb2"])
    out = out.rename(omb="omb_mean").drop_vars("omb2")
    if analysis is not None:
        out["oma_rms"] = np.sqrt(out["oma2"])
        out = out.rename(oma="oma_mean").drop_vars("oma2")

    units = observations["value"].attrs.get("units", "")
    attrs = {
        "count": ("number of observations", "count of observations in the group", "1"),
        "omb_mean": ("mean innovation O-B", "mean_n(y - mean_member(H(x_b)))", units),
        "omb_rms": ("RMS innovation O-B", "sqrt(mean_n (y - mean_member(H(x_b)))^2)", units),
        "chi2": (
            "normalised innovation chi-square",
            "mean_n (y - mean_member(H(x_b)))^2 / (sigma_o^2 + var_member(H(x_b))), "
            "var with 1/(M-1)",
            "1",
        ),
        "oma_mean": ("mean residual O-A", "mean_n(y - mean_member(H(x_a)))", units),
        "oma_rms": ("RMS residual O-A", "sqrt(mean_n (y - mean_member(H(x_a)))^2)", units),
    }
    for name, (long_name, definition, u) in attrs.items():
        if name in out:
            out[name].attrs = {"long_name": long_name, "definition": definition, "units": u}
    order = ["count", "omb_mean", "omb_rms", "oma_mean", "oma_rms", "chi2"]
    return out[[k for k in order if k in out]]
