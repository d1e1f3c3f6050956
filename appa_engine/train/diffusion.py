r"""Train the latent diffusion prior on blankets of K consecutive latent states.

The denoiser is the EDM-preconditioned :class:`~appa_engine.nn.transformer.SpaceTimeTransformer`
(:class:`~appa_engine.diffusion.denoiser.PreconditionedDenoiser`), conditioned on the date
features of each state; the loss is :func:`~appa_engine.diffusion.denoiser.denoising_loss` with
:math:`t \sim \mathcal U(0, 1)` and the rectified schedule. Weights are averaged with an EMA; the
final package (``<out>/package``) holds the autoencoder of the latent store, the EMA prior and
all statistics, ready for :func:`appa_engine.load_model`.

Run it with::

    appa encode --autoencoder runs/ae/model.pt --data planet.zarr --out latents.zarr
    appa train diffusion --latents latents.zarr --preset default --out runs/prior
    torchrun --standalone --nproc_per_node=8 -m appa_engine.cli train diffusion \
        --latents latents.zarr --preset paper --out runs/prior      # 8 GPUs
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from appa_engine.config import from_dict, to_dict
from appa_engine.diffusion.denoiser import PreconditionedDenoiser, denoising_loss
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError, DataError
from appa_engine.nn.transformer import SpaceTimeTransformer, TransformerConfig
from appa_engine.train.common import SplitConfig, split_value
from appa_engine.train.loop import LoopConfig, OptimConfig, sample_generator

__all__ = ["DiffusionTrainConfig", "DiffusionTask", "preset_defaults", "build_package"]


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Everything a training run of the prior needs (saved as ``config.yaml``)."""

    latents: str = ""  # latent store of `appa encode`
    preset: str = "tiny"
    blanket: int = 0  # K; 0: the preset's
    step: int = 1  # store time steps between consecutive states of a blanket
    split: SplitConfig = field(default_factory=SplitConfig)
    model: TransformerConfig | None = None  # None: the preset's
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=5000, batch_size=16, ema_decay=0.999))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup=200, weight_decay=0.01))


def preset_defaults(name: str) -> dict:
    from appa_engine.nn.presets import get_preset

    preset = get_preset(name)
    return {"model": to_dict(preset.prior), "blanket": preset.blanket}


class DiffusionTask:
    """The latent diffusion prior as a :class:`~appa_engine.train.loop.Task`."""

    name = "diffusion"

    def __init__(self, config: DiffusionTrainConfig):
        import dataclasses

        from appa_engine.data.windows import open_store, split_by_time
        from appa_engine.train.encode import latent_statistics

        if not config.latents:
            raise ConfigError("training the prior needs a latent store",
                              hint="pass --latents LATENTS.zarr (from `appa encode`)")
        if config.blanket < 1:
            raise ConfigError(f"blanket must be at least 1, got {config.blanket}")
        self.config = config
        store = open_store(config.latents)
        self.attrs = dict(store.attrs)
        self.latent_stats = latent_statistics(config.latents)
        times = store["time"].values
        self.split = split_by_time(times, valid=split_value(config.split.valid), test=split_value(config.split.test))
        model = config.model or from_dict(TransformerConfig, preset_defaults(config.preset)["model"])
        self.model_config = dataclasses.replace(model, in_channels=store.sizes["channel"])
        self.schedule = RectifiedSchedule()
        self.time_step_hours = float(self.attrs.get("time_step_hours", 1.0)) * config.step

    def build_model(self) -> nn.Module:
        return PreconditionedDenoiser(SpaceTimeTransformer(self.model_config))

    def datasets(self):
        from appa_engine.data.windows import BlanketDataset

        kw = dict(length=self.config.blanket, step=self.config.step, stats=self.latent_stats)
        train = BlanketDataset(self.config.latents, times=self.split.train, **kw)
        try:
            valid = BlanketDataset(self.config.latents, times=self.split.valid, **kw)
        except DataError:  # a validation range shorter than one blanket: no validation
            valid = None
        return train, valid

    def loss(self, model: nn.Module, batch, *, step: int) -> torch.Tensor:
        index, (x, dates) = batch
        device = next(model.parameters()).device
        x, dates = x.to(device, non_blocking=True), dates.to(device, non_blocking=True)
        # Per-sample diffusion time and noise: independent of how the batch is split (DDP) or resumed.
        t, noise = [], []
        for i in index.tolist():
            g = sample_generator(0, step, i)
            t.append(torch.rand((), generator=g))
            noise.append(torch.randn(x.shape[1:], generator=g))
        t = torch.stack(t).to(device)
        noise = torch.stack(noise).to(device)
        return denoising_loss(model, x, schedule=self.schedule.to(device), t=t, noise=noise, date=dates)

    def package(self, model: nn.Module, ema: nn.Module | None) -> dict:
        return {
            "prior_config": to_dict(self.model_config),
            "blanket": self.config.blanket,
            "time_step_hours": self.time_step_hours,
            "latents": self.config.latents,
        }


def build_package(config: DiffusionTrainConfig, prior_checkpoint, out, *, card: str | None = None,
                  truth=None, provenance: dict | None = None):
    """Assemble a model package from the latent store's autoencoder and a trained prior."""

    from appa_engine.data.channels import ChannelSpec
    from appa_engine.data.grid import Grid
    from appa_engine.data.stats import Statistics
    from appa_engine.io.checkpoint import load_checkpoint
    from appa_engine.io.package import save_package
    from appa_engine.model import AppaModel, ModelSpec
    from appa_engine.train.autoencoder import load_autoencoder
    from appa_engine.train.encode import latent_statistics
    from appa_engine.data.windows import open_store

    attrs = dict(open_store(config.latents).attrs)
    autoencoder, ae_ckpt = load_autoencoder(attrs["autoencoder"])
    prior = load_checkpoint(prior_checkpoint)
    stats = Statistics.from_dict(attrs["stats"])
    spec = ModelSpec(
        autoencoder=autoencoder.config,
        prior=from_dict(TransformerConfig, prior["prior_config"]),
        channels=ChannelSpec(stats.names),
        grid=Grid.from_dict(attrs["grid"]),
        blanket=int(prior["blanket"]),
        time_step_hours=float(prior["time_step_hours"]),
        preset=config.preset,
    )
    model = AppaModel(spec, stats, latent_statistics(config.latents))
    model.autoencoder.load_state_dict(autoencoder.state_dict())
    model.denoiser.load_state_dict(prior["model"])
    prov = {"autoencoder": ae_ckpt.get("provenance"), "prior": prior.get("provenance"),
            "data": ae_ckpt.get("data"), **(provenance or {})}
    return save_package(model, out, provenance=prov, card=card, truth=truth)
