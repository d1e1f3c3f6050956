r"""Regional decoding: decode the latent window that a set of observations needs, not the globe.

The decoder :math:`D` dominates the cost of a guided step (about 90 % in Appa): the observation
operator :math:`\mathcal{A}(D(z))` is applied once and differentiated :math:`2m - 1` times per
MMPS call (:mod:`appa_engine.diffusion.guidance.mmps`). Observations that touch a small part of
the globe only need :math:`D(z)` on the cells they read, and those depend on a window of the
latent grid.

Receptive field
---------------
The decoder is a chain of 3×3 convolutions (an output index :math:`i` reads :math:`i-1, i, i+1`
at its resolution), pointwise layers (1×1 convolutions, SiLU, local normalisations) and
upsamplings by :math:`s` (nearest-neighbour copy or depth-to-space: output :math:`i` reads input
:math:`\lfloor i/s \rfloor`). The output block of one latent cell, :math:`[0, f - 1]`, depends on
the inputs :math:`[lo, hi]` found by walking the chain backwards,

.. math:: \text{conv: } [lo, hi] \mapsto [lo - 1, hi + 1], \qquad
          \text{upsampling by } s\text{: } [lo, hi] \mapsto
          [\lfloor lo/s \rfloor, \lfloor hi/s \rfloor],

and the *halo* is :math:`\eta = \max(-lo, hi)` at the latent level (:func:`receptive_halo`; 5
latent cells for the ``default`` preset and the shipped package, 7 for the same layout with one
halving less (the T21 package shipped before), 18 for ``paper``).
Decoding alone the latent window :math:`[r_0 - \eta, r_1 + \eta)` (spherically padded at its own
edges, which is wrong there)
reproduces :math:`D(z)` exactly on :math:`[r_0, r_1)`: since :math:`\lfloor\cdot/s\rfloor` is
monotone, the dependency set of an interior output lies inside the window at every layer, so the
wrong edge values never reach it. Longitude is periodic: a window may wrap across 0°.

Poles. Spherical padding continues row :math:`k` beyond a pole with row :math:`k` inside on the
opposite meridian. A window whose band plus halo crosses a pole is widened to all longitudes and
starts (ends) at the pole row: its own spherical padding is then the true one.

Normalisation
-------------
Per-pixel normalisations (``norm="layer"``, ``"none"``) are local, and the window decode is exact,
values and Jacobian. Group normalisation is not: :math:`\text{GN}(x) = \gamma (x - \mu_g) /
\sqrt{\sigma_g^2 + \epsilon} + \beta` with the mean and variance of each (sample, group) taken
over the whole image. With *frozen statistics* a full-globe pass without gradient at the same
:math:`z` records every :math:`(\mu_g, \sigma_g^2)` and the window is then normalised with them:
its values are exact, and its Jacobian drops the terms through the statistics,

.. math:: \delta\,\text{GN}(x)[v] - \delta\,\text{GN}_\text{frozen}(x)[v] =
          -\frac{\gamma}{\sqrt{\sigma_g^2 + \epsilon}}
          \big(\overline{v} + \hat{x}\,\overline{\hat{x} v}\big),

with :math:`\hat{x}` the normalised input and :math:`\overline{\cdot}` the mean over the group's
:math:`n` entries. For a perturbation :math:`v` on :math:`m` of them, both means are at most
:math:`\sqrt{m}/n\,\|v\|` (Cauchy-Schwarz), and the two terms are orthogonal: the dropped part
is :math:`O(m/n)` of :math:`\|v\|` on the window but :math:`O(\sqrt{m/n})` over the globe,
where it is spread thinly, and it compounds over the decoder's normalisations. The VJP of
:math:`\mathcal{A}` (a cotangent on the observations) loses that spread-out part, and its JVP (of
MMPS's global vectors :math:`\Sigma_x J^\top u`) the global means of the tangent. Measured
(``bench/decoding.py``, ``tests/sampling/test_region_decode.py``): 3-4 % of the VJP and JVP and 5 %
of the MMPS correction for a random 4-level decoder with a window of 30 % of the grid, but 17 % of
the VJP (stations over Europe, frozen statistics alone) and 20 % and more of the MMPS correction
for a trained package (the T21 default shipped before). It is a real approximation: the
observation operator only takes it when asked (``region="approximate"``).

Truncated halo. A halo smaller than :math:`\eta` (``halo=``) also gives a cheaper, approximate
Jacobian: the far field of the receptive field is dropped (for the shipped package and stations
over Europe: 51 % of the VJP with a halo of 1, 21 % with 2; its full halo spans the latent grid).
Whenever the window decode is not exact (group normalisation or a truncated halo) the *values*
come from the full-globe pass without gradient and only the derivatives from the window,

.. math:: x = x_\text{window} + \operatorname{stopgrad}(D(z) - x_\text{window}),

so :math:`\mathcal{A}(x)` is exactly :math:`\mathcal{A}(D(z))` and only its Jacobian is
approximate. The full pass costs a forward without graph, which eats most of what the window
saves on one forward + VJP; what remains is the graph and the :math:`2m - 1` backward passes of
MMPS on the rest of the globe (a guided call at 0.56x the globe's for a window of 30 %, against
0.18x for an exact window of the same size with a per-pixel normalisation).

Where it pays. The halo is large: 5 latent cells for the shipped default package (a window of
at least 11x11 of its 8x16 latent grid), 18 for the ``paper`` preset (23x45 latents: every window
is most of the globe). Exact windows pay for decoders with per-pixel normalisation and latent
grids several halos wide; observations within a halo of a pole need all longitudes.

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data
      Assimilation (Andry et al., 2025)
    | https://arxiv.org/abs/2504.18720
    | Group Normalization (Wu & He, 2018)
    | https://arxiv.org/abs/1803.08494
    | Understanding the Effective Receptive Field in Deep Convolutional Neural Networks
      (Luo et al., 2016)
    | https://arxiv.org/abs/1701.04128
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from appa_engine.errors import ObservationError
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig
from appa_engine.nn.layers import group_norm_hook

__all__ = ["receptive_halo", "LatentWindow", "plan_window", "RegionDecoder", "GroupStatistics"]


def _decoder_ops(config: AutoencoderConfig) -> list[tuple[str, int]]:
    """The decoder's spatial operations in forward order: ``("conv", halo)`` or ``("up", s)``.

    Mirrors :class:`~appa_engine.nn.autoencoder.Decoder`: stem 3×3; per level (coarsest
    first) two 3×3 convolutions per residual block, then the transition (nearest: ×2 then 3×3;
    shuffle: 1×1 then ×2 depth-to-space; no downsampling: 1×1); head 3×3; patch depth-to-space.
    """

    ops = [("conv", 1)]
    levels = len(config.widths)
    for i in reversed(range(levels)):
        ops += [("conv", 1)] * (2 * config.blocks[i])
        if i > 0 and config.transitions[i - 1]:
            ops.append(("up", 2))
            if config.upsample == "nearest":
                ops.append(("conv", 1))
    ops.append(("conv", 1))
    if config.patch > 1:
        ops.append(("up", config.patch))
    return ops


def receptive_halo(config: AutoencoderConfig) -> int:
    r"""The decoder's receptive field :math:`\eta`, in latent cells (rows and columns alike).

    Decoding a latent window extended by ``η`` cells on each side reproduces the full decode
    exactly on the window (for local normalisations); see the module docstring.

    Arguments:
        config: The autoencoder configuration.
    """

    lo, hi = 0, config.factor - 1  # the output block of latent cell 0
    for kind, size in reversed(_decoder_ops(config)):
        if kind == "conv":
            lo, hi = lo - size, hi + size
        else:
            lo, hi = lo // size, hi // size  # floor division, also for negative lo
    return max(-lo, hi)


@dataclass(frozen=True)
class LatentWindow:
    """A window of the latent grid: a band of rows and a periodic range of columns.

    Arguments:
        latent_shape: The latent grid ``(h, w)``.
        rows: Decoded latent rows ``[start, stop)`` (needed rows plus the halo, clamped).
        cols: Decoded latent columns ``(start, count)``, periodic (``count == w``: all).
        inner_rows: Latent rows whose decode is needed ``[start, stop)``.
        inner_cols: Latent columns whose decode is needed ``(start, count)``, periodic.
        halo: Halo used, in latent cells.
        exact: Whether the halo covers the decoder's receptive field.
    """

    latent_shape: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    inner_rows: tuple[int, int]
    inner_cols: tuple[int, int]
    halo: int
    exact: bool

    @property
    def size(self) -> tuple[int, int]:
        """Decoded latent window ``(rows, columns)``."""
        return self.rows[1] - self.rows[0], self.cols[1]

    @property
    def fraction(self) -> float:
        """Decoded latent cells over all latent cells."""
        h, w = self.latent_shape
        rows, cols = self.size
        return rows * cols / (h * w)

    @property
    def is_globe(self) -> bool:
        """Whether the window is the whole latent grid."""
        return self.size == tuple(self.latent_shape)

    def col_indices(self, which: str = "decoded") -> np.ndarray:
        """Latent column indices of the decoded (or ``"inner"``) columns, in window order."""
        start, count = self.cols if which == "decoded" else self.inner_cols
        return (start + np.arange(count)) % self.latent_shape[1]

    def describe(self) -> str:
        """One line for logs and run records."""
        if self.is_globe:
            return "globe"
        h, w = self.latent_shape
        c0, n = self.cols
        cols = "all columns" if n == w else f"columns {c0}..{(c0 + n - 1) % w} ({n})"
        kind = "exact" if self.exact else "truncated"
        return (f"window: latent rows {self.rows[0]}:{self.rows[1]} of {h}, {cols} of {w} "
                f"({100 * self.fraction:.0f}% of the latent grid), halo {self.halo} ({kind})")


def _circular_cover(cols: np.ndarray, w: int) -> tuple[int, int]:
    """Shortest periodic range ``(start, count)`` holding the sorted unique columns ``cols``."""

    if cols.size == w:
        return 0, w
    gaps = np.diff(np.concatenate([cols, [cols[0] + w]])) - 1  # gap after each column
    i = int(np.argmax(gaps))
    start = int(cols[(i + 1) % cols.size])
    return start, w - int(gaps[i])


def plan_window(mask: np.ndarray, config: AutoencoderConfig, *,
                halo: int | None = None) -> LatentWindow:
    """The latent window whose decode covers the needed physical cells.

    Arguments:
        mask: Needed cells of the physical grid, boolean, shape ``(H, W)``.
        config: The autoencoder configuration.
        halo: Latent cells of halo (default: :func:`receptive_halo`, exact); a smaller one gives
            a cheaper window with an approximate Jacobian.

    Returns:
        The window. It is the whole grid when the needed cells plus the halo cover it.
    """

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ObservationError(f"the mask of needed cells must be (H, W), got shape {mask.shape}")
    if not mask.any():
        raise ObservationError("the mask of needed cells selects no cell",
                               hint="decode nothing, or pass the cells the observations read")
    eta = receptive_halo(config)
    halo = eta if halo is None else int(halo)
    if halo < 0:
        raise ObservationError(f"the halo must be non-negative, got {halo}")
    H, W = mask.shape
    h, w = config.latent_shape(H, W)
    f = config.factor
    north, west = (h * f - H) // 2, (w * f - W) // 2  # as Autoencoder pads
    rows = np.unique((np.flatnonzero(mask.any(1)) + north) // f)
    cols = np.unique((np.flatnonzero(mask.any(0)) + west) // f)
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    c0, n = _circular_cover(cols, w)
    a, b = r0 - halo, r1 + halo
    # across a pole the padding reads the opposite meridian: take all longitudes
    full = n + 2 * halo >= w or a < 0 or b > h
    a, b = max(a, 0), min(b, h)
    if full:
        window_cols, inner_cols = (0, w), (0, w)
    else:
        window_cols, inner_cols = ((c0 - halo) % w, n + 2 * halo), (c0, n)
    return LatentWindow((h, w), (a, b), window_cols, (r0, r1), inner_cols, halo, halo >= eta)


class GroupStatistics:
    r"""Records the :math:`(\mu_g, \sigma_g^2)` of every group normalisation of one pass, then
    normalises other inputs with them (the hooks of :func:`~appa_engine.nn.layers.group_norm_hook`).

    With frozen statistics a group normalisation is a per-(sample, channel) affine map,
    :math:`y = a x + b` with :math:`a = \gamma / \sqrt{\sigma_g^2 + \epsilon}` and
    :math:`b = \beta - a \mu_g`: one fused multiply-add, forward and backward.
    Statistics are per (sample, group): the frozen pass must see the same batch.
    """

    def __init__(self):
        #: (mean, var) of each GroupNorm, shape ``(B, G)`` each.
        self.moments: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        self._affine: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def record(self, module: nn.GroupNorm, x: Tensor) -> Tensor:
        """The ordinary group normalisation of ``x`` ``(B, C, H, W)``, recording its moments."""

        B, C = x.shape[:2]
        G = module.num_groups
        var, mean = torch.var_mean(x.detach().reshape(B, G, -1), dim=-1, correction=0)
        self.moments[module] = (mean, var)
        a = torch.rsqrt(var + module.eps).repeat_interleave(C // G, dim=1)  # (B, C)
        b = -mean.repeat_interleave(C // G, dim=1) * a
        if module.affine:
            a, b = a * module.weight, b * module.weight + module.bias
        self._affine[module] = (a[:, :, None, None], b[:, :, None, None])
        return F.group_norm(x, G, module.weight, module.bias, module.eps)

    def frozen(self, module: nn.GroupNorm, x: Tensor) -> Tensor:
        """Group normalisation of ``x`` ``(B, C, h', w')`` with the recorded moments."""

        if module not in self._affine:
            raise RuntimeError("no statistics recorded for this GroupNorm: run record() first")
        a, b = self._affine[module]
        if a.shape[0] != x.shape[0]:
            raise RuntimeError(f"statistics recorded for a batch of {a.shape[0]}, not {x.shape[0]}")
        return torch.addcmul(b.to(x.dtype), x, a.to(x.dtype))


class RegionDecoder:
    r"""Decodes latents on a :class:`LatentWindow` only, into a full-size physical tensor.

    The result has the shape of :meth:`Autoencoder.decode` ``(*, C, H, W)``; the cells of the
    window's inner rows and columns hold the decoded values. When the window decode is exact
    (local normalisation and a full halo) the other cells are zero; otherwise (group
    normalisation: frozen statistics; or a truncated halo) every cell holds the full decode
    :math:`D(z)`, computed without gradient, and derivatives flow through the window only (see
    the module docstring). A window that is the whole globe is plain
    :meth:`Autoencoder.decode`.

    Arguments:
        autoencoder: The autoencoder (its decoder is used).
        window: The latent window (:func:`plan_window`).
        shape: Physical grid ``(H, W)`` (default: the autoencoder's ``config.shape``).
    """

    def __init__(self, autoencoder: Autoencoder, window: LatentWindow, *,
                 shape: tuple[int, int] | None = None):
        config = autoencoder.config
        shape = shape or config.shape
        if shape is None:
            raise ObservationError("the physical grid shape is unknown",
                                   hint="pass shape=(H, W)")
        if config.latent_shape(*shape) != tuple(window.latent_shape):
            raise ObservationError(
                f"the window is for a {window.latent_shape} latent grid, but a {shape} grid "
                f"has {config.latent_shape(*shape)}")
        self.autoencoder = autoencoder
        self.window = window
        self.shape = tuple(shape)
        has_group = any(isinstance(m, nn.GroupNorm) for m in autoencoder.decoder.modules())
        #: "exact" (window values and Jacobian exact) or "approximate" (values from a full pass,
        #: Jacobian of the window with frozen group statistics and/or a truncated halo).
        self.mode = "exact" if window.exact and not has_group else "approximate"
        self._source = self._source_index()
        self._cache: dict = {}

    def _source_index(self) -> np.ndarray:
        """For each physical cell, its flat index in the decoded window, or the zero slot."""

        win, cfg = self.window, self.autoencoder.config
        f = cfg.factor
        H, W = self.shape
        h, w = win.latent_shape
        north, west = (h * f - H) // 2, (w * f - W) // 2
        p = np.arange(H)[:, None] + north  # decoder pixel rows (H, 1)
        q = np.arange(W)[None, :] + west  # decoder pixel columns (1, W)
        i, j = p // f, q // f
        inside = (i >= win.inner_rows[0]) & (i < win.inner_rows[1])
        inside = inside & ((j - win.inner_cols[0]) % w < win.inner_cols[1])
        rows, ncols = win.size
        pr = p - win.rows[0] * f
        pc = ((j - win.cols[0]) % w) * f + q % f
        zero = rows * f * ncols * f
        return np.where(inside, pr * (ncols * f) + pc, zero).reshape(-1)

    def _tensors(self, device: torch.device) -> tuple[Tensor, Tensor | None]:
        if device not in self._cache:
            win = self.window
            cols = None if win.cols[1] == win.latent_shape[1] else torch.as_tensor(
                win.col_indices(), device=device)
            self._cache[device] = (torch.as_tensor(self._source, device=device), cols)
        return self._cache[device]

    def __call__(self, z: Tensor, channels=None) -> Tensor:
        """
        Arguments:
            z: Latents (of the autoencoder, not standardised), shape ``(*, Z, h, w)``.
            channels: Indices of the physical channels to decode (None: all; see
                :meth:`~appa_engine.nn.autoencoder.Decoder.forward`).

        Returns:
            States, shape ``(*, C, H, W)`` (see the class docstring for the cells outside;
            ``C = len(channels)`` when given).
        """

        ae, win = self.autoencoder, self.window
        if win.is_globe:
            return ae.decode(z, shape=self.shape, channels=channels)
        Z, (h, w) = ae.config.latent_channels, win.latent_shape
        if z.ndim < 3 or tuple(z.shape[-3:]) != (Z, h, w):
            raise ValueError(f"expected latents of shape (*, {Z}, {h}, {w}), got {tuple(z.shape)}")
        lead = z.shape[:-3]
        z = z.reshape(-1, Z, h, w)
        channels = ae.check_channels(channels, z.device)
        source, cols = self._tensors(z.device)
        z_win = z[..., win.rows[0] : win.rows[1], :]
        if cols is not None:
            z_win = z_win.index_select(-1, cols)
        if self.mode == "exact":
            x_win = ae.decoder(z_win, channels)
        else:
            stats = GroupStatistics()
            with torch.no_grad(), group_norm_hook(stats.record):
                x_full = ae.decode(z, shape=self.shape, channels=channels)
            with group_norm_hook(stats.frozen):
                x_win = ae.decoder(z_win, channels)
        B, C = x_win.shape[:2]
        flat = torch.cat([x_win.reshape(B, C, -1), x_win.new_zeros(B, C, 1)], dim=2)
        x = flat.index_select(2, source).reshape(B, C, *self.shape)
        if self.mode == "approximate":
            x = x + (x_full - x).detach()  # the exact values, the window's derivatives
        return x.reshape(*lead, *x.shape[1:])
