r"""Reanalysis, filtering and forecasting with the guided latent sampler.

Given observations :math:`y` of a window of states, the :class:`Assimilator` draws an ensemble of
latent trajectories from :math:`p(z^{1:L} \mid y)` with a diffusion sampler whose denoiser is
the blanket-stitched prior (:class:`~appa_engine.sampling.trajectory.TrajectoryDenoiser`) wrapped
by a guidance method (MMPS or DPS), then decodes them to physical states.

- **Reanalysis** :math:`p(x^{1:L} \mid y^{1:L})`: symmetric stitching.
- **Filtering** :math:`p(x^L \mid y^{1:L})`: causal stitching; the last state is returned.
- **Forecast** :math:`p(x^{L+1:L+H} \mid y^{1:L})`: ``"all_at_once"`` samples one trajectory
  with free future states (causal stitching); ``"autoregressive"`` assimilates the window, then
  extends it blanket by blanket, each new blanket conditioned on the last K − S states of the
  previous one through an exact latent observation (σ = ``overlap_sigma``).

A window of ``hours`` holds the states ``start, start + Δt, …, start + hours`` (both ends). A
window shorter than one blanket is sampled as one blanket and cropped.

**Randomness.** Runs are reproducible, and each member has its own random stream: from a
generator :math:`g` seeded with ``seed``, member :math:`m` draws all its noise (initial and
stochastic steps) from a generator seeded with :math:`s_m`, the :math:`(m+1)`-th integer drawn
from :math:`g` (see :func:`member_generators`). Members :math:`[a, b)` sampled alone therefore
equal the same members of the whole ensemble, which is what makes a split over processes exact.
Members are still denoised together, in one batch.

**Many GPUs.** When :mod:`torch.distributed` is initialised (e.g. under ``torchrun``, see
:func:`appa_engine.train.distributed.setup`), rank :math:`r` of :math:`W` samples the contiguous
members :func:`member_slice` ``(M, W, r)`` (the first :math:`M \bmod W` ranks take one more; a
rank may take none), and the latent trajectories ``(M, L, Z, h, w)`` are gathered on rank 0,
which decodes them and builds the output. Latents are about a thousand times smaller than the
decoded states, and the final decode is one pass against the sampler's ``steps × (1 +
corrections)`` guided denoiser and decoder calls, so gathering latents keeps every rank's memory
at its own share and costs little time. Only rank 0 reports progress and returns a dataset; the
other ranks return None.

**Precision.** ``precision="bf16"`` runs the denoiser and the decoder under
:func:`torch.autocast` to bfloat16, their outputs cast back to float32; the sampler, the guidance
solvers (CG, GMRES) and the observation operator's interpolation stay in float32/float64.
``"auto"`` is bf16 on CUDA (when the GPU supports it) and fp32 elsewhere. The output records the
precision and the number of processes (attributes ``precision`` and ``world_size``).

**Background (O−B).** The observation equivalents of the *prior* ensemble,
:math:`H(D(z^b_m))` with :math:`z^b_m \sim p(z^{1:L})` sampled unguided over the same window, with
the same sampler, stitching mode, members and seed, give the innovations :math:`y - \overline{H(x^b)}`.
:meth:`Assimilator.background` computes them for a scenario after its guided run (so that a
caller can show the analysis first); ``background=True`` computes them within the same call, by the
same code, hence bit-identical values. Autoregressive forecasts have no background.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
import xarray as xr

from appa_engine.data.dates import date_features
from appa_engine.diffusion.guidance import DPSDenoiser, MMPSDenoiser
from appa_engine.diffusion.samplers import DDIMSampler, HeunSampler, LMSSampler, PCSampler
from appa_engine.errors import ConfigError, ObservationError
from appa_engine.observations.compile import CompiledObservations, compile_observations
from appa_engine.observations.observers import ObservationSet
from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings, Scenario
from appa_engine.sampling.blankets import BlanketLayout
from appa_engine.sampling.trajectory import LatentObservationOperator, TrajectoryDenoiser

__all__ = ["Assimilator", "SAMPLERS", "window_times", "compile_for", "member_generators", "member_slice"]

log = logging.getLogger(__name__)

#: Sampler names of scenario files.
SAMPLERS = {"pc": PCSampler, "ddim": DDIMSampler, "heun": HeunSampler, "lms": LMSSampler}

Progress = Callable[[int, int], None]

#: Stitching mode of each task (a forecast of a scenario samples all of its states at once).
_MODES = {"reanalysis": "symmetric", "filter": "causal", "forecast": "causal"}

Precision = Literal["auto", "fp32", "bf16"]

#: Seeds of the members' generators are drawn in [0, 2^62).
_SEED_BOUND = 2**62


def member_generators(generator: torch.Generator, members: range) -> list[torch.Generator]:
    r"""The random streams of members ``members`` of an ensemble, one generator per member.

    .. math:: s_m = \text{the } (m + 1)\text{-th of the integers drawn one at a time from } g,
              \qquad g_m = \text{a generator seeded with } s_m,

    each drawn by ``torch.randint(0, 2**62, (1,), generator=g)`` on ``g``'s device. So
    :math:`g_m` depends only on ``generator``'s state and on :math:`m`: member :math:`m` gets the
    same noise whether it is sampled alone, in a batch of any size, or on any process. The
    ``members.stop`` draws advance ``generator``.

    Arguments:
        generator: The ensemble's generator :math:`g` (e.g. seeded with the run's seed).
        members: Member indices :math:`a, \dots, b - 1`, a ``range(a, b)`` with step 1.

    Returns:
        Generators :math:`g_a, \dots, g_{b-1}`, on the device of ``generator``.
    """

    if not isinstance(members, range) or members.step != 1 or members.start < 0:
        raise ConfigError(f"members must be a range(a, b) of member indices with 0 <= a, got {members!r}",
                          hint="e.g. range(2, 4) for members 2 and 3")
    device = generator.device
    seeds = [int(torch.randint(0, _SEED_BOUND, (1,), generator=generator, device=device))
             for _ in range(members.stop)]
    return [torch.Generator(device).manual_seed(s) for s in seeds[members.start:]]


def member_slice(members: int, world_size: int, rank: int) -> range:
    """The contiguous members sampled by process ``rank`` of ``world_size``: ``M`` split as evenly
    as possible, the first ``M mod W`` ranks taking one more (a rank takes none when ``M < W``)."""

    q, r = divmod(members, world_size)
    start = rank * q + min(rank, r)
    return range(start, start + q + (rank < r))


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_members(z: torch.Tensor, members: int) -> torch.Tensor | None:
    """All members ``(M, ...)`` on rank 0 (None on the others) from each rank's slice ``z``
    ``(M_r, ...)`` (see :func:`member_slice`); padded to ``ceil(M / W)`` for :func:`dist.gather`."""

    rank, world = _world()
    if world == 1:
        return z
    per = -(-members // world)
    # NCCL gathers CUDA tensors; gloo gathers CPU ones.
    on_device = z.device.type == "cuda" and "nccl" in str(dist.get_backend())
    comm = z.device if on_device else torch.device("cpu")
    padded = torch.zeros((per, *z.shape[1:]), dtype=z.dtype, device=comm)
    padded[: z.shape[0]] = z.to(comm)
    parts = [torch.empty_like(padded) for _ in range(world)] if rank == 0 else None
    dist.gather(padded, parts, dst=0)
    if rank != 0:
        return None
    return torch.cat([part[: len(member_slice(members, world, r))] for r, part in enumerate(parts)]).to(z.device)


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision option on a device (None: float32, no autocast)."""

    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"unknown precision '{precision}'", hint="use 'auto', 'fp32' or 'bf16'")
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if precision == "fp32":
        return None
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"bf16 autocast is not available on {device.type}",
                          hint="use precision='fp32' (or 'auto')")
    return torch.bfloat16


class _Autocast:
    """``f(*args, **kwargs)`` under :func:`torch.autocast` to ``dtype``, its output cast back to
    float32 (the boundary between the network and the float32 sampler and guidance)."""

    def __init__(self, f: Callable, *, device_type: str, dtype: torch.dtype):
        self.f = f
        self.device_type = device_type
        self.dtype = dtype

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.f(*args, **kwargs)
        return out.float()


class _MixedPrecisionOperator(LatentObservationOperator):
    """The latent observation operator whose decoder runs under autocast: only
    :meth:`~LatentObservationOperator.decode` changes, the operator on the decoded (float32)
    states does not."""

    def __init__(self, model, compiled, *, region: str, device_type: str, dtype: torch.dtype):
        super().__init__(model, compiled, region=region)
        self._decode = _Autocast(super().decode, device_type=device_type, dtype=dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z)


def _as_datetime(value) -> np.datetime64:
    try:
        return np.datetime64(value, "ns")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot read {value!r} as a date", hint="use ISO format, e.g. 2000-03-01T00") from e


def window_times(start, hours: float, time_step: np.timedelta64) -> np.ndarray:
    """Times of the states of a window: ``start, start + Δt, …, start + hours`` (both ends)."""

    if not hours >= 0:
        raise ConfigError(f"the window length must be non-negative, got {hours} hours")
    n = int(math.floor(np.timedelta64(int(round(hours * 3600)), "s") / time_step)) + 1
    return _as_datetime(start) + np.arange(n) * time_step.astype("timedelta64[ns]")


def compile_for(model, observations: ObservationSet, times: np.ndarray) -> CompiledObservations:
    """Compile observations against a model's grid, channels, statistics and latent shape."""

    return compile_observations(
        observations, grid=model.grid, channels=list(model.channels.names), times=times,
        mean=model.stats.mean, std=model.stats.std,
        latent_shape=(model.spec.autoencoder.latent_channels, *model.spec.latent_shape),
    )


def _first_states(A: Callable, n: int) -> Callable:
    """An operator of the first ``n`` states applied to a longer trajectory."""

    return lambda z: A(z[:, :n])


def _scaled(progress: Progress | None, index: int, passes: int) -> Progress | None:
    """Progress of pass ``index`` of ``passes`` equal sampling passes, reported over all of them."""

    if progress is None:
        return None
    return lambda i, n: progress(index * n + i, passes * n)


#: Attributes of ``obs_background``.
_BACKGROUND_ATTRS = {"long_name": "model equivalent of the prior ensemble"}


def _obs_coords(table) -> dict:
    """Coordinates on dim ``obs`` of a compiled observation table."""

    return {
        "observer": ("obs", table["observer"].to_numpy().astype(str).astype(object)),
        "obs_kind": ("obs", table["kind"].to_numpy().astype(str).astype(object)),
        "obs_variable": ("obs", table["variable"].to_numpy().astype(str).astype(object)),
        "obs_channel": ("obs", table["channel"].to_numpy().astype(str).astype(object)),
        "obs_level": ("obs", table["level"].to_numpy(np.float64)),
        "obs_lon": ("obs", table["lon"].to_numpy(np.float64)),
        "obs_lat": ("obs", table["lat"].to_numpy(np.float64)),
        "obs_time": ("obs", table["time"].to_numpy("datetime64[ns]")),
    }


class Assimilator:
    """Posterior sampling of trajectories with a trained :class:`~appa_engine.model.AppaModel`.

    Arguments:
        model: The model (see :func:`appa_engine.load_model`).
        device: ``"auto"`` (the GPU when there is one), ``"cpu"`` or ``"cuda"``.
        max_batch: Largest number of blankets denoised at once (bounds memory).
        max_observations: Refuse observation sets that would need more than this many bytes of
            guidance buffers (estimated before sampling).
        region: Regional decoding in the observation operator: ``"auto"`` (a latent window when
            that is exact and small enough, else the globe), ``"approximate"`` or ``"globe"``
            (see :class:`~appa_engine.sampling.trajectory.LatentObservationOperator`). The
            output's ``decoding`` attribute says what was decoded.
        precision: ``"auto"`` (bf16 on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``: the
            precision of the denoiser and decoder forward passes (see the module docstring).

    Under :mod:`torch.distributed` (``torchrun``), ``device="auto"`` or ``"cuda"`` is this
    process's GPU (``LOCAL_RANK``); the tasks then split the members over the processes and
    return their output on rank 0 only (None elsewhere).

    Attributes:
        precision: The resolved precision, ``"bf16"`` or ``"fp32"``.
    """

    def __init__(self, model, *, device: str | torch.device = "auto", max_batch: int | None = None,
                 max_bytes: int = 8 << 30, region: Literal["auto", "approximate", "globe"] = "auto",
                 precision: Precision = "auto"):
        from appa_engine.train.distributed import resolve_device

        if isinstance(device, str):
            local_rank = int(os.environ.get("LOCAL_RANK", "0")) if _world()[1] > 1 else 0
            device = resolve_device(device, local_rank=local_rank)
        self.device = torch.device(device)
        self._amp = _resolve_precision(precision, self.device)
        self.precision = "fp32" if self._amp is None else "bf16"
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        if region not in ("auto", "approximate", "globe"):
            raise ConfigError(f"unknown region mode '{region}'", hint="use 'auto', 'approximate' or 'globe'")
        self.region = region

    # ------------------------------------------------------------------ windows
    def window(self, start, hours: float) -> np.ndarray:
        """Times of the states of a window: ``start, start + Δt, …, start + hours``."""

        return window_times(start, hours, self.model.time_step)

    def compile(self, observations: ObservationSet, times: np.ndarray) -> CompiledObservations:
        """Compile observations against the model and a window (clear errors on mismatch)."""

        compiled = compile_for(self.model, observations, times)
        if len(compiled) and torch.isnan(compiled.y).any():
            names = sorted({observations.observers[i].name
                            for i in np.unique(compiled.observer_index[torch.isnan(compiled.y).numpy()])})
            raise ObservationError(
                f"observers without values: {', '.join(names)}",
                hint="simulate their values from a truth store (`appa scenario`), or give values",
            )
        need = compiled.estimated_bytes(batch=1)
        if need > self.max_bytes:
            raise ObservationError(
                f"{len(compiled):,} observations need about {need / 2**30:.1f} GiB of guidance buffers, "
                f"more than the limit of {self.max_bytes / 2**30:.1f} GiB",
                hint="thin the observers (fewer stations, lower sampling rate), or raise max_bytes",
            )
        return compiled

    # ------------------------------------------------------------------ precision
    def _net(self, f: Callable) -> Callable:
        """A network forward ``f`` at this assimilator's precision (``f`` itself in fp32)."""

        if self._amp is None:
            return f
        return _Autocast(f, device_type=self.device.type, dtype=self._amp)

    def operator(self, compiled: CompiledObservations) -> LatentObservationOperator:
        """The observation operator of latent trajectories (its decoder at this precision)."""

        if self._amp is None:
            return LatentObservationOperator(self.model, compiled, region=self.region)
        return _MixedPrecisionOperator(self.model, compiled, region=self.region, device_type=self.device.type,
                                       dtype=self._amp)

    # ------------------------------------------------------------------ sampling
    def _sampler(self, denoiser, settings: SamplerSettings):
        cls = SAMPLERS.get(settings.name)
        if cls is None:
            raise ConfigError(f"unknown sampler '{settings.name}'", hint=f"use one of {', '.join(SAMPLERS)}")
        kw = dict(schedule=self.model.schedule, steps=settings.steps)
        if cls is PCSampler:
            kw.update(corrections=settings.corrections, delta=settings.delta)
        return cls(denoiser, **kw)

    def _guided(self, denoiser, A, y, cov_y, guidance: GuidanceSettings):
        if guidance.method == "mmps":
            return MMPSDenoiser(denoiser, y, A, cov_y, iterations=guidance.iterations, solver=guidance.solver)
        return DPSDenoiser(denoiser, y, A, cov_y)

    def sample_latent(
        self,
        times: np.ndarray,
        *,
        members: int | range,
        A: Callable | None = None,
        y: torch.Tensor | None = None,
        cov_y: torch.Tensor | None = None,
        mode: Literal["symmetric", "causal"] = "symmetric",
        sampler: SamplerSettings = SamplerSettings(),
        guidance: GuidanceSettings = GuidanceSettings(),
        generator: torch.Generator | Sequence[torch.Generator],
        progress: Progress | None = None,
        cancel=None,
    ) -> torch.Tensor:
        """Latent trajectories ``(M, L, Z, h, w)`` (standardised), guided by ``A, y, cov_y`` if given.

        All members are denoised in one batch; each draws its noise from its own stream.

        Arguments:
            times: Times of the states, shape ``(L,)``.
            members: ``M`` (members ``0 … M − 1``) or ``range(a, b)``: members ``a … b − 1`` of an
                ensemble, equal to those of the whole ensemble sampled with the same ``generator``.
            A, y, cov_y: Observation operator ``(M, L, Z, h, w) -> (M, N)``, observations ``(N,)``
                or ``(M, N)`` and their variances; no guidance when omitted.
            generator: The ensemble's generator (the members' streams are derived from it by
                :func:`member_generators`, which advances it), or the members' own generators
                (one per member, advanced in place: for sampling that continues their streams).
            progress: Called with ``(step, steps)`` after each diffusion step.

        Returns:
            Shape ``(M, L, Z, h, w)`` with ``M = len(members)`` (no sampling when 0).
        """

        index = range(members) if isinstance(members, int) else members
        if isinstance(generator, torch.Generator):
            generators = member_generators(generator, index)
        else:
            generators = list(generator)
            if len(generators) != len(index):
                raise ConfigError(f"{len(generators)} generators for {len(index)} members",
                                  hint="give one generator per member, or the ensemble's generator")
        L = len(times)
        K = self.model.blanket
        length = max(L, K)
        dt = self.model.time_step.astype("timedelta64[ns]")
        full_times = times[0] + np.arange(length) * dt
        dates = torch.as_tensor(date_features(full_times), dtype=torch.float32, device=self.device)
        layout = BlanketLayout(length, K, mode=mode)
        shape = self.model.latent_shape(length, len(index))
        if not index:  # a process with no members (more processes than members)
            return torch.zeros((0, L, *shape[2:]), device=self.device)
        denoiser = TrajectoryDenoiser(self._net(self.model.denoiser), layout, dates=dates, max_batch=self.max_batch)
        if A is not None and y is not None and y.numel():
            if L < length:  # observations were compiled for the L window states only
                A = _first_states(A, L)
            denoiser = self._guided(denoiser, A, y.to(self.device, torch.float32),
                                    cov_y.to(self.device, torch.float32), guidance)
        run = self._sampler(denoiser, sampler)
        z1 = run.init(shape, generator=generators, dtype=torch.float32, device=self.device)
        callback = (lambda i, n, _x: progress(i, n)) if progress is not None else None
        z = run(z1, callback=callback, cancel=cancel, generator=generators)
        return z[:, :L]

    def _sample_ensemble(self, times: np.ndarray, *, members: int, seed: int, progress: Progress | None,
                         **kw) -> torch.Tensor | None:
        """All ``members`` ``(M, L, Z, h, w)`` from a generator seeded with ``seed``: on rank 0 of a
        process group (None on the others), each process sampling its :func:`member_slice`."""

        rank, world = _world()
        generator = torch.Generator(self.device).manual_seed(seed)
        z = self.sample_latent(times, members=member_slice(members, world, rank), generator=generator,
                               progress=progress if rank == 0 else None, **kw)
        return _gather_members(z, members)

    def decode(self, z: torch.Tensor, *, chunk: int = 16) -> torch.Tensor:
        """Physical states ``(M, L, C, H, W)`` of latent trajectories ``(M, L, Z, h, w)``."""

        flat = z.flatten(0, 1)
        decode = self._net(self.model.decode)
        with torch.no_grad():
            x = torch.cat([self.model.destandardize(decode(flat[i : i + chunk]))
                           for i in range(0, flat.shape[0], chunk)])
        return x.unflatten(0, z.shape[:2])

    # ------------------------------------------------------------------ tasks
    def reanalysis(self, observations: ObservationSet = ObservationSet(()), *, start, hours: float,
                   members: int = 8, sampler: SamplerSettings = SamplerSettings(),
                   guidance: GuidanceSettings = GuidanceSettings(), seed: int = 0,
                   progress: Progress | None = None, cancel=None, background: bool = False) -> xr.Dataset | None:
        """Ensemble of trajectories over the window given all its observations (None on the
        processes other than rank 0 of a process group, as for every task)."""

        return self._assimilate(observations, start=start, hours=hours, members=members, sampler=sampler,
                                guidance=guidance, seed=seed, progress=progress, cancel=cancel,
                                mode="symmetric", task="reanalysis", background=background)

    def filter(self, observations: ObservationSet = ObservationSet(()), *, start, hours: float,
               members: int = 8, sampler: SamplerSettings = SamplerSettings(),
               guidance: GuidanceSettings = GuidanceSettings(), seed: int = 0,
               progress: Progress | None = None, cancel=None, background: bool = False) -> xr.Dataset | None:
        """Ensemble of the last state of the window given the observations up to it."""

        ds = self._assimilate(observations, start=start, hours=hours, members=members, sampler=sampler,
                              guidance=guidance, seed=seed, progress=progress, cancel=cancel,
                              mode="causal", task="filter", background=background)
        return None if ds is None else ds.isel(time=[-1])

    def forecast(self, observations: ObservationSet = ObservationSet(()), *, start,
                 assimilation_hours: float, lead_hours: float, members: int = 8,
                 mode: Literal["all_at_once", "autoregressive"] = "all_at_once",
                 sampler: SamplerSettings = SamplerSettings(), guidance: GuidanceSettings = GuidanceSettings(),
                 seed: int = 0, overlap_sigma: float = 1e-2, progress: Progress | None = None,
                 cancel=None, background: bool = False) -> xr.Dataset | None:
        """Ensemble of trajectories over the window and ``lead_hours`` beyond it.

        ``background=True`` adds ``obs_background`` (see :meth:`background`) to an
        ``"all_at_once"`` forecast; an ``"autoregressive"`` one has no background (the flag is
        ignored there).
        """

        if lead_hours <= 0:
            raise ConfigError(f"a forecast needs a positive lead time, got {lead_hours} hours")
        if mode == "all_at_once":
            ds = self._assimilate(observations, start=start, hours=assimilation_hours + lead_hours,
                                  obs_hours=assimilation_hours, members=members, sampler=sampler,
                                  guidance=guidance, seed=seed, progress=progress, cancel=cancel,
                                  mode="causal", task="forecast", background=background)
        elif mode == "autoregressive":
            ds = self._autoregressive(observations, start=start, hours=assimilation_hours, lead_hours=lead_hours,
                                      members=members, sampler=sampler, guidance=guidance, seed=seed,
                                      overlap_sigma=overlap_sigma, progress=progress, cancel=cancel)
        else:
            raise ConfigError(f"unknown forecast mode '{mode}'", hint="use 'all_at_once' or 'autoregressive'")
        if ds is None:
            return None
        analysis_end = _as_datetime(start) + np.timedelta64(int(round(assimilation_hours * 3600)), "s")
        ds = ds.assign_coords(lead_time=("time", (ds["time"].values - analysis_end).astype("timedelta64[ns]")))
        ds.attrs["forecast_mode"] = mode
        return ds

    def run(self, scenario: Scenario, *, progress: Progress | None = None, cancel=None,
            background: bool = False) -> xr.Dataset | None:
        """Run the task of a scenario file; the scenario is stored in the output's attributes.

        With ``background=True`` the output also holds ``obs_background`` (the prior ensemble's
        observation equivalents, see :meth:`background`), sampled after the guided pass;
        ``progress`` then runs over both passes (``2 × steps``). ``run(scenario)`` followed by
        :meth:`background` gives the same arrays in two calls. Under a process group, rank 0
        returns the output and the other ranks None.
        """

        kw = dict(members=scenario.members, sampler=scenario.sampler, guidance=scenario.guidance,
                  seed=scenario.seed, progress=progress, cancel=cancel, background=background)
        if scenario.task == "reanalysis":
            ds = self.reanalysis(scenario.observations, start=scenario.start, hours=scenario.hours, **kw)
        elif scenario.task == "filter":
            ds = self.filter(scenario.observations, start=scenario.start, hours=scenario.hours, **kw)
        else:
            ds = self.forecast(scenario.observations, start=scenario.start, assimilation_hours=scenario.hours,
                               lead_hours=scenario.lead_hours, **kw)
        if ds is None:
            return None
        import yaml

        ds.attrs["scenario"] = yaml.safe_dump(scenario.to_dict(), sort_keys=False)
        return ds

    def background(self, scenario: Scenario, *, progress: Progress | None = None,
                   cancel=None) -> xr.DataArray | None:
        r"""Observation equivalents of the background (prior) ensemble of a scenario: what O−B needs.

        .. math:: H(x^b_m) = A\big(D(z^b_m)\big), \qquad z^b_m \sim p(z^{1:L}), \quad m = 1, \dots, M,

        where the prior trajectories :math:`z^b` are sampled *unguided* over the scenario's window
        with its sampler, stitching mode (symmetric for a reanalysis, causal for a filter or a
        forecast), members and seed (a fresh generator seeded with ``scenario.seed``), decoded,
        and observed by the same compiled operator :math:`A` as the analysis. This is exactly the
        second pass of ``run(scenario, background=True)``: the two give bit-identical arrays, so
        a caller may run the guided pass first, show it, then call this.

        A scenario's forecast samples its window and lead at once (``"all_at_once"``), so it has a
        background; an autoregressive forecast (:meth:`forecast` with ``mode="autoregressive"``)
        has none.

        Arguments:
            scenario: The scenario whose output gets the background (its observations must carry
                values, as for :meth:`run`).
            progress: Called with ``(step, steps)`` after each diffusion step.
            cancel: A :class:`threading.Event` (or a callable); sampling raises
                :class:`~appa_engine.diffusion.samplers.Cancelled` at the next step once it is set.

        Returns:
            ``obs_background``, ``(member, obs)`` float64 in physical units, on the same ``obs``
            (and coordinates) as the output of :meth:`run`; None when no observation falls in the
            window (a run of the prior has nothing to compare), and on the processes other than
            rank 0 of a process group.
        """

        times, obs_times = self._task_windows(scenario.task, start=scenario.start, hours=scenario.hours,
                                              lead_hours=scenario.lead_hours)
        compiled = self.compile(scenario.observations, obs_times)
        if len(compiled) == 0:
            return None
        return self._background(compiled, times, n_obs_states=len(obs_times), members=scenario.members,
                                mode=_MODES[scenario.task], sampler=scenario.sampler, seed=scenario.seed,
                                progress=progress, cancel=cancel)

    # ------------------------------------------------------------------ internals
    def _task_windows(self, task: str, *, start, hours: float,
                      lead_hours: float = 0) -> tuple[np.ndarray, np.ndarray]:
        """Times sampled and times observed ``((L,), (L_obs,))`` of a scenario's task."""

        if task not in _MODES:
            raise ConfigError(f"unknown task '{task}'", hint=f"use one of {', '.join(_MODES)}")
        if task != "forecast":
            times = self.window(start, hours)
            return times, times
        if lead_hours <= 0:
            raise ConfigError(f"a forecast needs a positive lead time, got {lead_hours} hours")
        return self.window(start, hours + lead_hours), self.window(start, hours)

    def _assimilate(self, observations, *, start, hours, members, sampler, guidance, seed, progress,
                    cancel, mode, task, background, obs_hours=None) -> xr.Dataset:
        if members < 1:
            raise ConfigError(f"members must be at least 1, got {members}")
        times = self.window(start, hours)
        obs_times = times if obs_hours is None else self.window(start, obs_hours)
        compiled = self.compile(observations, obs_times)
        prior_only = len(compiled) == 0
        if prior_only:
            log.info("no observations: sampling the prior")
        operator = self.operator(compiled) if not prior_only else None
        decoding = operator.decoding if operator is not None else "none (prior only)"
        A = operator
        if A is not None and len(obs_times) < len(times):  # forecast: free states after the window
            A = _first_states(A, len(obs_times))
        passes = 2 if background and not prior_only else 1
        z = self._sample_ensemble(times, members=members, seed=seed, A=A, y=compiled.y, cov_y=compiled.cov_y,
                                  mode=mode, sampler=sampler, guidance=guidance,
                                  progress=_scaled(progress, 0, passes), cancel=cancel)
        obs_background = None
        if passes == 2:  # the prior ensemble (same seed) whose observation equivalents give O - B
            obs_background = self._background(compiled, times, n_obs_states=len(obs_times), members=members,
                                              mode=mode, sampler=sampler, seed=seed, operator=operator,
                                              progress=_scaled(progress, 1, passes), cancel=cancel)
        if z is None:  # not rank 0
            return None
        ds = self._dataset(z, times, compiled, task=task, prior_only=prior_only, obs_background=obs_background,
                           n_obs_states=len(obs_times))
        ds.attrs["decoding"] = decoding
        return ds

    def _background(self, compiled: CompiledObservations, times: np.ndarray, *, n_obs_states: int, members: int,
                    mode: str, sampler: SamplerSettings, seed: int, progress: Progress | None,
                    cancel, operator: LatentObservationOperator | None = None) -> xr.DataArray | None:
        """The one code path of the background: unguided prior ensemble (fresh generator seeded with
        ``seed``, hence the members' streams of the guided pass), its first ``n_obs_states`` states
        observed, ``(member, obs)``; None on the ranks other than 0.

        The background's states are not kept, so they are observed through the guided pass's
        operator (``operator``, built here when not given), which decodes only the observed states
        and the channels the observers read (its values are those of the full decode, whatever its
        region mode)."""

        if members < 1:
            raise ConfigError(f"members must be at least 1, got {members}")
        z_b = self._sample_ensemble(times, members=members, seed=seed, mode=mode, sampler=sampler,
                                    progress=progress, cancel=cancel)
        if z_b is None:  # not rank 0
            return None
        with torch.no_grad():
            operator = operator if operator is not None else self.operator(compiled)
            hx = operator(z_b[:, :n_obs_states])  # (M, N) standardised
        return xr.DataArray(compiled.to_physical(hx.double().cpu().numpy()), dims=("member", "obs"),
                            coords={"member": np.arange(members), **_obs_coords(compiled.table)},
                            name="obs_background", attrs=dict(_BACKGROUND_ATTRS))

    def _equivalents(self, compiled: CompiledObservations, x: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        """Model equivalents ``(M, N)`` (float64, physical units) of physical states ``x``
        ``(M, L_obs, C, H, W)`` and their latents ``z`` ``(M, L_obs, Z, h, w)``."""

        with torch.no_grad():
            states = torch.as_tensor(compiled.state_indices, dtype=torch.long, device=x.device)
            x_std = self.model.standardize(x[:, states]) if compiled.has_physical else None
            hx = compiled.A(x_std, z=z if compiled.has_latent else None)
            return compiled.to_physical(hx.double().cpu().numpy())

    def _autoregressive(self, observations, *, start, hours, lead_hours, members, sampler, guidance,
                        seed, overlap_sigma, progress, cancel) -> xr.Dataset | None:
        if members < 1:
            raise ConfigError(f"members must be at least 1, got {members}")
        K = self.model.blanket
        layout_stride = max(K // 2, 1)
        overlap = K - layout_stride
        times = self.window(start, hours)
        compiled = self.compile(observations, times)
        A = self.operator(compiled) if len(compiled) else None
        decoding = A.decoding if A is not None else "none (prior only)"
        rank, world = _world()
        local = member_slice(members, world, rank)
        # The members' streams run on through the blocks.
        generators = member_generators(torch.Generator(self.device).manual_seed(seed), local)
        if rank != 0:
            progress = None
        all_times = self.window(start, hours + lead_hours)
        n_new_total = len(all_times) - len(times)
        n_blocks = math.ceil(n_new_total / layout_stride)
        total = sampler.steps * (1 + n_blocks)
        offset = [0]

        def chained(i, n):
            if progress is not None:
                progress(offset[0] + i, total)

        z = self.sample_latent(times, members=local, A=A, y=compiled.y, cov_y=compiled.cov_y,
                               mode="causal", sampler=sampler, guidance=guidance, generator=generators,
                               progress=chained, cancel=cancel)
        dt = self.model.time_step.astype("timedelta64[ns]")
        while z.shape[1] < len(all_times):
            offset[0] += sampler.steps
            context = z[:, -overlap:]  # (M, overlap, Z, h, w)
            block_times = all_times[z.shape[1] - overlap] + np.arange(K) * dt
            y = context.flatten(1)  # one y per member: (M, N)
            cov = torch.full((y.shape[1],), overlap_sigma**2, device=self.device)
            A_ctx = lambda zz: zz[:, :overlap].flatten(1)  # noqa: E731
            block = self.sample_latent(block_times, members=local, A=A_ctx, y=y, cov_y=cov, mode="causal",
                                       sampler=sampler,
                                       guidance=GuidanceSettings(method="mmps", iterations=guidance.iterations,
                                                                 solver=guidance.solver),
                                       generator=generators, progress=chained, cancel=cancel)
            z = torch.cat([z, block[:, overlap:]], dim=1)
        z = _gather_members(z[:, : len(all_times)], members)
        if z is None:  # not rank 0
            return None
        ds = self._dataset(z, all_times, compiled, task="forecast", prior_only=len(compiled) == 0,
                           n_obs_states=len(times))
        ds.attrs["decoding"] = decoding
        return ds

    def _dataset(self, z, times, compiled, *, task, prior_only, n_obs_states, obs_background=None) -> xr.Dataset:
        m = self.model
        x = self.decode(z)  # (M, L, C, H, W) physical
        ds = m.channels.unstack(x.cpu().numpy().astype(np.float32), time=times, latitude=m.grid.lat,
                                longitude=m.grid.lon, member=np.arange(z.shape[0]))
        ds = ds.transpose("member", "time", ...)
        for name in ds.data_vars:
            ds[name].attrs["units"] = m.stats.metadata.get("units", {}).get(name, ds[name].attrs.get("units", ""))
        if len(compiled):
            ds = ds.merge(self._observations(compiled, x[:, :n_obs_states], z[:, :n_obs_states], obs_background))
        ds.attrs.update({
            "title": f"Appa Studio {task}",
            "task": task,
            "prior_only": int(prior_only),
            "members": int(z.shape[0]),
            "model": str(getattr(m, "package_path", "")),
            "model_preset": m.spec.preset,
            "time_step_hours": m.spec.time_step_hours,
            "precision": self.precision,
            "world_size": _world()[1],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "Conventions": "CF-1.8",
        })
        if prior_only:
            ds.attrs["comment"] = "no observations were given: these are samples of the prior"
        return ds

    def _observations(self, compiled: CompiledObservations, x, z, obs_background=None) -> xr.Dataset:
        """The observations, their model equivalents (analysis ``x``, ``z`` and, when given, the
        background's ``obs_background``) and the footprints, as variables."""

        table = compiled.table
        analysis = self._equivalents(compiled, x, z)
        obs = {
            "obs_value": ("obs", table["value"].to_numpy(np.float64),
                          {"long_name": "observed value", "units": "physical"}),
            "obs_error": ("obs", table["error"].to_numpy(np.float64),
                          {"long_name": "observation error standard deviation"}),
            "obs_analysis": (("member", "obs"), analysis, {"long_name": "model equivalent of the analysis (A(x))"}),
        }
        if obs_background is not None:
            obs["obs_background"] = (("member", "obs"), obs_background.values, dict(obs_background.attrs))
        coords = _obs_coords(table)
        out = xr.Dataset({k: xr.Variable(*v) for k, v in obs.items()}, coords=coords)
        footprint = compiled.footprint()
        names = list(footprint.data_vars)
        if names:
            mask = np.stack([footprint[n].values for n in names]).astype(bool)
            out["footprint"] = xr.DataArray(
                mask, dims=("observer_name", "obs_state", "latitude", "longitude"),
                coords={"observer_name": np.asarray(names, dtype=object),
                        "obs_state": footprint["time"].values},
                attrs={"long_name": "grid cells each observer touches at each observed state"},
            )
        return out
