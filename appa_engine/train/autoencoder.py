"""Train the state autoencoder.

Each state is standardised per channel, encoded to a latent and decoded back; the loss is the
area-weighted MSE in standardised units (:func:`appa_engine.nn.autoencoder.area_weighted_mse`).

Run it with::

    # one process (CPU or one GPU)
    appa train autoencoder --data planet.zarr --stats planet.stats.json --preset default --out runs/ae
    # one node, 8 GPUs
    torchrun --standalone --nproc_per_node=8 -m appa_engine.cli train autoencoder --data era5.zarr \\
        --stats era5.stats.json --preset paper --out runs/ae
    # resume after an interruption
    appa train autoencoder ... --out runs/ae --resume
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from appa_engine.config import from_dict, to_dict
from appa_engine.data.grid import Grid
from appa_engine.data.stats import Statistics
from appa_engine.errors import ConfigError
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig, area_weighted_mse
from appa_engine.train.common import SplitConfig, split_value
from appa_engine.train.loop import LoopConfig, OptimConfig

__all__ = ["AutoencoderTrainConfig", "AutoencoderTask", "preset_defaults", "load_autoencoder"]


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """Everything a training run of the autoencoder needs (saved as ``config.yaml``)."""

    data: str = ""  # canonical zarr store (physical units)
    stats: str = ""  # statistics JSON of `appa data stats`
    preset: str = "tiny"
    channels: tuple[str, ...] = ()  # empty: every channel of the statistics file
    split: SplitConfig = field(default_factory=SplitConfig)
    model: AutoencoderConfig | None = None  # None: the preset's
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, batch_size=16))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup=100))


def preset_defaults(name: str) -> dict:
    from appa_engine.nn.presets import get_preset

    return {"model": to_dict(get_preset(name).autoencoder)}


class AutoencoderTask:
    """The autoencoder as a :class:`~appa_engine.train.loop.Task`."""

    name = "autoencoder"

    def __init__(self, config: AutoencoderTrainConfig):
        from appa_engine.data.channels import ChannelSpec
        from appa_engine.data.windows import open_store, split_by_time

        if not config.data or not config.stats:
            raise ConfigError("training the autoencoder needs data and stats",
                              hint="pass --data STORE.zarr --stats STATS.json")
        self.config = config
        stats = Statistics.load(config.stats)
        self.stats = stats.select(ChannelSpec(config.channels)) if config.channels else stats
        store = open_store(config.data)
        self.grid = Grid.from_arrays(store["latitude"].values, store["longitude"].values)
        self.times = store["time"].values
        self.split = split_by_time(self.times, valid=split_value(config.split.valid),
                                   test=split_value(config.split.test))
        dt = np.diff(self.times).min() if self.times.size > 1 else np.timedelta64(0, "s")
        self.time_step_hours = float(dt / np.timedelta64(1, "h"))
        model = config.model or from_dict(AutoencoderConfig, preset_defaults(config.preset)["model"])
        self.model_config = dataclasses.replace(
            model, in_channels=len(self.stats), shape=self.grid.shape, poles=self.grid.has_poles
        )
        self.weights = torch.as_tensor(self.grid.weights(), dtype=torch.float32)

    def build_model(self) -> nn.Module:
        return Autoencoder(self.model_config)

    def datasets(self):
        from appa_engine.data.windows import StateDataset

        train = StateDataset(self.config.data, stats=self.stats, times=self.split.train)
        valid = StateDataset(self.config.data, stats=self.stats, times=self.split.valid)
        return train, valid

    def loss(self, model: nn.Module, batch, *, step: int) -> torch.Tensor:
        _, (x, _dates) = batch
        device = next(model.parameters()).device
        x = x.to(device, non_blocking=True)
        return area_weighted_mse(model(x).float(), x, self.weights.to(device))

    def package(self, model: nn.Module, ema: nn.Module | None) -> dict:
        return {
            "autoencoder_config": to_dict(self.model_config),
            "stats": self.stats.to_dict(),
            "grid": self.grid.to_dict(),
            "time_step_hours": self.time_step_hours,
            "data": self.config.data,
        }


def load_autoencoder(path, *, device: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """Load the ``model.pt`` (or ``last.pt``) of an autoencoder run; returns (model, checkpoint)."""

    from appa_engine.errors import CheckpointError
    from appa_engine.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, map_location=device)
    if ckpt.get("task") != "autoencoder" or "autoencoder_config" not in ckpt:
        raise CheckpointError(f"'{path}' is not an autoencoder checkpoint of `appa train autoencoder`")
    model = Autoencoder(from_dict(AutoencoderConfig, ckpt["autoencoder_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the weights in '{path}' do not match its config: {str(e).splitlines()[0]}") from e
    return model.to(device).eval(), ckpt
