"""Tests of the shared building blocks: spherical padding, norms, rotary encoding, embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from appa_engine.data.grid import Grid
from appa_engine.nn.layers import (
    MLP,
    Modulation,
    NoiseEmbedding,
    ResBlock,
    RMSNorm,
    SphereConv2d,
    apply_rotary,
    make_norm,
    modulate,
    pad_sphere,
    rotary,
    rotary_angles,
    soft_clip,
)


def smooth_field(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """A smooth function on the sphere, written in Cartesian coordinates (so it can be evaluated
    at 'latitudes' beyond ±90°, which are points over the pole)."""

    phi, lam = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    x, y, z = np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)
    return x + 2 * y - 3 * z + x * y + 2 * z**2 - x * z + 0.5 * y**3


@pytest.mark.parametrize("poles", [False, True])
@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (2, 3, 1, 2), (3, 0, 0, 2)])
def test_pad_sphere_continues_smooth_fields_over_the_pole(poles, pads):
    H, W = (9, 16) if poles else (8, 16)
    grid = Grid.regular(H, W, poles=poles)
    lat, lon = grid.lat, grid.lon
    field = smooth_field(lat[:, None], lon[None, :])
    padded = pad_sphere(torch.from_numpy(field), pads, poles=poles).numpy()

    north, south, west, east = pads
    dlat, dlon = grid.dlat, grid.dlon
    # Extend the coordinates linearly: rows beyond the poles have |latitude| > 90°.
    lat_ext = lat[0] + dlat * np.arange(north, 0, -1)
    lat_ext = np.concatenate([lat_ext, lat, lat[-1] - dlat * np.arange(1, south + 1)])
    lon_ext = np.arange(-west, W + east) * dlon
    expected = smooth_field(lat_ext[:, None], lon_ext[None, :])
    assert padded.shape == (H + north + south, W + west + east)
    np.testing.assert_allclose(padded, expected, atol=1e-12)


def test_pad_sphere_wrong_pole_convention_is_detected():
    # Control: padding a grid with pole rows as if it were cell-centred is wrong, and the test
    # above would see it.
    grid = Grid.regular(9, 16, poles=True)
    field = smooth_field(grid.lat[:, None], grid.lon[None, :])
    padded = pad_sphere(torch.from_numpy(field), (1, 1, 0, 0), poles=False).numpy()
    expected = smooth_field(np.array([90 + grid.dlat]), grid.lon)
    assert np.abs(padded[0] - expected).max() > 0.1


def test_pad_sphere_small_example_by_hand():
    x = torch.arange(24.0).reshape(4, 6)
    y = pad_sphere(x, 1)
    # Row above the north pole: row 0 shifted by 180° (3 columns), then circular columns.
    assert y[0].tolist() == [2, 3, 4, 5, 0, 1, 2, 3]
    assert y[1].tolist() == [5, 0, 1, 2, 3, 4, 5, 0]
    assert y[-1].tolist() == [20, 21, 22, 23, 18, 19, 20, 21]
    z = pad_sphere(x, (1, 0, 0, 0), poles=True)
    assert z[0].tolist() == [9, 10, 11, 6, 7, 8]  # row 1 (not the pole row 0), shifted by 180°


@pytest.mark.parametrize(
    "pads, poles, W",
    [
        ((1, 1, 1, 1), False, 6),
        ((2, 1, 2, 1), True, 6),
        ((0, 0, 2, 2), False, 6),
        ((1, 2, 1, 1), False, 5),
    ],
)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_pad_sphere_derivatives(pads, poles, W):
    x = torch.randn(1, 2, 5, W, dtype=torch.float64, requires_grad=True)

    def f(x):
        return pad_sphere(x, pads, poles=poles)

    assert torch.autograd.gradcheck(f, x, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, x)
    # The backward pass is the adjoint: <pad(x), g> = <x, pad*(g)>.
    g = torch.randn_like(f(x))
    (vjp,) = torch.autograd.grad(f(x), x, g)
    assert torch.allclose((f(x) * g).sum(), (x * vjp).sum())
    # torch.func transforms work too.
    t = torch.randn_like(x)
    _, jvp = torch.func.jvp(f, (x.detach(),), (t,))
    assert torch.equal(jvp, f(t))
    assert torch.equal(torch.func.vmap(f)(x.detach()), f(x.detach()))


def test_pad_sphere_odd_longitudes_interpolate_the_opposite_meridian():
    x = torch.arange(15.0).reshape(3, 5)
    y = pad_sphere(x, (1, 0))
    # λ + 180° lies half-way between columns j + 2 and j + 3.
    assert y[0].tolist() == [(x[0, (j + 2) % 5] + x[0, (j + 3) % 5]).item() / 2 for j in range(5)]
    # A smooth field is matched to second order in the column spacing.
    grid = Grid.regular(8, 45)
    field = smooth_field(grid.lat[:, None], grid.lon[None, :])
    padded = pad_sphere(torch.from_numpy(field), (1, 0)).numpy()
    expected = smooth_field(np.array([90 + grid.dlat / 2]), grid.lon)
    assert np.abs(padded[0] - expected).max() < 0.02
    assert np.abs(padded[0] - expected).max() > 1e-6  # not exact: an interpolation


def test_pad_sphere_errors():
    with pytest.raises(ValueError, match="across the pole"):
        pad_sphere(torch.zeros(4, 6), (5, 0))
    with pytest.raises(ValueError, match="2 or 4 ints"):
        pad_sphere(torch.zeros(4, 6), (1, 1, 1))
    assert pad_sphere(torch.zeros(3, 5), 0).shape == (3, 5)  # no padding: no constraint


def test_sphere_conv_commutes_with_longitude_shifts_and_half_turns():
    conv = SphereConv2d(3, 4, 3).double()
    x = torch.randn(2, 3, 8, 16, dtype=torch.float64)
    y = conv(x)
    assert y.shape == (2, 4, 8, 16)
    assert torch.allclose(conv(x.roll(5, -1)), y.roll(5, -1), atol=1e-12)
    # A half turn of the sphere about an equatorial axis (φ → -φ, λ → c - λ) maps the grid,
    # and the points over each pole, to themselves: with the kernel turned too, it commutes
    # with the spherical convolution. Zero or replicate padding would break this at the poles.
    reflect = SphereConv2d(3, 4, 3).double()
    with torch.no_grad():
        reflect.weight.copy_(conv.weight.flip(-1, -2))
        reflect.bias.copy_(conv.bias)

    def half_turn(t):
        return t.flip(-2).roll(8, -1).flip(-1)

    assert torch.allclose(reflect(half_turn(x)), half_turn(y), atol=1e-12)


def test_sphere_conv_differs_from_zero_padding_only_at_the_poles():
    conv = SphereConv2d(2, 2, 3).double()
    x = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    circular = torch.nn.functional.pad(x, (1, 1, 0, 0), mode="circular")
    ref = torch.nn.functional.conv2d(circular, conv.weight, conv.bias, padding=(1, 0))
    y = conv(x)
    assert torch.allclose(y[..., 1:-1, :], ref[..., 1:-1, :], atol=1e-12)
    assert not torch.allclose(y[..., 0, :], ref[..., 0, :])


def test_make_norm_and_resblock():
    assert isinstance(make_norm("group", 64), torch.nn.GroupNorm)
    assert make_norm("group", 64).num_groups == 32
    assert make_norm("group", 24).num_groups == 8
    x = torch.randn(2, 16, 4, 8)
    y = make_norm("layer", 16)(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 4, 8), atol=1e-5)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("batch", 8)
    block = ResBlock(16)
    assert torch.equal(block(x), x)  # the last convolution starts at zero


def test_rmsnorm_closed_form():
    norm = RMSNorm(8, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(5, 8, dtype=torch.float64)
    g = torch.arange(1.0, 9.0, dtype=torch.float64)
    expected = x / x.pow(2).mean(-1, keepdim=True).sqrt() * g
    assert torch.allclose(norm(x), expected, atol=1e-12)
    assert torch.allclose(norm(7.0 * x), norm(x), atol=1e-12)


def test_apply_rotary_matches_rotation_matrices():
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    angles = torch.randn(5, 3, dtype=torch.float64)
    y = apply_rotary(x, rotary(angles))
    for n in range(5):
        for i in range(3):
            c, s = math.cos(angles[n, i]), math.sin(angles[n, i])
            a, b = x[:, n, 2 * i], x[:, n, 2 * i + 1]
            assert torch.allclose(y[:, n, 2 * i], a * c - b * s, atol=1e-12)
            assert torch.allclose(y[:, n, 2 * i + 1], a * s + b * c, atol=1e-12)


def test_rotary_scores_depend_on_relative_position_and_wrap_in_longitude():
    shape, pairs = (3, 4, 6), (2, 2, 4)
    angles = rotary_angles(shape, pairs, periodic=(False, False, True), dtype=torch.float64)
    assert angles.shape == (3 * 4 * 6, 8)
    rot = rotary(angles).reshape(*shape, 8)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def score(i, j):
        q_i = apply_rotary(q[None], rot[i].reshape(1, -1))
        k_j = apply_rotary(k[None], rot[j].reshape(1, -1))
        return (q_i * k_j).sum()

    # Same offset, different absolute positions: same score.
    assert torch.allclose(score((0, 1, 2), (1, 3, 4)), score((1, 0, 0), (2, 2, 2)), atol=1e-12)
    # Longitude is periodic: an offset of +5 equals -1 on 6 positions, exactly.
    assert torch.allclose(score((0, 0, 5), (0, 0, 0)), score((0, 0, 0), (0, 0, 1)), atol=1e-12)
    # Latitude is not periodic: the same wrap does not hold there.
    assert not torch.allclose(score((0, 3, 0), (0, 0, 0)), score((0, 0, 0), (0, 1, 0)), atol=1e-6)
    # Periodic angles are integer harmonics 2π m j / n.
    lon = rotary_angles((6,), (4,), periodic=(True,), dtype=torch.float64)
    expected = 2 * math.pi * ((torch.arange(6)[:, None] * torch.arange(1, 5)[None]) % 6) / 6
    assert torch.allclose(lon, expected.double())


def test_modulation_and_modulate():
    mod = Modulation(5, 3, chunks=3, zero=(2,))
    shift, scale, gate = mod(torch.randn(4, 5))
    assert shift.shape == scale.shape == gate.shape == (4, 3)
    assert torch.equal(gate, torch.zeros(4, 3))
    x = torch.randn(4, 3)
    assert torch.allclose(modulate(x, shift, scale), x * (1 + scale) + shift)


def test_noise_embedding_separates_noise_levels():
    emb = NoiseEmbedding(16, fourier=8, omega_min=0.5, omega_max=50.0)
    assert torch.allclose(emb.omega, torch.tensor([0.5, 2.3208, 10.7722, 50.0]), rtol=1e-4)
    e = emb(torch.tensor([-1.0, 0.0, 1.0]))
    assert e.shape == (3, 16)
    assert (e[0] - e[2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="even"):
        NoiseEmbedding(16, fourier=7)


def test_mlp_shapes():
    assert MLP(4, 8)(torch.randn(2, 4)).shape == (2, 4)
    assert MLP(4, 8, 3)(torch.randn(2, 4)).shape == (2, 3)


def test_soft_clip_bound_and_identity_near_zero():
    z = torch.tensor(
        [-1e30, -1e6, -50.0, -5.0, -0.01, 0.0, 0.01, 5.0, 50.0, 1e6, 1e30], dtype=torch.float64
    )
    y = soft_clip(z, 5.0)
    assert torch.all(y.abs() <= 5.0)
    assert torch.all(torch.diff(y) >= 0)
    assert torch.allclose(y[[0, -1]], torch.tensor([-5.0, 5.0], dtype=torch.float64))
    assert torch.allclose(y, -soft_clip(-z, 5.0))
    small = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64)
    assert torch.all((soft_clip(small, 5.0) - small).abs() <= small.abs() ** 3 / (2 * 25) + 1e-15)
    assert torch.allclose(soft_clip(torch.tensor(5.0), 5.0), torch.tensor(5.0 / math.sqrt(2)))
    assert soft_clip(z, None) is z
