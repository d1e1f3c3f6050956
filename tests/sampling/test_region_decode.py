"""Regional decoding (appa_engine.nn.region) and its use in the latent observation operator.

The receptive-field halo is checked against the empirical receptive field (the support of the
gradient of one latent cell's output block); window decodes against the full decode, values and
Jacobians, for windows inside the grid, across longitude 0 and at both poles; frozen group
statistics against the full decode (values) and a single-layer closed-form bound (Jacobian); the
operator against the globe operator, bit for bit when it falls back to the globe.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.grid import Grid
from appa_engine.data.stats import Statistics
from appa_engine.errors import ConfigError, ObservationError
from appa_engine.model import AppaModel, ModelSpec, latent_spec
from appa_engine.nn.autoencoder import Autoencoder, AutoencoderConfig
from appa_engine.nn.layers import GroupNorm, group_norm_hook, make_norm
from appa_engine.nn.presets import get_preset
from appa_engine.nn.region import (
    GroupStatistics,
    RegionDecoder,
    plan_window,
    receptive_halo,
)
from appa_engine.observations.observers import ObservationSet, Stations
from appa_engine.sampling.trajectory import latent_observation_operator, needed_cells
from appa_engine.tasks.assimilator import compile_for
from appa_engine.tasks.simulate import random_stations

DTYPE = torch.float64
# 4x downsampling: 16x31 latents (odd width: the opposite meridian is interpolated)
GRID = (64, 124)
CONFIGS = {
    "nearest": dict(widths=(8, 16, 16), blocks=(1, 1, 1)),  # tiny preset's layout: halo 6
    "shuffle-patch": dict(widths=(8, 16, 16), blocks=(1, 1, 1), downsample=(True, False),
                          upsample="shuffle", patch=2),  # the T21 default's layout: halo 7
    "uneven": dict(widths=(8, 8, 16), blocks=(2, 0, 1), downsample=(False, True),
                   upsample="nearest", patch=2),
}
# Needed physical cells: inside the grid, across longitude 0, at the north and the south pole.
BOXES = {
    "inside": (slice(29, 35), slice(41, 58)),
    "across-0": (slice(28, 36), slice(118, 124), slice(0, 3)),
    "north-pole": (slice(0, 3), slice(10, 20)),
    "south-pole": (slice(61, 64), slice(100, 110)),
}


def _mask(name: str) -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    rows, *cols = BOXES[name]
    for c in cols:
        mask[rows, c] = True
    return mask


def _autoencoder(norm: str, layout: str = "nearest", *, seed: int = 0) -> Autoencoder:
    """A random autoencoder whose zero-initialised weights (the residual branches' last
    convolutions) are drawn too, so that every layer reaches as far as it can."""

    config = AutoencoderConfig(in_channels=3, latent_channels=4, norm=norm, shape=GRID,
                               **CONFIGS[layout])
    torch.manual_seed(seed)
    ae = Autoencoder(config).to(DTYPE).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.normal_(0.0, 0.3 if p.ndim > 1 else 0.1)
            p.requires_grad_(False)
    return ae


def _latents(ae: Autoencoder, batch: int = 2, *, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = ae.config.latent_shape(*GRID)
    return torch.randn(batch, ae.config.latent_channels, h, w, generator=g, dtype=DTYPE)


# ----------------------------------------------------------------------------- receptive field
def test_receptive_halo_hand_values():
    # The T21 default shipped before (downsample = (True, False)): stem 1 + two blocks at the latent
    # level 2 + 2, then (head 1 + block 2 = 3 cells at 2x) -> ceil(3 / 2) = 2: 7.
    shipped = dataclasses.replace(get_preset("default").autoencoder, downsample=(True, False))
    assert receptive_halo(shipped) == 7
    # The default preset (two halvings): [0, 7] -> [0, 3] -> head + block [-3, 6] -> [-2, 3]
    # -> block [-4, 5] -> [-2, 2] -> block + stem [-5, 5]: 5.
    assert receptive_halo(get_preset("default").autoencoder) == 5
    # paper: 1 + 5 blocks (10) + ceil(14 / 2) = 7 from the finer levels: 18.
    assert receptive_halo(get_preset("tiny").autoencoder) == 6
    assert receptive_halo(get_preset("paper").autoencoder) == 18


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_receptive_halo_is_the_empirical_receptive_field(layout):
    ae = _autoencoder("none", layout)
    f = ae.config.factor
    eta = receptive_halo(ae.config)
    z = _latents(ae, 1).requires_grad_(True)
    x = ae.decoder(z)  # (1, C, f h, f w), before the crop
    i, j = 8, 15  # a latent cell far enough from the poles and the seam
    u = torch.zeros_like(x)
    block = torch.rand(u.shape[1], f, f, dtype=DTYPE) + 0.5
    u[..., f * i : f * (i + 1), f * j : f * (j + 1)] = block
    (g,) = torch.autograd.grad(x, z, u)
    rows, cols = torch.nonzero(g.abs().sum((0, 1)) > 0, as_tuple=True)
    assert rows.min() == i - eta and rows.max() == i + eta
    assert cols.min() == j - eta and cols.max() == j + eta


# ----------------------------------------------------------------------------- window decodes
@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize("box", list(BOXES))
def test_window_decode_equals_the_full_decode_for_local_norms(norm, box):
    ae = _autoencoder(norm, "shuffle-patch" if box == "inside" else "nearest")
    mask = _mask(box)
    window = plan_window(mask, ae.config)
    assert window.exact and not window.is_globe and window.fraction < 0.75
    if box.endswith("pole"):  # across the pole: all longitudes, from the pole row
        assert window.cols == (0, 31)
        assert window.rows[0] == 0 if box == "north-pole" else window.rows[1] == 16
    if box == "across-0":  # the window wraps: it starts west of 0 and ends east of it
        start, count = window.cols
        assert start + count > 31
    decode = RegionDecoder(ae, window)
    assert decode.mode == "exact"
    z = _latents(ae).requires_grad_(True)
    m = torch.as_tensor(mask)
    x_full, x_win = ae.decode(z), decode(z)
    assert x_win.shape == x_full.shape
    torch.testing.assert_close(x_win[..., m], x_full[..., m], rtol=1e-5, atol=1e-5)
    assert (x_win[..., ~m] != 0).any()  # the window holds more than the needed cells...
    outside = torch.zeros_like(m)
    outside[:, :] = True
    outside[window.rows[0] * 4 : window.rows[1] * 4] = False
    assert (x_win[..., outside] == 0).all()  # ...and nothing outside its rows
    # the Jacobian too: one VJP with a cotangent on the needed cells
    u = torch.randn(x_full.shape, dtype=DTYPE) * m
    (g_full,) = torch.autograd.grad(x_full, z, u)
    (g_win,) = torch.autograd.grad(x_win, z, u)
    torch.testing.assert_close(g_win, g_full, rtol=1e-5, atol=1e-8)


def test_a_smaller_halo_or_no_pole_rule_is_not_exact():
    ae = _autoencoder("none")
    z = _latents(ae)
    x_full = ae.decode(z)
    # one cell of halo less: the window decode (taken as exact) differs on the needed cells
    mask = torch.as_tensor(_mask("inside"))
    short = plan_window(mask.numpy(), ae.config, halo=receptive_halo(ae.config) - 1)
    x = RegionDecoder(ae, dataclasses.replace(short, exact=True))(z)
    assert (x - x_full)[..., mask].abs().max() > 1e-4
    # at the pole, the same rows with only the columns around the cells: wrong near the pole
    mask = torch.as_tensor(_mask("north-pole"))
    pole = plan_window(mask.numpy(), ae.config)
    eta = pole.halo
    narrow = dataclasses.replace(pole, cols=((2 - eta) % 31, 3 + 2 * eta), inner_cols=(2, 3))
    x = RegionDecoder(ae, narrow)(z)
    assert (x - x_full)[..., mask].abs().max() > 1e-4


def test_window_that_covers_the_grid_is_the_plain_decode():
    ae = _autoencoder("layer")
    mask = np.zeros(GRID, dtype=bool)
    mask[20:40, :] = True  # all longitudes, and the halo reaches both poles
    window = plan_window(mask, ae.config)
    assert window.is_globe and window.describe() == "globe"
    z = _latents(ae)
    assert torch.equal(RegionDecoder(ae, window)(z), ae.decode(z))


def test_plan_window_errors():
    config = _autoencoder("none").config
    with pytest.raises(ObservationError, match="selects no cell"):
        plan_window(np.zeros(GRID, dtype=bool), config)
    with pytest.raises(ObservationError, match="must be \\(H, W\\)"):
        plan_window(np.ones(8, dtype=bool), config)
    with pytest.raises(ObservationError, match="non-negative"):
        plan_window(_mask("inside"), config, halo=-1)


# ----------------------------------------------------------------------------- group norm
def test_group_norm_without_hook_is_torch_group_norm():
    norm = make_norm("group", 64)
    assert isinstance(norm, GroupNorm) and set(norm.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 64, 5, 7)
    torch.testing.assert_close(norm(x), F.group_norm(x, 32, norm.weight, norm.bias, norm.eps),
                               rtol=0, atol=0)
    with group_norm_hook(lambda module, x: x * 0):
        assert not norm(x).any()
    torch.testing.assert_close(norm(x), F.group_norm(x, 32, norm.weight, norm.bias), rtol=0, atol=0)


@pytest.mark.parametrize("box", ["inside", "across-0", "north-pole"])
def test_frozen_statistics_reproduce_the_full_decode(box):
    ae = _autoencoder("group", "shuffle-patch")
    mask = _mask(box)
    window = plan_window(mask, ae.config)
    z = _latents(ae)
    x_full = ae.decode(z)
    # the window decode itself, normalised with the statistics of the full pass
    stats = GroupStatistics()
    with torch.no_grad(), group_norm_hook(stats.record):
        x_rec = ae.decode(z)
    assert torch.equal(x_rec, x_full)  # recording does not change the pass
    assert len(stats.moments) == sum(isinstance(m, GroupNorm) for m in ae.decoder.modules())
    cols = torch.as_tensor(window.col_indices())
    z_win = z[..., window.rows[0] : window.rows[1], :].index_select(-1, cols)
    with group_norm_hook(stats.frozen):
        x_win = ae.decoder(z_win)
    f = ae.config.factor
    r = (window.inner_rows[0] - window.rows[0]) * f
    n_rows = (window.inner_rows[1] - window.inner_rows[0]) * f
    c = ((window.inner_cols[0] - window.cols[0]) % 31) * f
    n_cols = window.inner_cols[1] * f
    inner_cols = torch.as_tensor(window.col_indices("inner"))
    full_inner = ae.decoder(z)[..., window.inner_rows[0] * f : window.inner_rows[1] * f, :]
    full_inner = full_inner.unflatten(-1, (31, f)).index_select(-2, inner_cols).flatten(-2)
    torch.testing.assert_close(x_win[..., r : r + n_rows, c : c + n_cols], full_inner,
                               rtol=1e-5, atol=1e-5)
    # through RegionDecoder: every cell holds the full decode's value
    decode = RegionDecoder(ae, window)
    assert decode.mode == "approximate"
    torch.testing.assert_close(decode(z), x_full, rtol=1e-5, atol=1e-5)


def test_frozen_statistics_jacobian_error_of_one_group_norm():
    # For one GroupNorm and a cotangent g on m of a group's n entries, the dropped VJP term is
    # -gamma / s (mean(g) + x_hat mean(x_hat g)): relative to the frozen VJP (gamma / s) g its
    # norm is at most sqrt(m / n) + |x_hat on the window| / sqrt(n) (Cauchy-Schwarz).
    torch.manual_seed(0)
    norm = make_norm("group", 8).to(DTYPE)  # 8 groups of 1 channel
    x = torch.randn(1, 8, 32, 64, dtype=DTYPE) * 3 + 1
    window = (slice(None), slice(None), slice(10, 18), slice(20, 36))
    g = torch.zeros_like(x)
    g[window] = torch.rand(1, 8, 8, 16, dtype=DTYPE)  # coherent (all positive): the worst case
    x_true = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(norm(x_true), x_true, g)
    stats = GroupStatistics()
    with torch.no_grad(), group_norm_hook(stats.record):
        norm(x)
    x_frozen = x.clone().requires_grad_(True)
    with group_norm_hook(stats.frozen):
        (frozen,) = torch.autograd.grad(norm(x_frozen), x_frozen, g)
    n, m = 32 * 64, 8 * 16
    x_hat = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), correction=0, keepdim=True)
    for k in range(8):
        err = (true[0, k] - frozen[0, k]).norm() / frozen[0, k].norm()
        bound = math.sqrt(m / n) + x_hat[0, k][window[2:]].norm() / math.sqrt(n)
        assert 0.05 < err <= bound  # not negligible, and within the bound
    # the frozen VJP is the local one: zero outside the window, equal to (gamma / s) g inside
    assert not frozen[..., :10, :].any()


# ----------------------------------------------------------------------------- the operator
CHANNELS = ("geopotential_500", "geopotential_850", "temperature_500", "temperature_850",
            "u_component_of_wind_500", "u_component_of_wind_850", "2m_temperature",
            "mean_sea_level_pressure")
L = 3
TIMES = np.datetime64("2020-01-01T00", "ns") + np.arange(L) * np.timedelta64(6, "h")


def _model(norm: str, grid: tuple[int, int]) -> AppaModel:
    """The tiny preset's networks (random weights), its autoencoder with ``norm``, on ``grid``."""

    preset = get_preset("tiny")
    ae = dataclasses.replace(preset.autoencoder, norm=norm, shape=grid)
    names = ChannelSpec(CHANNELS)
    spec = ModelSpec(autoencoder=ae, prior=preset.prior, channels=names, grid=Grid.regular(*grid),
                     blanket=preset.blanket, time_step_hours=6.0, preset="tiny")
    Z = ae.latent_channels
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = AppaModel(spec, Statistics(names, rng.normal(size=8), rng.uniform(1, 2, size=8)),
                      Statistics(latent_spec(Z), rng.normal(size=Z), rng.uniform(1, 2, size=Z)))
    with torch.no_grad():
        for p in model.autoencoder.parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.05)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(DTYPE).eval()


def _box(n: int = 40, seed: int = 0) -> Stations:
    """Stations in a 30 x 40 degree box across longitude 0 (0-30 N, 20 W-20 E); on these coarse
    test grids a box over Europe (35-65 N) would be within a halo of the pole."""

    rng = np.random.default_rng(seed)
    return Stations(name="box", lon=rng.uniform(-20, 20, n) % 360, lat=rng.uniform(0, 30, n),
                    times=TIMES[[0, 2]], variables=["temperature", "u_component_of_wind"],
                    errors={"temperature": 0.5, "u_component_of_wind": 1.0},
                    levels=[500.0])


def _vjp(A, z, u):
    z = z.clone().requires_grad_(True)
    y = A(z)
    return y.detach(), torch.autograd.grad(y, z, u)[0]


def test_global_stations_fall_back_to_the_globe_bit_for_bit():
    model = _model("layer", (32, 64))
    compiled = compile_for(model, ObservationSet([random_stations(30, times=TIMES, seed=1)]), TIMES)
    A = latent_observation_operator(model, compiled)  # region="auto"
    # random_stations observe 2 channels: only those are decoded (the decoder's last layer).
    assert A.window is None and A.decoding == "globe, 2 of 8 channels"
    z = torch.randn(2, *model.latent_shape(L)[1:], dtype=DTYPE)
    states = torch.as_tensor(compiled.state_indices)
    full = lambda z: compiled.A(model.decode(z[:, states]))  # noqa: E731 (every channel)
    u = torch.randn(2, len(compiled), dtype=DTYPE)
    (y, g), (y_full, g_full) = _vjp(A, z, u), _vjp(full, z, u)
    torch.testing.assert_close(y, y_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm, region, mode", [("layer", "auto", "exact"),
                                                ("none", "auto", "exact"),
                                                ("group", "approximate", "approximate")])
def test_regional_stations_give_the_globe_operator(norm, region, mode):
    model = _model(norm, (128, 256))  # 32 x 64 latents, halo 6
    compiled = compile_for(model, ObservationSet([_box()]), TIMES)
    mask = needed_cells(compiled)
    assert mask.any() and mask.mean() < 0.05
    A = latent_observation_operator(model, compiled, region=region)
    globe = latent_observation_operator(model, compiled, region="globe")
    assert A.window is not None and A.window.fraction < 0.3 and f", {mode}, " in A.decoding
    c0, n = A.window.cols
    assert c0 + n > 64  # the window wraps across longitude 0
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *model.latent_shape(L)[1:], generator=g, dtype=DTYPE)
    u = torch.randn(2, len(compiled), generator=g, dtype=DTYPE)
    y_win, g_win = _vjp(A, z, u)
    y_globe, g_globe = _vjp(globe, z, u)
    torch.testing.assert_close(y_win, y_globe, rtol=1e-5, atol=1e-5)
    err = ((g_win - g_globe).norm() / g_globe.norm()).item()
    if mode == "exact":
        assert err < 1e-10
    else:  # frozen statistics: the VJP misses the spread-out terms through them (4 % here);
        # bound: the one-layer bound sqrt(m / n) with the window's share of the grid as m / n
        # (every layer's cotangent lies in the window)
        assert 1e-3 < err < math.sqrt(A.window.fraction)
    if norm == "group":  # region="auto" does not take the approximation: globe
        assert latent_observation_operator(model, compiled).window is None


def test_operator_options_are_checked():
    model = _model("layer", (32, 64))
    compiled = compile_for(model, ObservationSet([_box()]), TIMES)
    with pytest.raises(ConfigError, match="unknown region mode"):
        latent_observation_operator(model, compiled, region="window")
    with pytest.raises(ConfigError, match="smaller than the decoder's receptive field"):
        latent_observation_operator(model, compiled, halo=2)
    with pytest.raises(ConfigError, match="max_fraction"):
        latent_observation_operator(model, compiled, max_fraction=0)
    A = latent_observation_operator(model, compiled, region="approximate", halo=1)
    assert "halo 1 (truncated)" in A.decoding and ", approximate, 2 of 8 channels" in A.decoding


def test_assimilator_records_the_decoding():
    from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings
    from appa_engine.tasks.assimilator import Assimilator

    model = _model("layer", (128, 256)).float()
    compiled = compile_for(model, ObservationSet([_box(12)]), TIMES)
    obs = compiled.with_values(compiled.to_physical(np.zeros(len(compiled))))
    kw = dict(start=str(TIMES[0]), hours=12, members=1,
              sampler=SamplerSettings(name="ddim", steps=1),
              guidance=GuidanceSettings(method="mmps", iterations=1))
    ds = Assimilator(model, device="cpu").reanalysis(obs, **kw)
    assert ds.attrs["decoding"].startswith("window: latent rows")
    ds = Assimilator(model, device="cpu", region="globe").reanalysis(obs, **kw)
    assert ds.attrs["decoding"] == "globe, 2 of 8 channels"
    with pytest.raises(ConfigError, match="unknown region mode"):
        Assimilator(model, device="cpu", region="everywhere")


def test_approximate_jacobian_of_the_default_model():
    """The trained default package (GroupNorm): stations over Europe, a window of halo 2 with
    frozen statistics. Its exact halo (5) spans most of its 8 x 16 latent grid (and GroupNorm needs
    frozen statistics), so "auto" decodes the globe; the approximation is measured here (VJP 21 %
    for the T42 package), the figure the module docstring quotes."""

    from appa_engine.io.package import load_model

    model = load_model("default")
    for p in model.parameters():
        p.requires_grad_(False)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(2) * np.timedelta64(6, "h")
    rng = np.random.default_rng(0)
    stations = Stations(name="europe", lon=rng.uniform(-10, 30, 60) % 360,
                        lat=rng.uniform(35, 65, 60), times=times[[1]],
                        variables=["2m_temperature", "mean_sea_level_pressure"],
                        errors={"2m_temperature": 0.5, "mean_sea_level_pressure": 50.0})
    compiled = compile_for(model, ObservationSet([stations]), times)
    assert latent_observation_operator(model, compiled).window is None  # auto: the globe
    A = latent_observation_operator(model, compiled, region="approximate", halo=2, max_fraction=1)
    globe = latent_observation_operator(model, compiled, region="globe")
    assert A.window is not None and A.window.fraction < 1
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 2, *model.latent_shape(2)[2:], generator=g)
    u = torch.randn(1, len(compiled), generator=g)
    y_win, g_win = _vjp(A, z, u)
    y_globe, g_globe = _vjp(globe, z, u)
    torch.testing.assert_close(y_win, y_globe, rtol=1e-5, atol=1e-5)  # values: exact
    err = ((g_win - g_globe).norm() / g_globe.norm()).item()
    assert 0.05 < err < math.sqrt(A.window.fraction)  # not small: a real approximation
