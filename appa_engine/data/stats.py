r"""Per-channel statistics and standardisation.

States are standardised channel by channel, :math:`\tilde{x}_c = (x_c - \mu_c) / \sigma_c`, with
the area-weighted mean and standard deviation of each channel over all times and grid cells,

.. math::

    \mu_c = \frac{\sum_{t,i,j} w_{tcij} x_{tcij}}{\sum_{t,i,j} w_{tcij}}, \qquad
    \sigma_c^2 = \frac{\sum_{t,i,j} w_{tcij} (x_{tcij} - \mu_c)^2}{\sum_{t,i,j} w_{tcij}},

where :math:`w_{tcij} = w_i` is the area weight of latitude row i
(:func:`appa_engine.data.grid.area_weights`), or 0 where :math:`x_{tcij}` is NaN (``nan_policy=
"omit"``: e.g. sea-surface temperature over land). :math:`\sigma_c` is the weighted *population*
standard deviation (no Bessel correction: the sample is the whole record).

The sums are accumulated in one streaming pass over chunks of time. Each chunk b gives its weight
:math:`W_b`, mean :math:`\mu_b` and centred sum of squares :math:`M_b = \sum w (x - \mu_b)^2`,
computed around its own mean; chunks are merged with the parallel update of Chan et al.,

.. math::

    W = W_a + W_b, \quad \delta = \mu_b - \mu_a, \quad
    \mu = \mu_a + \delta \frac{W_b}{W}, \quad
    M = M_a + M_b + \delta^2 \frac{W_a W_b}{W},

which, unlike :math:`\sum w x^2 - W \mu^2`, does not cancel catastrophically when
:math:`|\mu| \gg \sigma` (geopotential). Results do not depend on the chunk size beyond rounding.

NaN policy of :func:`standardize`: NaNs stay NaN unless ``fill_nan=True``, which sets them to 0,
the channel mean in standardised units (what networks are trained on; the mask is lost).

References:
    | Updating Formulae and a Pairwise Algorithm for Computing Sample Variances
    | Chan, Golub, LeVeque (1979)
    | https://doi.org/10.1007/978-3-642-51461-6_3
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr

from appa_engine.data.channels import ChannelSpec, _summary
from appa_engine.data.grid import area_weights
from appa_engine.errors import ConfigError, DataError
from appa_engine.io.atomic import atomic_write_text

__all__ = ["Statistics", "compute_statistics", "standardize", "destandardize", "STATS_VERSION"]

logger = logging.getLogger(__name__)

#: Version of the statistics file format written by :meth:`Statistics.save`.
STATS_VERSION = 1
_FORMAT = "appa-statistics"
#: A channel whose std is at most this fraction of its |mean| (or exactly 0) counts as constant.
_CONSTANT_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class Statistics:
    """Mean and standard deviation of each channel.

    Arguments:
        spec: The channels.
        mean: Means, shape ``(C,)``, float64, physical units.
        std: Standard deviations, shape ``(C,)``, float64, positive.
        count: Number of states the statistics were computed over (0 if unknown).
        metadata: Free provenance (time range, source), JSON-serialisable.
        version: File format version.
    """

    spec: ChannelSpec
    mean: np.ndarray
    std: np.ndarray
    count: int = 0
    metadata: dict = field(default_factory=dict)
    version: int = STATS_VERSION

    def __post_init__(self):
        mean = np.array(self.mean, dtype=np.float64).reshape(-1)
        std = np.array(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != (len(self.spec),) or std.shape != (len(self.spec),):
            raise DataError(
                f"statistics for {len(self.spec)} channels need {len(self.spec)} means and stds, "
                f"got {mean.size} and {std.size}"
            )
        ok = np.isfinite(mean) & np.isfinite(std) & (std > 0)
        bad = [n for n, good in zip(self.spec, ok) if not good]
        if bad:
            raise DataError(f"non-finite mean or non-positive std for channels: {_summary(bad)}")
        mean.flags.writeable = False
        std.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    def __len__(self) -> int:
        return len(self.spec)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Statistics)
            and self.spec == other.spec
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.std, other.std)
        )

    def select(self, spec: ChannelSpec | tuple[str, ...] | list[str]) -> "Statistics":
        """Statistics of the channels of ``spec``, in its order (all must be present)."""

        names = spec.names if isinstance(spec, ChannelSpec) else tuple(spec)
        if names == self.names:
            return self
        missing = [n for n in names if n not in self.spec]
        if missing:
            raise DataError(
                f"the statistics lack channels: {_summary(missing)}",
                hint=f"they cover: {_summary(self.names)}; recompute them with "
                "`appa data stats` for these channels",
            )
        idx = self.spec.indices(names)
        return Statistics(
            ChannelSpec(names),
            self.mean[idx],
            self.std[idx],
            count=self.count,
            metadata=dict(self.metadata),
        )

    # --------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": self.version,
            "channels": list(self.names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "count": int(self.count),
            "weighting": "area",
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "statistics") -> "Statistics":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise DataError(f"{source} is not an Appa statistics file (no 'format': '{_FORMAT}')")
        version = d.get("version")
        if not isinstance(version, int) or version > STATS_VERSION or version < 1:
            raise DataError(
                f"{source} has statistics format version {version!r}; this Appa Studio reads "
                f"versions 1 to {STATS_VERSION}",
                hint="upgrade appa-studio, or recompute the statistics with `appa data stats`",
            )
        try:
            return cls(
                ChannelSpec(tuple(d["channels"])),
                np.asarray(d["mean"], dtype=np.float64),
                np.asarray(d["std"], dtype=np.float64),
                count=int(d.get("count", 0)),
                metadata=dict(d.get("metadata", {})),
                version=version,
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{source} is malformed: {e!r}") from e

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics as a small JSON file, atomically (floats round-trip exactly)."""

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, *, spec: ChannelSpec | None = None) -> "Statistics":
        """Read statistics; with ``spec``, return those channels in its order or raise."""

        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise DataError(
                f"statistics file {os.fspath(path)!r} does not exist",
                hint="compute it with `appa data stats DATA --out STATS.json`",
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"statistics file {os.fspath(path)!r} is not valid JSON: {e}") from e
        stats = cls.from_dict(d, source=f"statistics file {os.fspath(path)!r}")
        return stats if spec is None else stats.select(spec)

    def __repr__(self) -> str:
        return f"Statistics({len(self)} channels, count={self.count})"


# ------------------------------------------------------------------- computation
def _stacked(source: Any, spec: ChannelSpec | None) -> tuple[xr.DataArray, ChannelSpec]:
    if isinstance(source, xr.Dataset):
        spec = spec if spec is not None else ChannelSpec.from_dataset(source)
        return spec.stack(source), spec
    if isinstance(source, xr.DataArray):
        if source.dims[:2] != ("time", "channel") or source.ndim != 4:
            raise DataError(
                "a stacked array must have dims (time, channel, latitude, longitude), "
                f"got {source.dims}"
            )
        if "channel" in source.coords:
            have = ChannelSpec(tuple(str(c) for c in source["channel"].values))
            if spec is None:
                return source, have
            have.select(spec.names)
            return source.sel(channel=list(spec.names)), spec
        if spec is None or len(spec) != source.sizes["channel"]:
            raise DataError("an array without channel names needs a spec with as many channels")
        return source, spec
    raise DataError(f"statistics need an xarray Dataset or DataArray, got {type(source).__name__}")


def compute_statistics(
    source: xr.Dataset | xr.DataArray,
    spec: ChannelSpec | None = None,
    *,
    chunk: int | None = None,
    nan_policy: Literal["omit", "raise"] = "omit",
    progress: bool = False,
) -> Statistics:
    """Area-weighted mean and std of each channel, in one streaming pass over time.

    Arguments:
        source: Canonical dataset, or stacked array ``(time, channel, latitude, longitude)``.
        spec: Channels (default: all channels of ``source``).
        chunk: Time steps read at once (default: about 32 MiB of float64 per chunk).
        nan_policy: ``"omit"`` gives NaN cells zero weight; ``"raise"`` rejects any NaN.
        progress: Show a tqdm progress bar.

    Raises:
        DataError: On a NaN with ``nan_policy="raise"``, or a channel that is all NaN or constant.
    """

    if nan_policy not in ("omit", "raise"):
        raise ConfigError(f"nan_policy must be 'omit' or 'raise', got {nan_policy!r}")
    x, spec = _stacked(source, spec)
    nt, nc, nlat, nlon = (x.sizes[d] for d in x.dims)
    if nt == 0:
        raise DataError("no time steps to compute statistics over")
    if chunk is None:
        chunk = max(1, (32 << 20) // (8 * nc * nlat * nlon))
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, got {chunk!r}")
    if x.dims[2] not in x.coords:
        raise DataError(
            f"the array has no {x.dims[2]!r} coordinate, which the area weights need",
            hint="assign the latitudes of the grid (da.assign_coords(latitude=...))",
        )
    w_lat = area_weights(x[x.dims[2]].values)[:, None]  # (H, 1)

    total = np.zeros(nc)  # W
    mean = np.zeros(nc)  # mu
    m2 = np.zeros(nc)  # M
    starts = range(0, nt, int(chunk))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="statistics", unit="chunk")
    for start in starts:
        block = np.asarray(x.isel(time=slice(start, start + chunk)).values, dtype=np.float64)
        block = np.moveaxis(block, 1, 0).reshape(nc, -1, nlat, nlon)  # (C, t, H, W)
        valid = ~np.isnan(block)
        if nan_policy == "raise" and not valid.all():
            c = int(np.argwhere(~valid)[0, 0])
            raise DataError(
                f"channel {spec.names[c]!r} has NaNs (time steps {start} to {start + chunk - 1})",
                hint="use nan_policy='omit' to give missing cells zero weight",
            )
        w = np.where(valid, w_lat, 0.0)
        xb = np.where(valid, block, 0.0)
        w_b = w.sum(axis=(1, 2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(w_b > 0, (w * xb).sum(axis=(1, 2, 3)) / w_b, 0.0)
        m2_b = (w * (xb - mean_b[:, None, None, None]) ** 2).sum(axis=(1, 2, 3))
        w_new = total + w_b
        delta = mean_b - mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(w_new > 0, w_b / w_new, 0.0)
            cross = np.where(w_new > 0, delta**2 * total * w_b / w_new, 0.0)
        mean = mean + delta * frac
        m2 = m2 + m2_b + cross
        total = w_new

    empty = [n for n, t in zip(spec.names, total) if t == 0]
    if empty:
        raise DataError(
            f"channels that are NaN everywhere: {_summary(empty)}",
            hint="drop them from the channels",
        )
    std = np.sqrt(m2 / total)
    flat = (std == 0) | (std <= _CONSTANT_RTOL * np.abs(mean))
    constant = [n for n, f in zip(spec.names, flat) if f]
    if constant:
        raise DataError(
            f"channels with zero standard deviation (constant): {_summary(constant)}",
            hint="a constant field cannot be standardised; drop it from the channels",
        )
    meta = {"weighting": "area", "nan_policy": nan_policy}
    times = x["time"].values if "time" in x.coords else None
    if times is not None and times.size and np.issubdtype(times.dtype, np.datetime64):
        meta["time"] = [str(times[0]), str(times[-1])]
    logger.info("statistics of %d channels over %d states", nc, nt)
    return Statistics(spec, mean, std, count=nt, metadata=meta)


# --------------------------------------------------------------- standardisation
def _apply(x: Any, stats: Statistics, *, inverse: bool, fill_nan: bool) -> Any:
    if isinstance(x, xr.Dataset):
        out = x.copy()
        for var in x.data_vars:
            da = x[var]
            if "level" in da.dims:
                names = [f"{var}_{int(p)}" for p in da["level"].values]
                sub = stats.select(names)
                mu = xr.DataArray(sub.mean, dims="level", coords={"level": da["level"]})
                sd = xr.DataArray(sub.std, dims="level", coords={"level": da["level"]})
            else:
                sub = stats.select([var])
                mu, sd = float(sub.mean[0]), float(sub.std[0])
            out[var] = _affine(da, mu, sd, inverse=inverse, fill_nan=fill_nan).astype(da.dtype)
            out[var].attrs = dict(da.attrs)
        return out
    if isinstance(x, xr.DataArray):
        if "channel" not in x.dims:
            raise DataError(f"a DataArray to standardise needs a 'channel' dim, got {x.dims}")
        names = [str(c) for c in x["channel"].values] if "channel" in x.coords else None
        sub = stats.select(names) if names is not None else stats
        if sub is stats and x.sizes["channel"] != len(stats):
            raise DataError(f"{x.sizes['channel']} channels but statistics for {len(stats)}")
        mu = xr.DataArray(sub.mean, dims="channel")
        sd = xr.DataArray(sub.std, dims="channel")
        out = _affine(x, mu, sd, inverse=inverse, fill_nan=fill_nan)
        return out.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else out
    # torch tensor or numpy array (..., C, H, W)
    shape = tuple(x.shape)
    if len(shape) < 3 or shape[-3] != len(stats):
        raise DataError(
            f"expected (..., C, H, W) with C = {len(stats)} channels, got shape {shape}",
            hint="use statistics of the same channels as the data",
        )
    if hasattr(x, "new_tensor"):  # torch
        import torch

        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        mu = torch.tensor(np.array(stats.mean), dtype=dtype, device=x.device)[:, None, None]
        sd = torch.tensor(np.array(stats.std), dtype=dtype, device=x.device)[:, None, None]
        out = x * sd + mu if inverse else (x - mu) / sd
        return torch.nan_to_num(out, nan=0.0) if fill_nan and not inverse else out
    arr = np.asarray(x)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    mu = stats.mean.astype(dtype)[:, None, None]
    sd = stats.std.astype(dtype)[:, None, None]
    out = arr * sd + mu if inverse else (arr - mu) / sd
    if fill_nan and not inverse:
        out = np.where(np.isnan(out), 0.0, out)
    return out.astype(dtype, copy=False)


def _affine(x, mu, sd, *, inverse: bool, fill_nan: bool):
    out = x * sd + mu if inverse else (x - mu) / sd
    return out.fillna(0.0) if fill_nan and not inverse else out


def standardize(x: Any, stats: Statistics, *, fill_nan: bool = False) -> Any:
    r""":math:`(x - \mu) / \sigma` per channel.

    Arguments:
        x: Tensor or array ``(..., C, H, W)`` in the channel order of ``stats``; a DataArray
            with a ``channel`` dim (matched by name); or a canonical Dataset (matched by
            variable and level).
        stats: The statistics.
        fill_nan: Replace NaNs of the result by 0 (the channel mean).

    Returns:
        Same type, shape and float dtype as ``x``; torch tensors stay on their device.
    """

    return _apply(x, stats, inverse=False, fill_nan=fill_nan)


def destandardize(x: Any, stats: Statistics) -> Any:
    r""":math:`\sigma \tilde{x} + \mu` per channel: the inverse of :func:`standardize`."""

    return _apply(x, stats, inverse=True, fill_nan=False)

