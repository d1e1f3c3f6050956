r"""The assembled Appa model: autoencoder, latent diffusion prior, statistics, channels, grid.

:class:`AppaModel` is what sampling and assimilation run on. It maps between three spaces:

- physical states (units of each variable), shape ``(*, C, H, W)``;
- standardised states :math:`\tilde x = (x - \mu) / \sigma` per channel, what the autoencoder and
  the observation operators see;
- standardised latents :math:`z = (E(\tilde x) - \mu_z) / \sigma_z` per latent channel, what the
  diffusion prior models, in blankets of K consecutive states ``(B, K, Z, h, w)``.

It is saved and loaded as a *model package* (:mod:`appa_engine.io.package`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.grid import Grid
from appa_engine.data.stats import Statistics
from appa_engine.diffusion.denoiser import PreconditionedDenoiser
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig
from appa_engine.nn.transformer import SpaceTimeTransformer, TransformerConfig

__all__ = ["AppaModel", "ModelSpec", "latent_spec"]


def latent_spec(channels: int) -> ChannelSpec:
    """Names of the latent channels, ``latent_0 … latent_{Z-1}``."""
    return ChannelSpec(tuple(f"latent_{i}" for i in range(channels)))


@dataclass(frozen=True)
class ModelSpec:
    """Everything but the weights: configs, channels, grid and time step.

    Arguments:
        autoencoder: Autoencoder configuration.
        prior: Transformer (diffusion backbone) configuration.
        channels: Physical channels, in tensor order.
        grid: Physical grid.
        blanket: K, states per blanket of the prior.
        time_step_hours: Hours between consecutive states.
        preset: Name of the preset the configs came from (informative).
    """

    autoencoder: AutoencoderConfig
    prior: TransformerConfig
    channels: ChannelSpec
    grid: Grid
    blanket: int
    time_step_hours: float
    preset: str = "custom"

    def __post_init__(self):
        from appa_engine.errors import CheckpointError

        if self.autoencoder.in_channels != len(self.channels):
            raise CheckpointError(
                f"the autoencoder takes {self.autoencoder.in_channels} channels but the model "
                f"lists {len(self.channels)}"
            )
        if self.prior.in_channels != self.autoencoder.latent_channels:
            raise CheckpointError(
                f"the prior models {self.prior.in_channels} latent channels but the autoencoder "
                f"makes {self.autoencoder.latent_channels}"
            )

    @property
    def time_step(self) -> np.timedelta64:
        return np.timedelta64(int(round(self.time_step_hours * 3600)), "s")

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.autoencoder.latent_shape(*self.grid.shape)


class AppaModel(nn.Module):
    """Autoencoder + latent diffusion prior + the statistics that tie them to physical units.

    Arguments:
        spec: Configs, channels, grid and time step.
        stats: Statistics of the physical channels (standardisation).
        latent_stats: Statistics of the latent channels (``latent_0`` …).
    """

    def __init__(self, spec: ModelSpec, stats: Statistics, latent_stats: Statistics):
        super().__init__()
        self.spec = spec
        self.stats = stats.select(spec.channels)
        self.latent_stats = latent_stats.select(latent_spec(spec.autoencoder.latent_channels))
        self.autoencoder = Autoencoder(spec.autoencoder)
        self.denoiser = PreconditionedDenoiser(SpaceTimeTransformer(spec.prior))
        self.schedule = RectifiedSchedule()
        z_mean = torch.tensor(self.latent_stats.mean, dtype=torch.float32)[:, None, None]
        z_std = torch.tensor(self.latent_stats.std, dtype=torch.float32)[:, None, None]
        self.register_buffer("z_mean", z_mean, persistent=False)
        self.register_buffer("z_std", z_std, persistent=False)
        self.register_buffer("x_mean", torch.tensor(self.stats.mean, dtype=torch.float32)[:, None, None],
                             persistent=False)
        self.register_buffer("x_std", torch.tensor(self.stats.std, dtype=torch.float32)[:, None, None],
                             persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def channels(self) -> ChannelSpec:
        return self.spec.channels

    @property
    def grid(self) -> Grid:
        return self.spec.grid

    @property
    def blanket(self) -> int:
        return self.spec.blanket

    @property
    def time_step(self) -> np.timedelta64:
        return self.spec.time_step

    @property
    def device(self) -> torch.device:
        return self.z_mean.device

    # ------------------------------------------------------------------ mappings
    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Physical ``(*, C, H, W)`` → standardised."""
        return (x - self.x_mean) / self.x_std

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``(*, C, H, W)`` → physical."""
        return x * self.x_std + self.x_mean

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised states ``(*, C, H, W)`` → standardised latents ``(*, Z, h, w)``."""
        return (self.autoencoder.encode(x) - self.z_mean) / self.z_std

    def decode(self, z: torch.Tensor, *, channels=None) -> torch.Tensor:
        """Standardised latents ``(*, Z, h, w)`` → standardised states ``(*, C, H, W)`` (only
        the physical channels ``channels``, indices, when given: see :meth:`Decoder.forward`)."""
        return self.autoencoder.decode(
            z * self.z_std + self.z_mean, shape=self.grid.shape, channels=channels
        )

    def latent_shape(self, length: int, batch: int = 1) -> tuple[int, ...]:
        """Shape of a batch of latent trajectories: ``(B, L, Z, h, w)``."""
        h, w = self.spec.latent_shape
        return (batch, length, self.spec.autoencoder.latent_channels, h, w)

    def num_parameters(self) -> dict[str, int]:
        return {
            "autoencoder": sum(p.numel() for p in self.autoencoder.parameters()),
            "prior": sum(p.numel() for p in self.denoiser.parameters()),
        }
