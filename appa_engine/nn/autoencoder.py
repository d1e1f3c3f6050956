r"""The state autoencoder: a convolutional encoder/decoder on the sphere.

The encoder :math:`E` maps a state :math:`x \in \mathbb{R}^{C \times H \times W}` to a latent
:math:`z = E(x) \in \mathbb{R}^{Z \times h \times w}`; the decoder :math:`D` maps it back. Both
are stacks of residual blocks (:class:`~appa_engine.nn.layers.ResBlock`) at decreasing
(encoder) or increasing (decoder) resolution, with spherical padding everywhere (circular in
longitude, across the pole in latitude). Each downsampling halves both axes, so the total
factor is :math:`f = p\,2^{n}` for :math:`n` downsampling level transitions and an outer patch
size :math:`p` (1 unless a preset wants no layer at full resolution).

Inside the network every convolution pads with the cell-centred convention of
:func:`~appa_engine.nn.layers.pad_sphere`, which stays exact at every level for a cell-centred
grid (2×2 merges of centred cells are centred cells); for grids with rows on the poles
(``poles=True``) only the input padding is exact and the inner padding a smooth approximation.

Latent shape. A grid whose sides are not multiples of :math:`f` is first padded to the next
multiples (latitude across the poles, split between north and south; longitude circularly,
split between west and east) and the decoder crops the same rows and columns back:

.. math:: (h, w) = (\lceil H / f \rceil, \lceil W / f \rceil)

e.g. ERA5 721×1440 at :math:`f = 32` gives 23×45 (DESIGN.md quotes 23×47 for Appa, whose
padding differs; 1440 being a multiple of 32, no longitude padding is needed here) and the
64×128 T42 grid at :math:`f = 8` gives 8×16.

Latent bound. The latent is softly clipped by :math:`z \mapsto z / \sqrt{1 + (z/b)^2}`
(:func:`~appa_engine.nn.layers.soft_clip`): the identity near 0, bounded by :math:`b`, and its
gradient decays polynomially (not exponentially as :math:`b \tanh(z/b)` does), so an encoder
pushing past the bound is still corrected. A bound keeps latents at a scale where the diffusion
prior's :math:`\sigma_\text{data} = 1` preconditioning stays sensible.

Training minimises the area-weighted MSE (:func:`area_weighted_mse`) of :math:`D(E(x))`.

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data
      Assimilation (Andry et al., 2025)
    | https://arxiv.org/abs/2504.18720
    | High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022)
    | https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from appa_engine.errors import ConfigError
from appa_engine.nn.layers import ResBlock, SphereConv2d, make_norm, pad_sphere, soft_clip

__all__ = ["AutoencoderConfig", "Encoder", "Decoder", "Autoencoder", "area_weighted_mse"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Configuration of the state autoencoder.

    Arguments:
        in_channels: Physical channels C.
        widths: Feature channels of each level, finest first.
        blocks: Residual blocks at each level (same length as ``widths``).
        latent_channels: Latent channels Z.
        downsample: For each of the ``len(widths) - 1`` level transitions, whether it halves the
            resolution; ``None``: all do (total factor ``2 ** (len(widths) - 1)``).
        latent_bound: Bound b of the soft clipping of the latent (``None``: no clipping).
        norm: Normalisation in the residual blocks: ``"group"``, ``"layer"`` or ``"none"``.
        upsample: How the decoder doubles the resolution between levels: ``"nearest"``
            (nearest-neighbour copy, then a 3×3 convolution) or ``"shuffle"`` (a 1×1
            convolution to 4× the channels, then a 2×2 depth-to-space shuffle: a 2×2 stride-2
            transposed convolution, the mirror of the encoder's 2×2 merge, 9× cheaper).
        patch: Patch size p of the outermost layers: the encoder starts with a p×p stride-p
            convolution and the decoder ends with a 3×3 convolution to p²·C channels and a p×p
            depth-to-space shuffle, so no layer runs at full resolution (fast on CPUs).
        dropout: Dropout rate inside the residual blocks.
        checkpointing: Recompute the residual blocks in the backward pass to save memory.
        shape: Physical grid ``(H, W)`` the decoder crops back to by default (``None``: no crop).
        poles: Whether the physical grid has rows on the poles (e.g. 721 latitudes).
    """

    in_channels: int = 8
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1)
    latent_channels: int = 8
    downsample: tuple[bool, ...] | None = None
    latent_bound: float | None = 5.0
    norm: Literal["group", "layer", "none"] = "group"
    upsample: Literal["nearest", "shuffle"] = "nearest"
    patch: int = 1
    dropout: float = 0.0
    checkpointing: bool = False
    shape: tuple[int, int] | None = None
    poles: bool = False

    def __post_init__(self):
        hint = "fix the autoencoder section of the model config"
        if self.in_channels < 1 or self.latent_channels < 1:
            raise ConfigError("in_channels and latent_channels must be positive", hint=hint)
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ConfigError(
                f"widths must be a non-empty list of positive ints, got {self.widths}", hint=hint
            )
        if len(self.blocks) != len(self.widths) or min(self.blocks) < 0:
            raise ConfigError(
                f"blocks must give a non-negative count for each of the {len(self.widths)} levels, "
                f"got {self.blocks}",
                hint=hint,
            )
        if self.downsample is not None and len(self.downsample) != len(self.widths) - 1:
            raise ConfigError(
                f"downsample must have one flag per level transition ({len(self.widths) - 1}), "
                f"got {len(self.downsample)}",
                hint=hint,
            )
        if self.latent_bound is not None and not self.latent_bound > 0:
            raise ConfigError(
                f"latent_bound must be positive or null, got {self.latent_bound}", hint=hint
            )
        if self.patch < 1:
            raise ConfigError(f"patch must be a positive integer, got {self.patch}", hint=hint)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}", hint=hint)
        if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 2):
            raise ConfigError(f"shape must be (H, W) with H, W >= 2, got {self.shape}", hint=hint)

    @property
    def transitions(self) -> tuple[bool, ...]:
        """Whether each level transition halves the resolution."""
        if self.downsample is None:
            return (True,) * (len(self.widths) - 1)
        return tuple(self.downsample)

    @property
    def factor(self) -> int:
        """Total downsampling factor f = p · 2^(downsampling transitions)."""
        return self.patch * 2 ** sum(self.transitions)

    def latent_shape(self, H: int, W: int) -> tuple[int, int]:
        """Latent grid ``(h, w) = (ceil(H / f), ceil(W / f))`` of a ``H × W`` grid."""
        return -(-H // self.factor), -(-W // self.factor)


class _Stage(nn.Sequential):
    """Residual blocks at one level, optionally recomputed in the backward pass."""

    def __init__(self, blocks: list[nn.Module], *, checkpointing: bool):
        super().__init__(*blocks)
        self.checkpointing = checkpointing

    def forward(self, x: Tensor) -> Tensor:
        for block in self:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class _Down(nn.Module):
    """Halve the resolution with a 2×2 stride-2 convolution (merges 2×2 cells)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    """Double the resolution: nearest-neighbour copy then a 3×3 spherical convolution, or a
    1×1 convolution to 4× the channels then a 2×2 depth-to-space shuffle."""

    def __init__(self, c_in: int, c_out: int, *, mode: str = "nearest"):
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = SphereConv2d(c_in, c_out, 3)
        else:
            self.conv = nn.Conv2d(c_in, 4 * c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return _depth_to_space(self.conv(x), 2)


def _depth_to_space(x: Tensor, p: int) -> Tensor:
    """``(B, C p², h, w) -> (B, C, p h, p w)``, as ``F.pixel_shuffle`` (one permuted copy,
    about twice as fast as ``F.pixel_shuffle`` on CPU)."""

    return rearrange(x, "B (C p q) h w -> B C (h p) (w q)", p=p, q=p)


def _width_change(c_in: int, c_out: int) -> nn.Module:
    return nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)


class Encoder(nn.Module):
    r"""The encoder :math:`E`: ``(B, C, H', W') -> (B, Z, H'/f, W'/f)``.

    ``H'`` and ``W'`` must be multiples of f (:class:`Autoencoder` pads for you). The output is
    softly clipped to ``(-latent_bound, latent_bound)``.

    Arguments:
        config: The autoencoder configuration.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        widths, blocks = config.widths, config.blocks
        kw = dict(norm=config.norm, dropout=config.dropout)
        if config.patch == 1:
            self.stem = SphereConv2d(config.in_channels, widths[0], 3)
        else:
            self.stem = nn.Conv2d(config.in_channels, widths[0], config.patch, stride=config.patch)
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, (width, n) in enumerate(zip(widths, blocks)):
            self.stages.append(
                _Stage(
                    [ResBlock(width, **kw) for _ in range(n)], checkpointing=config.checkpointing
                )
            )
            if i < len(widths) - 1:
                down = config.transitions[i]
                self.transitions.append(
                    _Down(width, widths[i + 1]) if down else _width_change(width, widths[i + 1])
                )
        self.head_norm = make_norm(config.norm, widths[-1])
        self.head = SphereConv2d(widths[-1], config.latent_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        """
        Arguments:
            x: States, shape ``(B, C, H', W')``.

        Returns:
            Latents, shape ``(B, Z, H'/f, W'/f)``.
        """

        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        z = self.head(F.silu(self.head_norm(x)))
        return soft_clip(z, self.config.latent_bound)


class Decoder(nn.Module):
    r"""The decoder :math:`D`: ``(B, Z, h, w) -> (B, C, f h, f w)``.

    Arguments:
        config: The autoencoder configuration.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        widths, blocks = config.widths, config.blocks
        kw = dict(norm=config.norm, dropout=config.dropout)
        self.stem = SphereConv2d(config.latent_channels, widths[-1], 3)
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.stages.append(
                _Stage(
                    [ResBlock(widths[i], **kw) for _ in range(blocks[i])],
                    checkpointing=config.checkpointing,
                )
            )
            if i > 0:
                up = config.transitions[i - 1]
                self.transitions.append(
                    _Up(widths[i], widths[i - 1], mode=config.upsample)
                    if up
                    else _width_change(widths[i], widths[i - 1])
                )
        self.head_norm = make_norm(config.norm, widths[0])
        self.head = SphereConv2d(widths[0], config.in_channels * config.patch**2, 3)

    def forward(self, z: Tensor, channels: Tensor | None = None) -> Tensor:
        """
        Arguments:
            z: Latents, shape ``(B, Z, h, w)``.
            channels: Indices of the physical channels to decode, shape ``(C',)`` (None: all).
                Only the last convolution depends on the channel, so it alone is cut: exactly
                those channels of the full decode, at a fraction of the last layer's cost (on
                the default model, the largest convolution and two full-size copies).

        Returns:
            States, shape ``(B, C, f h, f w)`` (``C'`` channels, in the order of ``channels``).
        """

        x = self.stem(z)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        p = self.config.patch
        outputs = None
        if channels is not None:  # the head's outputs of channel c: c p² to c p² + p² - 1
            sub = torch.arange(p**2, device=channels.device)
            outputs = (channels[:, None] * p**2 + sub).reshape(-1)
        x = self.head(F.silu(self.head_norm(x)), outputs)
        return _depth_to_space(x, p) if p > 1 else x


class Autoencoder(nn.Module):
    r"""Encoder and decoder of physical states, with padding to multiples of f and cropping.

    Any number of leading axes is accepted: ``(*, C, H, W) -> (*, Z, h, w)`` and back, e.g.
    ``(B, K, C, H, W)`` trajectories.

    Arguments:
        config: The autoencoder configuration.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def latent_shape(self, H: int, W: int) -> tuple[int, int]:
        """Latent grid ``(h, w) = (ceil(H / f), ceil(W / f))`` of a ``H × W`` grid."""
        return self.config.latent_shape(H, W)

    def _pads(self, H: int, W: int) -> tuple[int, int, int, int]:
        h, w = self.latent_shape(H, W)
        f = self.config.factor
        dh, dw = h * f - H, w * f - W
        return dh // 2, dh - dh // 2, dw // 2, dw - dw // 2

    def encode(self, x: Tensor) -> Tensor:
        """
        Arguments:
            x: States, shape ``(*, C, H, W)``.

        Returns:
            Latents, shape ``(*, Z, h, w)`` with ``(h, w) = latent_shape(H, W)``.
        """

        C = self.config.in_channels
        if x.ndim < 3 or x.shape[-3] != C:
            raise ValueError(f"expected states of shape (*, {C}, H, W), got {tuple(x.shape)}")
        lead, (H, W) = x.shape[:-3], x.shape[-2:]
        x = x.reshape(-1, C, H, W)
        pads = self._pads(H, W)
        if any(pads):
            # One call: the rows over the poles are taken on the original longitude circle.
            x = pad_sphere(x, pads, poles=self.config.poles)
        z = self.encoder(x)
        return z.reshape(*lead, *z.shape[1:])

    def decode(self, z: Tensor, *, shape: tuple[int, int] | None = None,
               channels=None) -> Tensor:
        """
        Arguments:
            z: Latents, shape ``(*, Z, h, w)``.
            shape: Physical grid ``(H, W)`` to crop to (default: ``config.shape``, else
                ``(f h, f w)``).
            channels: Indices of the physical channels to decode (None: all); see
                :meth:`Decoder.forward`.

        Returns:
            States, shape ``(*, C, H, W)`` (``C = len(channels)`` when given).
        """

        Z = self.config.latent_channels
        if z.ndim < 3 or z.shape[-3] != Z:
            raise ValueError(f"expected latents of shape (*, {Z}, h, w), got {tuple(z.shape)}")
        lead, (h, w) = z.shape[:-3], z.shape[-2:]
        f = self.config.factor
        H, W = shape or self.config.shape or (h * f, w * f)
        if self.latent_shape(H, W) != (h, w):
            raise ValueError(
                f"latents of size {h}×{w} do not decode to a {H}×{W} grid "
                f"(its latent grid is {self.latent_shape(H, W)})"
            )
        z = z.reshape(-1, Z, h, w)
        if channels is None:
            x = self.decoder(z)
        else:
            x = self.decoder(z, self.check_channels(channels, z.device))
        north, _, west, _ = self._pads(H, W)
        x = x[..., north : north + H, west : west + W]
        return x.reshape(*lead, *x.shape[1:])

    def check_channels(self, channels, device: torch.device | None = None) -> Tensor | None:
        """``channels`` as a tensor of distinct physical channel indices (None stays None)."""

        if channels is None:
            return None
        # Checked on the host: pass a list or an array (no device synchronisation).
        if isinstance(channels, Tensor):
            channels = channels.tolist()
        c = np.asarray(channels, dtype=np.int64).reshape(-1)
        C = self.config.in_channels
        if not c.size or c.min() < 0 or c.max() >= C or np.unique(c).size != c.size:
            raise ValueError(f"channels must be distinct indices in [0, {C}), got {c.tolist()}")
        return torch.as_tensor(c, device=device)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction :math:`D(E(x))`, shape of ``x``: ``(*, C, H, W)``."""
        return self.decode(self.encode(x), shape=tuple(x.shape[-2:]))


def area_weighted_mse(
    x_hat: Tensor,
    x: Tensor,
    weights: Tensor | np.ndarray,
    *,
    channel_weights: Tensor | np.ndarray | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Area-weighted mean squared error over all valid entries.

    .. math:: \ell = \frac{\sum w_i \lambda_c m (\hat{x} - x)^2}{\sum w_i m}

    with :math:`w_i` the area weight of latitude row :math:`i`
    (:func:`appa_engine.data.grid.area_weights`), :math:`\lambda_c` the channel weights (1 by
    default) and :math:`m` the validity mask: entries where ``x`` is NaN (e.g. a field defined
    only over the sea) and entries outside ``mask`` do not count. With all :math:`\lambda_c = 1`
    this is a weighted mean, so it is comparable between grids.

    Arguments:
        x_hat: Predictions, shape ``(*, C, H, W)``.
        x: Targets, shape ``(*, C, H, W)``; NaN marks missing values.
        weights: Area weights, shape ``(H,)``.
        channel_weights: Channel weights, shape ``(C,)``.
        mask: Validity mask (True = counts), broadcastable to ``x``.

    Returns:
        The loss, a scalar.
    """

    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat and x differ in shape: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    w = torch.as_tensor(weights).to(dtype=x_hat.dtype, device=x_hat.device)
    if w.shape != (x.shape[-2],):
        raise ValueError(f"weights must have shape ({x.shape[-2]},), got {tuple(w.shape)}")
    valid = torch.isfinite(x)
    if mask is not None:
        valid = valid & mask.to(device=x.device, dtype=torch.bool)
    w = w[:, None] * valid
    error = torch.where(valid, x_hat - torch.nan_to_num(x), 0.0) ** 2
    if channel_weights is not None:
        lam = torch.as_tensor(channel_weights).to(dtype=x_hat.dtype, device=x_hat.device)
        if lam.shape != (x.shape[-3],):
            raise ValueError(
                f"channel_weights must have shape ({x.shape[-3]},), got {tuple(lam.shape)}"
            )
        error = error * lam[:, None, None]
    return (w * error).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
