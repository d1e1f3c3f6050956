"""Tests of appa_engine.sampling.trajectory with a real (tiny, random) model: the latent observation
operator decodes only the observed states, and the engine's fused MMPS around the stitched blanket
denoiser equals the formula computed independently (forward-mode JVPs, plain CG, the correction
recomputed after the solve)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.dates import date_features
from appa_engine.data.grid import Grid
from appa_engine.data.stats import Statistics
from appa_engine.diffusion.guidance import MMPSDenoiser
from appa_engine.diffusion.linalg import conjugate_gradient
from appa_engine.model import AppaModel, ModelSpec, latent_spec
from appa_engine.nn.presets import get_preset
from appa_engine.observations.observers import ObservationSet
from appa_engine.sampling.blankets import BlanketLayout
from appa_engine.sampling.trajectory import TrajectoryDenoiser, latent_observation_operator
from appa_engine.tasks.assimilator import compile_for
from appa_engine.tasks.simulate import random_stations

CHANNELS = ("geopotential_500", "geopotential_850", "temperature_500", "temperature_850",
            "u_component_of_wind_500", "u_component_of_wind_850", "2m_temperature",
            "mean_sea_level_pressure")
L = 6  # latent states, blankets of K = 4 starting at 0 and 2
OBSERVED = [1, 4]  # the states the stations report at
DTYPE = torch.float64


@pytest.fixture(scope="module")
def model() -> AppaModel:
    """The tiny preset with random weights (the zero-initialised ones, e.g. the heads and the
    gates, drawn small so that the networks are not trivial)."""

    preset = get_preset("tiny")
    names = ChannelSpec(CHANNELS)
    spec = ModelSpec(autoencoder=preset.autoencoder, prior=preset.prior, channels=names,
                     grid=Grid.regular(*preset.grid), blanket=preset.blanket,
                     time_step_hours=6.0, preset="tiny")
    Z = preset.autoencoder.latent_channels
    torch.manual_seed(0)
    model = AppaModel(spec, Statistics(names, np.zeros(8), np.ones(8)),
                      Statistics(latent_spec(Z), np.zeros(Z), np.ones(Z)))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(DTYPE).eval()


@pytest.fixture(scope="module")
def window(model):
    times = np.datetime64("2020-01-01T00", "ns") + np.arange(L) * np.timedelta64(6, "h")
    stations = random_stations(12, times=times[OBSERVED], seed=3)
    compiled = compile_for(model, ObservationSet([stations]), times)
    dates = torch.as_tensor(date_features(times), dtype=DTYPE)
    denoiser = TrajectoryDenoiser(model.denoiser, BlanketLayout(L, model.blanket), dates=dates)
    return compiled, denoiser


def test_operator_decodes_only_the_observed_states(model, window):
    compiled, _ = window
    assert compiled.state_indices.tolist() == OBSERVED
    A = latent_observation_operator(model, compiled)
    z = torch.randn(2, *model.latent_shape(L)[1:], dtype=DTYPE)

    full = compiled.A(model.decode(z))  # decoding every state
    torch.testing.assert_close(A(z), full)

    z_other = z.clone()
    z_other[:, [0, 2, 3, 5]] = torch.randn_like(z_other[:, [0, 2, 3, 5]])
    torch.testing.assert_close(A(z_other), full)  # unobserved states do not matter
    z_other[:, 4] += 0.1 * torch.randn_like(z_other[:, 4])
    assert (A(z_other) - full).abs().max() > 1e-3  # observed ones do


def reference_mmps(denoiser, A, y, cov_y, z_t, sigma: float, *, iterations: int):
    """x_hat + Sigma_x J^T u, (Sigma_y + J Sigma_x J^T) u = y - A(x_hat) by the plain CG, with J v
    in forward mode and the correction recomputed after the solve."""

    x_hat, D_vjp = torch.func.vjp(lambda z: denoiser(z, sigma), z_t)
    y_hat, A_vjp = torch.func.vjp(A, x_hat)

    def cov_x(v):
        return sigma**2 * D_vjp(v)[0]

    def J(v):
        return torch.func.jvp(A, (x_hat,), (v,))[1]

    def system(u):
        return cov_y * u + J(cov_x(A_vjp(u)[0]))

    u = conjugate_gradient(system, y - y_hat, iterations=iterations)
    return x_hat, x_hat + cov_x(A_vjp(u)[0])


@pytest.mark.parametrize("iterations, sigma", [(1, 1.0), (2, 3.0)])
def test_fused_mmps_on_a_real_model_equals_the_formula(model, window, iterations, sigma):
    compiled, denoiser = window
    A = latent_observation_operator(model, compiled)
    generator = torch.Generator().manual_seed(5)
    y = torch.randn(compiled.N, generator=generator, dtype=DTYPE)
    cov_y = torch.full((compiled.N,), 1e-2, dtype=DTYPE)  # precise: a large correction
    guided = MMPSDenoiser(denoiser, y, A, cov_y, iterations=iterations)

    z_t = sigma * torch.randn(model.latent_shape(L, 1), generator=generator, dtype=DTYPE)
    x_hat, expected = reference_mmps(denoiser, A, y, cov_y, z_t, sigma, iterations=iterations)
    with torch.no_grad():
        estimate = guided(z_t, sigma)
    correction = expected - x_hat
    assert correction.abs().max() > 1e-2
    torch.testing.assert_close(estimate - x_hat, correction, rtol=0,
                               atol=1e-9 * correction.abs().max().item())
