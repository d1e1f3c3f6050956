r"""Diffusion posterior sampling (DPS), as a denoiser wrapper.

By Tweedie's formula applied to :math:`p(x_t \mid y)`, the posterior denoiser is

.. math:: \mathbb{E}[x \mid x_t, y] = \mathbb{E}[x \mid x_t] + \sigma^2 \nabla_{x_t}
          \log p(y \mid x_t) .

DPS approximates the likelihood by :math:`p(y \mid x_t) \approx \mathcal{N}(y \mid
\mathcal{A}(\hat{x}), \Sigma_y)` with :math:`\hat{x} = D(x_t; \sigma)`, which gives

.. math:: \hat{x}_y = \hat{x} + \zeta \, \sigma^2 \nabla_{x_t} \log \mathcal{N}(y \mid
          \mathcal{A}(\hat{x}), \Sigma_y)
          = \hat{x} + \zeta \, \sigma^2 \Big( \frac{\partial \hat{x}}{\partial x_t} \Big)^\top
          J_\mathcal{A}^\top \Sigma_y^{-1} (y - \mathcal{A}(\hat{x})) .

:math:`\zeta = 1` is the scale implied by Tweedie's formula; it equals MMPS with the
covariance term :math:`J_\mathcal{A} \Sigma_x J_\mathcal{A}^\top` dropped from the inverse, so it
overshoots when the observations are more precise than the prior (:math:`J_\mathcal{A} \Sigma_x
J_\mathcal{A}^\top \gg \Sigma_y`, i.e. at high noise levels): use :math:`\zeta < 1` to damp it.

Chung et al. add the gradient step to the *sampler* update (:math:`x_s \gets x_s - \zeta_i
\nabla_{x_t} \| y - \mathcal{A}(\hat{x}) \|^2`). Guiding the denoiser instead lets every sampler
use it: in a DDIM step a shift :math:`\Delta` of :math:`\hat{x}` moves :math:`x_s` by
:math:`(1 - \sigma_s / \sigma_t) \Delta`, so both forms differ by a per-step rescaling of
:math:`\zeta`. One call costs a denoiser forward and one backward through
:math:`\mathcal{A} \circ D` (no linear solve).

References:
    | Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., 2022)
    | https://arxiv.org/abs/2209.14687
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from appa_engine.diffusion.denoiser import Denoiser, expand_sigma
from appa_engine.diffusion.guidance.mmps import check_observations, check_prediction, require_gradients
from appa_engine.errors import ConfigError

__all__ = ["DPSDenoiser"]


class DPSDenoiser(nn.Module):
    r"""A denoiser guided by observations with diffusion posterior sampling.

    .. math:: \hat{x}_y = \hat{x} + \zeta \, \sigma^2 \nabla_{x_t}
              \log \mathcal{N}(y \mid \mathcal{A}(\hat{x}), \Sigma_y)

    Arguments:
        denoiser: A differentiable denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        y: The observations, with shape (N,) or (B, N).
        A: The differentiable observation operator, mapping (B, ...) to (B, N).
        cov_y: The observation variances (diagonal of :math:`\Sigma_y`), with shape (N,) or
            (B, N), or a scalar.
        zeta: The guidance scale :math:`\zeta \geq 0` (1: Tweedie's scale).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Tensor | float,
        *,
        zeta: float = 1.0,
    ):
        super().__init__()

        if not zeta >= 0:
            raise ConfigError(
                f"the DPS scale zeta must be non-negative, got {zeta}.", hint="use zeta=1."
            )

        y, cov_y = check_observations(y, cov_y)

        self.denoiser = denoiser
        self.A = A
        self.register_buffer("y", y)
        self.register_buffer("cov_y", cov_y)
        self.zeta = float(zeta)

    def forward(self, x_t: Tensor, sigma_t: Tensor | float, **cond: Any) -> Tensor:
        r"""
        Arguments:
            x_t: The noisy samples, with shape (B, ...).
            sigma_t: The noise levels, with shape (B,) or a broadcastable scalar.
            cond: Conditioning passed to the denoiser.

        Returns:
            The guided estimate :math:`\hat{x}_y`, with shape (B, ...), detached from any graph.
        """

        require_gradients("DPS")

        sigma_t = expand_sigma(sigma_t, x_t)
        var_t = (sigma_t**2).reshape((-1,) + (1,) * (x_t.ndim - 1))  # (B, 1, ..., 1)

        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            x_hat = self.denoiser(x_t, sigma_t, **cond)
            y_hat = self.A(x_hat)  # (B, N)
            check_prediction(y_hat, self.y)

            # grad of log N(y | y_hat, Sigma_y) w.r.t. y_hat, then VJP through A and D.
            residual = (self.y.to(y_hat) - y_hat.detach()) / self.cov_y.to(y_hat)
            (grad,) = torch.autograd.grad(y_hat, x_t, residual)

        return (x_hat.detach() + self.zeta * var_t * grad).detach()

    def extra_repr(self) -> str:
        return f"N={self.y.shape[-1]}, zeta={self.zeta:g}"
