r"""Exact denoiser and posteriors of a Gaussian prior (linear-Gaussian oracles).

For a Gaussian prior :math:`x \sim \mathcal{N}(\mu, \Sigma)` on vectors of size :math:`n` and
noisy samples :math:`x_t = x + \sigma \varepsilon`, the optimal denoiser and Tweedie's
covariance are known in closed form. With the eigendecomposition
:math:`\Sigma = Q \Lambda Q^\top`,

.. math:: \mathbb{E}[x \mid x_t] = \mu + \Sigma (\Sigma + \sigma^2 I)^{-1} (x_t - \mu)
          = \mu + Q \frac{\Lambda}{\Lambda + \sigma^2} Q^\top (x_t - \mu)

.. math:: \mathbb{V}[x \mid x_t] = \sigma^2 \frac{\partial \, \mathbb{E}[x \mid x_t]}{\partial x_t}
          = Q \frac{\sigma^2 \Lambda}{\Lambda + \sigma^2} Q^\top .

Adding linear observations :math:`y = A x + \eta`, :math:`\eta \sim \mathcal{N}(0, \Sigma_y)`,
the posterior of a Gaussian :math:`\mathcal{N}(m, P)` is given by the Kalman update

.. math:: K = P A^\top (A P A^\top + \Sigma_y)^{-1}, \quad
          m' = m + K (y - A m), \quad P' = P - K A P ,

so :math:`p(x \mid x_t, y)` is the Kalman update of :math:`\mathcal{N}(\mathbb{E}[x \mid x_t],
\mathbb{V}[x \mid x_t])`. These are the oracles against which the samplers and the guidance are
tested; they are also a small, exact example of what a denoiser is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from appa_engine.diffusion.denoiser import expand_sigma

__all__ = ["GaussianDenoiser", "kalman_posterior"]


def _diag_cov(cov_y: Tensor | float, N: int, like: Tensor) -> Tensor:
    """Diagonal observation variances (N,) or (B, N) as a tensor like ``like``."""

    cov_y = torch.as_tensor(cov_y, dtype=like.dtype, device=like.device)
    if cov_y.ndim == 0:
        cov_y = cov_y.expand(N)
    if cov_y.shape[-1] != N:
        raise ValueError(
            f"cov_y must have shape (N,) or (B, N) with N={N}, got {tuple(cov_y.shape)}."
        )
    return cov_y


def kalman_posterior(
    mean: Tensor,
    cov: Tensor,
    A_matrix: Tensor,
    y: Tensor,
    cov_y: Tensor | float,
) -> tuple[Tensor, Tensor]:
    r"""The posterior :math:`p(x \mid y)` of a Gaussian prior under linear observations.

    .. math:: x \sim \mathcal{N}(m, P), \quad y = A x + \eta, \quad
              \eta \sim \mathcal{N}(0, \operatorname{diag}(\Sigma_y))

    Arguments:
        mean: The prior mean :math:`m`, with shape (n,) or (B, n).
        cov: The prior covariance :math:`P`, with shape (n, n) or (B, n, n).
        A_matrix: The observation matrix :math:`A`, with shape (N, n).
        y: The observations, with shape (N,) or (B, N).
        cov_y: The observation variances (diagonal of :math:`\Sigma_y`), with shape (N,) or
            (B, N), or a scalar.

    Returns:
        The posterior mean, with shape (n,) or (B, n), and covariance, with shape (n, n) or
        (B, n, n) (batched if any input is).
    """

    A_matrix = A_matrix.to(mean)
    y = y.to(mean)
    N = A_matrix.shape[0]
    cov_y = _diag_cov(cov_y, N, mean)

    PAt = cov @ A_matrix.mT  # (..., n, N)
    S = A_matrix @ PAt + torch.diag_embed(cov_y)  # (..., N, N)
    L = torch.linalg.cholesky(S)

    innovation = y - (A_matrix @ mean.unsqueeze(-1)).squeeze(-1)  # (..., N)
    gain_t = torch.cholesky_solve(PAt.mT, L)  # K^T = S^-1 A P, (..., N, n)

    mean_post = mean + (gain_t.mT @ innovation.unsqueeze(-1)).squeeze(-1)
    cov_post = cov - PAt @ gain_t
    cov_post = (cov_post + cov_post.mT) / 2

    return mean_post, cov_post


class GaussianDenoiser(nn.Module):
    r"""The exact denoiser :math:`\mathbb{E}[x \mid x_t]` of a Gaussian prior
    :math:`\mathcal{N}(\mu, \Sigma)`.

    Samples are flattened: ``x_t`` of shape (B, n) or (B, *shape) with ``n = prod(shape)``.

    Arguments:
        mean: The prior mean :math:`\mu`, with shape (n,).
        cov: The prior covariance :math:`\Sigma` (symmetric positive semi-definite), with shape
            (n, n).
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        super().__init__()

        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"mean must have shape (n,) and cov (n, n), got {tuple(mean.shape)} and "
                f"{tuple(cov.shape)}."
            )

        cov = (cov + cov.mT) / 2
        eigvals, eigvecs = torch.linalg.eigh(cov)

        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.register_buffer("eigvals", eigvals.clamp(min=0))
        self.register_buffer("eigvecs", eigvecs)

    def _gain(self, sigma_t: Tensor) -> Tensor:
        """Eigenvalues of Sigma (Sigma + sigma^2 I)^-1, shape (B, n)."""

        return self.eigvals / (self.eigvals + sigma_t.unsqueeze(-1) ** 2)

    def forward(self, x_t: Tensor, sigma_t: Tensor | float, **cond: Any) -> Tensor:
        r"""
        Arguments:
            x_t: The noisy samples, with shape (B, *shape).
            sigma_t: The noise levels, with shape (B,) or a broadcastable scalar.
            cond: Ignored.

        Returns:
            :math:`\mathbb{E}[x \mid x_t]`, with shape (B, *shape).
        """

        sigma_t = expand_sigma(sigma_t, x_t)
        Q = self.eigvecs

        z = (x_t.flatten(1) - self.mean) @ Q  # (B, n)
        x_hat = self.mean + (self._gain(sigma_t) * z) @ Q.mT

        return x_hat.reshape(x_t.shape)

    def tweedie_cov(self, sigma_t: Tensor | float, x_t: Tensor) -> Tensor:
        r"""Tweedie's covariance :math:`\mathbb{V}[x \mid x_t] = \sigma^2 \Sigma
        (\Sigma + \sigma^2 I)^{-1}`.

        Arguments:
            sigma_t: The noise levels, with shape (B,) or a broadcastable scalar.
            x_t: The noisy samples, with shape (B, *shape) (only the batch size is used).

        Returns:
            The covariances, with shape (B, n, n).
        """

        sigma_t = expand_sigma(sigma_t, x_t)
        Q = self.eigvecs
        variances = sigma_t.unsqueeze(-1) ** 2 * self._gain(sigma_t)  # (B, n)

        cov = (Q * variances.unsqueeze(-2)) @ Q.mT
        return (cov + cov.mT) / 2

    def posterior(
        self,
        x_t: Tensor,
        sigma: Tensor | float,
        y: Tensor,
        A_matrix: Tensor,
        cov_y: Tensor | float,
    ) -> tuple[Tensor, Tensor]:
        r"""The exact :math:`\mathbb{E}[x \mid x_t, y]` and :math:`\mathbb{V}[x \mid x_t, y]`.

        Arguments:
            x_t: The noisy samples, with shape (B, *shape).
            sigma: The noise levels, with shape (B,) or a broadcastable scalar.
            y: The observations :math:`y = A x + \eta`, with shape (N,) or (B, N).
            A_matrix: The observation matrix, with shape (N, n), acting on flattened samples.
            cov_y: The observation variances, with shape (N,) or (B, N), or a scalar.

        Returns:
            The posterior mean, with shape (B, *shape), and covariance, with shape (B, n, n).
        """

        x_hat = self(x_t, sigma).flatten(1)
        cov = self.tweedie_cov(sigma, x_t)

        mean_post, cov_post = kalman_posterior(x_hat, cov, A_matrix, y, cov_y)

        return mean_post.reshape(x_t.shape), cov_post
