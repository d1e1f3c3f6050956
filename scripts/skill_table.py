r"""Write the assimilation skill table of a model package: ``PACKAGE/SKILL.md``.

On held-out truth days (the package's ``truth.zarr``: days of the test split), the script runs an
observing-system simulation experiment per 24-h window and configuration of observers:

- **prior**: no observations (prior samples for the window's dates);
- **50, 200, 1000 stations**: random stations uniform on the sphere
  (:func:`appa_engine.tasks.simulate.random_stations`) observing every surface variable of the
  model (as in Appa) at every state of the window, with the per-variable errors of
  :func:`appa_engine.tasks.simulate.default_error`. The networks are *nested*: the 50 stations are
  the first 50 of the 200, which are the first 200 of the 1000;
- **200 stations + satellite**: the same 200 stations and Appa's polar orbiter
  (:func:`appa_engine.tasks.simulate.paper_satellite`) observing every level variable.

Values are simulated from the truth with the noise drawn (:func:`appa_engine.tasks.simulate.simulate`).
Within a window every configuration uses the same sampler seed, so that only the observations
differ. Each ensemble :math:`x_1, \dots, x_M` of the window's states is scored against the truth
:math:`y` (:func:`appa_engine.metrics.evaluate`, area-weighted over the grid), then aggregated over
windows and states :math:`t`:

.. math:: \mathrm{RMSE} = \sqrt{\overline{\mathrm{RMSE}_t^2}}, \quad
    \mathrm{CRPS} = \overline{\mathrm{CRPS}_t}, \quad
    \mathrm{spread} = \sqrt{\overline{\mathrm{spread}_t^2}}, \quad
    \mathrm{SSR} = \frac{\mathrm{spread}}{\mathrm{RMSE}} \sqrt{\frac{M + 1}{M}}

with :math:`\mathrm{RMSE}_t` the area-weighted RMSE of the ensemble mean and :math:`\mathrm{CRPS}_t`
the area-weighted fair CRPS. The column "all channels" does the same over every channel of the
model after dividing each by its standardisation scale :math:`s_c`. For reference, the page also
gives the RMSE of the autoencoder's reconstruction :math:`D(E(y))` of the truth (the error floor of
the latent space) and the spread–skill ratio of each ensemble against that reconstruction, which
leaves out the part of the truth that no decoded sample can represent.
In observation space, the innovations :math:`d^b = y - \overline{H(x^b)}` (background: the prior
ensemble of the same window and seed) and residuals :math:`d^a = y - \overline{H(x^a)}` are
reported relative to the observation error :math:`\sigma_o`, with the normalised χ² of the
innovations (:func:`appa_engine.metrics.innovation_statistics`).

Usage::

    python scripts/skill_table.py                       # default model → assets/default-model/SKILL.md
    python scripts/skill_table.py --model PKG --truth held_out.zarr --windows 4 --members 16
    python scripts/skill_table.py --model PKG --quick   # 1 window, 3 members, 2 steps (smoke test)

The file is written atomically; the tables are printed too.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from appa_engine.data.channels import parse_channel  # noqa: E402
from appa_engine.cli import report_error  # noqa: E402
from appa_engine.errors import AppaError, ConfigError, DataError  # noqa: E402

log = logging.getLogger("skill_table")

#: Headline channels, shown when the model has them (the first channels fill up otherwise).
HEADLINE = ("geopotential_500", "temperature_850", "u_component_of_wind_850", "2m_temperature",
            "mean_sea_level_pressure")
#: Column of the scale-normalised average over every channel of the model.
ALL = "all channels"
#: Name of the reference row: RMSE of the autoencoder's reconstruction D(E(x)) of the truth.
FLOOR = "autoencoder reconstruction"
#: Scores of the tables, in order, with their titles.
SCORES = {"rmse": "RMSE of the ensemble mean", "crps": "CRPS (fair estimator)",
          "spread": "Ensemble spread", "ssr": "Spread–skill ratio"}
#: Scores that must fall as observations are added.
ERROR_SCORES = ("rmse", "crps")
#: SSR band called "near 1" in the summary.
SSR_BAND = (0.8, 1.25)
SECTIONS = ("Summary", "Settings", "Scores", "Observation-space statistics", "Run times", "How to reproduce",
            "Notes")


# --------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Configuration:
    """Observers of one experiment: ``stations`` random stations, plus the satellite or not."""

    stations: int = 0
    satellite: bool = False

    @property
    def name(self) -> str:
        if not self.stations and not self.satellite:
            return "prior"
        parts = ([f"{self.stations} stations"] if self.stations else []) + (["satellite"] if self.satellite else [])
        return " + ".join(parts)


def configurations(stations: Sequence[int], satellite_stations: int | None) -> list[Configuration]:
    """The prior, one configuration per station count, then ``satellite_stations`` + the satellite."""

    counts = sorted(set(int(n) for n in stations))
    if any(n < 1 for n in counts):
        raise ConfigError(f"station counts must be positive, got {list(stations)}")
    out = [Configuration()] + [Configuration(n) for n in counts]
    if satellite_stations is not None:
        if satellite_stations < 0:
            raise ConfigError(f"--satellite-stations must be ≥ 0, got {satellite_stations}")
        out.append(Configuration(satellite_stations, satellite=True))
    return out


def additions(configs: Sequence[Configuration]) -> list[tuple[Configuration, Configuration]]:
    """Pairs (before, after) where ``after`` observes everything ``before`` does and more.

    The chain prior → fewest stations → … → most stations, and each satellite configuration after
    the station-only configuration with the same stations (the networks are nested).
    """

    plain = [c for c in configs if not c.satellite]
    pairs = list(zip(plain[:-1], plain[1:]))
    for c in configs:
        if c.satellite:
            base = next((b for b in plain if b.stations == c.stations), None)
            if base is not None:
                pairs.append((base, c))
    return pairs


# --------------------------------------------------------------------------- windows
def window_starts(times: np.ndarray, *, states: int, time_step: np.timedelta64, windows: int,
                  hours: float) -> np.ndarray:
    """Indices of the first states of ``windows`` windows of ``states`` consecutive states.

    A window may start at state ``i`` when states ``i, …, i + states − 1`` are one time step
    apart; the starts are spread evenly over the possible ones (first and last included).
    """

    times = np.asarray(times).astype("datetime64[ns]")
    dt = time_step.astype("timedelta64[ns]")
    n = len(times)
    ok = np.diff(times) == dt  # (n − 1,)
    possible = [i for i in range(n - states + 1) if ok[i : i + states - 1].all()]
    span = (f"{n} states from {str(times[0])[:16]} to {str(times[-1])[:16]}" if n else "no states")
    if not possible:
        raise DataError(
            f"the truth does not cover one {hours:g}-h window ({states} consecutive states "
            f"{dt / np.timedelta64(1, 'h'):g} h apart): it has {span}",
            hint="pass a --truth store with at least that many consecutive states at the model's time step",
        )
    pick = np.unique(np.round(np.linspace(0, len(possible) - 1, windows)).astype(int))
    if len(pick) < windows:
        raise DataError(
            f"the truth covers only {len(possible)} distinct {hours:g}-h window start(s) ({span}), "
            f"fewer than --windows {windows}",
            hint=f"lower --windows to at most {len(possible)} or pass a longer --truth",
        )
    starts = np.asarray(possible)[pick]
    if windows > 1 and np.min(np.diff(starts)) < states:
        log.warning("the %d windows overlap (the truth has %d states): scores are not independent", windows, n)
    return starts


# --------------------------------------------------------------------------- observations
def nested_network(model, n: int, n_max: int, *, times: np.ndarray, seed: int):
    """The first ``n`` of ``n_max`` seeded random stations (so smaller networks are subsets)."""

    import dataclasses

    from appa_engine.tasks.simulate import random_stations

    variables = list(model.channels.surface_variables) or [model.channels.variables[0]]
    net = random_stations(n_max, times=times, variables=variables, seed=seed)
    return dataclasses.replace(net, lon=np.asarray(net.lon)[:n], lat=np.asarray(net.lat)[:n])


def _observers(model, config: Configuration, *, times: np.ndarray, n_max: int, seed: int):
    from appa_engine.observations.observers import ObservationSet
    from appa_engine.tasks.simulate import paper_satellite

    observers = []
    if config.stations:
        observers.append(nested_network(model, config.stations, n_max, times=times, seed=seed))
    if config.satellite:
        dt = model.time_step.astype("timedelta64[ns]")
        observers.append(paper_satellite(start=times[0] - dt / 2, end=times[-1] + dt / 2,
                                         variables=list(model.channels.level_variables),
                                         levels=list(model.channels.levels)))
    return ObservationSet(observers)


def background_equivalents(model, observations, times: np.ndarray, x_b) -> np.ndarray:
    """Model equivalents ``H(x^b)`` of a prior ensemble ``(M, L, C, H, W)`` (physical), ``(M, N)``."""

    import torch

    from appa_engine.tasks.assimilator import compile_for

    compiled = compile_for(model, observations, times)
    states = torch.as_tensor(compiled.state_indices, dtype=torch.long)
    with torch.no_grad():
        x_std = model.standardize(x_b[:, states].to(model.x_mean))
        h = compiled.A(x_std)
    return compiled.to_physical(h.double().cpu().numpy())


def reconstruction(model, truth: xr.Dataset, times: np.ndarray) -> xr.Dataset:
    """The autoencoder's reconstruction :math:`D(E(x))` of the true states, as a one-member ensemble."""

    import torch

    x = model.channels.to_tensor(truth.sel(time=times)).to(model.x_mean)  # (L, C, H, W) physical
    with torch.no_grad():
        x_std = torch.nan_to_num(model.standardize(x), nan=0.0)
        x_rec = model.destandardize(model.decode(model.encode(x_std)))
    return model.channels.unstack(x_rec[None].cpu().numpy(), time=times, latitude=model.grid.lat,
                                  longitude=model.grid.lon, member=np.arange(1))


def _units(variable: str, ds: xr.Dataset, metadata: dict) -> str:
    """Units of a variable: the truth store's attribute, else the statistics' metadata, else ``""``."""

    if variable in ds and ds[variable].attrs.get("units"):
        return str(ds[variable].attrs["units"])
    return str((metadata.get("units") or {}).get(variable, ""))


# --------------------------------------------------------------------------- scores
@dataclass
class Collected:
    """Per-state scores of one configuration, accumulated over windows."""

    per_state: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)  # column → score → [(L,)]
    seconds: list[float] = field(default_factory=list)
    observations: list[int] = field(default_factory=list)
    obs_tables: list[xr.Dataset] = field(default_factory=list)

    def add(self, column: str, score: str, values: np.ndarray) -> None:
        self.per_state.setdefault(column, {}).setdefault(score, []).append(np.asarray(values, dtype=np.float64))


def score_window(ens: xr.Dataset, truth: xr.Dataset, *, channels: Sequence[str], scale: dict[str, float],
                 collected: Collected) -> None:
    """Per-state RMSE, CRPS and spread of the ensemble ``(member, time, …)`` into ``collected``.

    Headline channels in physical units; the "all channels" column as scale-normalised squares
    (RMSE, spread) and values (CRPS), averaged over channels per state.
    """

    from appa_engine.metrics import evaluate

    variables = sorted({parse_channel(c)[0] for c in scale})
    result = evaluate(ens, truth, variables=variables)
    per_channel = {}
    for c in scale:
        var, level = parse_channel(c)
        a = result[var]
        if level is not None:
            a = a.sel(level=level)
        per_channel[c] = {m: a.sel(metric=m).values.astype(np.float64) for m in ("rmse", "crps", "spread")}
    for c in channels:
        for m in ("rmse", "crps", "spread"):
            collected.add(c, m, per_channel[c][m])
    norm = {m: np.stack([per_channel[c][m] / scale[c] for c in scale]) for m in ("rmse", "crps", "spread")}
    collected.add(ALL, "rmse2", np.mean(norm["rmse"] ** 2, axis=0))
    collected.add(ALL, "crps", np.mean(norm["crps"], axis=0))
    collected.add(ALL, "spread2", np.mean(norm["spread"] ** 2, axis=0))


def aggregate(collected: Collected, *, members: int) -> dict[str, dict[str, float]]:
    """Column → {rmse, crps, spread, ssr} over all windows and states (see the module docstring)."""

    factor = math.sqrt((members + 1) / members)
    out = {}
    for column, scores in collected.per_state.items():
        cat = {k: np.concatenate(v) for k, v in scores.items()}
        rmse2 = cat["rmse2"] if "rmse2" in cat else cat["rmse"] ** 2
        spread2 = cat["spread2"] if "spread2" in cat else cat["spread"] ** 2
        rmse, spread = float(np.sqrt(np.mean(rmse2))), float(np.sqrt(np.mean(spread2)))
        out[column] = {"rmse": rmse, "crps": float(np.mean(cat["crps"])), "spread": spread,
                       "ssr": spread / rmse * factor if rmse > 0 else float("nan")}
    return out


def innovation_table(tables: Sequence[xr.Dataset]) -> xr.Dataset:
    """Per observer: count, O−B and O−A mean and RMS in units of σ_o, χ² of the innovations."""

    from appa_engine.metrics import innovation_statistics

    obs = xr.concat(list(tables), dim="obs")
    sigma = obs["error"]
    table = xr.Dataset({"value": obs["value"] / sigma, "error": xr.ones_like(sigma)},
                       coords={"observer": obs["observer"]})
    return innovation_statistics(table, obs["background"] / sigma, obs["analysis"] / sigma, by="observer")


# --------------------------------------------------------------------------- the experiment
@dataclass
class SkillResult:
    """Everything the Markdown page is made of."""

    configs: list[Configuration]
    columns: list[str]
    scores: dict[str, dict[str, dict[str, float]]]  # config name → column → score → value
    scores_rec: dict[str, dict[str, dict[str, float]]]  # the same against D(E(truth))
    innovations: dict[str, xr.Dataset]  # config name → per-observer statistics
    collected: dict[str, Collected]
    window_times: list[np.ndarray]
    settings: dict
    units: dict[str, str]
    seconds: float


def run_experiment(model_path: str | os.PathLike = "default", *, truth: str | os.PathLike | None = None,
                   windows: int = 2, hours: float = 24.0, members: int = 8, steps: int = 24,
                   sampler: str = "ddim", corrections: int = 0, iterations: int = 1, solver: str = "cg",
                   seed: int = 0, stations: Sequence[int] = (50, 200, 1000), satellite_stations: int | None = 200,
                   channels: Sequence[str] | None = None, device: str = "auto",
                   progress: bool = True) -> SkillResult:
    """Run every configuration on every window and score it (see the module docstring)."""

    import torch
    from tqdm.auto import tqdm

    from appa_engine.data.windows import open_store
    from appa_engine.io.package import load_model, resolve_model_path
    from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings
    from appa_engine.tasks import Assimilator, simulate
    from appa_engine.tasks.assimilator import window_times

    if windows < 1:
        raise ConfigError(f"--windows must be at least 1, got {windows}")
    if members < 2:
        raise ConfigError(f"--members must be at least 2 (spread needs two members), got {members}")
    if not hours > 0:
        raise ConfigError(f"--hours must be positive, got {hours}")
    sampler_settings = SamplerSettings(name=sampler, steps=steps, corrections=corrections)
    guidance = GuidanceSettings(method="mmps", iterations=iterations, solver=solver)
    configs = configurations(stations, satellite_stations)
    n_max = max(c.stations for c in configs)

    package = resolve_model_path(model_path)
    truth_path = Path(truth) if truth is not None else package / "truth.zarr"
    if not truth_path.exists():
        raise DataError(f"no held-out truth at '{truth_path}'",
                        hint="pass --truth STORE (a canonical zarr store of held-out states)")
    model = load_model(package)
    names = list(model.channels.names)
    if channels:
        unknown = [c for c in channels if c not in names]
        if unknown:
            raise ConfigError(f"the model has no channel(s) {unknown}", hint=f"choose among {names}")
        shown = list(channels)
    else:
        shown = [c for c in HEADLINE if c in names] or names[:5]
    scale = {c: float(s) for c, s in zip(names, np.asarray(model.stats.std, dtype=np.float64))}
    truth_ds = open_store(truth_path)
    units = {c: _units(parse_channel(c)[0], truth_ds, model.stats.metadata) for c in names}
    n_states = len(window_times(np.datetime64("2000-01-01"), hours, model.time_step))
    starts = window_starts(truth_ds["time"].values, states=n_states, time_step=model.time_step,
                           windows=windows, hours=hours)
    assimilator = Assimilator(model, device=device)
    t_start = time.perf_counter()
    collected = {c.name: Collected() for c in configs}
    floor = Collected()  # the autoencoder's reconstruction of the truth
    against_rec = {c.name: Collected() for c in configs}  # the ensembles against that reconstruction
    all_times = []
    bar = tqdm(total=len(starts) * len(configs), desc="skill table", disable=not progress)
    for w, i0 in enumerate(starts):
        times = window_times(truth_ds["time"].values[i0], hours, model.time_step)
        all_times.append(times)
        truth_w = truth_ds.sel(time=times).load()
        rec_w = reconstruction(model, truth_w, times)
        score_window(rec_w, truth_w, channels=shown, scale=scale, collected=floor)
        rec_w = rec_w.isel(member=0, drop=True)
        seed_w = seed + w  # sampler, network and noise seed of this window, the same for every configuration
        x_b = None  # the prior ensemble of this window (physical), for O − B
        for config in configs:
            obs = _observers(model, config, times=times, n_max=n_max, seed=seed_w)
            if len(obs):
                obs = simulate(model, obs, truth_w, times, seed=seed_w)
            t0 = time.perf_counter()
            ens = assimilator.reanalysis(obs, start=times[0], hours=hours, members=members,
                                         sampler=sampler_settings, guidance=guidance, seed=seed_w)
            seconds = time.perf_counter() - t0
            got = collected[config.name]
            got.seconds.append(seconds)
            got.observations.append(int(ens.sizes.get("obs", 0)))
            score_window(ens, truth_w, channels=shown, scale=scale, collected=got)
            score_window(ens, rec_w, channels=shown, scale=scale, collected=against_rec[config.name])
            x = torch.from_numpy(np.stack([model.channels.stack(ens.isel(member=m)).values
                                           for m in range(members)]).astype(np.float32))
            if not len(obs):
                x_b = x
            elif x_b is not None:
                h_b = background_equivalents(model, obs, times, x_b)
                got.obs_tables.append(xr.Dataset(
                    {"value": ("obs", ens["obs_value"].values), "error": ("obs", ens["obs_error"].values),
                     "analysis": (("member", "obs"), ens["obs_analysis"].values),
                     "background": (("member", "obs"), h_b)},
                    coords={"observer": ("obs", ens["observer"].values)}))
            log.info("window %d, %s: %d observations, %.1f s", w, config.name, got.observations[-1], seconds)
            bar.set_postfix_str(f"window {w + 1}, {config.name}")
            bar.update()
    bar.close()

    scores = {c.name: aggregate(collected[c.name], members=members) for c in configs}
    scores[FLOOR] = aggregate(floor, members=1)
    scores_rec = {c.name: aggregate(against_rec[c.name], members=members) for c in configs}
    innovations = {c.name: innovation_table(collected[c.name].obs_tables)
                   for c in configs if collected[c.name].obs_tables}
    settings = dict(model=str(model_path), package=package, truth=truth_path, truth_given=truth is not None,
                    windows=windows, hours=hours, members=members, steps=steps, sampler=sampler,
                    corrections=corrections, iterations=iterations, solver=solver, seed=seed,
                    stations=[c.stations for c in configs if c.stations and not c.satellite],
                    satellite_stations=satellite_stations, channels=shown, channels_given=bool(channels),
                    device=str(assimilator.device), n_channels=len(names),
                    station_variables=list(model.channels.surface_variables),
                    satellite_variables=list(model.channels.level_variables),
                    levels=list(model.channels.levels), blanket=model.blanket,
                    time_step_hours=model.spec.time_step_hours, package_name=package.name)
    return SkillResult(configs=configs, columns=[*shown, ALL], scores=scores, scores_rec=scores_rec,
                       innovations=innovations,
                       collected=collected, window_times=all_times, settings=settings, units=units,
                       seconds=time.perf_counter() - t_start)


# --------------------------------------------------------------------------- formatting
def _g(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}" if np.isfinite(v) else "n/a"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_g(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def monotonic_summary(result: SkillResult, score: str) -> str:
    """Whether ``score`` falls at every addition of observers, per column, computed from the numbers."""

    pairs = additions(result.configs)
    chain = " → ".join(c.name for c in result.configs if not c.satellite)
    extra = "; ".join(f"{a.name} → {b.name}" for a, b in pairs if b.satellite)
    failures = []
    for column in result.columns:
        bad = [(a, b) for a, b in pairs
               if not result.scores[b.name][column][score] < result.scores[a.name][column][score]]
        if bad:
            failures.append(f"`{column}` (" + ", ".join(
                f"{a.name} → {b.name}: {_g(result.scores[a.name][column][score])} → "
                f"{_g(result.scores[b.name][column][score])}" for a, b in bad) + ")")
    n, k = len(result.columns), len(result.columns) - len(failures)
    what = f"{SCORES[score].split(' (')[0]}"
    head = (f"- **{what}** falls monotonically as observations are added ({chain}"
            + (f"; {extra}" if extra else "") + ")")
    if not failures:
        return f"{head}: yes, in {k} of {n} columns."
    return f"{head}: in {k} of {n} columns; not in " + "; ".join(failures) + "."


def ssr_summary(result: SkillResult, *, reconstructed: bool = False) -> str:
    """The range of the spread–skill ratio, over all configurations and columns and without the prior."""

    scores = result.scores_rec if reconstructed else result.scores
    values = {c.name: [scores[c.name][col]["ssr"] for col in result.columns] for c in result.configs}
    every = np.array([v for vs in values.values() for v in vs], dtype=np.float64)
    guided = np.array([v for name, vs in values.items() if name != "prior" for v in vs], dtype=np.float64)
    lo, hi = SSR_BAND
    inside = int(np.sum((every >= lo) & (every <= hi)))
    head = "**Against D(E(x))**, the spread–skill ratio" if reconstructed else "**Spread–skill ratio**"
    text = (f"- {head} ranges from {_g(np.nanmin(every))} to {_g(np.nanmax(every))} "
            f"over all configurations and columns")
    if guided.size:
        text += f" ({_g(np.nanmin(guided))} to {_g(np.nanmax(guided))} with observations)"
    return text + f"; {inside} of {every.size} values lie within [{lo:g}, {hi:g}]."


def command_line(s: dict) -> str:
    cmd = ["python scripts/skill_table.py", "--model", _show(s["model"])]
    if s["truth_given"]:
        cmd += ["--truth", _show(s["truth"])]
    cmd += ["--windows", str(s["windows"]), "--hours", f"{s['hours']:g}", "--members", str(s["members"]),
            "--steps", str(s["steps"]), "--sampler", s["sampler"]]
    if s["sampler"] == "pc":
        cmd += ["--corrections", str(s["corrections"])]
    cmd += ["--iterations", str(s["iterations"]), "--solver", s["solver"], "--seed", str(s["seed"]),
            "--stations", *map(str, s["stations"])]
    cmd += ["--satellite-stations", str(s["satellite_stations"])] if s["satellite_stations"] is not None \
        else ["--no-satellite"]
    if s["channels_given"]:
        cmd += ["--channels", *s["channels"]]
    return " ".join(cmd)


def _show(path) -> str:
    """A path relative to the working directory when it lies under it."""

    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render(result: SkillResult, *, command: str) -> str:
    """The Markdown page."""

    s, cols = result.settings, result.columns
    out: list[str] = []
    add = out.append
    add(f"# Assimilation skill: `{s['package_name']}`\n")
    add("*Generated by `scripts/skill_table.py`; every number and sentence below is computed by it.*\n")

    add("## Summary\n")
    add(f"Reanalysis of {len(result.window_times)} held-out window(s) of {s['hours']:g} h, {s['members']} "
        f"members, scored against the truth. Lower RMSE and CRPS are better; a spread–skill ratio near 1 "
        f"means the ensemble spread matches its error.\n")
    for score in ERROR_SCORES:
        add(monotonic_summary(result, score))
    add(ssr_summary(result))
    add(ssr_summary(result, reconstructed=True))
    add("")

    add("## Settings\n")
    windows = ", ".join(f"{str(t[0])[:16]} → {str(t[-1])[:16]}" for t in result.window_times)
    add(f"- **Model:** `{_show(s['package'])}` (blanket K = {s['blanket']} states, {s['time_step_hours']:g} h "
        f"apart, {s['n_channels']} channels).")
    add(f"- **Truth:** `{_show(s['truth'])}`; windows (states at the model's time step, both ends "
        f"included): {windows}.")
    sampler = (f"{s['sampler']}, {s['steps']} steps"
               + (f", {s['corrections']} corrections" if s["sampler"] == "pc" else ""))
    add(f"- **Sampler:** {sampler}; guidance MMPS with {s['iterations']} {s['solver'].upper()} iteration(s); "
        f"{s['members']} members; seed {s['seed']} + window index (the same for every configuration of a "
        f"window, so that only the observations differ); device {s['device']}.")
    add(f"- **Stations:** uniform on the sphere, nested (the smaller networks are the first stations of the "
        f"largest), redrawn per window; each observes {', '.join(f'`{v}`' for v in s['station_variables'])} at "
        "every state, bilinearly interpolated at its true coordinates.")
    if s["satellite_stations"] is not None:
        add(f"- **Satellite:** Appa's polar orbiter (800 km, 75° inclination, 5° field-of-view radius, 60 "
            f"samples per hour) observing {', '.join(f'`{v}`' for v in s['satellite_variables'])} at "
            f"{', '.join(f'{p:g}' for p in s['levels'])} hPa.")
    add("- **Observation errors** (standard deviations, drawn into the simulated values and given to the "
        "guidance): `appa_engine.tasks.simulate.default_error` per variable.")
    add("- **Scores:** per state, area-weighted RMSE of the ensemble mean, fair CRPS and spread "
        "(`appa_engine.metrics.evaluate`), then over windows and states: RMSE and spread as the root of the "
        "mean square, CRPS as the mean, SSR = spread / RMSE · √((M+1)/M). "
        f"`{ALL}`: every one of the model's {s['n_channels']} channels divided by its standardisation scale "
        "(its standard deviation over the training record), then averaged the same way (dimensionless).\n")

    add("## Scores\n")
    unit_line = "Units: " + "; ".join(f"`{c}` {result.units.get(c) or '-'}" for c in cols[:-1]) + \
        f"; `{ALL}` dimensionless (in units of each channel's scale)."
    for score, title in SCORES.items():
        add(f"### {title}\n")
        add(_table(("configuration", *cols),
                   [(c.name, *[result.scores[c.name][col][score] for col in cols]) for c in result.configs]))
        add("")
        if score == "ssr":
            add("Dimensionless; 1 is a calibrated ensemble, below 1 overconfident, above 1 underconfident.\n")
        else:
            add(unit_line + "\n")
        if score == "rmse":
            add("For reference, the error floor of the latent space: the RMSE of the autoencoder's "
                "reconstruction D(E(x)) of the same true states (no sampling involved).\n")
            add(_table(("reference", *cols), [(FLOOR, *[result.scores[FLOOR][col]["rmse"] for col in cols])]))
            add("")
    add("### Spread–skill ratio against the reconstructed truth\n")
    add("The ensemble lives in the decoder's range, so its spread cannot account for the part of the truth "
        "the autoencoder cannot represent (the floor above). Scored against the reconstruction D(E(x)) of "
        "the truth instead, this part is left out:\n")
    add(_table(("configuration", *cols),
               [(c.name, *[result.scores_rec[c.name][col]["ssr"] for col in cols]) for c in result.configs]))
    add("")

    add("## Observation-space statistics\n")
    if result.innovations:
        add("Per configuration and observer, over all windows, in units of the observation error σ_o: the "
            "innovations O − B against the prior ensemble of the same window and seed, the residuals O − A "
            "against the analysis ensemble (mean and RMS of y minus the ensemble-mean equivalent), and the "
            "normalised χ² of the innovations, mean of (O − B)² / (σ_o² + σ_b²) with σ_b² the prior "
            "ensemble variance of the equivalent (`appa_engine.metrics.innovation_statistics`; ≈ 1 when "
            "the prior spread and σ_o explain the innovations). An O − A RMS below 1 means the analysis "
            "fits the observations within their noise.\n")
        rows = []
        for c in result.configs:
            stats = result.innovations.get(c.name)
            if stats is None:
                continue
            for observer in stats["observer"].values:
                r = stats.sel(observer=observer)
                rows.append((c.name, str(observer), int(r["count"]), float(r["omb_mean"]), float(r["omb_rms"]),
                             float(r["oma_mean"]), float(r["oma_rms"]), float(r["chi2"])))
        add(_table(("configuration", "observer", "observations", "O−B mean / σ_o", "O−B RMS / σ_o",
                    "O−A mean / σ_o", "O−A RMS / σ_o", "χ² (O−B)"), rows))
        add("")
    else:
        add("Not available (no configuration with observations, or no prior run to compare with).\n")

    add("## Run times\n")
    add(f"Wall time of each reanalysis (sampling, guidance and decoding; simulating the observations and "
        f"scoring excluded) on {s['device']}, per window, and the observations it assimilated.\n")
    n_w = len(result.window_times)
    rows = []
    for c in result.configs:
        got = result.collected[c.name]
        rows.append((c.name, *[f"{n:,}" for n in got.observations], *[f"{t:.3g}" for t in got.seconds],
                     f"{np.mean(got.seconds):.3g}"))
    add(_table(("configuration", *[f"observations (window {i + 1})" for i in range(n_w)],
                *[f"seconds (window {i + 1})" for i in range(n_w)], "mean seconds"), rows))
    add(f"\nThe whole script took {_duration(result.seconds)} (loading the truth, simulating, sampling, scoring).\n")

    add("## How to reproduce\n")
    add(f"```bash\n{command}\n```\n")

    add("## Notes\n")
    add(f"- {n_w} window(s) × {s['members']} members: the scores carry sampling noise; small differences "
        "between neighbouring configurations (and spread–skill ratios a little off 1) may not be significant. "
        "Raise `--windows` and `--members` for firmer numbers.")
    add("- The prior row is not a forecast: it is an unconditional sample for the window's dates, so its "
        "RMSE is that of climatological-like states, and its SSR near 1 only says the prior's variance "
        "matches the truth's departure from the prior mean.")
    add(f"- Windows of {s['hours']:g} h are sampled as one blanket of K = {s['blanket']} states and cropped "
        "when shorter; only the window's states carry observations.")
    add("- The truth is a synthetic Held–Suarez planet for the default model (see `MODEL_CARD.md`): these "
        "numbers say how the method behaves with this model, not how it would do on the real atmosphere.")
    return "\n".join(out).rstrip() + "\n"


def write_skill_table(model: str | os.PathLike = "default", *, out: str | os.PathLike | None = None,
                      **kwargs) -> tuple[Path, str]:
    """Run :func:`run_experiment`, write the Markdown page atomically; returns its path and text."""

    from appa_engine.io.atomic import atomic_write_text

    result = run_experiment(model, **kwargs)
    text = render(result, command=command_line(result.settings)
                  + (f" --out {_show(out)}" if out is not None else ""))
    path = Path(out) if out is not None else result.settings["package"] / "SKILL.md"
    atomic_write_text(path, text)
    log.info("wrote %s in %s", path, _duration(result.seconds))
    return path, text


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model package directory or 'default' (default)")
    p.add_argument("--truth", type=Path, help="held-out truth store (default MODEL/truth.zarr)")
    p.add_argument("--out", type=Path, help="Markdown file to write (default MODEL/SKILL.md)")
    p.add_argument("--windows", type=int, help="windows spread over the truth's days (default 2; quick 1)")
    p.add_argument("--hours", type=float, default=24.0, help="window length in hours (default 24)")
    p.add_argument("--members", type=int, help="ensemble members, ≥ 2 (default 8; quick 3)")
    p.add_argument("--steps", type=int, help="sampler steps (default 24; quick 2)")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "pc", "heun", "lms"), help="sampler (default ddim)")
    p.add_argument("--corrections", type=int, default=2, help="Langevin corrections of the pc sampler (default 2)")
    p.add_argument("--iterations", type=int, default=1, help="MMPS solver iterations (default 1)")
    p.add_argument("--solver", default="cg", choices=("cg", "gmres"), help="MMPS solver (default cg)")
    p.add_argument("--seed", type=int, default=0, help="base seed (window w uses seed + w; default 0)")
    p.add_argument("--stations", type=int, nargs="+", default=[50, 200, 1000],
                   help="station counts (default 50 200 1000)")
    p.add_argument("--satellite-stations", type=int, default=200,
                   help="stations observing alongside the satellite (default 200)")
    p.add_argument("--no-satellite", action="store_true", help="leave out the satellite configuration")
    p.add_argument("--channels", nargs="+", help=f"channels of the tables (default those of {HEADLINE} the model has)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 window, 3 members, 2 steps (unless given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    quick = {"windows": 1, "members": 3, "steps": 2}
    full = {"windows": 2, "members": 8, "steps": 24}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _, text = write_skill_table(
            args.model, out=args.out, truth=args.truth, windows=args.windows, hours=args.hours,
            members=args.members, steps=args.steps, sampler=args.sampler,
            corrections=args.corrections if args.sampler == "pc" else 0, iterations=args.iterations,
            solver=args.solver, seed=args.seed, stations=args.stations,
            satellite_stations=None if args.no_satellite else args.satellite_stations,
            channels=args.channels, device=args.device, progress=not args.no_progress)
    except AppaError as e:
        return report_error(e)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
