r"""The latent spatio-temporal transformer: the raw network :math:`F_\theta` of the prior.

A batch of latent blankets :math:`x \in \mathbb{R}^{B \times K \times Z \times h \times w}` is cut
into patches of :math:`p_t \times p_h \times p_w` (time, latitude, longitude) points, each
patch becomes a token of ``width`` features, a stack of transformer blocks mixes the tokens,
and a linear head maps them back to patches. The EDM preconditioning
(:mod:`appa_engine.diffusion`) wraps this network,

.. math:: D(x_t; \sigma) = \frac{x_t}{\sigma^2 + 1} + \frac{\sigma}{\sqrt{\sigma^2 + 1}}
    F_\theta\Big(\frac{x_t}{\sqrt{\sigma^2 + 1}}, c_\text{noise}(\sigma), \text{date}\Big),

so :math:`F_\theta` only sees the scaled input, the noise conditioning and the date features.

Each block is

.. math::
    u &= x + \alpha_1 \odot \text{Attn}(\text{LN}(x)(1 + \gamma_1) + \beta_1) \\
    y &= u + \alpha_2 \odot \text{MLP}(\text{LN}(u)(1 + \gamma_2) + \beta_2)

with :math:`(\beta, \gamma, \alpha)` projected from the sum of the noise embedding (one per
blanket) and the date embedding (one per time step, averaged over the :math:`p_t` steps of a
token), so the modulation varies along time and is shared by all tokens of a time step. The
gates :math:`\alpha` and the output head start at zero, so the untrained network outputs 0.

Attention uses QK-normalisation (RMSNorm on queries and keys) and a 3-D rotary position
encoding (:func:`~appa_engine.nn.layers.rotary_angles`) whose longitude angles are integer
harmonics :math:`2\pi m j / w'` of the token index :math:`j` among :math:`w'` longitude tokens.
They are exactly periodic, and nothing else depends on absolute longitude, so the network is
equivariant to circular longitude shifts by whole tokens. Latitude, on which the statistics of
the atmosphere do depend, is also given absolutely: an embedding of its harmonics is added to
every token. ``attention="full"`` attends over all
:math:`N = K' h' w'` tokens; ``"factorised"`` alternates spatial attention (the tokens of one
time step) and temporal attention (the tokens of one location), much cheaper on a CPU.

Differentiation. Reverse mode (``backward``, ``torch.func.vjp``) works as is. PyTorch's fused
attention kernels have no forward-mode or second-order derivatives; for ``torch.func.jvp`` or
double backward through this network, select the composite kernel::

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        y, jvp = torch.func.jvp(lambda x: net(x, c_noise), (x,), (v,))

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data
      Assimilation (Andry et al., 2025)
    | https://arxiv.org/abs/2504.18720
    | Scalable Diffusion Models with Transformers (Peebles & Xie, 2022)
    | https://arxiv.org/abs/2212.09748
    | Scaling Vision Transformers to 22 Billion Parameters (Dehghani et al., 2023)
    | https://arxiv.org/abs/2302.05442
    | RoFormer: Enhanced Transformer with Rotary Position Embedding (Su et al., 2021)
    | https://arxiv.org/abs/2104.09864
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from appa_engine.errors import ConfigError
from appa_engine.nn.layers import (
    MLP,
    Modulation,
    NoiseEmbedding,
    RMSNorm,
    apply_rotary,
    modulate,
    pad_sphere,
    rotary,
    rotary_angles,
)

__all__ = ["TransformerConfig", "SpaceTimeTransformer"]


@dataclass(frozen=True)
class TransformerConfig:
    r"""Configuration of the latent spatio-temporal transformer.

    Arguments:
        in_channels: Latent channels Z.
        width: Token features.
        depth: Number of transformer blocks.
        heads: Attention heads (``width`` must be a multiple, head size a multiple of 2).
        patch: Patch size ``(p_t, p_h, p_w)`` over (time, latitude, longitude).
        mlp_ratio: Hidden features of the MLPs, as a multiple of ``width``.
        date_features: Date features D per time step.
        embedding: Features E of the noise and date embeddings that drive the modulation.
        attention: ``"full"`` (all tokens) or ``"factorised"`` (alternating space and time).
        dropout: Dropout rate in the attention and the MLPs.
        qk_norm: RMS-normalise queries and keys.
        latitude_harmonics: n, the harmonics of latitude :math:`\sin(k\phi), \cos(k\phi)`,
            k = 1..n, embedded and added to every token (0: none). Rotary phases only encode
            relative positions, but the statistics of the atmosphere depend on latitude.
        checkpointing: Recompute the blocks in the backward pass to save memory.
    """

    in_channels: int = 8
    width: int = 128
    depth: int = 4
    heads: int = 4
    patch: tuple[int, int, int] = (1, 1, 1)
    mlp_ratio: float = 4.0
    date_features: int = 4
    embedding: int = 256
    attention: Literal["full", "factorised"] = "full"
    dropout: float = 0.0
    qk_norm: bool = True
    latitude_harmonics: int = 8
    checkpointing: bool = False

    def __post_init__(self):
        hint = "fix the prior section of the model config"
        if min(self.in_channels, self.width, self.depth, self.heads, self.embedding) < 1:
            raise ConfigError(
                "in_channels, width, depth, heads and embedding must be positive", hint=hint
            )
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ConfigError(
                f"width {self.width} must be a multiple of heads {self.heads} with an even "
                "head size",
                hint=hint,
            )
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ConfigError(
                f"patch must be three positive ints (p_t, p_h, p_w), got {self.patch}", hint=hint
            )
        if self.latitude_harmonics < 0:
            raise ConfigError(f"latitude_harmonics must be >= 0, got {self.latitude_harmonics}", hint=hint)
        if self.date_features < 0:
            raise ConfigError(f"date_features must be >= 0, got {self.date_features}", hint=hint)
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}", hint=hint)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}", hint=hint)
        if self.attention not in ("full", "factorised"):
            raise ConfigError(
                f"attention must be 'full' or 'factorised', got {self.attention!r}", hint=hint
            )

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def rotary_pairs(self) -> tuple[int, int, int]:
        """Rotation pairs given to (time, latitude, longitude): a quarter to time."""
        pairs = self.head_dim // 2
        p_t = pairs // 4
        p_h = (pairs - p_t) // 2
        return p_t, p_h, pairs - p_t - p_h


class _Attention(nn.Module):
    """Multi-head self-attention with QK-norm and rotary encoding, full or along one axis."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim)
            self.k_norm = RMSNorm(config.head_dim)
        else:
            self.q_norm = self.k_norm = nn.Identity()

    def forward(self, x: Tensor, rotation: Tensor, *, axis: str) -> Tensor:
        """
        Arguments:
            x: Tokens, shape ``(B, T', S', width)``.
            rotation: Rotary phases :math:`e^{i\\theta}`, complex, shape ``(T', S', 1, d/2)``.
            axis: ``"all"``, ``"space"`` (within a time step) or ``"time"`` (within a location).
        """

        B, T, S, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "B T S (n h d) -> n B T S h d", n=3, h=self.heads)
        q = apply_rotary(self.q_norm(q), rotation)
        k = apply_rotary(self.k_norm(k), rotation)
        if axis == "all":
            pattern, back = "B T S h d -> B h (T S) d", "B h (T S) d -> B T S (h d)"
        elif axis == "space":
            pattern, back = "B T S h d -> (B T) h S d", "(B T) h S d -> B T S (h d)"
        else:
            pattern, back = "B T S h d -> (B S) h T d", "(B S) h T d -> B T S (h d)"
        q, k, v = (rearrange(t, pattern) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj(rearrange(y, back, B=B, T=T, S=S))


class _Block(nn.Module):
    """Adaptive-LayerNorm transformer block (gates start at zero)."""

    def __init__(self, config: TransformerConfig, *, axis: str):
        super().__init__()
        self.axis = axis
        self.norm1 = nn.LayerNorm(config.width, elementwise_affine=False)
        self.attn = _Attention(config)
        self.norm2 = nn.LayerNorm(config.width, elementwise_affine=False)
        hidden = int(config.width * config.mlp_ratio)
        self.mlp = MLP(config.width, hidden, dropout=config.dropout)
        self.modulation = Modulation(config.embedding, config.width, chunks=6, zero=(2, 5))

    def forward(self, x: Tensor, c: Tensor, rotation: Tensor) -> Tensor:
        """
        Arguments:
            x: Tokens, shape ``(B, T', S', width)``.
            c: Conditioning per time token, shape ``(B, T', E)``.
            rotation: Rotary phases, complex, shape ``(T', S', 1, d/2)``.
        """

        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, :, None] for m in self.modulation(c))
        y = self.attn(modulate(self.norm1(x), shift1, scale1), rotation, axis=self.axis)
        x = torch.addcmul(x, gate1, y)
        y = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return torch.addcmul(x, gate2, y)


class SpaceTimeTransformer(nn.Module):
    r"""Transformer over (time, latitude, longitude) tokens of latent blankets.

    Arguments:
        config: The transformer configuration.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        p_t, p_h, p_w = config.patch
        patch_features = p_t * p_h * p_w * config.in_channels
        self.embed = nn.Linear(patch_features, config.width)
        if config.latitude_harmonics:
            self.latitude_embedding = nn.Linear(2 * config.latitude_harmonics, config.width)
        else:
            self.latitude_embedding = None
        self.noise_embedding = NoiseEmbedding(config.embedding)
        if config.date_features:
            self.date_embedding = MLP(config.date_features, config.embedding, config.embedding)
        else:
            self.date_embedding = None
        if config.attention == "full":
            axes = ["all"] * config.depth
        else:
            axes = ["space" if i % 2 == 0 else "time" for i in range(config.depth)]
        self.blocks = nn.ModuleList(_Block(config, axis=axis) for axis in axes)
        self.head_norm = nn.LayerNorm(config.width, elementwise_affine=False)
        self.head_modulation = Modulation(config.embedding, config.width, chunks=2)
        self.head = nn.Linear(config.width, patch_features)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _latitude(self, Hh: int, Ww: int, like: Tensor) -> Tensor:
        r"""Absolute latitude embedding of the token rows, shape ``(h' w', width)``.

        Row j of h' token rows covers the band centred at
        :math:`\phi_j = \pi/2 - \pi (j + 1/2) / h'`; it depends on the row only, so
        equivariance to longitude shifts is kept.
        """

        n = self.config.latitude_harmonics
        rows = torch.arange(Hh, device=like.device, dtype=torch.float64)
        phi = torch.pi / 2 - torch.pi * (rows + 0.5) / Hh
        k = torch.arange(1, n + 1, device=like.device, dtype=torch.float64)
        features = torch.cat([torch.sin(phi[:, None] * k), torch.cos(phi[:, None] * k)], dim=-1)
        embedding = self.latitude_embedding(features.to(like.dtype))  # (h', width)
        return embedding.repeat_interleave(Ww, dim=0)

    def forward(self, x: Tensor, c_noise: Tensor, *, date: Tensor | None = None) -> Tensor:
        """
        Arguments:
            x: Latent blankets, shape ``(B, K, Z, h, w)``.
            c_noise: Noise conditioning, shape ``(B,)`` (or a scalar, shared).
            date: Date features, shape ``(B, K, D)`` (``None``: the date embedding is left out,
                e.g. for a prior trained without dates).

        Returns:
            The network output, shape ``(B, K, Z, h, w)``.
        """

        cfg = self.config
        if x.ndim != 5 or x.shape[2] != cfg.in_channels:
            raise ValueError(
                f"expected blankets of shape (B, K, {cfg.in_channels}, h, w), got {tuple(x.shape)}"
            )
        B, K, Z, h, w = x.shape
        p_t, p_h, p_w = cfg.patch
        c_noise = torch.as_tensor(c_noise).to(x)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        if c_noise.shape != (B,):
            raise ValueError(f"c_noise must have shape ({B},), got {tuple(c_noise.shape)}")

        # Pad to whole patches: time and latitude with zeros at the end, longitude circularly.
        dt, dh, dw = -K % p_t, -h % p_h, -w % p_w
        if dw:
            x = pad_sphere(x, (0, 0, 0, dw))
        if dt or dh:
            x = F.pad(x, (0, 0, 0, dh, 0, 0, 0, dt))
        T, Hh, Ww = (K + dt) // p_t, (h + dh) // p_h, (w + dw) // p_w

        tokens = rearrange(
            x, "B (T pt) Z (y ph) (x pw) -> B T (y x) (pt ph pw Z)", pt=p_t, ph=p_h, pw=p_w
        )
        tokens = self.embed(tokens)
        if self.latitude_embedding is not None:
            tokens = tokens + self._latitude(Hh, Ww, tokens)

        c = self.noise_embedding(c_noise)[:, None, :]  # (B, 1, E)
        if date is not None and self.date_embedding is None:
            raise ValueError(
                "this network takes no date features (date_features = 0); pass date=None"
            )
        if date is not None:
            if date.shape != (B, K, cfg.date_features):
                raise ValueError(
                    f"date must have shape ({B}, {K}, {cfg.date_features}), got {tuple(date.shape)}"
                )
            date = date.to(x)
            if dt:
                date = torch.cat([date, date[:, -1:].expand(B, dt, -1)], dim=1)
            date = rearrange(date, "B (T pt) D -> B T pt D", pt=p_t).mean(dim=2)
            c = c + self.date_embedding(date)  # (B, T', E)
        c = c.expand(B, T, -1)

        angles = rotary_angles(
            (T, Hh, Ww),
            cfg.rotary_pairs,
            periodic=(False, False, True),
            dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
            device=x.device,
        )
        rotation = rotary(angles).reshape(T, Hh * Ww, 1, -1)

        for block in self.blocks:
            if cfg.checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, rotation, use_reentrant=False)
            else:
                tokens = block(tokens, c, rotation)

        shift, scale = (m[:, :, None] for m in self.head_modulation(c))
        y = self.head(modulate(self.head_norm(tokens), shift, scale))
        y = rearrange(
            y, "B T (y x) (pt ph pw Z) -> B (T pt) Z (y ph) (x pw)", y=Hh, pt=p_t, ph=p_h, pw=p_w
        )
        return y[:, :K, :, :h, :w]
