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
observations (:attr:`CompiledObservations.state_indices`) and only the channels they read
(:attr:`CompiledObservations.physical_channels`): decoding dominates the cost of a guided step
(about 90 % in Appa), most states of a long window are often unobserved, and the decoder's last
convolution, its largest on the default model, is per channel. When the observations read a
small part of the globe it also decodes only the latent window around them
(:mod:`appa_engine.nn.region`). ``region="auto"`` does so when that is exact (a decoder with
per-pixel normalisation, the full receptive-field halo) and the window, halo included, covers at
most ``max_fraction`` of the latent grid; otherwise it decodes the globe, exactly as before.
``region="approximate"`` also decodes windows whose Jacobian is approximate (group normalisation
with frozen statistics, or a halo smaller than the receptive field): the values of
:math:`\mathcal{A}` stay exact, its derivatives are measured in ``bench/decoding.py``.
"""

from __future__ import annotations

import logging
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn

from appa_engine.errors import ConfigError
from appa_engine.nn.region import LatentWindow, RegionDecoder, plan_window, receptive_halo
from appa_engine.sampling.blankets import BlanketLayout

__all__ = ["TrajectoryDenoiser", "LatentObservationOperator", "latent_observation_operator",
           "needed_cells"]

log = logging.getLogger(__name__)

Region = Literal["auto", "approximate", "globe"]


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


def needed_cells(compiled) -> np.ndarray:
    """The physical grid cells the physical observers read at any state, shape ``(H, W)``."""

    footprint = compiled.footprint()
    H, W = compiled.grid.shape
    mask = np.zeros((H, W), dtype=bool)
    for da in footprint.data_vars.values():
        if not da.attrs.get("on_latent", 0):
            mask |= np.asarray(da.values, dtype=bool).any(axis=0)
    return mask


class LatentObservationOperator:
    r"""The observation operator of a standardised latent trajectory,
    :math:`z \mapsto \mathcal{A}(D(z))`, decoding only what the observations read.

    Only the observed states are decoded, only the channels the observers read (:attr:`channels`;
    exact: only the decoder's last convolution depends on the channel), and, when :attr:`window`
    is set, only that latent window of them (:class:`~appa_engine.nn.region.RegionDecoder`): its
    values are those of the full decode; its Jacobian is exact for per-pixel normalisations and
    a full halo, and otherwise (``region="approximate"`` only) drops the dependence through the
    group statistics and beyond the halo (see :mod:`appa_engine.nn.region`).

    Arguments:
        model: An :class:`~appa_engine.model.AppaModel`.
        compiled: :class:`~appa_engine.observations.compile.CompiledObservations` of the window.
        region: ``"auto"`` (a window when its decode is exact and covers at most
            ``max_fraction`` of the latent grid, else the globe), ``"approximate"`` (a window
            when it covers at most ``max_fraction``, exact or not) or ``"globe"`` (always the
            full globe, as before).
        halo: Latent cells of halo around the observed cells (default: the decoder's receptive
            field, :func:`~appa_engine.nn.region.receptive_halo`); a smaller one needs
            ``region="approximate"``.
        max_fraction: Largest fraction of the latent grid decoded as a window (1: any window
            smaller than the globe).

    Attributes:
        window: The latent window decoded (None: the globe).
        channels: Indices of the physical channels decoded (None: all of them).
        decoding: What is decoded, in words (for run records).
    """

    def __init__(self, model, compiled, *, region: Region = "auto", halo: int | None = None,
                 max_fraction: float = 0.6):
        if region not in ("auto", "approximate", "globe"):
            raise ConfigError(f"unknown region mode '{region}'",
                              hint="use 'auto', 'approximate' or 'globe'")
        if not 0 < max_fraction <= 1:
            raise ConfigError(f"max_fraction must lie in (0, 1], got {max_fraction}")
        if halo is not None and halo < 0:
            raise ConfigError(f"the halo must be a non-negative number of latent cells, got {halo}")
        self.model = model
        self.compiled = compiled
        self.states = torch.as_tensor(compiled.state_indices, dtype=torch.long)
        read = compiled.physical_channels
        self.channels = None if read.size in (0, len(compiled.channels)) else read
        self.window: LatentWindow | None = None
        self._region: RegionDecoder | None = None
        eta = receptive_halo(model.spec.autoencoder)
        if region == "auto" and halo is not None and halo < eta:
            raise ConfigError(
                f"a halo of {halo} latent cells is smaller than the decoder's receptive field "
                f"({eta}): the Jacobian would be approximate",
                hint="use region='approximate' for a truncated halo, or leave halo unset")
        local = not any(isinstance(m, nn.GroupNorm) for m in model.autoencoder.decoder.modules())
        if compiled.has_physical and (region == "approximate" or (region == "auto" and local)):
            window = plan_window(needed_cells(compiled), model.spec.autoencoder, halo=halo)
            if not window.is_globe and window.fraction <= max_fraction:
                decoder = RegionDecoder(model.autoencoder, window, shape=model.grid.shape)
                if region == "approximate" or decoder.mode == "exact":
                    self.window, self._region = window, decoder
        if self._region is None:
            self.decoding = "globe" if compiled.has_physical else "none (latent observations only)"
        else:
            self.decoding = f"{self.window.describe()}, {self._region.mode}"
        if self.channels is not None:
            self.decoding += f", {read.size} of {len(compiled.channels)} channels"
        log.info("observation operator decodes: %s", self.decoding)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents ``(*, Z, h, w)`` → standardised states ``(*, C, H, W)`` (only
        the channels of :attr:`channels`, and only the window's cells when :attr:`window` is
        set)."""

        if self._region is None:
            return self.model.decode(z, channels=self.channels)
        m = self.model
        return self._region(z * m.z_std + m.z_mean, self.channels)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
            z: Latent trajectories, shape ``(B, L, Z, h, w)``.

        Returns:
            Predicted observations, shape ``(B, N)``.
        """

        compiled = self.compiled
        x = self.decode(z[:, self.states.to(z.device)]) if compiled.has_physical else None
        return compiled.A(x, z=z if compiled.has_latent else None, channels=self.channels)


def latent_observation_operator(model, compiled, *, region: Region = "auto",
                                halo: int | None = None,
                                max_fraction: float = 0.6) -> LatentObservationOperator:
    """The observation operator of a standardised latent trajectory.

    Arguments:
        model: An :class:`~appa_engine.model.AppaModel` (its decoder maps latents to states).
        compiled: :class:`~appa_engine.observations.compile.CompiledObservations` of the window.
        region, halo, max_fraction: Regional decoding (see :class:`LatentObservationOperator`).

    Returns:
        ``A(z)`` mapping latent trajectories ``(B, L, Z, h, w)`` to observations ``(B, N)``,
        decoding only the states that physical observers touch (and, if worthwhile, only the
        latent window around the cells they read).
    """

    return LatentObservationOperator(model, compiled, region=region, halo=halo,
                                     max_fraction=max_fraction)
