"""Cost of guided latent sampling: guided against unguided calls, scaling, decoding, a reanalysis.

Everything is measured in one run, on one model, so that the ratios compare like with like
(these machines are noisy). Printed:

1. one MMPS-guided call of the trajectory denoiser against one plain call on the same batch
   (200 random stations + Appa's polar orbiter), with the cost of its parts: the denoiser D
   and one vector-Jacobian product (VJP) through it, the observation operator A (which decodes
   the observed states) and one VJP through it;
2. the time of one guided and one unguided call against the ensemble size (1, 2, 4, 8 members),
   the trajectory length (1, 2, 4 blankets) and the number of stations (0, 50, 200, 1000);
3. decoding: all the states of a trajectory against only the observed ones, and every channel
   against only the observed ones (what
   :func:`~appa_engine.sampling.trajectory.latent_observation_operator` does), forward and
   forward + VJP; and the full globe against a latitude band of the latent (plus a halo of
   latent rows), with the error that cropping makes;
4. the wall time of a reanalysis of 24 states with 8 members, 200 stations and one satellite
   through :class:`~appa_engine.tasks.assimilator.Assimilator` (compile, sample, decode, output
   dataset). On a GPU the full run (Appa's sampler: 32 predictor-corrector steps with 2
   corrections, 96 guided calls) is timed; on a CPU it would take far too long, so a DDIM run of
   ``1 + repeats`` steps is timed (step 1 is the warm-up) and the full run is estimated from it
   (``--full-reanalysis yes`` runs it anyway);
5. the app's case (issue #5: a 24-hour reanalysis, 8 members, DDIM 24 steps, MMPS with 1 CG
   iteration, 200 random stations): the engine's MMPS against :class:`NaiveMMPS` (the formula as
   written, the engine's code before the fused solver), side by side in one run: one guided call
   (1 and 2 iterations) on the denoiser stack the Assimilator builds, with the unguided call for
   scale, and whole runs through the Assimilator; the guided call against the number of torch
   threads; and the two ways of computing the JVP of A (double backward, forward mode).

The model is the default package (``load_model("default")``) when it is installed; otherwise a
model of the ``default`` preset's architecture with random weights (speed does not depend on
the weights; the output says which). Observation values are simulated from a random truth.
``--quick`` uses the tiny preset, a few sizes, one repetition and no warm-up (smoke test).
Not a test::

    python bench/sampler.py                          # default model, CPU or GPU (auto)
    python bench/sampler.py --device cpu --threads 1 --repeats 5
    python bench/sampler.py --model path/to/package --full-reanalysis yes
    python bench/sampler.py --quick                  # tiny preset, seconds (smoke test)
    python bench/sampler.py --sections 5             # only the app's case, naive vs fused
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Timing,
    add_common_arguments,
    machine_lines,
    measure,
    positive,
    random_model,
    setup,
    sync,
    table,
)

START = np.datetime64("2000-01-01T00", "ns")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(p)
    p.add_argument("--model", default="default",
                   help="'default' (the installed default package, else a random model of the "
                   "default preset), a package directory, or 'preset:NAME' (random weights)")
    p.add_argument("--iterations", type=positive, default=2,
                   help="MMPS conjugate-gradient iterations (Appa: 2)")
    p.add_argument("--sigma", type=float, default=1.0,
                   help="noise level of the timed denoiser calls")
    p.add_argument("--members", type=positive, nargs="+", default=[1, 2, 4, 8],
                   help="ensemble sizes")
    p.add_argument("--blankets", type=positive, nargs="+", default=[1, 2, 4],
                   help="trajectory lengths, in blankets (stride K/2)")
    p.add_argument("--stations", type=int, nargs="+", default=[0, 50, 200, 1000],
                   help="station counts")
    p.add_argument("--obs-every", type=positive, default=4,
                   help="for the decoding table: stations report every N-th state")
    p.add_argument("--halos", type=int, nargs="+", default=[0, 1, 2],
                   help="latent rows of halo around the latitude band of the decoding table")
    p.add_argument("--states", type=positive, default=24,
                   help="reanalysis window, in model states")
    p.add_argument("--reanalysis-members", type=positive, default=8,
                   help="reanalysis ensemble size")
    p.add_argument("--reanalysis-stations", type=int, default=200,
                   help="reanalysis stations (plus one satellite)")
    p.add_argument("--sampler", choices=("pc", "ddim"), default="pc",
                   help="sampler of the full reanalysis")
    p.add_argument("--sampler-steps", type=positive, default=32,
                   help="sampler steps of the full reanalysis")
    p.add_argument("--corrections", type=int, default=2,
                   help="Langevin corrections per PC step")
    p.add_argument("--full-reanalysis", choices=("auto", "yes", "no"), default="auto",
                   help="time the full reanalysis (auto: on a GPU) or estimate it from a short "
                   "DDIM run")
    p.add_argument("--target", type=float, default=20.0,
                   help="target wall time of the reanalysis, seconds")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls before each timed measurement")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, stations and noise")
    p.add_argument("--sections", type=int, nargs="+", choices=(1, 2, 3, 4, 5),
                   default=[1, 2, 3, 4, 5], help="which sections to run")
    p.add_argument("--app-hours", type=float, default=24.0,
                   help="section 5: reanalysis window, hours")
    p.add_argument("--app-members", type=positive, default=8, help="section 5: members")
    p.add_argument("--app-stations", type=int, default=200, help="section 5: random stations")
    p.add_argument("--app-steps", type=positive, default=24, help="section 5: DDIM steps of a run")
    p.add_argument("--app-runs", type=int, default=1,
                   help="section 5: whole runs timed per code path (0: none)")
    args = p.parse_args(argv)
    if args.quick:
        args.model = "preset:tiny" if args.model == "default" else args.model
        args.members, args.blankets, args.stations, args.obs_every = [1, 2], [1, 2], [0, 20], 2
        args.repeats, args.warmup = 1, 0
        args.states, args.reanalysis_members, args.reanalysis_stations = 6, 2, 20
        args.sampler, args.sampler_steps, args.full_reanalysis = "ddim", 2, "yes"
        args.threads = args.threads or 1  # on a shared, loaded machine 2 threads can be 10x slower
        args.app_members, args.app_stations, args.app_steps = 2, 20, 3
    if min(args.stations + [args.reanalysis_stations, args.app_stations] + args.halos) < 0:
        p.error("station counts and halos must be non-negative")
    if args.corrections < 0 or args.warmup < 0:
        p.error("--corrections and --warmup must be non-negative")
    return args


# ----------------------------------------------------------------------------- model
def load(spec: str, device: torch.device, seed: int):
    """The model to benchmark and a sentence saying what it is."""

    from appa_engine.errors import AppaError
    from appa_engine.io.package import default_model_path, load_model

    try:
        if spec.startswith("preset:"):
            name = spec.split(":", 1)[1]
            note = f"'{name}' preset architecture with RANDOM weights"
            return random_model(name, device=device, seed=seed), note
        if spec == "default" and not (default_model_path() / "manifest.json").exists():
            note = (f"'default' preset architecture with RANDOM weights (no default package at "
                    f"{default_model_path()}; speed does not depend on the weights)")
            return random_model("default", device=device, seed=seed), note
        where = default_model_path() if spec == "default" else spec
        return load_model(spec, device=device), f"trained package '{where}'"
    except AppaError as e:
        raise SystemExit(f"cannot make the model: {e}") from e


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One batch of noisy latent trajectories with its observations, ready to denoise."""

    z_t: torch.Tensor  # (M, L, Z, h, w)
    sigma: torch.Tensor  # ()
    plain: torch.nn.Module  # trajectory denoiser
    guided: torch.nn.Module | None  # MMPS around it (None without observations)
    A: Callable | None  # (M, L, Z, h, w) -> (M, N)
    compiled: object  # CompiledObservations
    y: torch.Tensor | None  # (N,)

    @property
    def N(self) -> int:
        return 0 if self.y is None else int(self.y.numel())


def window(model, L: int) -> np.ndarray:
    """Times of ``L`` consecutive model states from :data:`START`, shape ``(L,)``."""

    return START + np.arange(L) * model.time_step.astype("timedelta64[ns]")


def observers(model, times: np.ndarray, *, stations: int, satellite: bool, seed: int,
              every: int = 1):
    """Random stations (two surface variables, every ``every``-th state) and Appa's orbiter."""

    from appa_engine.observations.observers import ObservationSet
    from appa_engine.tasks.simulate import paper_satellite, random_stations

    obs = []
    channels = model.channels
    if stations:
        surface = list(channels.surface_variables[:2]) or list(channels.variables[:1])
        obs.append(random_stations(stations, times=times[::every], variables=surface, seed=seed))
    if satellite:
        dt = model.time_step.astype("timedelta64[ns]")
        obs.append(paper_satellite(start=times[0] - dt / 2, end=times[-1] + dt / 2,
                                   variables=list(channels.level_variables),
                                   levels=list(channels.levels)))
    return ObservationSet(tuple(obs))


def compile_for(model, observations, times: np.ndarray):
    from appa_engine.observations.compile import compile_observations

    m = model
    return compile_observations(
        observations, grid=m.grid, channels=list(m.channels.names), times=times,
        mean=m.stats.mean, std=m.stats.std,
        latent_shape=(m.spec.autoencoder.latent_channels, *m.spec.latent_shape),
    )


def make_case(model, *, members: int, blankets: int, stations: int, satellite: bool,
              iterations: int, sigma: float, seed: int, every: int = 1) -> Case:
    from appa_engine.data.dates import date_features
    from appa_engine.diffusion.guidance import MMPSDenoiser
    from appa_engine.sampling.blankets import BlanketLayout
    from appa_engine.sampling.trajectory import TrajectoryDenoiser, latent_observation_operator

    K = model.blanket
    L = K + (blankets - 1) * max(K // 2, 1)
    times = window(model, L)
    device = model.device
    dates = torch.as_tensor(date_features(times), dtype=torch.float32, device=device)
    plain = TrajectoryDenoiser(model.denoiser, BlanketLayout(L, K, mode="symmetric"), dates=dates)
    g = torch.Generator().manual_seed(seed)
    z_t = (sigma * torch.randn(model.latent_shape(L, members), generator=g)).to(device)
    sigma_t = torch.tensor(sigma, device=device)
    obs = observers(model, times, stations=stations, satellite=satellite, seed=seed, every=every)
    compiled = compile_for(model, obs, times)
    if not len(compiled):
        return Case(z_t, sigma_t, plain, None, None, compiled, None)
    # y = A(x*) + noise for a random standardised truth x*: the values do not change the cost
    truth = torch.randn((L, len(model.channels), *model.grid.shape), generator=g)
    with torch.no_grad():
        clean = compiled.A(truth[None].to(device))[0]
    noise = torch.randn(clean.shape, generator=g).to(device)
    y = (clean + compiled.cov_y.to(clean).sqrt() * noise).float()
    A = latent_observation_operator(model, compiled)
    cov_y = compiled.cov_y.float().to(device)
    guided = MMPSDenoiser(plain, y, A, cov_y, iterations=iterations)
    return Case(z_t, sigma_t, plain, guided, A, compiled, y)


def call_plain(case: Case) -> Callable[[], object]:
    def f():
        with torch.no_grad():
            return case.plain(case.z_t, case.sigma)

    return f


def call_guided(case: Case) -> Callable[[], object]:
    def f():
        with torch.no_grad():  # MMPS turns gradients on inside, as under a sampler
            return (case.guided or case.plain)(case.z_t, case.sigma)

    return f


def with_vjp(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> Callable[[], object]:
    """Forward of ``fn`` with a graph, then one VJP with respect to its input."""

    def f():
        with torch.enable_grad():
            x = z.detach().requires_grad_(True)
            out = fn(x)
            return torch.autograd.grad(out, x, torch.ones_like(out))[0]

    return f


def with_graph(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> Callable[[], object]:
    """Forward of ``fn`` recording the graph (as guidance does), no backward."""

    def f():
        with torch.enable_grad():
            return fn(z.detach().requires_grad_(True))

    return f


def ms(t: Timing) -> float:
    return 1e3 * t.median


# ----------------------------------------------------------------------------- sections
def section_guided(model, args, device) -> str:
    """1. One guided call against one plain call, and the parts of the guided call."""

    case = make_case(model, members=1, blankets=1, stations=200, satellite=True,
                     iterations=args.iterations, sigma=args.sigma, seed=args.seed)
    r = dict(device=device, repeats=args.repeats, warmup=args.warmup)
    plain = measure(call_plain(case), **r)
    guided = measure(call_guided(case), **r)
    sigma_b = case.sigma.expand(case.z_t.shape[0])
    d_vjp = measure(with_vjp(lambda z: case.plain(z, sigma_b), case.z_t), **r)
    a_fwd = measure(with_graph(case.A, case.z_t), **r)
    a_vjp = measure(with_vjp(case.A, case.z_t), **r)
    base = plain.median
    rows = [
        ("unguided: denoiser D over the blankets", ms(plain), 1.0),
        (f"guided: MMPS, {args.iterations} CG iterations", ms(guided), guided.median / base),
        ("  part: D forward + 1 VJP", ms(d_vjp), d_vjp.median / base),
        ("  part: A forward (decode observed states)", ms(a_fwd), a_fwd.median / base),
        ("  part: A forward + 1 VJP", ms(a_vjp), a_vjp.median / base),
    ]
    L = case.z_t.shape[1]
    title = (f"1. One guided call against one unguided call, same batch: 1 member, {L} states "
             f"(1 blanket), 200 stations + 1 satellite = {case.N:,} observations, "
             f"sigma = {args.sigma:g}")
    note = ("   An MMPS call = D forward + iterations VJPs through D + A forward + iterations "
            "VJPs and\n   iterations - 1 JVPs (double backward) through A, with CG (section 5 "
            "compares it with the naive formula).")
    return table(("call", "ms", "x unguided"), rows, title=title) + "\n" + note


def section_scaling(model, args, device) -> str:
    """2. One guided and one plain call against members, length and stations."""

    r = dict(device=device, repeats=args.repeats, warmup=args.warmup)
    K = model.blanket
    S = max(K // 2, 1)
    specs = [
        ("2a. Against the ensemble size (1 blanket, 200 stations + 1 satellite)",
         [dict(members=m, blankets=1, stations=200, satellite=True) for m in args.members]),
        (f"2b. Against the trajectory length (1 member, 200 stations + 1 satellite; K = {K}, "
         f"stride {S})",
         [dict(members=1, blankets=b, stations=200, satellite=True) for b in args.blankets]),
        ("2c. Against the number of stations (1 member, 1 blanket, no satellite)",
         [dict(members=1, blankets=1, stations=s, satellite=False) for s in args.stations]),
    ]
    headers = ("M", "L", "stations", "sat", "N obs", "unguided ms", "guided ms", "guided/ungd",
               "ungd vs row 1", "guided vs row 1")
    out = []
    for title, cases in specs:
        rows, first = [], None
        for kw in cases:
            case = make_case(model, iterations=args.iterations, sigma=args.sigma, seed=args.seed,
                             **kw)
            plain = measure(call_plain(case), **r)
            guided = measure(call_guided(case), **r) if case.guided is not None else plain
            first = first or (plain.median, guided.median)
            rows.append((kw["members"], case.z_t.shape[1], kw["stations"],
                         "yes" if kw["satellite"] else "no", case.N, ms(plain), ms(guided),
                         guided.median / plain.median, plain.median / first[0],
                         guided.median / first[1]))
        out.append(table(headers, rows, title=title))
    out.append("   (0 observations: the guided call is the plain call.)")
    return "\n".join(out)


def section_decoding(model, args, device) -> str:
    """3. Decoding all states against the observed ones, the globe against a latitude band."""

    from appa_engine.sampling.trajectory import latent_observation_operator

    r = dict(device=device, repeats=args.repeats, warmup=args.warmup)
    case = make_case(model, members=1, blankets=max(args.blankets), stations=200, satellite=False,
                     iterations=args.iterations, sigma=args.sigma, seed=args.seed,
                     every=args.obs_every)
    compiled = case.compiled
    z = case.z_t.detach() / max(args.sigma, 1e-6)  # latents of unit scale, (1, L, Z, h, w)
    L = z.shape[1]
    observed = torch.as_tensor(compiled.state_indices, dtype=torch.long, device=device)
    n_obs = observed.numel()

    def A_all(zz):  # an operator that decodes every state and channel of the window
        return compiled.A(model.decode(zz))

    def A_observed_states(zz):  # only the observed states, every channel
        return compiled.A(model.decode(zz[:, observed]))

    A_engine = latent_observation_operator(model, compiled)  # observed states and channels
    read = compiled.physical_channels
    C = len(model.channels)
    with torch.no_grad():
        t_all = measure(lambda: model.decode(z), **r)
        t_obs = measure(lambda: model.decode(z[:, observed]), **r)
        t_read = measure(lambda: model.decode(z[:, observed], channels=read), **r)
    t_A_all = measure(with_vjp(A_all, z), **r)
    t_A_obs = measure(with_vjp(A_observed_states, z), **r)
    t_A_read = measure(with_vjp(A_engine, z), **r)
    unit = t_all.median
    rows = [
        (f"decode all {L} states, full globe", ms(t_all), 1.0, ""),
        (f"decode the {n_obs} observed states, full globe", ms(t_obs), t_obs.median / unit, ""),
        (f"decode the {n_obs} observed states, the {read.size} of {C} channels observed",
         ms(t_read), t_read.median / unit, ""),
        (f"A + VJP decoding all {L} states", ms(t_A_all), t_A_all.median / unit, ""),
        (f"A + VJP decoding the {n_obs} observed states", ms(t_A_obs), t_A_obs.median / unit, ""),
        (f"A + VJP decoding the {n_obs} observed states, {read.size} channels (the engine)",
         ms(t_A_read), t_A_read.median / unit, ""),
    ]

    # Latitude band: the middle quarter of the latent rows, decoded with a halo of latent rows,
    # compared with the same rows of the full-globe decoding (both before the decoder's crop).
    ae = model.autoencoder
    f = ae.config.factor
    h = model.spec.latent_shape[0]
    width = max(1, h // 4)
    r0 = (h - width) // 2
    r1 = r0 + width
    zz = (z[:, observed] * model.z_std + model.z_mean).flatten(0, 1)  # (n_obs, Z, h, w)
    north = (h * f - model.grid.shape[0]) // 2  # rows the autoencoder pads north of the grid
    lat = model.grid.lat
    rows_band = slice(max(f * r0 - north, 0), min(f * r1 - north, lat.size))
    band = f"{lat[rows_band.stop - 1]:.1f} to {lat[rows_band.start]:.1f} deg"
    with torch.no_grad():
        full = ae.decoder(zz)
        scale = full.float().pow(2).mean().sqrt().item()
        target = full[..., f * r0 : f * r1, :]
        for halo in args.halos:
            a, b = max(r0 - halo, 0), min(r1 + halo, h)
            crop = zz[..., a:b, :]
            t_band = measure(lambda crop=crop: ae.decoder(crop), **r)
            x_band = ae.decoder(crop)[..., f * (r0 - a) : f * (r0 - a + width), :]
            err = (x_band - target).abs().max().item() / scale
            rows.append((f"decode the {n_obs} observed, latent rows {a}:{b} of {h} (halo {halo})",
                         ms(t_band), t_band.median / unit, f"{err:.2g}"))
    title = (f"3. Decoding, 1 member, L = {L}: stations report every {args.obs_every} states "
             f"(observed states {compiled.state_indices.tolist()}); latitude band {band} "
             f"(latent rows {r0}:{r1})")
    note = ("   'max err': max |band decoding - full-globe decoding| over the band, in units of "
            "the decoded field's RMS.\n"
            "   The engine decodes only the observed states and channels "
            "(latent_observation_operator);\n"
            "   a latent window instead of the globe when that is exact and small enough "
            "(region='auto'):\n   bench/decoding.py measures regional decoding.")
    return table(("decode", "ms", "x decode all", "max err"), rows, title=title) + "\n" + note


def section_reanalysis(model, args, device) -> str:
    """4. A whole reanalysis through the Assimilator, timed or estimated."""

    from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings
    from appa_engine.tasks.assimilator import Assimilator

    L, M = args.states, args.reanalysis_members
    times = window(model, L)
    hours = float((times[-1] - times[0]) / np.timedelta64(1, "h"))
    obs = observers(model, times, stations=args.reanalysis_stations, satellite=True,
                    seed=args.seed)
    compiled = compile_for(model, obs, times)
    g = torch.Generator().manual_seed(args.seed)
    truth = torch.randn((L, len(model.channels), *model.grid.shape), generator=g)
    obs = compiled.with_values(compiled.simulate(truth.to(device), generator=args.seed))
    assimilator = Assimilator(model, device=device)
    kw = dict(start=str(times[0]), hours=hours, members=M, seed=args.seed,
              guidance=GuidanceSettings(method="mmps", iterations=args.iterations))
    calls = 1 + (args.corrections if args.sampler == "pc" else 0)  # guided calls per step
    setting = (f"{args.sampler}, {args.sampler_steps} steps"
               + (f" x (1 + {args.corrections} corrections)" if args.sampler == "pc" else "")
               + f" = {args.sampler_steps * calls} guided calls")
    title = (f"4. Reanalysis: {L} states ({hours:g} h), {M} member{'s' if M > 1 else ''}, "
             f"{args.reanalysis_stations} stations + 1 satellite = {len(compiled):,} observations, "
             f"MMPS {args.iterations} CG iterations; target {args.target:g} s")

    full = args.full_reanalysis == "yes" or (args.full_reanalysis == "auto"
                                             and device.type == "cuda")
    if full:
        sampler = SamplerSettings(name=args.sampler, steps=args.sampler_steps,
                                  corrections=args.corrections)
        for _ in range(args.warmup):
            assimilator.reanalysis(obs, **kw, sampler=SamplerSettings(name="ddim", steps=1))
        t = measure(lambda: assimilator.reanalysis(obs, **kw, sampler=sampler), device=device,
                    repeats=args.repeats, warmup=0)
        rows = [(f"measured: {setting}", t.median, t.median / args.target, len(t.times))]
        return table(("run", "wall s", "x target", "runs"), rows, title=title)

    # Estimate from a DDIM run of 1 + repeats steps: step 1 is the warm-up, the others are timed.
    n = 1 + args.repeats
    stamps: list[float] = []

    def tick(i: int, total: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    sync(device)
    t0 = time.perf_counter()
    assimilator.reanalysis(obs, **kw, sampler=SamplerSettings(name="ddim", steps=n), progress=tick)
    sync(device)
    wall = time.perf_counter() - t0
    per_call = float(np.median(np.diff(stamps)))
    rest = max(wall - n * per_call, 0.0)

    def estimate(steps: int, calls: int) -> float:
        return rest + steps * calls * per_call

    rows = [(f"measured: ddim, {n} steps, end to end", wall, "measured"),
            ("  one guided call (median of steps 2..)", per_call, "measured"),
            ("  the rest: compile, first-call overhead, decode, dataset", rest, "measured"),
            (setting, estimate(args.sampler_steps, calls), "estimated"),
            ("pc, 24 steps x (1 + 2 corrections) = 72 guided calls", estimate(24, 3), "estimated"),
            ("ddim, 24 steps = 24 guided calls", estimate(24, 1), "estimated")]
    rows = [(name, s, s / args.target, how) for name, s, how in rows]
    note = ("   estimated = the rest + guided calls x one guided call; --full-reanalysis yes "
            "measures it.")
    return table(("run", "wall s", "x target", ""), rows, title=title) + "\n" + note


# ----------------------------------------------------------------------------- naive MMPS
class NaiveMMPS(torch.nn.Module):
    r"""MMPS with the formula as written, for comparison only (the engine's code before the
    fused solver): the plain CG or GMRES on :math:`(\Sigma_y + J \Sigma_x J^\top) u = y -
    \mathcal{A}(\hat{x})`, :math:`J v` by double backward through a graph built at :math:`u = 0`,
    then :math:`\hat{x} + \Sigma_x J^\top u` recomputed: :math:`m + 1` VJPs through D,
    :math:`m + 2` through A (one building the double-backward graph) and :math:`m` JVPs."""

    def __init__(self, denoiser, y, A, cov_y, *, iterations: int, solver: str = "cg"):
        super().__init__()
        self.denoiser, self.A, self.y, self.cov_y = denoiser, A, y, cov_y
        self.iterations, self.solver = iterations, solver

    def forward(self, x_t, sigma_t):
        from appa_engine.diffusion.denoiser import expand_sigma
        from appa_engine.diffusion.linalg import conjugate_gradient, gmres

        sigma_t = expand_sigma(sigma_t, x_t)
        var_t = (sigma_t**2).reshape((-1,) + (1,) * (x_t.ndim - 1))
        grad = torch.autograd.grad
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            x_hat = self.denoiser(x_t, sigma_t)
            x_A = x_hat.detach().requires_grad_(True)
            y_hat = self.A(x_A)
            u_0 = torch.zeros_like(y_hat, requires_grad=True)
            (At_u_0,) = grad(y_hat, x_A, u_0, create_graph=True)

            def A_T(u):
                return grad(y_hat, x_A, u, retain_graph=True)[0]

            def cov_x(v):
                return var_t * grad(x_hat, x_t, v, retain_graph=True)[0]

            def system(u):
                return self.cov_y * u + grad(At_u_0, u_0, cov_x(A_T(u)), retain_graph=True)[0]

            solve = conjugate_gradient if self.solver == "cg" else gmres
            u = solve(system, self.y - y_hat.detach(), iterations=self.iterations)
            return (x_hat.detach() + cov_x(A_T(u))).detach()


def assimilators(model, device):
    """``{"fused": the engine's Assimilator, "naive": the same with NaiveMMPS}``."""

    from appa_engine.tasks.assimilator import Assimilator

    class NaiveAssimilator(Assimilator):
        def _guided(self, denoiser, A, y, cov_y, guidance):
            if guidance.method != "mmps":
                return super()._guided(denoiser, A, y, cov_y, guidance)
            return NaiveMMPS(denoiser, y, A, cov_y, iterations=guidance.iterations,
                             solver=guidance.solver)

    return {"fused": Assimilator(model, device=device),
            "naive": NaiveAssimilator(model, device=device)}


def app_denoisers(engines, compiled, times: np.ndarray, *, members: int) -> dict:
    """``{name: (denoiser, shape of z_t)}``: the unguided trajectory denoiser and MMPS around it
    (naive and fused, 1 and 2 CG iterations), built as ``Assimilator.sample_latent`` does."""

    from appa_engine.data.dates import date_features
    from appa_engine.observations.scenario import GuidanceSettings
    from appa_engine.sampling.blankets import BlanketLayout
    from appa_engine.sampling.trajectory import TrajectoryDenoiser, latent_observation_operator

    engine = engines["fused"]
    model, device = engine.model, engine.device
    L, K = len(times), model.blanket
    length = max(L, K)  # a window shorter than a blanket is sampled as one blanket
    full = times[0] + np.arange(length) * model.time_step.astype("timedelta64[ns]")
    dates = torch.as_tensor(date_features(full), dtype=torch.float32, device=device)
    plain = TrajectoryDenoiser(model.denoiser, BlanketLayout(length, K), dates=dates)
    shape = model.latent_shape(length, members)
    out = {"plain": (plain, shape)}
    if not len(compiled):
        return out
    A_window = latent_observation_operator(model, compiled)

    def A(z):
        return A_window(z[:, :L])

    y = compiled.y.to(device, torch.float32)
    cov_y = compiled.cov_y.to(device, torch.float32)
    for iterations in (1, 2):
        for name in ("naive", "fused"):
            guidance = GuidanceSettings(method="mmps", iterations=iterations)
            out[f"{name} {iterations}"] = (engines[name]._guided(plain, A, y, cov_y, guidance),
                                           shape)
    return out


def section_app(model, args, device) -> str:
    """5. The app's case: the engine's (fused) MMPS against the naive formula, side by side."""

    from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings

    dt = model.time_step.astype("timedelta64[ns]")
    L = int(np.timedelta64(int(round(args.app_hours * 3600)), "s") // dt) + 1
    times = window(model, L)
    obs = observers(model, times, stations=args.app_stations, satellite=False, seed=args.seed)
    compiled = compile_for(model, obs, times)
    g = torch.Generator().manual_seed(args.seed)
    truth = torch.randn((L, len(model.channels), *model.grid.shape), generator=g)
    if len(compiled):
        obs = compiled.with_values(compiled.simulate(truth.to(device), generator=args.seed))
        compiled = compile_for(model, obs, times)  # now with values
    engines = assimilators(model, device)
    M = args.app_members
    base = dict(start=str(times[0]), hours=args.app_hours, members=M, seed=args.seed)

    def run(name: str, observations, *, steps: int) -> float:
        """Wall time of a whole DDIM run with MMPS, 1 CG iteration."""
        sync(device)
        t0 = time.perf_counter()
        engines[name].reanalysis(observations, **base,
                                 sampler=SamplerSettings(name="ddim", steps=steps),
                                 guidance=GuidanceSettings(method="mmps", iterations=1))
        sync(device)
        return time.perf_counter() - t0

    # a. Per guided call, on the stack the Assimilator builds (blanket denoiser, padding to a
    # blanket, observation operator), the variants called in turn in each round so that all
    # see the same load.
    variants = app_denoisers(engines, compiled, times, members=M)
    gz = torch.Generator().manual_seed(args.seed)
    z_t = (args.sigma * torch.randn(variants["plain"][1], generator=gz)).to(device)
    sigma = torch.tensor(args.sigma, device=device)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with torch.no_grad():  # as under a sampler; guidance turns gradients on inside
        for round_ in range(args.warmup + args.repeats):
            for name, (denoiser, _) in variants.items():
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                denoiser(z_t, sigma)
                sync(device)
                if round_ >= args.warmup:
                    timings[name].append((time.perf_counter() - t0, time.process_time() - c0))
    best = {name: min(t for t, _ in v) for name, v in timings.items()}
    med = {name: float(np.median([t for t, _ in v])) for name, v in timings.items()}
    cpu = {name: float(np.median([c for _, c in v])) for name, v in timings.items()}
    rows = [("unguided (prior only)", 1e3 * best["plain"], 1e3 * med["plain"],
             1e3 * cpu["plain"], 1.0, "")]
    for iterations in (1, 2):
        naive, fused = f"naive {iterations}", f"fused {iterations}"
        rows.append((f"MMPS {iterations} CG it., naive formula", 1e3 * best[naive],
                     1e3 * med[naive], 1e3 * cpu[naive], best[naive] / best["plain"], ""))
        rows.append((f"MMPS {iterations} CG it., engine (fused)", 1e3 * best[fused],
                     1e3 * med[fused], 1e3 * cpu[fused], best[fused] / best["plain"],
                     f"{best[fused] / best[naive]:.2f}"))
    N = len(compiled)
    title = (f"5. The app's case: reanalysis of {args.app_hours:g} h ({L} states, sampled as "
             f"{variants['plain'][1][1]}), {M} members, {args.app_stations} stations = {N:,} "
             f"observations; one call at sigma = {args.sigma:g}, {args.repeats} rounds")
    out = [table(("call", "best ms", "median ms", "cpu ms", "best x ungd", "fused/naive best"),
                 rows, title=title)]
    out.append("   Contention only slows a call down: 'best' is the least disturbed figure. "
               "cpu = process CPU time\n   (all threads; with more than one thread it includes "
               "OpenMP threads waiting for each other).")

    # b. Whole runs, the app's setting (1 iteration), interleaved.
    if args.app_runs > 0:
        runs: dict[str, list[tuple[float, float]]] = {"naive": [], "fused": []}
        for _ in range(args.warmup):  # first-call costs (allocations, caches) in both engines
            for name in ("fused", "naive"):
                run(name, obs, steps=1)
        for _ in range(args.app_runs):
            for name in ("fused", "naive"):
                c0 = time.process_time()
                wall = run(name, obs, steps=args.app_steps)
                runs[name].append((wall, time.process_time() - c0))
        naive, fused = (min(runs[n]) for n in ("naive", "fused"))
        rows = [(f"naive formula, DDIM {args.app_steps} steps", naive[0], naive[1],
                 naive[0] / args.target, ""),
                (f"engine (fused), DDIM {args.app_steps} steps", fused[0], fused[1],
                 fused[0] / args.target, f"{fused[0] / naive[0]:.2f}")]
        out.append(table(("whole run (compile, sample, decode, dataset)", "wall s", "cpu s",
                          "wall x target", "fused/naive wall"), rows,
                         title=f"5b. Whole runs, MMPS 1 CG iteration, best of {args.app_runs}; "
                               f"target {args.target:g} s"))

    # c. Threads: the fused call with 1 .. torch's default number of threads.
    default = torch.get_num_threads()
    if device.type == "cpu" and default > 1:
        rows = []
        counts = sorted({1, max(1, default // 2), default})
        fused = variants["fused 1"][0]
        walls: dict[int, list[float]] = {n: [] for n in counts}
        try:
            with torch.no_grad():
                for _ in range(args.repeats):
                    for n in counts:
                        torch.set_num_threads(n)
                        t0 = time.perf_counter()
                        fused(z_t, sigma)
                        walls[n].append(time.perf_counter() - t0)
        finally:
            torch.set_num_threads(default)
        rows = [(f"{n} thread{'s' if n > 1 else ''}", 1e3 * min(walls[n]),
                 1e3 * float(np.median(walls[n]))) for n in counts]
        out.append(table(("torch threads", "best ms per guided call", "median ms"), rows,
                         title=f"5c. Guided call (1 CG iteration) against torch threads "
                               f"(default {default}, {os.cpu_count()} logical cores)"))
        out.append("   On a machine shared with other jobs, fewer threads than cores can be "
                   "faster (OpenMP threads wait for each other).")

    # d. The JVP of A: double backward (the engine) against forward mode.
    if N:
        from torch.autograd import forward_ad

        from appa_engine.sampling.trajectory import latent_observation_operator

        A = latent_observation_operator(model, compiled)
        gz = torch.Generator().manual_seed(args.seed)
        z = torch.randn(model.latent_shape(L, M), generator=gz).to(device)
        v = torch.randn(z.shape, generator=gz).to(device)
        u = torch.randn(M, N, generator=gz).to(device)
        r = dict(device=device, repeats=args.repeats, warmup=args.warmup)

        def double_backward():
            with torch.enable_grad():
                x = z.detach().requires_grad_(True)
                y_hat = A(x)
                w = u.detach().requires_grad_(True)
                (At_w,) = torch.autograd.grad(y_hat, x, w, create_graph=True)
                return torch.autograd.grad(At_w, w, v)[0]

        def forward_mode():
            with torch.enable_grad():
                x = z.detach().requires_grad_(True)
                torch.autograd.grad(A(x), x, u)  # the VJP MMPS needs anyway
            with torch.no_grad(), forward_ad.dual_level():
                return forward_ad.unpack_dual(A(forward_ad.make_dual(z, v))).tangent

        try:
            err = (double_backward() - forward_mode()).abs().max().item()
            t_db = measure(double_backward, **r)
            t_fm = measure(forward_mode, **r)
            db, fm = min(t_db.times), min(t_fm.times)
            rows = [("A forward + VJP (double-backward graph) + double backward", 1e3 * db, 1.0,
                     ""),
                    ("A forward + VJP, then forward-mode JVP (recomputes A)", 1e3 * fm, fm / db,
                     f"{err:.1g}")]
            out.append(table(("JVP of A", "best ms", "x double bwd", "max diff"), rows,
                             title=f"5d. One VJP and one JVP of A ({M} x "
                                   f"{len(compiled.state_indices)} decoded states)"))
        except RuntimeError as e:  # an operator without forward-mode support
            out.append(f"5d. forward-mode JVP of A not available: {e}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    t_start = time.perf_counter()
    model, note = load(args.model, device, args.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = model.spec
    Z, (h, w) = spec.autoencoder.latent_channels, spec.latent_shape
    counts = model.num_parameters()

    quick = " (--quick: tiny sizes, figures mean little)" if args.quick else ""
    print("Appa Studio sampler benchmark" + quick)
    for line in machine_lines(device):
        print("  " + line)
    print(f"  model: {note}")
    print(f"  C = {len(spec.channels)} channels on {spec.grid.shape[0]}x{spec.grid.shape[1]}, "
          f"{spec.time_step_hours:g} h steps, K = {spec.blanket}, latents {Z}x{h}x{w}; "
          f"autoencoder {counts['autoencoder'] / 1e6:.2f}M + prior "
          f"{counts['prior'] / 1e6:.2f}M parameters")
    print(f"  each figure: median of {args.repeats} after {args.warmup} warm-up call(s); float32",
          flush=True)

    sections = (section_guided, section_scaling, section_decoding, section_reanalysis, section_app)
    for number, section in enumerate(sections, start=1):
        if number not in args.sections:
            continue
        t0 = time.perf_counter()
        print(section(model, args, device), flush=True)
        print(f"   (this section took {time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
