r"""Compile an :class:`~appa_engine.observations.observers.ObservationSet` against a model.

Compiling checks the observers against the model's channels, grid and time window, precomputes
every index and weight once (:mod:`appa_engine.observations.operators`) and returns a
:class:`CompiledObservations` holding

.. math:: y \in \mathbb{R}^N, \qquad \mathcal{A} : \mathbb{R}^{B \times T \times C \times H
    \times W} \to \mathbb{R}^{B \times N}, \qquad \Sigma_y = \operatorname{diag}(\text{cov\_y}),

with the observers' rows concatenated in the order of the set. Everything is in **standardised
units of the observed quantity**: for an observation of channel :math:`c`,
:math:`y = (y^{\text{phys}} - \mu_c)/s_c` and :math:`\sigma = \sigma^{\text{phys}}/s_c` (the model
statistics ``mean``/``std``); for the nonlinear wind speed, the speed is computed in m/s from the
de-standardised components and divided by the reference scale :math:`s_\text{ref} = (s_u +
s_v)/2` (no offset); latent observations are already in latent units (scale 1, offset 0).
:meth:`CompiledObservations.to_physical` undoes this row by row.

Latent observers (:attr:`Observer.on_latent`) are applied to the latent trajectory ``z``, all the
others to the decoded physical trajectory ``x``: ``A(x, z=z)``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from appa_engine.data.grid import Grid
from appa_engine.errors import ObservationError
from appa_engine.observations import operators as ops
from appa_engine.observations.observers import (
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    Observer,
    SatelliteSwath,
    TrackSwath,
    WindSpeedStations,
    _PointObserver,
    split_channel,
)

__all__ = ["CompiledObservations", "compile_observations"]

logger = logging.getLogger(__name__)


class _Layout:
    """Where the states and channels of the ``x`` (or ``z``) given to :meth:`CompiledObservations.A`
    sit: the whole window or only the observed states, every channel or only some.

    Arguments:
        kmap: Position of each state of the window along ``x``'s time axis (-1: not in ``x``).
        cmap: Position of each model channel along ``x``'s channel axis (-1: not in ``x``), or
            None when ``x`` holds every channel in order.
        key: A hashable name of the layout (blocks cache their index tensors under it).
    """

    def __init__(self, kmap: np.ndarray, cmap: np.ndarray | None, key: tuple):
        self.kmap, self.cmap, self.key = kmap, cmap, key
        self.C = None if cmap is None else int((cmap >= 0).sum())  # channels in x

    def flat(self, k: np.ndarray, chw: np.ndarray, CHW: int, HW: int) -> np.ndarray:
        """Flat indices into ``x[b]`` of entries (state ``k``, channel-cell ``chw = c HW + hw``)."""

        if self.cmap is None:
            return self.kmap[k] * CHW + chw
        c, hw = np.divmod(chw, HW)
        return self.kmap[k] * (self.C * HW) + self.cmap[c] * HW + hw

    def channels(self, c: np.ndarray) -> np.ndarray:
        """Positions of the model channels ``c`` along ``x``'s channel axis."""

        return c if self.cmap is None else self.cmap[c]


class _Block:
    """Rows of one observer: a differentiable forward map plus per-row metadata."""

    def __init__(self, observer: Observer, n: int):
        self.observer = observer
        self.n = n  # rows kept
        self.scale = np.ones(n)
        self.offset = np.zeros(n)
        self.error = np.ones(n)  # physical std
        self.value = np.full(n, np.nan)  # physical values
        self.states = np.zeros(0, np.int64)  # state (or latent state) indices touched
        self.channels = np.zeros(0, np.int64)  # model channels read (physical observers)
        self.quantities: list[tuple[str, float, str]] = []  # (variable, level, channel)
        self._cache: dict = {}

    def forward(self, x: torch.Tensor, layout: _Layout) -> torch.Tensor:  # (B, n)
        raise NotImplementedError

    def meta(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def footprint(self, T: int, H: int, W: int) -> np.ndarray:
        raise NotImplementedError

    def nbytes(self, batch: int, itemsize: int) -> int:
        raise NotImplementedError

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


class _SparseBlock(_Block):
    """Linear rows as COO entries ``(row, state k, channel-cell chw, weight)``; see :func:`ops.sparse_apply`."""

    def __init__(self, observer, n, rows, k, chw, w, *, CHW: int, HW: int, meta):
        super().__init__(observer, n)
        identity = rows.size == n and np.array_equal(rows, np.arange(n))
        self.rows = None if identity else rows
        self.k, self.chw, self.w = k, chw, w
        self.CHW, self.HW = CHW, HW
        self.states = np.unique(k)
        self.channels = np.unique(chw // HW)
        self._meta = meta

    def _tensors(self, x: torch.Tensor, layout: _Layout, k, chw, w, rows, tag=""):
        def make():
            idx = torch.as_tensor(layout.flat(k, chw, self.CHW, self.HW), device=x.device)
            r = None if rows is None else torch.as_tensor(rows, device=x.device)
            return idx, torch.as_tensor(w, device=x.device, dtype=x.dtype), r

        return self._cached((tag, layout.key, x.device, x.dtype), make)

    def forward(self, x, layout):
        idx, w, rows = self._tensors(x, layout, self.k, self.chw, self.w, self.rows)
        return ops.sparse_apply(x.reshape(x.shape[0], -1), rows, idx, w, self.n)

    def meta(self):
        return self._meta()

    def footprint(self, T, H, W):
        mask = np.zeros((T, H * W), dtype=bool)
        mask[self.k, self.chw % self.HW] = True
        return mask.reshape(T, H, W)

    def nbytes(self, batch, itemsize):
        return int(self.k.size * (8 + 8 + 8 + 8) + batch * (self.k.size + self.n) * itemsize)


class _WindBlock(_SparseBlock):
    r"""Rows :math:`\sqrt{u^2 + v^2} / s_\text{ref}` with :math:`u, v` interpolated like stations."""

    def __init__(self, observer, n, rows, k, hw, w, cu, cv, *, CHW, HW, meta):
        super().__init__(observer, n, rows, k, cu * HW + hw, w, CHW=CHW, HW=HW, meta=meta)
        self.chw_v = cv * HW + hw  # same rows, stencil and weights as u
        self.channels = np.union1d(self.channels, cv)
        # Per-row statistics of u and v and the reference scale; set by the compiler.
        self.mean_u = self.std_u = self.mean_v = self.std_v = None

    def forward(self, x, layout):
        x_flat = x.reshape(x.shape[0], -1)
        idx_u, w, rows = self._tensors(x, layout, self.k, self.chw, self.w, self.rows, "u")
        idx_v, _, _ = self._tensors(x, layout, self.k, self.chw_v, self.w, self.rows, "v")

        def stats():
            return tuple(
                torch.as_tensor(a, device=x.device, dtype=x.dtype)
                for a in (self.mean_u, self.std_u, self.mean_v, self.std_v, self.scale)
            )

        mean_u, std_u, mean_v, std_v, scale = self._cached(("stats", x.device, x.dtype), stats)
        u = ops.sparse_apply(x_flat, rows, idx_u, w, self.n) * std_u + mean_u
        v = ops.sparse_apply(x_flat, rows, idx_v, w, self.n) * std_v + mean_v
        return ops.wind_speed(u, v) / scale

    def nbytes(self, batch, itemsize):
        return 2 * super().nbytes(batch, itemsize)


class _DenseBlock(_Block):
    """Whole states (identity on chosen channels and every cell), linear in time."""

    def __init__(self, observer, *, obs, k, w, n_times, chans, shape, keep, meta):
        n_full = n_times * len(chans) * int(np.prod(shape))
        super().__init__(observer, n_full if keep is None else keep.size)
        self.obs, self.k, self.w = obs, k, w
        self.n_times, self.chans, self.shape = n_times, np.asarray(chans), tuple(shape)
        self.keep = keep
        self.states = np.unique(k)
        self.channels = np.unique(self.chans)
        self._meta = meta

    def forward(self, x, layout):
        def make():
            dev = x.device
            keep = None if self.keep is None else torch.as_tensor(self.keep, device=dev)
            return (
                torch.as_tensor(self.obs, device=dev),
                torch.as_tensor(layout.kmap[self.k], device=dev),
                torch.as_tensor(self.w, device=dev, dtype=x.dtype),
                torch.as_tensor(layout.channels(self.chans), device=dev),
                keep,
            )

        obs, k, w, chans, keep = self._cached((layout.key, x.device, x.dtype), make)
        if x.shape[2:] != (x.shape[2],) + self.shape:
            raise ObservationError(
                f"{self.observer.kind} '{self.observer.name}' expects states of shape (·, {self.shape}), "
                f"got {tuple(x.shape[2:])}",
                hint="pass the trajectory the observations were compiled for",
            )
        picked = x.index_select(1, k).index_select(2, chans) * w[None, :, None, None, None]
        out = x.new_zeros((x.shape[0], self.n_times, len(self.chans)) + self.shape).index_add(
            1, obs, picked
        )
        out = out.reshape(x.shape[0], -1)
        return out if keep is None else out.index_select(1, keep)

    def meta(self):
        return self._meta()

    def footprint(self, T, H, W):
        mask = np.zeros((T, H, W), dtype=bool)
        mask[self.states] = True
        return mask

    def nbytes(self, batch, itemsize):
        cells = int(np.prod(self.shape))
        return int(batch * (self.k.size * len(self.chans) * cells + 2 * self.n) * itemsize)


def _check_array(name: str, value: Any, C: int) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.shape != (C,):
        raise ObservationError(
            f"{name} has {a.size} entries for {C} channels",
            hint=f"give one {name} per model channel",
        )
    if not np.all(np.isfinite(a)):
        raise ObservationError(
            f"{name} contains NaN or infinite values", hint="recompute the model statistics"
        )
    return a


def _fmt(t) -> str:
    return np.datetime_as_string(np.datetime64(t, "ns"), unit="m")


class _Compiler:
    def __init__(self, *, grid, channels, times, mean, std, latent_shape, drop_missing):
        if not isinstance(grid, Grid):
            raise ObservationError(
                f"expected a Grid, got {type(grid).__name__}", hint="e.g. Grid.regular(32, 64)"
            )
        self.grid = grid
        if isinstance(channels, str):
            channels = (channels,)
        self.channels = tuple(str(c) for c in channels)
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ObservationError("model channels must be a non-empty list of unique names")
        self.index = {c: i for i, c in enumerate(self.channels)}
        C = len(self.channels)
        self.mean = _check_array("mean", mean, C)
        self.std = _check_array("std", std, C)
        if np.any(self.std <= 0):
            raise ObservationError(
                "std must be positive for every channel", hint="recompute the model statistics"
            )
        try:
            t = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
        except (TypeError, ValueError) as e:
            raise ObservationError(f"model times could not be read as dates ({e})") from e
        if (
            t.ndim != 1
            or t.size == 0
            or np.any(np.isnat(t))
            or np.any(np.diff(t) <= np.timedelta64(0, "ns"))
        ):
            raise ObservationError(
                "model times must be a non-empty, strictly increasing list of dates",
                hint="pass the times of the states of the trajectory, e.g. time_range(start, end, '1h')",
            )
        self.times = t
        self.latent_shape = None if latent_shape is None else tuple(int(s) for s in latent_shape)
        self.drop_missing = drop_missing
        H, W = grid.shape
        self.HW, self.CHW = H * W, C * H * W

    # Checks shared by kinds.
    def window(self) -> str:
        return f"{_fmt(self.times[0])} – {_fmt(self.times[-1])}"

    def check_times(self, obs: Observer, times: np.ndarray) -> None:
        out = (times < self.times[0]) | (times > self.times[-1])
        if np.any(out):
            first = times[np.flatnonzero(out)[0]]
            raise ObservationError(
                f"{obs.kind} '{obs.name}' has {int(out.sum())} observation times outside the model window "
                f"{self.window()} (first: {_fmt(first)})",
                hint="drop those times, or widen the window (start/hours) to cover them",
            )

    def channel_indices(self, obs: Observer, channels: Sequence[str]) -> np.ndarray:
        missing = [c for c in channels if c not in self.index]
        if missing:
            raise ObservationError(
                f"{obs.kind} '{obs.name}' observes {', '.join(map(repr, missing))}, which the model does not have",
                hint=f"available channels: {', '.join(self.channels)}",
            )
        return np.array([self.index[c] for c in channels], dtype=np.int64)

    def keep_rows(self, obs: Observer, values: np.ndarray | None, n: int) -> np.ndarray | None:
        """Indices of the rows to keep (None: all), after the NaN policy."""

        if values is None:
            return None
        flat = values.reshape(-1)
        if flat.size != n:
            raise ObservationError(
                f"{obs.kind} '{obs.name}' has {flat.size} values for {n} observations on this grid and window",
                hint="simulate the values with CompiledObservations.simulate/with_values for this setup",
            )
        bad = np.isnan(flat)
        if not bad.any():
            return None
        if not self.drop_missing:
            raise ObservationError(
                f"{obs.kind} '{obs.name}' has {int(bad.sum())} missing (NaN) values (first at flat index "
                f"{int(np.flatnonzero(bad)[0])})",
                hint="drop them, or compile with drop_missing=True to ignore those observations",
            )
        return np.flatnonzero(~bad)

    def finish(
        self,
        block: _Block,
        obs: Observer,
        q_rows: np.ndarray,
        keep: np.ndarray | None,
        values,
        kind="linear",
    ):
        """Fill per-row scale/offset/error/value from the quantity index of each (full) row."""

        sel = (lambda a: a) if keep is None else (lambda a: a[keep])
        q = sel(q_rows)
        errors = np.array([obs.error_of(ch) for (_, _, ch) in block.quantities])
        block.error = errors[q]
        if values is not None:
            block.value = sel(values.reshape(-1))
        if kind == "linear":
            cidx = np.array([self.index[ch] for (_, _, ch) in block.quantities])
            block.offset = self.mean[cidx][q]
            block.scale = self.std[cidx][q]
        return block

    # Kinds.
    def points(self, obs: _PointObserver) -> _Block:
        self.check_times(obs, obs.times)
        S, nt = obs.lon.size, obs.times.size
        wind = isinstance(obs, WindSpeedStations)
        if wind:
            comps = obs.components
            cu = self.channel_indices(obs, [u for u, _ in comps])
            cv = self.channel_indices(obs, [v for _, v in comps])
        else:
            cidx = self.channel_indices(obs, obs.channels)
        V = len(obs.channels)
        n_full = nt * S * V
        keep = self.keep_rows(obs, obs.values, n_full)

        t_obs, t_k, t_w = ops.time_stencil(self.times, obs.times)
        s_pt, s_hw, s_w = ops.bilinear_stencil(self.grid, obs.lon, obs.lat)
        v_ar = np.arange(V)
        rows = ((t_obs[:, None, None] * S + s_pt[None, :, None]) * V + v_ar[None, None, :]).reshape(
            -1
        )
        shape = (t_obs.size, s_pt.size, V)
        k = np.broadcast_to(t_k[:, None, None], shape).reshape(-1)
        hw = np.broadcast_to(s_hw[None, :, None], shape).reshape(-1)
        q_e = np.broadcast_to(v_ar[None, None, :], shape).reshape(-1)
        w = (t_w[:, None, None] * s_w[None, :, None] * np.ones(V)[None, None, :]).reshape(-1)
        q_rows = np.tile(v_ar, nt * S)
        n = n_full
        if keep is not None:
            new = np.full(n_full, -1, dtype=np.int64)
            new[keep] = np.arange(keep.size)
            ok = new[rows] >= 0
            rows, k, hw, q_e, w = new[rows][ok], k[ok], hw[ok], q_e[ok], w[ok]
            n = keep.size

        k_lo, alpha = ops.time_brackets(self.times, obs.times)
        times = obs.times

        def meta():
            r = np.arange(n_full) if keep is None else keep
            t, s = r // (S * V), (r // V) % S
            return dict(
                lon=obs.lon[s],
                lat=obs.lat[s],
                time=times[t],
                time_index=k_lo[t],
                time_weight=alpha[t],
                q=r % V,
            )

        if wind:
            block = _WindBlock(
                obs, n, rows, k, hw, w, cu[q_e], cv[q_e], CHW=self.CHW, HW=self.HW, meta=meta
            )
            block.quantities = [
                (split_channel(ch)[0], np.nan if p is None else p, ch)
                for ch, p in zip(obs.channels, obs.levels or (None,))
            ]
            self.finish(block, obs, q_rows, keep, obs.values, kind="wind")
            qk = q_rows if keep is None else q_rows[keep]
            block.mean_u, block.std_u = self.mean[cu][qk], self.std[cu][qk]
            block.mean_v, block.std_v = self.mean[cv][qk], self.std[cv][qk]
            block.scale = (block.std_u + block.std_v) / 2
            block.offset = np.zeros(n)
            return block
        block = _SparseBlock(
            obs, n, rows, k, cidx[q_e] * self.HW + hw, w, CHW=self.CHW, HW=self.HW, meta=meta
        )
        block.quantities = _quantities(obs.channels)
        return self.finish(block, obs, q_rows, keep, obs.values)

    def cells_block(
        self, obs: Observer, k_groups, w_groups, masks, group_time, group_k, group_alpha
    ):
        """Selection of cells: rows (group, channel, cell); a group is a time (track) or a state bin (swath)."""

        cidx = self.channel_indices(obs, obs.channels)
        V = cidx.size
        lat_c, lon_c = np.meshgrid(self.grid.lat, self.grid.lon, indexing="ij")
        lat_c, lon_c = lat_c.reshape(-1), lon_c.reshape(-1)
        cells = [np.flatnonzero(m.reshape(-1)) for m in masks]
        counts = np.array([V * c.size for c in cells], dtype=np.int64)
        n_full = int(counts.sum())
        keep = self.keep_rows(obs, obs.values, n_full)
        if n_full == 0:
            logger.warning("%s '%s' sees no grid cell in the window", obs.kind, obs.name)
        starts = np.concatenate([[0], np.cumsum(counts)])
        g_rows = (
            np.concatenate([np.full(c, g, dtype=np.int64) for g, c in enumerate(counts)])
            if n_full
            else np.zeros(0, np.int64)
        )
        q_rows = (
            np.concatenate([np.repeat(np.arange(V), c.size) for c in cells])
            if n_full
            else np.zeros(0, np.int64)
        )
        hw_rows = (
            np.concatenate([np.tile(c, V) for c in cells]) if n_full else np.zeros(0, np.int64)
        )
        # Entries: each row times each time entry of its group.
        rows, k, w = [], [], []
        for g in range(len(cells)):
            r = np.arange(starts[g], starts[g + 1])
            for kk, ww in zip(k_groups[g], w_groups[g]):
                rows.append(r)
                k.append(np.full(r.size, kk, dtype=np.int64))
                w.append(np.full(r.size, ww))
        cat = lambda a, dt: np.concatenate(a) if a else np.zeros(0, dt)  # noqa: E731
        rows, k, w = cat(rows, np.int64), cat(k, np.int64), cat(w, np.float64)
        hw_e, q_e = hw_rows[rows], q_rows[rows]
        n = n_full
        if keep is not None:
            new = np.full(n_full, -1, dtype=np.int64)
            new[keep] = np.arange(keep.size)
            ok = new[rows] >= 0
            rows, k, w, hw_e, q_e = new[rows][ok], k[ok], w[ok], hw_e[ok], q_e[ok]
            n = keep.size
        order = np.argsort(rows, kind="stable")
        rows, k, w, hw_e, q_e = rows[order], k[order], w[order], hw_e[order], q_e[order]

        def meta():
            r = np.arange(n_full) if keep is None else keep
            g, hw = g_rows[r], hw_rows[r]
            return dict(
                lon=lon_c[hw],
                lat=lat_c[hw],
                time=group_time[g],
                time_index=group_k[g],
                time_weight=group_alpha[g],
                q=q_rows[r],
            )

        block = _SparseBlock(
            obs, n, rows, k, cidx[q_e] * self.HW + hw_e, w, CHW=self.CHW, HW=self.HW, meta=meta
        )
        block.quantities = _quantities(obs.channels)
        return self.finish(block, obs, q_rows, keep, obs.values)

    def satellite(self, obs: SatelliteSwath) -> _Block:
        from appa_engine.observations.orbits import swath_mask

        samples = obs.times
        if obs.tolerance is not None:
            tol = obs.tolerance.astype(np.int64)
        elif self.times.size > 1:
            tol = int(np.diff(self.times.astype(np.int64)).min()) // 2
            tol = max(tol, 1)
        else:
            raise ObservationError(
                f"satellite_swath '{obs.name}': the window has a single state, so the binning tolerance "
                "cannot default to half the state spacing",
                hint="set tolerance, e.g. tolerance='30min'",
            )
        t = self.times.astype(np.int64)
        s = samples.astype(np.int64)
        outside = (s < t[0] - tol) | (s >= t[-1] + tol)
        if np.any(outside):
            first = samples[np.flatnonzero(outside)[0]]
            raise ObservationError(
                f"satellite_swath '{obs.name}' samples from {_fmt(obs.start)} to {_fmt(obs.end)}, but "
                f"{int(outside.sum())} samples (first: {_fmt(first)}) fall outside the model window "
                f"{self.window()} (± tolerance {tol / 3.6e12:g} h)",
                hint=f"samples must lie in [{_fmt(self.times[0] - np.timedelta64(tol, 'ns'))}, "
                f"{_fmt(self.times[-1] + np.timedelta64(tol, 'ns'))}): move start/end, or set a smaller tolerance",
            )
        k, offset = ops.nearest_state(self.times, samples)
        inside = (offset >= -tol) & (offset < tol)
        k = k[inside]
        lon, lat = obs.orbit.ground_track(samples[inside])
        lon, lat = np.asarray(lon).reshape(-1), np.asarray(lat).reshape(-1)
        bins = np.unique(k)
        masks = [swath_mask(self.grid, lon[k == b], lat[k == b], obs.fov_radius_deg) for b in bins]
        return self.cells_block(
            obs,
            [[b] for b in bins],
            [[1.0] for _ in bins],
            masks,
            self.times[bins],
            bins,
            np.zeros(bins.size),
        )

    def track(self, obs: TrackSwath) -> _Block:
        from appa_engine.observations.orbits import swath_mask

        self.check_times(obs, obs.times)
        step = min(self.grid.dlat, self.grid.dlon, obs.width_deg) / 4
        lon, lat = ops.densify_polyline(obs.lon, obs.lat, step)
        mask = swath_mask(self.grid, lon, lat, obs.width_deg / 2)
        t_obs, t_k, t_w = ops.time_stencil(self.times, obs.times)
        k_groups = [t_k[t_obs == g] for g in range(obs.times.size)]
        w_groups = [t_w[t_obs == g] for g in range(obs.times.size)]
        k_lo, alpha = ops.time_brackets(self.times, obs.times)
        return self.cells_block(
            obs, k_groups, w_groups, [mask] * obs.times.size, obs.times, k_lo, alpha
        )

    def full_state(self, obs: FullStateObserver) -> _Block:
        self.check_times(obs, obs.times)
        channels = obs.resolve_channels(self.channels)
        for ch in channels:  # every channel needs an error
            obs.error_of(ch)
        cidx = self.channel_indices(obs, channels)
        H, W = self.grid.shape
        nt, V = obs.times.size, len(channels)
        if obs.values is not None and obs.values.shape != (nt, V, H, W):
            raise ObservationError(
                f"full_state '{obs.name}' values have shape {obs.values.shape}, expected {(nt, V, H, W)}",
                hint="arrange values as (time, channel, latitude, longitude) on the model grid",
            )
        n_full = nt * V * H * W
        keep = self.keep_rows(obs, obs.values, n_full)
        t_obs, t_k, t_w = ops.time_stencil(self.times, obs.times)
        k_lo, alpha = ops.time_brackets(self.times, obs.times)
        lat_c, lon_c = np.meshgrid(self.grid.lat, self.grid.lon, indexing="ij")

        def meta():
            r = np.arange(n_full) if keep is None else keep
            t, q, hw = r // (V * H * W), (r // (H * W)) % V, r % (H * W)
            return dict(
                lon=lon_c.reshape(-1)[hw],
                lat=lat_c.reshape(-1)[hw],
                time=obs.times[t],
                time_index=k_lo[t],
                time_weight=alpha[t],
                q=q,
            )

        block = _DenseBlock(
            obs, obs=t_obs, k=t_k, w=t_w, n_times=nt, chans=cidx, shape=(H, W), keep=keep, meta=meta
        )
        block.quantities = _quantities(channels)
        q_rows = np.repeat(np.tile(np.arange(V), nt), H * W)
        return self.finish(block, obs, q_rows, keep, obs.values)

    def latent(self, obs: LatentObserver) -> _Block:
        self.check_times(obs, obs.times)
        shape = self.latent_shape
        if obs.values is not None:
            if shape is not None and tuple(obs.values.shape[1:]) != shape:
                raise ObservationError(
                    f"latent '{obs.name}' values have latent shape {obs.values.shape[1:]}, the model {shape}",
                    hint="encode the states with the model's autoencoder",
                )
            shape = tuple(obs.values.shape[1:])
        if shape is None:
            raise ObservationError(
                f"latent '{obs.name}' has no values, so the latent shape is unknown",
                hint="compile with latent_shape=(Z, h, w) of the model",
            )
        Z, h, w = shape
        nt = obs.times.size
        n_full = nt * Z * h * w
        keep = self.keep_rows(obs, obs.values, n_full)
        t_obs, t_k, t_w = ops.time_stencil(self.times, obs.times)
        k_lo, alpha = ops.time_brackets(self.times, obs.times)

        def meta():
            r = np.arange(n_full) if keep is None else keep
            t, q = r // (Z * h * w), (r // (h * w)) % Z
            nan = np.full(r.size, np.nan)
            return dict(
                lon=nan, lat=nan, time=obs.times[t], time_index=k_lo[t], time_weight=alpha[t], q=q
            )

        block = _DenseBlock(
            obs,
            obs=t_obs,
            k=t_k,
            w=t_w,
            n_times=nt,
            chans=np.arange(Z),
            shape=(h, w),
            keep=keep,
            meta=meta,
        )
        block.quantities = [("latent", np.nan, f"latent_{z}") for z in range(Z)]
        sel = (lambda a: a) if keep is None else (lambda a: a[keep])
        block.error = np.full(block.n, float(obs.errors))
        if obs.values is not None:
            block.value = sel(obs.values.reshape(-1))
        return block

    def compile(self, observations: ObservationSet) -> "CompiledObservations":
        blocks = []
        for obs in observations:
            if isinstance(obs, LatentObserver):
                blocks.append(self.latent(obs))
            elif isinstance(obs, _PointObserver):
                blocks.append(self.points(obs))
            elif isinstance(obs, SatelliteSwath):
                blocks.append(self.satellite(obs))
            elif isinstance(obs, TrackSwath):
                blocks.append(self.track(obs))
            elif isinstance(obs, FullStateObserver):
                blocks.append(self.full_state(obs))
            else:
                raise ObservationError(f"observers of kind {type(obs).__name__} cannot be compiled")
        return CompiledObservations(observations, blocks, self)


def _quantities(channels: Sequence[str]) -> list[tuple[str, float, str]]:
    out = []
    for ch in channels:
        variable, level = split_channel(ch)
        out.append((variable, np.nan if level is None else level, ch))
    return out


class CompiledObservations:
    r"""Observations compiled against a model: :math:`y`, :math:`\mathcal{A}` and :math:`\Sigma_y`.

    Built by :func:`compile_observations` (or :meth:`ObservationSet.compile`). Rows are the
    observers' rows concatenated in the order of the set; ``slices[name]`` gives each observer's.

    Attributes:
        observations: The :class:`ObservationSet` it was compiled from.
        grid, channels, times, mean, std: The model it was compiled against.
        y: Observed values in standardised units, shape ``(N,)``, float64 (NaN without values).
        cov_y: Observation error variances in the same units, shape ``(N,)``, float64.
        observer_index: Index of the observer of each row, shape ``(N,)``.
        state_indices: Sorted indices of the physical states the physical observers touch (the
            sampler only needs to decode these).
        latent_state_indices: Same for the latent observers.
        physical_channels: Sorted indices of the model channels the physical observers read
            (:math:`\mathcal{A}` can be given only these, ``A(x, channels=...)``).
        has_latent: Whether some rows observe the latent trajectory.
    """

    def __init__(self, observations: ObservationSet, blocks: list[_Block], compiler: _Compiler):
        self.observations = observations
        self._blocks = blocks
        self.grid = compiler.grid
        self.channels = compiler.channels
        self.times = compiler.times
        self.mean = compiler.mean
        self.std = compiler.std
        self.latent_shape = compiler.latent_shape
        counts = [b.n for b in blocks]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.slices = {
            b.observer.name: slice(int(offsets[i]), int(offsets[i + 1]))
            for i, b in enumerate(blocks)
        }

        def cat(name: str) -> np.ndarray:
            parts = [np.asarray(getattr(b, name), dtype=np.float64) for b in blocks]
            return np.concatenate(parts) if parts else np.zeros(0)

        self._scale, self._offset = cat("scale"), cat("offset")
        self._error, self._value = cat("error"), cat("value")
        self.observer_index = np.repeat(np.arange(len(blocks)), counts).astype(np.int64)
        self.y = torch.as_tensor((self._value - self._offset) / self._scale, dtype=torch.float64)
        self.cov_y = torch.as_tensor((self._error / self._scale) ** 2, dtype=torch.float64)
        phys = [b for b in blocks if not b.observer.on_latent]
        lat = [b for b in blocks if b.observer.on_latent]
        self.has_latent = bool(lat)
        self.has_physical = bool(phys)
        self.state_indices = (
            np.unique(np.concatenate([b.states for b in phys])) if phys else np.zeros(0, np.int64)
        )
        self.latent_state_indices = (
            np.unique(np.concatenate([b.states for b in lat])) if lat else np.zeros(0, np.int64)
        )
        self.physical_channels = (
            np.unique(np.concatenate([b.channels for b in phys])) if phys else np.zeros(0, np.int64)
        )
        self._table = None

    def __len__(self) -> int:
        return int(self.y.numel())

    @property
    def N(self) -> int:
        """Number of scalar observations."""
        return len(self)

    def __repr__(self) -> str:
        return (
            f"CompiledObservations(N={len(self)}, observers={list(self.slices)}, "
            f"states={self.state_indices.tolist()}, latent={self.has_latent})"
        )

    def _layout(self, T: int, indices: np.ndarray, what: str, channels=None) -> _Layout:
        full = self.times.size
        if T == full:
            kmap, key = np.arange(full), ("full",)
        elif T == indices.size:
            kmap = np.full(full, -1, dtype=np.int64)
            kmap[indices] = np.arange(indices.size)
            key = ("sub",)
        else:
            raise ObservationError(
                f"the {what} trajectory has {T} states, but the observations were compiled for "
                f"{full} "
                f"(or the {indices.size} observed states)",
                hint="pass the whole window, or only the states listed in state_indices, in order",
            )
        if channels is None:
            return _Layout(kmap, None, key)
        cmap = np.full(len(self.channels), -1, dtype=np.int64)
        cmap[channels] = np.arange(channels.size)
        return _Layout(kmap, cmap, key + tuple(channels.tolist()))

    def _check_channels(self, channels) -> np.ndarray | None:
        if channels is None:
            return None
        if isinstance(channels, torch.Tensor):
            channels = channels.tolist()
        c = np.asarray(channels, dtype=np.int64).reshape(-1)
        C = len(self.channels)
        if c.size and (c.min() < 0 or c.max() >= C or np.unique(c).size != c.size):
            raise ObservationError(
                f"channels must be distinct indices of the {C} model channels, got {c.tolist()}"
            )
        missing = np.setdiff1d(self.physical_channels, c)
        if missing.size:
            raise ObservationError(
                f"the observers read channels {[self.channels[i] for i in missing]}, which x lacks",
                hint="pass at least the channels listed in physical_channels",
            )
        return c

    def A(
        self, x: torch.Tensor | None, *, z: torch.Tensor | None = None, channels=None
    ) -> torch.Tensor:
        r"""The observation operator :math:`\mathcal{A}`, differentiable, batched over ``B``.

        Arguments:
            x: Standardised physical trajectory, shape ``(B, T, C, H, W)``, with ``T`` the whole
                window or only the states of :attr:`state_indices` (in order). May be None when
                every observer is latent.
            z: Latent trajectory, shape ``(B, T, Z, h, w)`` (window, or :attr:`latent_state_indices`),
                required when :attr:`has_latent`.
            channels: Which model channels ``x`` holds, in order (indices, shape ``(C',)``; at
                least :attr:`physical_channels`); None: all of them. A decoder asked for only
                the channels the observers read does less work (see
                :class:`~appa_engine.sampling.trajectory.LatentObservationOperator`).

        Returns:
            Predicted observations in standardised units, shape ``(B, N)``, on the device and in
            the dtype of ``x`` (or ``z``).
        """

        ref = x if x is not None else z
        if ref is None:
            raise ObservationError("A needs a trajectory x (or z for latent observations)")
        if self.has_physical and x is None:
            raise ObservationError(
                "these observations need the physical trajectory x", hint="pass A(x, z=z)"
            )
        if self.has_latent and z is None:
            raise ObservationError(
                "these observations include latent observers, which need the latent trajectory",
                hint="pass A(x, z=z) with z of shape (B, T, Z, h, w)",
            )
        if x is not None:
            H, W = self.grid.shape
            channels = self._check_channels(channels)
            C = len(self.channels) if channels is None else channels.size
            if x.ndim != 5 or tuple(x.shape[2:]) != (C, H, W):
                raise ObservationError(
                    f"x must have shape (B, T, {C}, {H}, {W}), got {tuple(x.shape)}",
                    hint="pass a standardised trajectory on the compiled grid and channels",
                )
            layout_x = self._layout(x.shape[1], self.state_indices, "physical", channels)
        if z is not None and self.has_latent:
            if z.ndim != 5:
                raise ObservationError(f"z must have shape (B, T, Z, h, w), got {tuple(z.shape)}")
            layout_z = self._layout(z.shape[1], self.latent_state_indices, "latent")
        outs = []
        for block in self._blocks:
            if block.observer.on_latent:
                outs.append(block.forward(z, layout_z))
            else:
                outs.append(block.forward(x, layout_x))
        if not outs:
            return ref.new_zeros(ref.shape[0], 0)
        return torch.cat(outs, dim=1)

    __call__ = A

    def _per_row(self, a: np.ndarray, like):
        if isinstance(like, torch.Tensor):
            return torch.as_tensor(
                a,
                device=like.device,
                dtype=like.dtype if like.is_floating_point() else torch.float64,
            )
        return a

    def to_physical(self, v):
        """Standardised values, shape ``(..., N)`` (tensor or array), to physical units."""
        return v * self._per_row(self._scale, v) + self._per_row(self._offset, v)

    def to_standardised(self, v):
        """Physical values, shape ``(..., N)`` (tensor or array), to standardised units."""
        return (v - self._per_row(self._offset, v)) / self._per_row(self._scale, v)

    @property
    def error(self) -> np.ndarray:
        """Error std per row in physical units, shape ``(N,)``."""
        return self._error.copy()

    @property
    def values(self) -> np.ndarray:
        """Observed values per row in physical units, shape ``(N,)`` (NaN without values)."""
        return self._value.copy()

    def simulate(
        self,
        truth_x: torch.Tensor | None,
        *,
        generator: torch.Generator | int | None = None,
        truth_z: torch.Tensor | None = None,
        noise: bool = True,
    ) -> np.ndarray:
        r"""Synthetic observations of a true trajectory, with noise drawn from :math:`\Sigma_y`.

        .. math:: y^{\text{phys}} = \text{to\_physical}(\mathcal{A}(x^\star)) + \sigma^{\text{phys}} \odot \epsilon,
            \qquad \epsilon \sim \mathcal{N}(0, I)

        Arguments:
            truth_x: Standardised true trajectory, shape ``(T, C, H, W)`` (whole window).
            generator: A torch generator or an integer seed (the noise is drawn on the CPU).
            truth_z: True latent trajectory, shape ``(T, Z, h, w)``, for latent observers.
            noise: Whether to add the noise (False gives the noiseless :math:`\mathcal{A}(x^\star)`).

        Returns:
            Physical values, shape ``(N,)``, float64 (pass them to :meth:`with_values`).
        """

        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        with torch.no_grad():
            x = None if truth_x is None else truth_x[None].to(torch.float64)
            z = None if truth_z is None else truth_z[None].to(torch.float64)
            clean = self.A(x, z=z)[0].cpu()
        eps = (
            torch.randn(len(self), generator=generator, dtype=torch.float64)
            if noise
            else torch.zeros(len(self), dtype=torch.float64)
        )
        return self.to_physical(clean.numpy()) + self._error * eps.numpy()

    def with_values(self, values: np.ndarray) -> ObservationSet:
        """A copy of the observation set whose observers carry ``values`` (physical, shape ``(N,)``).

        Rows dropped at compile time (``drop_missing``) come back as NaN.
        """

        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != len(self):
            raise ObservationError(f"got {values.size} values for {len(self)} observations")
        observers = []
        for block in self._blocks:
            obs = block.observer
            part = values[self.slices[obs.name]]
            shape, keep = self._values_shape(block)
            full = np.full(int(np.prod(shape)), np.nan)
            if keep is None:
                full[:] = part
            else:
                full[keep] = part
            observers.append(replace(obs, values=full.reshape(shape)))
        return ObservationSet(tuple(observers))

    def _values_shape(self, block: _Block) -> tuple[tuple[int, ...], np.ndarray | None]:
        obs = block.observer
        if isinstance(block, _DenseBlock):
            return (block.n_times, len(block.chans)) + block.shape, block.keep
        if isinstance(obs, _PointObserver):
            shape = (obs.times.size, obs.lon.size, len(obs.channels))
        else:
            shape = (block.n if obs.values is None else obs.values.size,)
        keep = None
        if obs.values is not None and np.isnan(obs.values).any():
            keep = np.flatnonzero(~np.isnan(obs.values.reshape(-1)))
        return shape, keep

    @property
    def table(self):
        """One row per scalar observation (a :class:`pandas.DataFrame`, built once).

        Columns: observer, kind, variable, level (hPa, NaN at the surface), channel, lon, lat,
        time, time_index (lower bracketing state), time_weight (weight of the next state),
        value and error (physical units).
        """

        if self._table is None:
            import pandas as pd

            parts = []
            for block in self._blocks:
                m = block.meta()
                q = np.asarray(m["q"], dtype=np.int64)
                var = np.array([v for v, _, _ in block.quantities], dtype=object)
                lev = np.array([p for _, p, _ in block.quantities], dtype=np.float64)
                chn = np.array([c for _, _, c in block.quantities], dtype=object)
                parts.append(
                    pd.DataFrame(
                        {
                            "observer": np.full(block.n, block.observer.name, dtype=object),
                            "kind": np.full(block.n, block.observer.kind, dtype=object),
                            "variable": var[q] if q.size else np.zeros(0, object),
                            "level": lev[q] if q.size else np.zeros(0),
                            "channel": chn[q] if q.size else np.zeros(0, object),
                            "lon": np.asarray(m["lon"], np.float64),
                            "lat": np.asarray(m["lat"], np.float64),
                            "time": np.asarray(m["time"], "datetime64[ns]"),
                            "time_index": np.asarray(m["time_index"], np.int64),
                            "time_weight": np.asarray(m["time_weight"], np.float64),
                            "value": block.value,
                            "error": block.error,
                        }
                    )
                )
            columns = [
                "observer",
                "kind",
                "variable",
                "level",
                "channel",
                "lon",
                "lat",
                "time",
                "time_index",
                "time_weight",
                "value",
                "error",
            ]
            table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
            for col in ("observer", "kind", "variable", "channel"):
                table[col] = table[col].astype("category")
            self._table = table
        return self._table

    def footprint(self):
        """What each observer touches, for display: an :class:`xarray.Dataset`.

        One boolean variable ``(time, latitude, longitude)`` per observer (named after it): the
        grid cells with a non-zero weight at each model state (every cell of the states a
        full-state or latent observer sees). Attributes per variable: ``kind``, ``channels``,
        ``levels`` (hPa; empty for surface variables) and ``on_latent`` (0/1).
        """

        import xarray as xr

        H, W = self.grid.shape
        T = self.times.size
        data = {}
        for block in self._blocks:
            obs = block.observer
            channels = [c for _, _, c in block.quantities]
            levels = sorted({float(p) for _, p, _ in block.quantities if not np.isnan(p)})
            data[obs.name] = xr.DataArray(
                block.footprint(T, H, W),
                dims=("time", "latitude", "longitude"),
                attrs={
                    "kind": obs.kind,
                    "channels": channels,
                    "levels": levels,
                    "on_latent": int(obs.on_latent),
                },
            )
        return xr.Dataset(
            data, coords={"time": self.times, "latitude": self.grid.lat, "longitude": self.grid.lon}
        )

    def estimated_bytes(self, batch: int = 1, *, itemsize: int = 4) -> int:
        """Rough memory of the precomputed indices plus one application of :math:`\\mathcal{A}`
        to ``batch`` trajectories of ``itemsize``-byte floats (excluding ``x`` itself)."""

        return int(sum(b.nbytes(batch, itemsize) for b in self._blocks) + len(self) * 8 * 4)


def compile_observations(
    observations: ObservationSet | Sequence[Observer],
    *,
    grid: Grid,
    channels: Sequence[str],
    times: Any,
    mean: Any,
    std: Any,
    latent_shape: tuple[int, int, int] | None = None,
    drop_missing: bool = False,
) -> CompiledObservations:
    """Validate observations against a model and precompute :math:`\\mathcal{A}`, :math:`y`, :math:`\\Sigma_y`.

    Arguments:
        observations: The observation set (or a sequence of observers).
        grid: The model grid.
        channels: Model channel names, shape ``(C,)``.
        times: Times of the trajectory's states, strictly increasing, shape ``(T,)``.
        mean: Per-channel mean used for standardisation, shape ``(C,)``.
        std: Per-channel std, shape ``(C,)``.
        latent_shape: ``(Z, h, w)`` of the latent states, needed by latent observers without values.
        drop_missing: Drop the observations whose value is NaN instead of raising.

    Raises:
        ObservationError: A channel the model does not have (listing those it has), an
            observation outside the window (naming the observer and the window), NaN values
            (unless ``drop_missing``), values of the wrong shape.
    """

    if not isinstance(observations, ObservationSet):
        observations = ObservationSet(tuple(observations))
    compiler = _Compiler(
        grid=grid,
        channels=channels,
        times=times,
        mean=mean,
        std=std,
        latent_shape=latent_shape,
        drop_missing=drop_missing,
    )
    return compiler.compile(observations)
