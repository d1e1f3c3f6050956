r"""Building blocks shared by the state autoencoder and the latent transformer.

Spherical padding
-----------------
A field on a regular latitude-longitude grid lives on the sphere: it is periodic in longitude
and, beyond a pole, continues on the opposite meridian. Moving north past the north pole along
meridian :math:`\lambda` one arrives on meridian :math:`\lambda + 180°`, going south again:

.. math:: f(90° + \delta, \lambda) = f(90° - \delta, \lambda + 180°)

(and likewise at the south pole). :func:`pad_sphere` pads longitude circularly and latitude with
the rows *inside* the pole, flipped (the first padded row is the row nearest the pole) and rolled
by :math:`W/2` (the 180° shift). Two grid layouts are supported:

* cell-centred rows (``poles=False``, :math:`\phi_i = 90° - (i + \frac12)\Delta`): the row
  :math:`k` beyond the pole (:math:`k = 0, 1, \dots`) is row :math:`k` inside, rolled;
* rows on the poles (``poles=True``, :math:`\phi_i = 90° - i\Delta`, e.g. ERA5 721×1440): the
  pole row is its own mirror, so row :math:`k` beyond the pole is row :math:`k + 1` inside, rolled.

Either way a smooth field stays smooth (and exact) across the pole, unlike zero or replicate
padding. With an odd number of longitudes (e.g. the 45 columns of ERA5's 32× downsampled
grid) the opposite meridian falls half-way between two columns, and the mean of the two is used.

Rotary position encoding
------------------------
Queries and keys are rotated pairwise (consecutive pairs, read as complex numbers),
:math:`(a, b) \mapsto (a\cos\theta - b\sin\theta, a\sin\theta + b\cos\theta)`, so that
:math:`\langle R_{\theta_i} q, R_{\theta_j} k\rangle` only depends on
:math:`\theta_i - \theta_j`. Non-periodic axes use
:math:`\theta = p\,\omega_k` with :math:`\omega_k = \text{base}^{-k/n}` (Su et al.); a periodic
axis of :math:`n_p` positions uses integer harmonics :math:`\theta = 2\pi m_k p / n_p`,
:math:`m_k = k + 1`, which are exactly :math:`n_p`-periodic, so attention is equivariant to
circular shifts along that axis.

Adaptive layer norm
-------------------
A conditioning vector :math:`c` modulates a normalised input,
:math:`\text{LN}(x)(1 + \gamma(c)) + \beta(c)`, and gates the residual branch,
:math:`x + \alpha(c) \cdot F(\cdot)`. The gates start at zero, so every block starts as the
identity (adaLN-Zero, Peebles & Xie).

References:
    | RoFormer: Enhanced Transformer with Rotary Position Embedding (Su et al., 2021)
    | https://arxiv.org/abs/2104.09864
    | Scalable Diffusion Models with Transformers (Peebles & Xie, 2022)
    | https://arxiv.org/abs/2212.09748
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pad_sphere",
    "SphereConv2d",
    "make_norm",
    "GroupNorm",
    "group_norm_hook",
    "ChannelLayerNorm",
    "ResBlock",
    "RMSNorm",
    "rotary_angles",
    "rotary",
    "apply_rotary",
    "modulate",
    "Modulation",
    "NoiseEmbedding",
    "MLP",
    "soft_clip",
]

NormKind = Literal["group", "layer", "none"]


def pad_sphere(x: Tensor, pad: int | Sequence[int], *, poles: bool = False) -> Tensor:
    r"""Pad a field on the sphere across the poles (latitude) and circularly (longitude).

    Differentiable in reverse and forward mode, to any order.

    Arguments:
        x: A field, shape ``(*, H, W)``, latitude descending (north first).
        pad: ``p`` or ``(p_lat, p_lon)`` or ``(north, south, west, east)`` rows/columns.
        poles: Whether the first and last rows lie on the poles (see the module docstring).

    Returns:
        The padded field, shape ``(*, H + north + south, W + west + east)``.
    """

    if isinstance(pad, int):
        pads = (pad,) * 4
    elif len(pad) == 2:
        pads = (int(pad[0]), int(pad[0]), int(pad[1]), int(pad[1]))
    elif len(pad) == 4:
        pads = tuple(int(p) for p in pad)
    else:
        raise ValueError(f"pad must be an int, 2 or 4 ints, got {pad!r}")
    if not any(pads):
        return x
    north, south, west, east = pads
    H, W = x.shape[-2:]
    offset = 1 if poles else 0
    if min(pads) < 0:
        raise ValueError(f"pads must be non-negative, got {pad!r}")
    if north or south:
        if max(north, south) + offset > H:
            raise ValueError(
                f"cannot pad {max(north, south)} rows across the pole of a grid with H={H}"
            )
    if max(west, east) > W:
        raise ValueError(f"cannot pad {max(west, east)} columns of a grid with W={W}")
    return _SpherePad.apply(x, pads, offset)


def _pad(x: Tensor, pads: tuple[int, int, int, int], offset: int) -> Tensor:
    """The padding itself: one full copy plus small halos."""

    north, south, west, east = pads
    H, W = x.shape[-2:]
    out = x.new_empty(*x.shape[:-2], H + north + south, W + west + east)
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # keep NHWC (faster CPU convs)

    def fill(rows: slice, src: Tensor) -> None:
        out[..., rows, west : west + W] = src
        if west:
            out[..., rows, :west] = src[..., W - west :]
        if east:
            out[..., rows, west + W :] = src[..., :east]

    fill(slice(north, north + H), x)
    if north:  # row k beyond the pole is row k (+1 with pole rows) inside, on the opposite meridian
        fill(slice(0, north), _opposite(x[..., offset : offset + north, :].flip(-2)))
    if south:
        fill(slice(north + H, None), _opposite(x[..., H - offset - south : H - offset, :].flip(-2)))
    return out


def _opposite(rows: Tensor, sign: int = 1) -> Tensor:
    """Values on the opposite meridians (λ + 180°): a roll by W/2, or for odd W the mean of the
    rolls by (W - 1)/2 and (W + 1)/2 (linear interpolation half-way between two columns).
    ``sign=-1`` gives the adjoint."""

    W = rows.shape[-1]
    if W % 2 == 0:
        return rows.roll(sign * (W // 2), -1)
    return 0.5 * (rows.roll(sign * (W // 2), -1) + rows.roll(sign * (W // 2 + 1), -1))


def _fold(g: Tensor, pads: tuple[int, int, int, int], offset: int) -> Tensor:
    """The adjoint of :func:`_pad`: add every padded value back onto its source point."""

    north, south, west, east = pads
    W = g.shape[-1] - west - east
    H = g.shape[-2] - north - south

    def unfill(rows: slice) -> Tensor:
        src = g[..., rows, west : west + W].clone()
        if west:
            src[..., W - west :] += g[..., rows, :west]
        if east:
            src[..., :east] += g[..., rows, west + W :]
        return src

    x = unfill(slice(north, north + H))
    if north:
        x[..., offset : offset + north, :] += _opposite(unfill(slice(0, north)), -1).flip(-2)
    if south:
        rows = _opposite(unfill(slice(north + H, None)), -1).flip(-2)
        x[..., H - offset - south : H - offset, :] += rows
    return x


class _SpherePad(torch.autograd.Function):
    """:func:`_pad` with :func:`_fold` as its backward (far cheaper than autograd of slices)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, pads: tuple[int, int, int, int], offset: int) -> Tensor:
        return _pad(x, pads, offset)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.pads, ctx.offset = inputs

    @staticmethod
    def backward(ctx, g: Tensor):
        return _SphereFold.apply(g, ctx.pads, ctx.offset), None, None

    @staticmethod
    def jvp(ctx, t: Tensor, *_):
        return _pad(t, ctx.pads, ctx.offset)


class _SphereFold(torch.autograd.Function):
    """:func:`_fold` with :func:`_pad` as its backward (for double backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, pads: tuple[int, int, int, int], offset: int) -> Tensor:
        return _fold(g, pads, offset)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.pads, ctx.offset = inputs

    @staticmethod
    def backward(ctx, x: Tensor):
        return _SpherePad.apply(x, ctx.pads, ctx.offset), None, None

    @staticmethod
    def jvp(ctx, t: Tensor, *_):
        return _fold(t, ctx.pads, ctx.offset)


class SphereConv2d(nn.Conv2d):
    r"""A 2-D convolution over a (latitude, longitude) field with spherical padding.

    The input is padded by :func:`pad_sphere` ("same" padding for odd kernels, none for even
    ones, which are meant for stride-2 downsampling), then convolved without padding.

    Arguments:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Stride.
        poles: Whether the grid has rows on the poles (see :func:`pad_sphere`).
        bias: Whether to add a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        poles: bool = False,
        bias: bool = True,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias
        )
        self.halo = (kernel_size - 1) // 2 if kernel_size % 2 else 0
        self.poles = poles

    def forward(self, x: Tensor, outputs: Tensor | None = None) -> Tensor:
        """
        Arguments:
            x: Input, shape ``(B, C_in, H, W)``.
            outputs: Indices of the output channels to compute, shape ``(C',)`` (None: all).

        Returns:
            Output, shape ``(B, C_out, H / stride, W / stride)`` (``C'`` channels with
            ``outputs``: exactly those channels of the full output).
        """

        if self.halo:
            x = pad_sphere(x, self.halo, poles=self.poles)
        if outputs is None:
            return super().forward(x)
        bias = None if self.bias is None else self.bias[outputs]
        return self._conv_forward(x, self.weight[outputs], bias)


class ChannelLayerNorm(nn.Module):
    r"""Layer norm over the channel axis of a ``(B, C, H, W)`` tensor (each pixel separately)."""

    def __init__(self, channels: int, *, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


#: The hook that replaces :meth:`GroupNorm.forward` in the current context (None: none).
_GROUP_NORM_HOOK: ContextVar[Callable[[nn.GroupNorm, Tensor], Tensor] | None] = ContextVar(
    "appa_group_norm_hook", default=None
)


class GroupNorm(nn.GroupNorm):
    r""":class:`torch.nn.GroupNorm` whose statistics a context may record or replace.

    Without a hook (:func:`group_norm_hook`) it is exactly ``nn.GroupNorm`` (same parameters,
    same state dict). Regional decoding (:mod:`appa_engine.nn.region`) uses the hook to record the
    per-(sample, group) mean and variance of a full-globe pass and to normalise a window with them.
    """

    def forward(self, x: Tensor) -> Tensor:
        hook = _GROUP_NORM_HOOK.get()
        return super().forward(x) if hook is None else hook(self, x)


@contextmanager
def group_norm_hook(hook: Callable[[nn.GroupNorm, Tensor], Tensor] | None) -> Iterator[None]:
    """Within the block (this thread or task only), every :class:`GroupNorm` calls
    ``hook(module, x)`` instead of its own forward."""

    token = _GROUP_NORM_HOOK.set(hook)
    try:
        yield
    finally:
        _GROUP_NORM_HOOK.reset(token)


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """A normalisation layer for ``(B, C, H, W)`` tensors.

    Arguments:
        kind: ``"group"`` (GroupNorm with up to 32 groups dividing ``channels``), ``"layer"``
            (per-pixel layer norm over channels) or ``"none"``.
        channels: Number of channels.
    """

    if kind == "group":
        groups = math.gcd(channels, 32) if channels >= 8 else 1
        return GroupNorm(groups, channels)
    if kind == "layer":
        return ChannelLayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose 'group', 'layer' or 'none'")


class ResBlock(nn.Module):
    r"""Residual convolution block on the sphere.

    .. math:: y = x + \text{Conv}(\text{Drop}(\text{SiLU}(\text{N}(
        \text{Conv}(\text{SiLU}(\text{N}(x)))))))

    The last convolution starts at zero, so the block starts as the identity.

    Arguments:
        channels: Channels in and out.
        norm: Normalisation kind (see :func:`make_norm`).
        dropout: Dropout rate between the two convolutions.
        poles: Whether the grid has rows on the poles (see :func:`pad_sphere`).
    """

    def __init__(
        self, channels: int, *, norm: NormKind = "group", dropout: float = 0.0, poles: bool = False
    ):
        super().__init__()
        self.norm1 = make_norm(norm, channels)
        self.conv1 = SphereConv2d(channels, channels, 3, poles=poles)
        self.norm2 = make_norm(norm, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SphereConv2d(channels, channels, 3, poles=poles)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """
        Arguments:
            x: Input, shape ``(B, C, H, W)``.

        Returns:
            Output, shape ``(B, C, H, W)``.
        """

        y = self.conv1(F.silu(self.norm1(x)))
        y = self.conv2(self.dropout(F.silu(self.norm2(y))))
        return x + y


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation over the last axis, with a learned scale.

    .. math:: y = \frac{x}{\text{rms}(x) + \epsilon} \odot g, \quad
        \text{rms}(x) = \frac{\|x\|_2}{\sqrt{F}}

    (computed from one vector norm: several times faster on CPU than ``F.rms_norm``).
    """

    def __init__(self, features: int, *, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: Tensor) -> Tensor:
        """
        Arguments:
            x: Input, shape ``(*, F)``.
        """

        rms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
        return x * (rms + self.eps).reciprocal() * self.weight


def rotary_angles(
    shape: Sequence[int],
    pairs: Sequence[int],
    *,
    periodic: Sequence[bool],
    base: float = 1e4,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Rotation angles of a multi-axis rotary encoding, for every point of a token grid.

    Axis :math:`a` gets ``pairs[a]`` rotation pairs. A non-periodic axis uses angles
    :math:`p\,\text{base}^{-k/n_a}`; a periodic axis of :math:`n_p` positions uses
    :math:`2\pi ((m_k p) \bmod n_p) / n_p` with :math:`m_k = k + 1`, computed from integers so
    that a circular shift permutes the angles exactly.

    Arguments:
        shape: Token grid, e.g. ``(T', h', w')``.
        pairs: Rotation pairs per axis; their sum is half the head dimension.
        periodic: Whether each axis is periodic.
        base: Frequency base of the non-periodic axes.

    Returns:
        Angles, shape ``(N, sum(pairs))`` with ``N = prod(shape)`` (row-major token order).
    """

    if not (len(shape) == len(pairs) == len(periodic)):
        raise ValueError("shape, pairs and periodic must have the same length")
    grids = torch.meshgrid(*(torch.arange(n, device=device) for n in shape), indexing="ij")
    angles = []
    for n, p, is_periodic, pos in zip(shape, pairs, periodic, grids):
        if p == 0:
            continue
        pos = pos.reshape(-1, 1)
        k = torch.arange(p, device=device).reshape(1, -1)
        if is_periodic:
            phase = ((k + 1) * pos) % n
            angles.append(phase.to(torch.float64) * (2 * math.pi / n))
        else:
            omega = base ** (-k.to(torch.float64) / p)
            angles.append(pos.to(torch.float64) * omega)
    return torch.cat(angles, dim=-1).to(dtype)


def rotary(angles: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    r"""Unit complex numbers :math:`e^{i\theta}` of the rotation angles.

    Arguments:
        angles: Angles, shape ``(*, d/2)`` (see :func:`rotary_angles`).
        dtype: Real dtype of the queries and keys they will rotate (default: that of ``angles``).

    Returns:
        Complex tensor, shape ``(*, d/2)``.
    """

    angles = angles.to(dtype or angles.dtype)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, rotation: Tensor) -> Tensor:
    r"""Rotate the consecutive pairs ``(x[..., 2i], x[..., 2i + 1])`` by the given angles.

    The pairs are read as complex numbers and multiplied by :math:`e^{i\theta}` (one fused
    kernel; much faster than slicing and concatenating real halves).

    Arguments:
        x: Queries or keys, shape ``(*, N, d)``.
        rotation: :math:`e^{i\theta}` from :func:`rotary`, shape ``(N, d/2)`` (broadcast).

    Returns:
        Rotated tensor, shape ``(*, N, d)``.
    """

    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):  # e.g. bfloat16 under autocast
        x = x.float()
    pairs = torch.view_as_complex(x.contiguous().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation.to(pairs.dtype)).flatten(-2).to(dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    r"""Adaptive affine modulation :math:`x (1 + \gamma) + \beta` (shapes broadcast)."""

    return torch.addcmul(shift, x, 1 + scale)


class Modulation(nn.Module):
    r"""Projects a conditioning vector to ``chunks`` modulation vectors (shifts, scales, gates).

    .. math:: (\beta_1, \gamma_1, \alpha_1, \dots) = W\, \text{SiLU}(c) + b

    Arguments:
        cond_features: Conditioning features E.
        features: Features F of each modulation vector.
        chunks: Number of vectors produced.
        zero: Indices of the chunks initialised to zero (the gates).
    """

    def __init__(self, cond_features: int, features: int, *, chunks: int, zero: Sequence[int] = ()):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(cond_features, chunks * features)
        with torch.no_grad():
            self.linear.weight.mul_(0.1)
            self.linear.bias.zero_()
            for i in zero:
                self.linear.weight[i * features : (i + 1) * features].zero_()

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        """
        Arguments:
            c: Conditioning, shape ``(*, E)``.

        Returns:
            ``chunks`` tensors of shape ``(*, F)``.
        """

        return self.linear(F.silu(c)).chunk(self.chunks, dim=-1)


class NoiseEmbedding(nn.Module):
    r"""Embedding of the noise conditioning :math:`c_\text{noise}` (e.g. :math:`\log(\sigma)/4`).

    Fourier features at geometrically spaced frequencies, then an MLP,

    .. math:: e = \text{MLP}([\cos(\omega_k c), \sin(\omega_k c)]_k), \quad
        \omega_k = \omega_\min (\omega_\max / \omega_\min)^{k / (n - 1)}

    Arguments:
        features: Output features E.
        fourier: Number of Fourier features (even).
        omega_min: Lowest angular frequency.
        omega_max: Highest angular frequency.
    """

    def __init__(
        self,
        features: int,
        *,
        fourier: int = 64,
        omega_min: float = 0.1,
        omega_max: float = 100.0,
    ):
        super().__init__()
        if fourier % 2 or fourier < 2:
            raise ValueError(f"fourier must be a positive even number, got {fourier}")
        n = fourier // 2
        ratio = torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1)
        omega = omega_min * (omega_max / omega_min) ** ratio
        self.register_buffer("omega", omega, persistent=False)
        self.mlp = MLP(fourier, features, features)

    def forward(self, c_noise: Tensor) -> Tensor:
        """
        Arguments:
            c_noise: Noise conditioning, shape ``(B,)``.

        Returns:
            Embedding, shape ``(B, E)``.
        """

        phase = c_noise[..., None] * self.omega.to(c_noise)
        return self.mlp(torch.cat([phase.cos(), phase.sin()], dim=-1))


class MLP(nn.Sequential):
    r"""Two-layer perceptron :math:`W_2\, \text{Drop}(\text{SiLU}(W_1 x + b_1)) + b_2`.

    Arguments:
        in_features: Input features.
        hidden_features: Hidden features.
        out_features: Output features (default: ``in_features``).
        dropout: Dropout rate on the hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        *,
        dropout: float = 0.0,
    ):
        super().__init__(
            nn.Linear(in_features, hidden_features),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, out_features or in_features),
        )


def soft_clip(z: Tensor, bound: float | None) -> Tensor:
    r"""Smooth, odd, monotone clipping to :math:`(-b, b)`: :math:`z / \sqrt{1 + (z / b)^2}`.

    Near zero it is the identity (slope 1, error :math:`O(z^3/b^2)`); its derivative
    :math:`(1 + (z/b)^2)^{-3/2}` decays polynomially, unlike :math:`b\tanh(z/b)` whose
    derivative decays exponentially, so values pushed past the bound still get gradient.

    Arguments:
        z: Any tensor.
        bound: The bound :math:`b` (``None``: no clipping).
    """

    if bound is None:
        return z
    u = z / bound
    # hypot avoids the overflow of 1 + u² for huge |u| (which would give 0 instead of ±b).
    return bound * (u / torch.hypot(torch.ones_like(u), u))
