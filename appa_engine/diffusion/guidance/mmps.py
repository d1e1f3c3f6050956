r"""Moment matching posterior sampling (MMPS).

Given observations :math:`y = \mathcal{A}(x) + \eta`, :math:`\eta \sim \mathcal{N}(0, \Sigma_y)`,
MMPS replaces the denoiser :math:`\hat{x} = D(x_t; \sigma) \approx \mathbb{E}[x \mid x_t]` by an
estimate of :math:`\mathbb{E}[x \mid x_t, y]`, obtained by approximating :math:`p(x \mid x_t)` with
the Gaussian :math:`\mathcal{N}(\hat{x}, \Sigma_x)` of matching first two moments and linearising
:math:`\mathcal{A}` around :math:`\hat{x}`:

.. math:: \mathbb{E}[x \mid x_t, y] \approx \hat{x} + \Sigma_x J_\mathcal{A}^\top
          \big( \Sigma_y + J_\mathcal{A} \Sigma_x J_\mathcal{A}^\top \big)^{-1}
          \big( y - \mathcal{A}(\hat{x}) \big),

where :math:`J_\mathcal{A}` is the Jacobian of :math:`\mathcal{A}` at :math:`\hat{x}` and

.. math:: \Sigma_x = \mathbb{V}[x \mid x_t] = \sigma^2 \frac{\partial \hat{x}}{\partial x_t}

is Tweedie's covariance. Nothing is materialised: :math:`\Sigma_x v = \sigma^2
(\partial \hat{x} / \partial x_t)^\top v` is a vector-Jacobian product through the denoiser (the
Jacobian of a conservative denoiser is symmetric), :math:`J_\mathcal{A}^\top u` a VJP through
:math:`\mathcal{A}` and :math:`J_\mathcal{A} v` a JVP computed with the double-backward trick
(:math:`J v = \partial_u (J^\top u)^\top v`, so only reverse-mode support is needed, e.g. for
:func:`torch.nn.functional.grid_sample`). The linear system is solved in observation space with a
few conjugate gradient (or GMRES, for non-symmetric Jacobians) iterations. For a Gaussian prior and
a linear :math:`\mathcal{A}` the estimate is exact once the solver has converged.

Cost. Every saving below is exact (the same maths, different rounding).

- Both solvers start from :math:`u_0 = 0` and return :math:`u = \sum_k c_k d_k`, a combination of
  the directions :math:`d_k` the system was applied to, and every product computes
  :math:`w_k = \Sigma_x J_\mathcal{A}^\top d_k` on its way: the correction is accumulated as
  :math:`\Sigma_x J_\mathcal{A}^\top u = \sum_k c_k w_k`
  (:func:`~appa_engine.diffusion.linalg.conjugate_gradient_mapped`) instead of being
  recomputed, one VJP through the denoiser and one through :math:`\mathcal{A}` fewer.
- :math:`J_\mathcal{A}^\top u` is linear in :math:`u`, so the graph that gives
  :math:`J_\mathcal{A} v` by double backward can be built at the first direction
  :math:`u = d_0 = y - \mathcal{A}(\hat{x})` rather than at 0: the same VJP also yields
  :math:`J_\mathcal{A}^\top d_0`.
- CG needs :math:`d^\top (\Sigma_y + J_\mathcal{A} \Sigma_x J_\mathcal{A}^\top) d
  = d^\top \Sigma_y d + (J_\mathcal{A}^\top d)^\top w`, from vectors at hand, and the product
  itself only to update the residual, which the last iteration does not need: with CG the
  last JVP is never made, and one iteration needs no JVP (nor the double-backward graph) at all.

With :math:`m` iterations a call costs one denoiser forward, one :math:`\mathcal{A}` forward,
:math:`m` VJPs through the denoiser, :math:`m` VJPs through :math:`\mathcal{A}` and :math:`m - 1`
JVPs through :math:`\mathcal{A}` with CG (:math:`m` with GMRES), against :math:`m + 1`,
:math:`m + 2` and :math:`m` written naively.

References:
    | Learning Diffusion Priors from Observations by Expectation Maximization
      (Rozet et al., 2024)
    | https://arxiv.org/abs/2405.13712
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from appa_engine.diffusion.denoiser import Denoiser, expand_sigma
from appa_engine.diffusion.linalg import Product, conjugate_gradient_mapped, gmres_mapped
from appa_engine.errors import ConfigError, ObservationError

__all__ = ["MMPSDenoiser", "check_observations"]


def check_observations(y: Tensor, cov_y: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""Validates observations and their variances.

    Arguments:
        y: The observations, with shape (N,) or (B, N).
        cov_y: The observation variances, with shape (N,) or (B, N), or a scalar.

    Returns:
        ``y`` and ``cov_y`` as tensors, ``cov_y`` broadcast to the shape of ``y``.
    """

    y = torch.as_tensor(y)
    if y.ndim not in (1, 2):
        raise ObservationError(
            f"observations y must have shape (N,) or (B, N), got {tuple(y.shape)}.",
            hint="flatten the observations of each batch item into one vector.",
        )

    cov_y = torch.as_tensor(cov_y, dtype=y.dtype, device=y.device)
    try:
        cov_y = torch.broadcast_to(cov_y, torch.broadcast_shapes(cov_y.shape, y.shape))
    except RuntimeError:
        raise ObservationError(
            f"observation variances cov_y of shape {tuple(cov_y.shape)} do not match "
            f"observations y of shape {tuple(y.shape)}.",
            hint="give one variance per observation (the diagonal of the noise covariance).",
        ) from None

    if not bool(torch.all(cov_y > 0)):
        raise ObservationError(
            "observation variances cov_y must be positive.",
            hint="set a small positive error (e.g. 1e-4) for observations assumed exact.",
        )

    return y, cov_y



def require_gradients(method: str) -> None:
    """Guidance differentiates through the denoiser: refuse ``torch.inference_mode()``."""

    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} guidance needs gradients: call the sampler under torch.no_grad(), "
            "not torch.inference_mode()."
        )


def check_prediction(y_hat: Tensor, y: Tensor) -> None:
    """The observation operator must map ``(B, ...)`` to ``(B, N)``."""

    if y_hat.ndim != 2 or y_hat.shape[-1] != y.shape[-1]:
        raise ObservationError(
            f"the observation operator returned shape {tuple(y_hat.shape)}, "
            f"but y has shape {tuple(y.shape)}.",
            hint="A must map (B, ...) to (B, N) with N the number of observations.",
        )


def _dot(u: Tensor, v: Tensor) -> Tensor:
    """Inner products per batch item, shape (B,)."""

    return (u * v).flatten(1).sum(dim=1)


class MMPSDenoiser(nn.Module):
    r"""A denoiser guided by observations with moment matching posterior sampling.

    .. math:: \hat{x}_y = \hat{x} + \Sigma_x J_\mathcal{A}^\top
              (\Sigma_y + J_\mathcal{A} \Sigma_x J_\mathcal{A}^\top)^{-1}
              (y - \mathcal{A}(\hat{x})), \qquad \Sigma_x = \sigma^2 \partial \hat{x} / \partial x_t

    Usable wherever a denoiser is (any sampler). Each call costs one denoiser forward, one
    :math:`\mathcal{A}` forward, ``iterations`` VJPs through the denoiser and through
    :math:`\mathcal{A}`, and ``iterations - 1`` JVPs through :math:`\mathcal{A}` with CG
    (``iterations`` with GMRES); see the module docstring. Graphs are freed on return.

    Arguments:
        denoiser: A differentiable denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        y: The observations, with shape (N,) or (B, N).
        A: The differentiable observation operator, mapping (B, ...) to (B, N).
        cov_y: The observation variances (diagonal of :math:`\Sigma_y`), with shape (N,) or
            (B, N), or a scalar.
        iterations: The number of solver iterations (Appa: 1 to 2; exact for linear-Gaussian
            problems after N).
        solver: ``"cg"`` (conjugate gradient, for symmetric Jacobians) or ``"gmres"``.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Tensor | float,
        *,
        iterations: int = 1,
        solver: str = "cg",
    ):
        super().__init__()

        if solver not in ("cg", "gmres"):
            raise ConfigError(
                f"unknown MMPS solver {solver!r}.", hint="use solver='cg' or solver='gmres'."
            )
        if not (isinstance(iterations, int) and iterations >= 1):
            raise ConfigError(
                f"MMPS needs at least one solver iteration, got {iterations!r}.",
                hint="use iterations=1 or 2 (Appa's setting).",
            )

        y, cov_y = check_observations(y, cov_y)

        self.denoiser = denoiser
        self.A = A
        self.register_buffer("y", y)
        self.register_buffer("cov_y", cov_y)
        self.iterations = iterations
        self.solver = solver

    def forward(self, x_t: Tensor, sigma_t: Tensor | float, **cond: Any) -> Tensor:
        r"""
        Arguments:
            x_t: The noisy samples, with shape (B, ...).
            sigma_t: The noise levels, with shape (B,) or a broadcastable scalar.
            cond: Conditioning passed to the denoiser.

        Returns:
            The guided estimate of :math:`\mathbb{E}[x \mid x_t, y]`, with shape (B, ...),
            detached from any graph.
        """

        require_gradients("MMPS")

        sigma_t = expand_sigma(sigma_t, x_t)
        var_t = (sigma_t**2).reshape((-1,) + (1,) * (x_t.ndim - 1))  # (B, 1, ..., 1)

        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            x_hat = self.denoiser(x_t, sigma_t, **cond)

            x_hat_A = x_hat.detach().requires_grad_(True)
            y_hat = self.A(x_hat_A)  # (B, N)
            check_prediction(y_hat, self.y)

            innovation = self.y.to(y_hat) - y_hat.detach()  # y - A(x_hat), the first direction
            cov_y = self.cov_y.to(y_hat)

            # J_A^T u is linear in u: differentiating it w.r.t. u gives J_A v (double backward).
            # Its graph is built at u = innovation, so that it also gives J_A^T innovation. One
            # CG iteration needs nothing more from A (see the module docstring): no graph is
            # built and A's is freed at once.
            more = self.solver == "gmres" or self.iterations > 1
            u_0 = innovation.detach().requires_grad_(more)
            (At_u_0,) = torch.autograd.grad(y_hat, x_hat_A, u_0, retain_graph=more,
                                            create_graph=more)

            def A_T(u: Tensor) -> Tensor:  # J_A^T u, (B, N) -> (B, ...)
                if u is innovation:  # the solvers' first product (linalg's contract)
                    return At_u_0.detach()
                return torch.autograd.grad(y_hat, x_hat_A, u, retain_graph=True)[0]

            def A_J(v: Tensor) -> Tensor:  # J_A v, (B, ...) -> (B, N)
                return torch.autograd.grad(At_u_0, u_0, v, retain_graph=True)[0]

            def cov_x(v: Tensor) -> Tensor:  # Sigma_x v
                (vjp,) = torch.autograd.grad(x_hat, x_t, v, retain_graph=True)
                return var_t * vjp

            def system(u: Tensor) -> Product:
                # ((Sigma_y + J_A Sigma_x J_A^T) u on demand, Sigma_x J_A^T u, u^T (...) u) with
                # u^T (Sigma_y + J_A Sigma_x J_A^T) u = u^T Sigma_y u + (J_A^T u)^T Sigma_x J_A^T u
                q = A_T(u)
                w = cov_x(q)
                curvature = _dot(u, cov_y * u) + _dot(q, w)
                return Product(lambda: cov_y * u + A_J(w), w, curvature)

            solve = conjugate_gradient_mapped if self.solver == "cg" else gmres_mapped
            _, correction = solve(system, innovation, iterations=self.iterations)

            x_post = x_hat.detach() + correction

        return x_post.detach()

    def extra_repr(self) -> str:
        return f"N={self.y.shape[-1]}, iterations={self.iterations}, solver={self.solver!r}"
