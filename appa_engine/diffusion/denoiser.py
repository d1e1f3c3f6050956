r"""Denoisers and their training loss.

A *denoiser* is any callable ``(x_t, sigma_t, **cond) -> x_hat`` that estimates the clean sample
:math:`\hat{x} \approx \mathbb{E}[x \mid x_t]` from a noisy sample
:math:`x_t = x + \sigma_t \varepsilon`, with ``x_hat`` of the shape of ``x_t`` (any shape with a
leading batch dimension B) and ``sigma_t`` of shape (B,) or a broadcastable scalar. Samplers and
guidance only rely on this contract.

:class:`PreconditionedDenoiser` builds one from a backbone network :math:`F_\theta` with the EDM
preconditioning

.. math:: D(x_t; \sigma) = c_\mathrm{skip}(\sigma) \, x_t
          + c_\mathrm{out}(\sigma) \,
          F_\theta(c_\mathrm{in}(\sigma) \, x_t, c_\mathrm{noise}(\sigma))

.. math:: c_\mathrm{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
          c_\mathrm{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
          c_\mathrm{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
          c_\mathrm{noise} = \frac{\ln \sigma}{4},

and :func:`denoising_loss` is the weighted denoising score matching loss

.. math:: \mathcal{L} = \mathbb{E}_{t, x, \varepsilon} \Big[ \lambda(\sigma_t)
          \big\| D(x + \sigma_t \varepsilon; \sigma_t) - x \big\|^2 \Big], \qquad
          \lambda(\sigma) = \frac{1}{c_\mathrm{out}(\sigma)^2}
          = \frac{\sigma^2 + \sigma_d^2}{\sigma^2 \sigma_d^2},

that is :math:`\lambda(\sigma) = 1 + 1 / \sigma^2` for :math:`\sigma_d = 1`. With this weight the
effective target of :math:`F_\theta` has unit variance at every noise level, and the loss of the
optimal denoiser stays finite as :math:`\sigma \to 0` (its error is
:math:`\mathcal{O}(\sigma^2)`).

References:
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError

__all__ = ["Denoiser", "PreconditionedDenoiser", "denoising_loss", "expand_sigma"]

#: A denoiser: ``(x_t, sigma_t, **cond) -> x_hat``, with ``x_t`` and ``x_hat`` of shape (B, ...)
#: and ``sigma_t`` of shape (B,) or a broadcastable scalar.
Denoiser = Callable[..., Tensor]


def expand_sigma(sigma_t: Tensor | float, x_t: Tensor) -> Tensor:
    r"""Broadcasts noise levels to one value per batch item.

    Arguments:
        sigma_t: The noise levels, a scalar, shape () or (1,) or (B,).
        x_t: The noisy samples, with shape (B, ...).

    Returns:
        The noise levels, with shape (B,), dtype and device of ``x_t``.
    """

    sigma_t = torch.as_tensor(sigma_t, dtype=x_t.dtype, device=x_t.device)

    if sigma_t.ndim > 1 or (sigma_t.ndim == 1 and sigma_t.shape[0] not in (1, x_t.shape[0])):
        raise ValueError(
            f"sigma_t must be a scalar or have shape (B,) = ({x_t.shape[0]},), "
            f"got shape {tuple(sigma_t.shape)}."
        )

    return sigma_t.reshape(-1).expand(x_t.shape[0])


def _unsqueeze_as(a: Tensor, x: Tensor) -> Tensor:
    """Reshapes ``a`` of shape (B,) to (B, 1, ..., 1) with the number of dims of ``x``."""

    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


class PreconditionedDenoiser(nn.Module):
    r"""EDM-preconditioned denoiser around a backbone network.

    .. math:: D(x_t; \sigma) = c_\mathrm{skip}(\sigma) \, x_t
              + c_\mathrm{out}(\sigma) \, F(c_\mathrm{in}(\sigma) \, x_t,
              c_\mathrm{noise}(\sigma), \ldots)

    Arguments:
        backbone: A network ``F(x, c_noise, **cond) -> y`` with ``x`` and ``y`` of shape (B, ...)
            (e.g. latent blankets (B, K, Z, h, w)) and ``c_noise`` of shape (B,).
        sigma_data: The standard deviation :math:`\sigma_d` of the data.
    """

    def __init__(self, backbone: nn.Module | Callable[..., Tensor], *, sigma_data: float = 1.0):
        super().__init__()

        if not sigma_data > 0:
            raise ConfigError(
                f"sigma_data must be positive, got {sigma_data}.",
                hint="standardized data have sigma_data=1.",
            )

        self.backbone = backbone
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""The preconditioning coefficients at noise levels :math:`\sigma`.

        Arguments:
            sigma: The noise levels, any shape.

        Returns:
            :math:`(c_\mathrm{skip}, c_\mathrm{out}, c_\mathrm{in}, c_\mathrm{noise})`, each
            with the shape of ``sigma``.
        """

        sigma_d2 = self.sigma_data**2
        norm = torch.sqrt(sigma**2 + sigma_d2)

        c_skip = sigma_d2 / (sigma**2 + sigma_d2)
        c_out = sigma * self.sigma_data / norm
        c_in = 1 / norm
        c_noise = torch.log(sigma) / 4

        return c_skip, c_out, c_in, c_noise

    def forward(self, x_t: Tensor, sigma_t: Tensor | float, **cond: Any) -> Tensor:
        r"""
        Arguments:
            x_t: The noisy samples, with shape (B, ...).
            sigma_t: The noise levels, with shape (B,) or a broadcastable scalar.
            cond: Conditioning passed to the backbone (e.g. ``date`` of shape (B, K, D)).

        Returns:
            The denoised samples :math:`\hat{x}`, with shape (B, ...).
        """

        sigma_t = expand_sigma(sigma_t, x_t)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma_t)

        output = self.backbone(_unsqueeze_as(c_in, x_t) * x_t, c_noise, **cond)

        return _unsqueeze_as(c_skip, x_t) * x_t + _unsqueeze_as(c_out, x_t) * output

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data:g}"


def denoising_loss(
    denoiser: Denoiser,
    x: Tensor,
    *,
    schedule: RectifiedSchedule,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    **cond: Any,
) -> Tensor:
    r"""The weighted denoising loss of a denoiser on a batch of clean samples.

    .. math:: \mathcal{L} = \operatorname{mean} \Big[ \lambda(\sigma_t)
              \big( D(x + \sigma_t \varepsilon; \sigma_t) - x \big)^2 \Big], \qquad
              \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{\sigma^2 \sigma_d^2}

    where the mean runs over all elements, :math:`\sigma_t = \sigma(t)` and
    :math:`t \sim \mathcal{U}(0, 1)` per batch item. :math:`\sigma_d` is read from
    ``denoiser.sigma_data`` and defaults to 1 (then :math:`\lambda(\sigma) = 1 + 1/\sigma^2`).
    Noise comes from the global torch generator (seed with :func:`torch.manual_seed`).

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        x: The clean samples, with shape (B, ...).
        schedule: The noise schedule :math:`\sigma(t)`.
        t: The diffusion times, with shape (B,). If :py:`None`, drawn uniformly in :math:`[0, 1)`.
        noise: The standard Gaussian noise :math:`\varepsilon`, shape of ``x``. If :py:`None`,
            drawn from the global generator (training passes per-sample noise so that the loss
            does not depend on how a batch is split across processes).
        cond: Conditioning passed to the denoiser.

    Returns:
        The loss, a scalar tensor.
    """

    B = x.shape[0]

    if t is None:
        t = torch.rand(B, dtype=x.dtype, device=x.device)
    else:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B)

    sigma_t = schedule(t)
    if noise is None:
        noise = torch.randn_like(x)
    x_t = x + _unsqueeze_as(sigma_t, x) * noise
    x_hat = denoiser(x_t, sigma_t, **cond)

    sigma_d2 = getattr(denoiser, "sigma_data", 1.0) ** 2
    weight = (sigma_t**2 + sigma_d2) / (sigma_t**2 * sigma_d2)

    return (_unsqueeze_as(weight, x) * (x_hat - x) ** 2).mean()

