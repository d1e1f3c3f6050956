r"""Denoising whole latent trajectories with a blanket prior, guided or not.

The prior's denoiser :math:`D_\theta` sees blankets of K states. A trajectory of L ≥ K latent
states is denoised as

.. math:: \hat z = \mathrm{fold}\big(D_\theta(\mathrm{unfold}(z_t); \sigma)\big),

(:class:`~appa_engine.sampling.blankets.BlanketLayout`), every blanket of every member in one
batch (split into chunks of ``max_batch`` blankets to bound memory). This *trajectory denoiser*
is an ordinary denoiser, so the generic guidance wrappers apply to it unchanged: MMPS uses the
Tweedie covariance of the stitched estimate, and each observation acts on the blankets that own
the states it observes.

The observation operator of a latent trajectory decodes only the states that carry physical
observations (:attr:`CompiledObservations.state_indices`): decoding dominates the cost of a
guided step (about 90 % in Appa), and most states of a long window are often unobserved.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from appa_engine.sampling.blankets import BlanketLayout

__all__ = ["TrajectoryDenoiser", "latent_observation_operator"]


class TrajectoryDenoiser(nn.Module):
    """:math:`\\mathrm{fold} \\circ D \\circ \\mathrm{unfold}` over overlapping blankets.

    Arguments:
        denoiser: Blanket denoiser ``(z_t (B, K, Z, h, w), sigma (B,), date=(B, K, D)) -> z_hat``.
        layout: How the trajectory is covered by blankets.
        dates: Date features of the trajectory's states, shape ``(L, D)``.
        max_batch: Largest number of blankets denoised at once (``None``: all).
    """

    def __init__(self, denoiser: Callable, layout: BlanketLayout, *, dates: torch.Tensor, max_batch: int | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.layout = layout
        self.register_buffer("dates", dates, persistent=False)
        self.max_batch = max_batch

    def forward(self, z_t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
            z_t: Noisy latent trajectories, shape ``(B, L, Z, h, w)``.
            sigma_t: Noise levels, shape ``(B,)`` (or a scalar).

        Returns:
            Denoised trajectories, shape ``(B, L, Z, h, w)``.
        """
        B = z_t.shape[0]
        nb = self.layout.num_blankets
        blankets = self.layout.unfold(z_t).flatten(0, 1)  # (B nb, K, Z, h, w)
        sigma = torch.as_tensor(sigma_t, dtype=z_t.dtype, device=z_t.device).reshape(-1).expand(B)
        sigma = sigma.repeat_interleave(nb)
        dates = self.dates.to(z_t)[None].expand(B, *self.dates.shape)
        dates = self.layout.unfold(dates).flatten(0, 1)  # (B nb, K, D)
        step = self.max_batch or blankets.shape[0]
        out = torch.cat([
            self.denoiser(blankets[i : i + step], sigma[i : i + step], date=dates[i : i + step])
            for i in range(0, blankets.shape[0], step)
        ])
        return self.layout.fold(out.unflatten(0, (B, nb)))


def latent_observation_operator(model, compiled) -> Callable[[torch.Tensor], torch.Tensor]:
    """The observation operator of a standardised latent trajectory.

    Arguments:
        model: An :class:`~appa_engine.model.AppaModel` (its decoder maps latents to states).
        compiled: :class:`~appa_engine.observations.compile.CompiledObservations` of the window.

    Returns:
        ``A(z)`` mapping latent trajectories ``(B, L, Z, h, w)`` to observations ``(B, N)``,
        decoding only the states that physical observers touch.
    """

    states = torch.as_tensor(compiled.state_indices, dtype=torch.long)

    def A(z: torch.Tensor) -> torch.Tensor:
        x = model.decode(z[:, states.to(z.device)]) if compiled.has_physical else None
        return compiled.A(x, z=z if compiled.has_latent else None)

    return A
