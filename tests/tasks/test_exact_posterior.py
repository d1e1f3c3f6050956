r"""Exact-posterior tests of MMPS guidance through the real compiled observation operators.

A linear-Gaussian oracle on a real grid. The prior is Gaussian over standardised trajectories
:math:`x \in \mathbb{R}^{T \times C \times H \times W}` (``Grid.regular(6, 12)``, channels
``2m_temperature`` and ``temperature_850``, T = 2 states 6 h apart, n = 288), smooth in space
(squared exponential in the *chordal* distance between cells, positive definite on the sphere,
unlike a squared exponential in great-circle distance), AR(1) in time and correlated across
channels, plus a nugget:

.. math:: \Sigma = (1 - \nu) \, R_\text{time} \otimes (S R_\text{chan} S) \otimes
          K_\text{space} + \nu I, \qquad S = \operatorname{diag}(1, 0.7), \quad \nu = 0.05 .

Observations are compiled by :func:`~appa_engine.observations.compile.compile_observations`
with non-trivial model statistics (mean 285/270 K, std 12/6 K): the sampler works in standardised
units, and ``y`` and ``cov_y`` come out of the compiler's own conversion of values simulated by
:meth:`CompiledObservations.simulate` in physical units. Every observer used here is linear, so
its matrix is the compiled :math:`\mathcal{A}` applied to the identity basis, and the oracle is
the Kalman update of :mod:`appa_engine.diffusion.gaussian`. Cases:

- stations at true off-grid coordinates (near the dateline, across the 0°/360° seam, poleward of
  the outermost grid rows in both hemispheres), at a time between the model states;
- a polar orbiter (:class:`CircularOrbit`, 800 km, 75°, 10° field of view) and a track swath;
- latent observations: a Gaussian prior on a latent trajectory :math:`z`, a fixed linear
  decoder :math:`x = D z` (per state: smooth bumps mixed across channels), stations observed
  through the decoder and a :class:`LatentObserver` on :math:`z` itself;
- a blanket-stitched trajectory (L = 6, K = 4) through :class:`TrajectoryDenoiser`.

**Exactness.** With a converged solver the guided denoiser must equal the closed-form
:math:`\mathbb{E}[x \mid x_t, y]` at :math:`\sigma \in \{10^{-2}, \dots, 10^2\}` to ``rtol = 1e-6``
(measured: ~1e-15 relative). GMRES converges in N iterations; CG, which loses orthogonality in
floating point, gets 2N (with N it is off by up to 7e-5 at large :math:`\sigma`). One iteration
misses 27-39 % of the update.

**Monte-Carlo tolerances.** The ODE sampler ends at :math:`\sigma_{\min}`, so an ensemble of
:math:`M` members targets :math:`\mathcal{N}(m, P_\ast)`, :math:`P_\ast = P + \sigma_{\min}^2 I
= L L^\top`. Members are whitened, :math:`w = L^{-1} (x - m)`, which must be
:math:`\mathcal{N}(0, I_n)`. Each statistic must lie within 5 standard errors:

- whitened mean: each component has standard error :math:`1/\sqrt{M}`, so
  :math:`\max_i |\bar w_i| \sqrt{M} < 5` (false-alarm rate below :math:`n \cdot 6 \cdot 10^{-7}`),
  and :math:`M \|\bar w\|^2 \sim \chi^2_n`, so :math:`|M \|\bar w\|^2 - n| < 5 \sqrt{2n}`;
- observed subspace (the k = 8 directions in which the prior is widest relative to the posterior:
  where wrong guidance shows first): every entry of the whitened :math:`k \times k` covariance
  :math:`\hat C_k` has standard error at most :math:`\sqrt{2/M}`, its mean diagonal
  :math:`\sqrt{2/(kM)}`;
- total variance: :math:`\operatorname{tr} \hat\Sigma / \operatorname{tr} P_\ast` has standard
  error :math:`\sqrt{2 \operatorname{tr}(P_\ast^2)/M} / \operatorname{tr} P_\ast`.

The sampler's own discretisation error must stay below these bounds: observation errors are
chosen so that posterior variances stay >= 0.035, where the linear multistep sampler with 24 steps
is within ~4 % in scale (measured on the exact flow map). The same statistics, evaluated in
closed form for an ensemble drawn from the *prior*, must exceed the bounds at least threefold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from appa_engine.data.grid import Grid
from appa_engine.diffusion.gaussian import GaussianDenoiser, kalman_posterior
from appa_engine.diffusion.guidance import MMPSDenoiser
from appa_engine.diffusion.samplers import LMSSampler
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.observations.compile import CompiledObservations, compile_observations
from appa_engine.observations.observers import (
    LatentObserver,
    ObservationSet,
    SatelliteSwath,
    Stations,
    TrackSwath,
    time_range,
)
from appa_engine.observations.orbits import CircularOrbit
from appa_engine.sampling.blankets import BlanketLayout
from appa_engine.sampling.trajectory import TrajectoryDenoiser

F64 = torch.float64
GRID = Grid.regular(6, 12)  # rows at ±75, ±45, ±15°; columns every 30° from 0°
H, W = GRID.shape
CHANNELS = ("2m_temperature", "temperature_850")
C = len(CHANNELS)
MEAN = np.array([285.0, 270.0])  # model statistics (K): standardised = (physical - MEAN) / STD
STD = np.array([12.0, 6.0])
TIMES = time_range("2021-01-01T00", "2021-01-01T06", "6h")  # T = 2 states
T = TIMES.size
LATENT_SHAPE = (2, 2, 2)  # (Z, h, w) of one latent state
SCHEDULE = RectifiedSchedule()
SIGMAS = [1e-2, 1e-1, 1.0, 1e1, 1e2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These problems are tiny (n <= 288): on a shared 2-core machine, intra-op threads only add
    # contention (measured 3-5x slower with 2 threads under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float, atol: float = 0.0
) -> None:
    """|actual - expected| <= atol + rtol |expected| element-wise (like torch.testing.assert_close,
    whose first call imports torch.distributed, seconds on a loaded machine)."""

    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    worst = (error - bound).argmax()
    assert bool((error <= bound).all()), (
        f"max error {error.max().item():.3e}; worst entry relative to its bound: "
        f"{error.flatten()[worst].item():.3e} > {bound.flatten()[worst].item():.3e}"
    )


# ----------------------------------------------------------------------------- priors, decoder


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], -1)


def _cells() -> np.ndarray:
    """Unit vectors of the grid cells, row-major as in x, shape (H W, 3)."""

    lat, lon = np.meshgrid(GRID.lat, GRID.lon, indexing="ij")
    return _unit_vectors(lat.reshape(-1), lon.reshape(-1))


def _ar1(length: int, rho: float) -> np.ndarray:
    return rho ** np.abs(np.subtract.outer(np.arange(length), np.arange(length)))


def smooth_prior(
    generator: torch.Generator,
    *,
    length_deg: float = 40.0,
    rho: float = 0.7,
    corr: float = 0.6,
    nugget: float = 0.05,
) -> GaussianDenoiser:
    """The Gaussian prior over flattened standardised trajectories (T, C, H, W)."""

    u = _cells()
    chord2 = ((u[:, None] - u[None]) ** 2).sum(-1)
    ell = 2 * math.sin(math.radians(length_deg) / 2)  # chord of length_deg
    K_space = np.exp(-chord2 / (2 * ell**2))
    scale = np.array([1.0, 0.7])
    R_chan = (np.eye(C) + corr * (1 - np.eye(C))) * np.outer(scale, scale)
    cov = (1 - nugget) * np.kron(np.kron(_ar1(T, rho), R_chan), K_space)
    cov = cov + nugget * np.eye(cov.shape[0])
    mean = 0.3 * torch.randn(cov.shape[0], generator=generator, dtype=F64)
    return GaussianDenoiser(mean, torch.as_tensor(cov))


def latent_prior(length: int, generator: torch.Generator) -> GaussianDenoiser:
    """A Gaussian prior over flattened latent trajectories (length, Z, h, w), AR(1) in time."""

    m = int(np.prod(LATENT_SHAPE))
    G = torch.randn(m, m, generator=generator, dtype=F64)
    S = G @ G.T / m + 0.2 * torch.eye(m, dtype=F64)
    mean = 0.2 * torch.randn(length * m, generator=generator, dtype=F64)
    return GaussianDenoiser(mean, torch.kron(torch.as_tensor(_ar1(length, 0.6)), S))


def linear_decoder(generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear decoder ``(B, L, Z, h, w) -> (B, L, C, H, W)``, state by state: each latent cell
    is a smooth bump on the globe, mixed across the output channels by random weights."""

    Z, h, w = LATENT_SHAPE
    lat = 90 - (np.arange(h) + 0.5) * 180 / h
    lon = (np.arange(w) + 0.5) * 360 / w
    centres = _unit_vectors(*[a.reshape(-1) for a in np.meshgrid(lat, lon, indexing="ij")])
    chord2 = ((_cells()[:, None] - centres[None]) ** 2).sum(-1)  # (H W, h w)
    bumps = torch.as_tensor(np.exp(-chord2 / (2 * 0.8**2)))
    mix = torch.randn(C, Z, generator=generator, dtype=F64) / math.sqrt(Z)
    D = torch.einsum("cz,pq->cpzq", mix, bumps).reshape(C * H * W, Z * h * w)
    D = D / D.norm(dim=1).mean()  # decoded states of order one

    def decode(z: torch.Tensor) -> torch.Tensor:
        return (z.flatten(2) @ D.T.to(z)).unflatten(2, (C, H, W))

    return decode


# ----------------------------------------------------------------------------- observers

#: Off-grid stations: ordinary, dateline, 0/360 seam, north and south of the outermost rows.
STATION_LON = np.array([-179.3, 355.0, 120.0, 47.3, 10.0, 250.0])
STATION_LAT = np.array([-12.7, 3.3, 83.0, -86.0, 45.2, 61.0])
STATION_ERRORS = {"2m_temperature": 3.0, "temperature_850": 2.0}  # K: 0.25, 0.33 standardised


def stations(
    count: int = 6, *, times=("2021-01-01T01:30", "2021-01-01T06"), variables=CHANNELS
) -> Stations:
    return Stations(
        name="synop",
        lon=STATION_LON[:count],
        lat=STATION_LAT[:count],
        times=list(times),
        variables=list(variables),
        errors={v: STATION_ERRORS[v] for v in variables},
    )


def satellite(samples_per_hour: float = 4) -> SatelliteSwath:
    return SatelliteSwath(
        name="polar",
        orbit=CircularOrbit(800, 75, raan_deg=45.0),
        fov_radius_deg=10,
        samples_per_hour=samples_per_hour,
        start="2021-01-01T00",
        end="2021-01-01T06",
        variables=["temperature_850"],
        errors=2.0,
    )


def track() -> TrackSwath:
    return TrackSwath(
        name="track",
        lon=[300.0, 340.0, 20.0],
        lat=[-10.0, 10.0, 30.0],
        width_deg=40.0,
        times=["2021-01-01T04"],  # between the states: weights 1/3 and 2/3
        variables=["2m_temperature"],
        errors=3.0,
    )


def compile_(observers, *, times=TIMES, latent_shape=None) -> CompiledObservations:
    return compile_observations(
        ObservationSet(tuple(observers)),
        grid=GRID,
        channels=CHANNELS,
        times=times,
        mean=MEAN,
        std=STD,
        latent_shape=latent_shape,
    )


# ----------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """A linear-Gaussian assimilation problem through a compiled operator."""

    prior: GaussianDenoiser
    shape: tuple[int, ...]  # sample shape: (T, C, H, W), or latent (T, Z, h, w)
    A: Callable[[torch.Tensor], torch.Tensor]  # (B, *shape) -> (B, N)
    A_matrix: torch.Tensor  # (N, n)
    y: torch.Tensor  # (N,)
    cov_y: torch.Tensor  # (N,)
    truth: torch.Tensor  # (*shape,)

    @property
    def N(self) -> int:
        return self.A_matrix.shape[0]


def operator_matrix(A: Callable, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix (N, n) of a linear A: its images of the identity basis."""

    n = int(np.prod(shape))
    with torch.no_grad():
        return A(torch.eye(n, dtype=F64).reshape(n, *shape)).T.contiguous()


def draw(prior: GaussianDenoiser, shape, generator: torch.Generator) -> torch.Tensor:
    L = torch.linalg.cholesky(prior.cov)
    return (prior.mean + L @ torch.randn(L.shape[0], generator=generator, dtype=F64)).reshape(shape)


def observe(compiled: CompiledObservations, truth_x, *, truth_z=None, times=TIMES):
    """``y`` and ``cov_y`` of a truth: simulated in physical units (noise seed 7), stored in the
    observers and compiled again."""

    values = compiled.simulate(truth_x, truth_z=truth_z, generator=7)
    again = compile_(compiled.with_values(values), times=times, latent_shape=compiled.latent_shape)
    return again.y, again.cov_y


def physical_problem(observers, *, seed: int = 0) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    shape = (T, C, H, W)
    prior = smooth_prior(generator)
    compiled = compile_(observers)
    truth = draw(prior, shape, generator)
    y, cov_y = observe(compiled, truth)
    # The compiled A acts on (B, T, C, H, W), the sample shape, directly.
    return Problem(prior, shape, compiled.A, operator_matrix(compiled.A, shape), y, cov_y, truth)


def latent_problem(
    station_count: int, *, station_times=("2021-01-01T01:30",), seed: int = 0
) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    shape = (T, *LATENT_SHAPE)
    prior = latent_prior(T, generator)
    decode = linear_decoder(generator)
    observers = [
        stations(station_count, times=station_times),
        LatentObserver(name="latent", times=["2021-01-01T03"], errors=0.3),
    ]
    compiled = compile_(observers, latent_shape=LATENT_SHAPE)

    def A(z: torch.Tensor) -> torch.Tensor:  # (B, T, Z, h, w) -> (B, N)
        return compiled.A(decode(z), z=z)

    truth = draw(prior, shape, generator)
    y, cov_y = observe(compiled, decode(truth[None])[0], truth_z=truth)
    return Problem(prior, shape, A, operator_matrix(A, shape), y, cov_y, truth)


KINDS = ("stations", "swaths", "latent")


@pytest.fixture(scope="module")
def problems() -> dict[str, Problem]:
    return {
        "stations": physical_problem([stations()]),  # N = 6 stations x 2 times x 2 channels
        "swaths": physical_problem([satellite(), track()]),
        "latent": latent_problem(3),  # N = 3 stations x 2 channels (decoded) + 8 latent
    }


# ----------------------------------------------------------------------------- operators


def test_operators_are_linear_and_y_is_the_standardised_simulation(problems):
    generator = torch.Generator().manual_seed(1)
    for p in problems.values():
        x = torch.randn(3, *p.shape, generator=generator, dtype=F64)
        assert_close(p.A(x), x.flatten(1) @ p.A_matrix.T, rtol=1e-12, atol=1e-12)

        # y = A(truth) + sqrt(cov_y) eps, with the simulator's own noise draw (seed 7): the
        # physical round trip (to_physical, errors in K, to_standardised) is exact.
        eps = torch.randn(p.N, generator=torch.Generator().manual_seed(7), dtype=F64)
        expected = p.A_matrix @ p.truth.reshape(-1) + p.cov_y.sqrt() * eps
        assert_close(p.y, expected, rtol=1e-10, atol=1e-10)

    # Stations: interpolation weights sum to one; rows are (time, station, channel).
    p = problems["stations"]
    assert_close(p.A_matrix.sum(1), torch.ones(p.N, dtype=F64), rtol=1e-12)
    errors = [STATION_ERRORS[c] / s for c, s in zip(CHANNELS, STD)]  # standardised
    assert_close(p.cov_y, torch.tensor(errors * (p.N // C), dtype=F64) ** 2, rtol=1e-12)
    support = (p.A_matrix != 0).reshape(2, len(STATION_LON), C, T, C, H, W)

    def columns(station: int, channel: int = 0) -> set[int]:
        cells = support[0, station, channel].any(dim=0)[channel]  # (H, W) at 01:30
        return set(torch.nonzero(cells)[:, 1].tolist())

    assert columns(0) == {6, 7}  # 180.7°E lies between the 180° and 210° columns
    assert columns(1) == {11, 0}  # 355°E wraps between 330° and 0°
    assert support[0, 2, 0, 0, 0, 0].all()  # 83°N: pole rule, the whole 75°N row
    assert support[0, 3, 1, 0, 1, -1].all()  # 86°S, temperature_850: the whole 75°S row
    assert support[0, 4, 0, :, 0].any(dim=(1, 2)).tolist() == [True, True]  # 01:30: both states
    assert not support[0, 4, 0, :, 1].any()  # 2m_temperature rows never touch temperature_850
    assert not support[1, 4, 0, 0].any()  # 06:00 is the second state only


# ----------------------------------------------------------------------------- guided denoiser


@pytest.mark.parametrize("solver", ["cg", "gmres"])
@pytest.mark.parametrize("kind", KINDS)
def test_mmps_equals_the_closed_form_posterior_mean(problems, kind, solver):
    # Once the solver has converged, MMPS is E[x | x_t, y] exactly. GMRES (explicitly
    # orthogonalised) converges in N iterations; CG loses orthogonality in floating point and
    # needs a few more (with N: relative errors up to 7e-5 at sigma >= 10 here), so it gets 2N.
    p = problems[kind]
    generator = torch.Generator().manual_seed(2)
    iterations = p.N if solver == "gmres" else 2 * p.N
    guided = MMPSDenoiser(p.prior, p.y, p.A, p.cov_y, iterations=iterations, solver=solver)

    for sigma in SIGMAS:
        x_t = p.truth + sigma * torch.randn(2, *p.shape, generator=generator, dtype=F64)
        expected, _ = p.prior.posterior(x_t, sigma, p.y, p.A_matrix, p.cov_y)
        estimate = guided(x_t, sigma)

        assert estimate.shape == x_t.shape
        scale = expected.abs().max().item()
        assert_close(estimate, expected, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_one_iteration_is_not_exact(problems, kind):
    # Shows the test above can fail: one CG iteration misses a sizeable part of the update.
    p = problems[kind]
    x_t = p.truth + torch.randn(2, *p.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    expected, _ = p.prior.posterior(x_t, 1.0, p.y, p.A_matrix, p.cov_y)
    estimate = MMPSDenoiser(p.prior, p.y, p.A, p.cov_y, iterations=1)(x_t, 1.0)

    update = expected - p.prior(x_t, 1.0)
    assert (estimate - expected).norm() > 0.05 * update.norm()


# ----------------------------------------------------------------------------- ensembles


def ensemble_statistics(
    p: Problem, x_0: torch.Tensor, *, k: int = 8
) -> tuple[dict[str, float], dict[str, float]]:
    """Statistics of an ensemble x_0 (M, *shape) against the Kalman posterior, each divided by its
    bound (5 standard errors, see the module docstring): all must be < 1. Also returns the same
    ratios, in closed form, for an ensemble drawn from the prior (they must be large)."""

    M, n = x_0.shape[0], p.A_matrix.shape[1]
    m, P = kalman_posterior(p.prior.mean, p.prior.cov, p.A_matrix, p.y, p.cov_y)
    P = P + SCHEDULE.sigma_min**2 * torch.eye(n, dtype=F64)
    L = torch.linalg.cholesky(P)

    def whiten(v: torch.Tensor) -> torch.Tensor:  # L^-1 v, (n, ...) -> (n, ...)
        return torch.linalg.solve_triangular(L, v, upper=False)

    # Observed subspace: top-k eigenvectors of the whitened prior covariance L^-1 Sigma L^-T.
    prior_w = whiten(whiten(p.prior.cov).T)
    lam, U = torch.linalg.eigh((prior_w + prior_w.T) / 2)
    lam, U = lam[-k:], U[:, -k:]

    x = x_0.flatten(1)
    w = whiten((x - m).T).T  # (M, n)
    w_bar, cov_k = w.mean(0), torch.cov((w @ U).T)
    se_total = math.sqrt(2 * (P @ P).trace().item() / M) / P.trace().item()
    stats = {
        "mean max": w_bar.abs().max().item() * math.sqrt(M) / 5,
        "mean chi2": abs(M * w_bar.square().sum().item() - n) / (5 * math.sqrt(2 * n)),
        "observed cov": (cov_k - torch.eye(k, dtype=F64)).abs().max().item()
        / (5 * math.sqrt(2 / M)),
        "observed trace": abs(cov_k.trace().item() / k - 1) / (5 * math.sqrt(2 / (k * M))),
        "total variance": abs(torch.cov(x.T).trace().item() / P.trace().item() - 1)
        / (5 * se_total),
    }
    # An ensemble from the prior: whitened mean d = L^-1 (mu - m), observed covariance diag(lam).
    d = whiten((p.prior.mean - m)[:, None])[:, 0]
    prior_stats = {
        "mean max": d.abs().max().item() * math.sqrt(M) / 5,
        "observed cov": (lam - 1).abs().max().item() / (5 * math.sqrt(2 / M)),
        "observed trace": abs(lam.mean().item() - 1) / (5 * math.sqrt(2 / (k * M))),
    }
    return stats, prior_stats


ENSEMBLES = {
    # N = 3 stations (dateline, seam, north cap) at 03:00 on 2m_temperature + 5 swath cells on
    # temperature_850 (the orbiter sampled twice an hour).
    "stations+swath": lambda: physical_problem(
        [stations(3, times=["2021-01-01T03"], variables=["2m_temperature"]), satellite(2)]
    ),
    # N = 2 stations x 2 channels through the decoder + 8 latent values.
    "latent": lambda: latent_problem(2),
}


def _sample(p: Problem, sampler: type, *, members: int, steps: int, seed: int = 5) -> torch.Tensor:
    """``members`` posterior samples, shape (M, *shape), in one batch."""

    guided = MMPSDenoiser(p.prior, p.y, p.A, p.cov_y, iterations=p.N, solver="gmres")
    sampler = sampler(guided, schedule=SCHEDULE, steps=steps)
    generator = torch.Generator().manual_seed(seed)
    x_1 = sampler.init((members, *p.shape), generator=generator, dtype=F64)
    return sampler(x_1)


def _check(stats: dict[str, float], prior_stats: dict[str, float]) -> None:
    show = lambda d: ", ".join(f"{k} {v:.2f}" for k, v in d.items())  # noqa: E731
    assert all(v < 1 for v in stats.values()), f"ensemble / bound: {show(stats)}"
    assert all(v > 3 for v in prior_stats.values()), f"prior / bound: {show(prior_stats)}"


@pytest.mark.parametrize("kind", ENSEMBLES)
def test_guided_ensemble_matches_the_kalman_posterior(kind):
    # Appa's prior sampler (third-order linear multistep), 24 steps, 300 members in one batch.
    # Its discretisation error (a relative scale error of at most ~4% for the posterior
    # variances here, >= 0.035) stays below these Monte-Carlo bounds.
    p = ENSEMBLES[kind]()
    x_0 = _sample(p, LMSSampler, members=300, steps=24)

    _check(*ensemble_statistics(p, x_0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENSEMBLES)
def test_large_ensemble_matches_the_kalman_posterior(kind):
    # 2000 members (bounds 2.6x tighter), LMS with 64 steps: relative scale errors <= 0.8% over
    # the posterior spectrum. (Heun with 64 steps on this time grid overshoots the largest
    # posterior mode, variance ~20, by ~4.7%: total variance +3.4%, just over its bound here.)
    p = ENSEMBLES[kind]()
    x_0 = _sample(p, LMSSampler, members=2000, steps=64)

    _check(*ensemble_statistics(p, x_0))


# ----------------------------------------------------------------------------- blankets


def test_mmps_through_stitched_blankets():
    # L = 6 latent states, blankets of K = 4 (starts 0 and 2), a Gaussian blanket prior. The
    # stitched denoiser fold(D(unfold(z_t))) is linear but not the exact trajectory denoiser and
    # its Jacobian J is not symmetric, so MMPS computes x_hat + sigma^2 J^T A^T u with
    # (Sigma_y + sigma^2 A J^T A^T) u = y - A x_hat: checked against that materialised formula
    # (GMRES, N iterations), and the guided estimate must fit y better than x_hat.
    generator = torch.Generator().manual_seed(4)
    L_states, K = 6, 4
    times = time_range("2021-01-01T00", "2021-01-02T06", "6h")
    shape = (L_states, *LATENT_SHAPE)
    layout = BlanketLayout(L_states, K)
    blanket_prior = latent_prior(K, generator)
    denoiser = TrajectoryDenoiser(blanket_prior, layout, dates=torch.zeros(L_states, 4, dtype=F64))
    decode = linear_decoder(generator)

    observers = [
        stations(3, times=["2021-01-01T03", "2021-01-02T03"]),
        LatentObserver(name="latent", times=["2021-01-01T12"], errors=0.3),
    ]
    compiled = compile_(observers, times=times, latent_shape=LATENT_SHAPE)

    def A(z):
        return compiled.A(decode(z), z=z)

    truth = draw(latent_prior(L_states, generator), shape, generator)
    y, cov_y = observe(compiled, decode(truth[None])[0], truth_z=truth, times=times)
    A_matrix = operator_matrix(A, shape)
    n, N = A_matrix.shape[1], A_matrix.shape[0]
    basis = torch.eye(n, dtype=F64).reshape(n, *shape)

    guided = MMPSDenoiser(denoiser, y, A, cov_y, iterations=N, solver="gmres")
    for sigma in SIGMAS:
        J = (denoiser(basis, sigma) - denoiser(torch.zeros_like(basis), sigma)).flatten(1)
        J = J.T  # x_hat = b + J z_t: the stitched denoiser is affine
        if sigma >= 1:  # the blankets disagree: J is far from symmetric (8-36 %)
            assert (J - J.T).abs().max() > 0.05 * J.abs().max()
        z_t = truth + sigma * torch.randn(2, *shape, generator=generator, dtype=F64)
        x_hat = denoiser(z_t, sigma).flatten(1)
        cov_x = sigma**2 * J.T  # what MMPS uses for Sigma_x (a VJP)
        S = torch.diag(cov_y) + A_matrix @ cov_x @ A_matrix.T
        innovation = y - x_hat @ A_matrix.T
        expected = x_hat + torch.linalg.solve(S, innovation.T).T @ A_matrix @ cov_x.T

        estimate = guided(z_t, sigma).flatten(1)
        assert torch.isfinite(estimate).all()
        assert_close(estimate, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())

        def misfit(x):
            return (((y - x @ A_matrix.T) ** 2) / cov_y).sum(1)

        assert (misfit(estimate) < misfit(x_hat)).all()
