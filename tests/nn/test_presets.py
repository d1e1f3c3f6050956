"""Tests of the model presets: parameter counts, shapes, and the tiny preset end to end."""

from __future__ import annotations

import pytest
import torch

from appa_engine.config import from_dict, to_dict
from appa_engine.errors import ConfigError
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig
from appa_engine.nn.presets import PRESETS, Preset, count_parameters, get_preset, list_presets
from appa_engine.nn.transformer import SpaceTimeTransformer, TransformerConfig

# Published sizes (Andry et al. 2025, arXiv 2504.18720, and its first version).
PAPER_AUTOENCODER, PAPER_PRIOR = 313e6, 223e6
PAPER_V1_AUTOENCODER, PAPER_V1_PRIOR = 500e6, 1e9


def test_every_preset_counts():
    assert list_presets() == ["tiny", "default", "paper", "paper-v1"]
    for name in list_presets():
        counts = count_parameters(name)
        assert set(counts) == {"encoder", "decoder", "autoencoder", "prior", "total"}
        assert counts["autoencoder"] == counts["encoder"] + counts["decoder"]
        assert counts["total"] == counts["autoencoder"] + counts["prior"]
        assert min(counts.values()) > 0


def test_count_matches_a_real_model():
    preset = get_preset("tiny")
    ae, prior = Autoencoder(preset.autoencoder), SpaceTimeTransformer(preset.prior)
    counts = count_parameters(preset)
    assert counts["autoencoder"] == sum(p.numel() for p in ae.parameters())
    assert counts["prior"] == sum(p.numel() for p in prior.parameters())


def test_paper_sizes_within_5_percent():
    counts = count_parameters("paper")
    assert abs(counts["autoencoder"] / PAPER_AUTOENCODER - 1) < 0.05, counts
    assert abs(counts["prior"] / PAPER_PRIOR - 1) < 0.05, counts
    preset = get_preset("paper")
    assert preset.autoencoder.widths == (64, 128, 256, 512, 768, 1024)
    assert preset.autoencoder.factor == 32
    assert preset.latent_shape == (64, 23, 45)
    assert (preset.prior.width, preset.prior.depth, preset.prior.heads, preset.prior.patch) == (
        1024, 16, 8, (2, 1, 1),
    )
    assert preset.blanket == 24 and preset.channels == 71 and preset.grid == (721, 1440)


def test_paper_v1_sizes_within_10_percent():
    counts = count_parameters("paper-v1")
    assert abs(counts["autoencoder"] / PAPER_V1_AUTOENCODER - 1) < 0.10, counts
    assert abs(counts["prior"] / PAPER_V1_PRIOR - 1) < 0.10, counts


def test_count_parameters_does_not_build_the_big_models():
    """Every parameter is registered on the meta device (1.5B parameters: 6 GB if allocated)."""

    from torch.nn.modules.module import register_module_parameter_registration_hook

    devices = []
    handle = register_module_parameter_registration_hook(lambda module, name, p: devices.append(p.device.type))
    try:
        counts = count_parameters("paper-v1")
    finally:
        handle.remove()
    assert counts["total"] > 10**9 and devices and set(devices) == {"meta"}


def test_default_preset_shapes():
    preset = get_preset("default")
    assert preset.grid == (64, 128) and preset.channels == 29 and preset.blanket == 8
    assert preset.autoencoder.factor == 8
    assert preset.latent_shape == (16, 8, 16)
    assert 8 <= preset.autoencoder.latent_channels <= 16
    assert 128 <= preset.prior.width <= 256 and 4 <= preset.prior.depth <= 6


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError, match="unknown model preset 'huge'") as info:
        get_preset("huge")
    assert "tiny, default, paper, paper-v1" in info.value.hint


def test_preset_checks_that_the_parts_fit():
    ae = AutoencoderConfig(in_channels=8, latent_channels=4)
    with pytest.raises(ConfigError, match="takes 8 channels but the preset has 5"):
        Preset("x", ae, TransformerConfig(in_channels=4), blanket=4, channels=5, grid=(32, 64))
    with pytest.raises(ConfigError, match="prior takes 6 latent channels"):
        Preset("x", ae, TransformerConfig(in_channels=6), blanket=4, channels=8, grid=(32, 64))


def test_presets_round_trip_through_plain_data():
    for preset in PRESETS.values():
        assert from_dict(Preset, to_dict(preset)) == preset


def test_tiny_both_networks_forward_backward():
    """Shapes and finite gradients (bench/train_throughput.py times the presets)."""

    preset = get_preset("tiny")
    ae, prior = Autoencoder(preset.autoencoder), SpaceTimeTransformer(preset.prior)
    with torch.no_grad():  # random values also in the zero-initialised layers
        for p in list(ae.parameters()) + list(prior.parameters()):
            p.normal_(0.0, 0.1)
    B, K, (H, W), C = 2, preset.blanket, preset.grid, preset.channels
    x = torch.randn(B, K, C, H, W)
    z = ae.encode(x)
    assert z.shape == (B, K, *preset.latent_shape)
    x_hat = ae.decode(z)
    assert x_hat.shape == x.shape
    date = torch.randn(B, K, preset.prior.date_features)
    y = prior(z.detach(), torch.randn(B), date=date)
    assert y.shape == z.shape
    ((x_hat - x).square().mean() + y.square().mean()).backward()
    for p in list(ae.parameters()) + list(prior.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
