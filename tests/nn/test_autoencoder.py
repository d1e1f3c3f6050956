"""Tests of the state autoencoder and the area-weighted loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from appa_engine.config import from_dict, to_dict
from appa_engine.data.grid import Grid, area_weights
from appa_engine.errors import ConfigError
from appa_engine.nn.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    _depth_to_space,
    area_weighted_mse,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is faster, and robust on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**kw) -> AutoencoderConfig:
    base = dict(in_channels=3, widths=(8, 16, 16), blocks=(1, 1, 1), latent_channels=4)
    base.update(kw)
    return AutoencoderConfig(**base)


def randomise(module: torch.nn.Module, std: float = 0.1) -> None:
    """Give every parameter random values (zero-initialised layers would hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


@pytest.mark.parametrize(
    "widths, downsample, patch, H, W, expected",
    [
        ((64, 128, 256, 512, 768, 1024), None, 1, 721, 1440, (23, 45)),
        ((8, 32, 64, 128), None, 1, 64, 128, (8, 16)),
        ((16, 64, 128), None, 2, 64, 128, (8, 16)),
        ((8, 16, 16), None, 1, 32, 64, (8, 16)),
        ((8, 16, 16), (True, False), 1, 33, 64, (17, 32)),
        ((8, 16), (False,), 3, 33, 64, (11, 22)),
        ((8,), None, 1, 7, 9, (7, 9)),
    ],
)
def test_latent_shape_formula(widths, downsample, patch, H, W, expected):
    blocks = (1,) * len(widths)
    cfg = AutoencoderConfig(widths=widths, blocks=blocks, downsample=downsample, patch=patch)
    assert cfg.factor == patch * 2 ** sum(cfg.transitions)
    assert cfg.latent_shape(H, W) == expected
    assert cfg.latent_shape(H, W) == (int(np.ceil(H / cfg.factor)), int(np.ceil(W / cfg.factor)))


@pytest.mark.parametrize("upsample, patch", [("nearest", 1), ("shuffle", 1), ("shuffle", 2)])
@pytest.mark.parametrize("H, W, poles", [(16, 32, False), (13, 30, True), (18, 36, False)])
def test_shapes_padding_and_leading_axes(upsample, patch, H, W, poles):
    ae = Autoencoder(small_config(upsample=upsample, poles=poles, patch=patch))
    f = ae.config.factor
    x = torch.randn(2, 3, 3, H, W)  # (B, K, C, H, W)
    z = ae.encode(x)
    h, w = ae.latent_shape(H, W)
    assert z.shape == (2, 3, 4, h, w)
    assert ae.decode(z, shape=(H, W)).shape == x.shape
    assert ae(x).shape == x.shape
    assert ae.decode(z).shape == (2, 3, 3, f * h, f * w)  # no shape: no crop


@pytest.mark.parametrize("upsample, patch", [("nearest", 1), ("shuffle", 2), ("shuffle", 3)])
def test_decoding_some_channels_gives_those_of_the_full_decode(upsample, patch):
    """Only the head depends on the channel: a subset (in any order) is exactly those channels
    of the full decode, crop included, and so is its VJP (the full VJP of a cotangent that is
    zero on the other channels)."""

    ae = Autoencoder(small_config(in_channels=5, upsample=upsample, patch=patch)).double()
    randomise(ae)
    H, W = 13, 30  # not multiples of f: the decode crops
    z = torch.randn(2, 3, 4, *ae.latent_shape(H, W), dtype=torch.float64, requires_grad=True)
    channels = [4, 0, 2]
    full = ae.decode(z, shape=(H, W))
    part = ae.decode(z, shape=(H, W), channels=channels)
    assert part.shape == (2, 3, 3, H, W)
    torch.testing.assert_close(part, full[:, :, channels], rtol=1e-12, atol=1e-12)
    u = torch.randn_like(part)
    (g_part,) = torch.autograd.grad(part, z, u)
    u_full = torch.zeros_like(full)
    u_full[:, :, channels] = u
    (g_full,) = torch.autograd.grad(full, z, u_full)
    torch.testing.assert_close(g_part, g_full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels", [[], [5], [-1], [1, 1]])
def test_decoding_bad_channels_is_refused(channels):
    ae = Autoencoder(small_config(in_channels=5))
    z = torch.randn(1, 4, *ae.latent_shape(16, 32))
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 5\)"):
        ae.decode(z, channels=channels)


def test_decode_crops_to_config_shape_and_checks_sizes():
    ae = Autoencoder(small_config(shape=(13, 30), poles=True))
    z = torch.randn(1, 4, 4, 8)
    assert ae.decode(z).shape == (1, 3, 13, 30)
    with pytest.raises(ValueError, match="do not decode to a 40×30 grid"):
        ae.decode(z, shape=(40, 30))
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        ae.encode(torch.randn(1, 5, 16, 32))
    with pytest.raises(ValueError, match=r"\(\*, 4, h, w\)"):
        ae.decode(torch.randn(1, 3, 4, 8))


@pytest.mark.parametrize("H, W, poles", [(13, 30, True), (14, 28, False), (16, 32, False)])
def test_padding_is_cropped_back_at_the_right_place(H, W, poles):
    # The pad/crop wrapper around exactly invertible inner maps (a 4x4 space-to-depth and its
    # inverse) must give back the input: a wrong crop offset would shift the field.
    ae = Autoencoder(small_config(latent_channels=3 * 16, poles=poles))
    ae.encoder = torch.nn.PixelUnshuffle(4)
    ae.decoder = torch.nn.PixelShuffle(4)
    x = torch.randn(2, 3, H, W)
    z = ae.encode(x)
    assert z.shape == (2, 48, *ae.latent_shape(H, W))
    assert torch.equal(ae.decode(z, shape=(H, W)), x)
    if (H, W) == (13, 30):
        # 3 rows split 1 north / 2 south, across the poles; 2 columns split 1 / 1, circularly.
        padded = ae.decoder(z)
        assert torch.equal(padded[..., 0, 1:-1], x[..., 1, :].roll(15, -1))
        assert torch.equal(padded[..., -1, 1:-1], x[..., -3, :].roll(15, -1))
        assert torch.equal(padded[..., 1:-2, 0], x[..., -1])


@pytest.mark.parametrize("upsample, patch", [("nearest", 1), ("shuffle", 1), ("shuffle", 2)])
def test_longitude_shift_equivariance(upsample, patch):
    # Every layer is periodic in longitude and the 2x2 merges are aligned on whole latent
    # cells, so shifting the input by f columns shifts the latent by one column, exactly.
    ae = Autoencoder(small_config(upsample=upsample, patch=patch)).double()
    f = ae.config.factor
    randomise(ae)
    x = torch.randn(2, 3, 16, 64, dtype=torch.float64)
    z = ae.encode(x)
    assert torch.allclose(ae.encode(x.roll(f, -1)), z.roll(1, -1), atol=1e-10)
    assert torch.allclose(ae.decode(z.roll(3, -1)), ae.decode(z).roll(3 * f, -1), atol=1e-10)
    # Control: a shift by part of a latent cell is not an exact symmetry.
    assert not torch.allclose(ae.encode(x.roll(1, -1)), z, atol=1e-3)


@pytest.mark.parametrize("p", [2, 3])
def test_depth_to_space_is_pixel_shuffle(p):
    x = torch.randn(2, 5 * p * p, 3, 4)
    assert torch.equal(_depth_to_space(x, p), torch.nn.functional.pixel_shuffle(x, p))


def test_latent_bound_is_respected():
    ae = Autoencoder(small_config(latent_bound=2.0))
    with torch.no_grad():
        ae.encoder.head.weight.normal_(0.0, 100.0)
    z = ae.encode(100 * torch.randn(2, 3, 16, 32))
    assert z.abs().max() <= 2.0
    assert z.abs().max() > 1.9  # the clip is active
    unclipped = Autoencoder(small_config(latent_bound=None))
    unclipped.load_state_dict(ae.state_dict())
    assert unclipped.encode(100 * torch.randn(2, 3, 16, 32)).abs().max() > 10


def test_gradients_are_finite_and_checkpointing_gives_the_same():
    torch.manual_seed(1)
    ae = Autoencoder(small_config(dropout=0.0))
    randomise(ae)
    ae_ckpt = Autoencoder(small_config(checkpointing=True))
    ae_ckpt.load_state_dict(ae.state_dict())
    x = torch.randn(2, 3, 16, 32)
    grads = []
    for model in (ae, ae_ckpt):
        model.train()
        model.zero_grad()
        (model(x) - x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g, g_ckpt in zip(*grads):
        assert torch.isfinite(g).all()
        assert torch.allclose(g, g_ckpt, atol=1e-6)
    assert sum(g.abs().sum() for g in grads[0]) > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_decoder_forward_mode_and_double_backward():
    # The guidance differentiates observation operators through the decoder both ways.
    ae = Autoencoder(small_config(patch=2, upsample="shuffle")).double()
    randomise(ae)
    z, v = torch.randn(2, 4, 2, 4, dtype=torch.float64), torch.randn(2, 4, 2, 4, dtype=torch.float64)
    _, jvp = torch.func.jvp(ae.decode, (z,), (v,))
    eps = 1e-6
    fd = (ae.decode(z + eps * v) - ae.decode(z - eps * v)) / (2 * eps)
    assert torch.allclose(jvp, fd, atol=1e-6 * fd.abs().max().item())
    zr = z.clone().requires_grad_(True)
    u = torch.randn_like(jvp)
    (g,) = torch.autograd.grad(ae.decode(zr), zr, u, create_graph=True)
    assert torch.allclose((g * v).sum(), (u * jvp).sum())
    (h,) = torch.autograd.grad((g * v).sum(), zr)
    assert torch.isfinite(h).all() and h.abs().sum() > 0


def brute_force_mse(x_hat, x, w, lam=None, mask=None):
    num = den = 0.0
    B, C, H, W = x.shape
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    if np.isnan(x[b, c, i, j]) or (mask is not None and not mask[b, c, i, j]):
                        continue
                    weight = w[i]
                    error = (x_hat[b, c, i, j] - x[b, c, i, j]) ** 2
                    num += weight * (1.0 if lam is None else lam[c]) * error
                    den += weight
    return num / den


def test_area_weighted_mse_against_brute_force(rng):
    grid = Grid.regular(6, 8)
    w = area_weights(grid.lat)
    x = rng.normal(size=(2, 3, 6, 8))
    x_hat = rng.normal(size=(2, 3, 6, 8))
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 5, :] = np.nan
    lam = np.array([1.0, 2.0, 0.5])
    mask = rng.random(size=x.shape) > 0.3
    xt, xht = torch.from_numpy(x), torch.from_numpy(x_hat).requires_grad_()

    loss = area_weighted_mse(xht, xt, w)
    assert np.isclose(loss.item(), brute_force_mse(x_hat, x, w))
    loss_lam = area_weighted_mse(xht, xt, torch.from_numpy(w), channel_weights=lam)
    assert np.isclose(loss_lam.item(), brute_force_mse(x_hat, x, w, lam))
    loss_mask = area_weighted_mse(xht, xt, w, mask=torch.from_numpy(mask))
    assert np.isclose(loss_mask.item(), brute_force_mse(x_hat, x, w, mask=mask))

    (g,) = torch.autograd.grad(loss, xht)
    assert torch.isfinite(g).all()
    assert g[0, 1, 2, 3] == 0 and torch.all(g[1, 2, 5] == 0)


def test_area_weighted_mse_weights_polar_rows_less():
    w = torch.from_numpy(area_weights(Grid.regular(8, 16).lat))
    x = torch.zeros(1, 1, 8, 16)
    polar, equatorial = x.clone(), x.clone()
    polar[..., 0, :] = 1.0
    equatorial[..., 3, :] = 1.0
    assert area_weighted_mse(polar, x, w) < 0.3 * area_weighted_mse(equatorial, x, w)
    # Uniform weights: the plain MSE.
    y = torch.randn(2, 2, 8, 16)
    assert torch.allclose(area_weighted_mse(y, x.expand_as(y), torch.ones(8)), y.square().mean())


def test_area_weighted_mse_errors():
    x = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="weights must have shape"):
        area_weighted_mse(x, x, torch.ones(5))
    with pytest.raises(ValueError, match="differ in shape"):
        area_weighted_mse(x, x[..., :4], torch.ones(4))
    with pytest.raises(ValueError, match="channel_weights"):
        area_weighted_mse(x, x, torch.ones(4), channel_weights=torch.ones(3))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(blocks=(1, 1)), "blocks must give"),
        (dict(downsample=(True,)), "downsample must have one flag"),
        (dict(latent_bound=0.0), "latent_bound must be positive"),
        (dict(dropout=1.0), r"dropout must lie in \[0, 1\)"),
        (dict(widths=()), "widths must be a non-empty"),
        (dict(shape=(1, 8)), "shape must be"),
        (dict(patch=0), "patch must be a positive integer"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        small_config(**kw)


def test_config_round_trip():
    cfg = small_config(downsample=(True, False), latent_bound=None, shape=(13, 30), poles=True)
    assert from_dict(AutoencoderConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(AutoencoderConfig, {"widht": [8]})


def test_overfits_one_small_batch():
    # About 3 s on an idle core (more on a shared machine).
    torch.manual_seed(0)
    cfg = AutoencoderConfig(in_channels=4, widths=(8, 16), blocks=(1, 1), latent_channels=8)
    ae = Autoencoder(cfg)
    grid = Grid.regular(16, 32)
    lat, lon = np.deg2rad(grid.lat)[:, None], np.deg2rad(grid.lon)[None, :]
    fields = [np.cos(lat) * np.cos(k * lon + k) + 0.5 * np.sin(k * lat) for k in range(1, 5)]
    x = torch.tensor(np.stack(fields), dtype=torch.float32)[None].repeat(2, 1, 1, 1)
    x[1] = x[1].roll(5, -1)
    w = grid.weights()
    optimizer = torch.optim.Adam(ae.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = area_weighted_mse(ae(x), x, w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 50, (losses[0], losses[-1])
