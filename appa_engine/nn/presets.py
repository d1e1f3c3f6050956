r"""Named model sizes: the autoencoder and prior configurations that go together.

=========  ==========================================================================
tiny       unit tests: C = 8 on a 32×64 grid, 4× downsampling, a 2-block transformer.
default    the shipped model: a synthetic Held–Suarez planet on the 64×128 T42 grid,
           C = 29 (4 level variables × 6 levels + 5 surface), 6-hourly, K = 8 (two days),
           8× downsampling to 8×16×16 latents, a 4-block width-128 transformer with patch
           (2, 1, 2); sized to run guided sampling on a 2-core CPU.
paper      Appa's published sizes (Andry et al. 2025): 71 ERA5 channels on 721×1440, conv
           autoencoder [64, 128, 256, 512, 768, 1024] with 32× downsampling to
           23×45×64 latents (≈ 313M parameters), ViT of 16 blocks of width 1024, 8 heads,
           patch (2, 1, 1), hourly 24-state blankets (≈ 223M parameters).
paper-v1   the sizes of the first version of the paper: ≈ 500M autoencoder + ≈ 1B prior.
=========  ==========================================================================

What was matched for ``paper``: the widths, 32× downsampling, 64 latent channels, the ViT depth,
width, heads, patch and blanket length are the paper's. The remaining block structure is ours
and was chosen to land on the parameter counts: 3 residual blocks per level and 5 at the
coarsest (1024-wide) level, and an embedding of E = 256 features driving the adaptive-LayerNorm
modulation of each block (see :func:`count_parameters` and ``tests/nn/test_presets.py``).

:func:`count_parameters` builds the networks on PyTorch's ``meta`` device, so even the
billion-parameter presets are counted without allocating memory.

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data
      Assimilation (Andry et al., 2025)
    | https://arxiv.org/abs/2504.18720
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from appa_engine.errors import ConfigError
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig
from appa_engine.nn.transformer import SpaceTimeTransformer, TransformerConfig

__all__ = ["Preset", "PRESETS", "get_preset", "list_presets", "count_parameters"]


@dataclass(frozen=True)
class Preset:
    """An autoencoder and a prior sized to go together, with the data they expect.

    Arguments:
        name: Preset name.
        autoencoder: Autoencoder configuration.
        prior: Transformer configuration of the prior's network :math:`F_\\theta`.
        blanket: Blanket length K (states seen by the prior at once).
        channels: Physical channels C.
        grid: Physical grid ``(H, W)``.
        notes: What the preset is for and what it matches.
    """

    name: str
    autoencoder: AutoencoderConfig
    prior: TransformerConfig
    blanket: int
    channels: int
    grid: tuple[int, int]
    notes: str = ""

    def __post_init__(self):
        if self.autoencoder.in_channels != self.channels:
            raise ConfigError(
                f"preset '{self.name}': the autoencoder takes {self.autoencoder.in_channels} "
                f"channels but the preset has {self.channels}"
            )
        if self.prior.in_channels != self.autoencoder.latent_channels:
            raise ConfigError(
                f"preset '{self.name}': the prior takes {self.prior.in_channels} latent channels "
                f"but the autoencoder makes {self.autoencoder.latent_channels}"
            )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(Z, h, w)`` of one latent state."""
        return (self.autoencoder.latent_channels, *self.autoencoder.latent_shape(*self.grid))


def _tiny() -> Preset:
    C, Z = 8, 4
    return Preset(
        name="tiny",
        autoencoder=AutoencoderConfig(
            in_channels=C, widths=(8, 16, 16), blocks=(1, 1, 1), latent_channels=Z, shape=(32, 64)
        ),
        prior=TransformerConfig(
            in_channels=Z,
            width=32,
            depth=2,
            heads=2,
            patch=(1, 2, 2),
            embedding=32,
            attention="full",
        ),
        blanket=4,
        channels=C,
        grid=(32, 64),
        notes="For unit tests: forward and backward of both networks in a fraction of a second.",
    )


def _default() -> Preset:
    C, Z = 29, 16
    return Preset(
        name="default",
        autoencoder=AutoencoderConfig(
            in_channels=C,
            widths=(16, 64, 128),
            blocks=(1, 1, 1),
            latent_channels=Z,
            upsample="shuffle",
            patch=2,
            shape=(64, 128),
        ),
        prior=TransformerConfig(
            in_channels=Z,
            width=128,
            depth=4,
            heads=4,
            patch=(2, 1, 2),
            embedding=128,
            attention="full",
        ),
        blanket=8,
        channels=C,
        grid=(64, 128),
        notes=(
            "Shipped model: synthetic Held-Suarez planet, T42 grid 64x128, 29 channels "
            "(4 level variables x 6 levels + 5 surface), 6-hourly, K = 8 (two days). "
            "8x downsampling (2x2 patches, then two 2x merges) to 8x16x16 latents; no decoder "
            "layer runs at full resolution. Prior: patch (2, 1, 2), i.e. Appa's (2, 1, 1) with "
            "pairs of latent columns merged, 256 tokens per blanket, full attention: the "
            "transformer's forward and backward are 2.4x cheaper than with (2, 1, 1) on 2 CPU "
            "cores, which keeps the app's first result under its 20 s target (README, "
            "Benchmarks). Sized for guided sampling on a 2-core CPU."
        ),
    )


def _paper() -> Preset:
    C, Z = 71, 64
    return Preset(
        name="paper",
        autoencoder=AutoencoderConfig(
            in_channels=C,
            widths=(64, 128, 256, 512, 768, 1024),
            blocks=(3, 3, 3, 3, 3, 5),
            latent_channels=Z,
            checkpointing=True,
            shape=(721, 1440),
            poles=True,
        ),
        prior=TransformerConfig(
            in_channels=Z,
            width=1024,
            depth=16,
            heads=8,
            patch=(2, 1, 1),
            embedding=256,
            attention="full",
            checkpointing=True,
        ),
        blanket=24,
        channels=C,
        grid=(721, 1440),
        notes=(
            "Appa (Andry et al. 2025): ERA5 0.25 deg, 71 channels, hourly, K = 24. Paper: "
            "autoencoder ~313M, ViT ~223M parameters. Widths, downsampling, latent channels, "
            "ViT depth/width/heads/patch are the paper's; 3 residual blocks per level (5 at the "
            "1024-wide level) and E = 256 modulation features are ours, chosen to match the counts."
        ),
    )


def _paper_v1() -> Preset:
    C, Z = 71, 64
    return Preset(
        name="paper-v1",
        autoencoder=AutoencoderConfig(
            in_channels=C,
            widths=(128, 256, 512, 768, 1024, 1280),
            blocks=(3, 3, 3, 3, 3, 4),
            latent_channels=Z,
            checkpointing=True,
            shape=(721, 1440),
            poles=True,
        ),
        prior=TransformerConfig(
            in_channels=Z,
            width=1536,
            depth=32,
            heads=12,
            patch=(2, 1, 1),
            embedding=256,
            attention="full",
            checkpointing=True,
        ),
        blanket=24,
        channels=C,
        grid=(721, 1440),
        notes=(
            "First version of the Appa paper: ~500M autoencoder + ~1B diffusion model. The block "
            "structure (widths doubled at the fine levels, a 1536-wide 32-block ViT) is ours."
        ),
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (_tiny(), _default(), _paper(), _paper_v1())}


def list_presets() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (raises :class:`~appa_engine.errors.ConfigError` if unknown)."""

    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model preset '{name}'", hint=f"choose one of: {', '.join(PRESETS)}"
        ) from None


def count_parameters(preset: Preset | str) -> dict[str, int]:
    """Parameter counts of a preset's networks, built on the ``meta`` device (no memory used).

    Returns:
        ``{"encoder", "decoder", "autoencoder", "prior", "total"}`` parameter counts.
    """

    if isinstance(preset, str):
        preset = get_preset(preset)

    def n(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        ae = Autoencoder(preset.autoencoder)
        prior = SpaceTimeTransformer(preset.prior)
    counts = {
        "encoder": n(ae.encoder),
        "decoder": n(ae.decoder),
        "autoencoder": n(ae),
        "prior": n(prior),
    }
    counts["total"] = counts["autoencoder"] + counts["prior"]
    return counts
