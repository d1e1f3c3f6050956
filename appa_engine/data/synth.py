r"""The synthetic planet: a dry Held–Suarez atmosphere simulated with ``dinosaur``.

No ERA5 is reachable offline, so the default model is trained on a simulated atmosphere
(DESIGN.md §5): the dry hydrostatic primitive equations on terrain-following :math:`\sigma = p/p_s`
levels, solved spectrally by Google's JAX dynamical core ``dinosaur`` (triangular truncation T21
or T42, semi-implicit SIL3 Runge–Kutta steps), driven by the Held & Suarez (1994) forcing:
Rayleigh friction in the boundary layer and Newtonian relaxation towards a zonal radiative
equilibrium,

.. math::
    \partial_t \mathbf{v} = \dots - k_v(\sigma)\,\mathbf{v}, \qquad
    \partial_t T = \dots - k_T(\phi, \sigma)\,(T - T_{eq}),

.. math::
    k_v = k_f\,\max\!\Big(0, \frac{\sigma - \sigma_b}{1 - \sigma_b}\Big), \quad
    k_T = k_a + (k_s - k_a)\,\max\!\Big(0, \frac{\sigma - \sigma_b}{1 - \sigma_b}\Big)\cos^4\phi,

.. math::
    T_{eq} = \max\Big(200\,\mathrm{K},\ \Big[315\,\mathrm{K} - \Delta T_y \sin^2\phi
    - \Delta\theta_z \ln\frac{p}{p_0}\cos^2\phi\Big]\Big(\frac{p}{p_0}\Big)^{\kappa}\Big),

with :math:`k_f = 1/\mathrm{day}`, :math:`k_a = 1/40\,\mathrm{days}`,
:math:`k_s = 1/4\,\mathrm{days}`, :math:`\sigma_b = 0.7`, :math:`\Delta T_y = 60` K,
:math:`\Delta\theta_z = 10` K. There is no orography, moisture, seasonal or diurnal cycle. The
result has mid-latitude jets, baroclinic eddies and fronts: it looks and behaves like weather.

**Initial state and spin-up.** Each planet starts at rest with a uniform 1000 hPa surface pressure
and the temperature of the radiative equilibrium :math:`T_{eq}` plus seeded white noise (0.1 K).
The equator-to-pole temperature gradient makes upper-level westerly jets by geostrophic adjustment
within a few days and baroclinic eddies grow from the noise; the model is then integrated for
``spinup_days`` before anything is written (about 200 days reach Held–Suarez statistical
equilibrium; the ``tiny`` preset uses 10 days: jets and eddies, but not yet equilibrium).

**Output.** Every ``output_hours`` the state is written in the canonical layout (DESIGN.md §4) with
WeatherBench2 names and units: ``geopotential`` (m² s⁻²), ``temperature`` (K),
``u_component_of_wind``, ``v_component_of_wind`` (m s⁻¹) on pressure levels; ``surface_pressure``
and ``mean_sea_level_pressure`` (Pa; the planet has no orography, so they are the same field);
``2m_temperature``, ``10m_u_component_of_wind`` and ``10m_v_component_of_wind``, which are the
values at the *lowest sigma level* (e.g. :math:`\sigma = 0.975` with 20 layers), as their
``long_name`` says.

- *Horizontal grid.* The model's nodal grid is Gaussian in latitude. The output grid is the
  regular cell-centred grid of the same size (:meth:`Grid.regular(nlat, nlon, poles=False)
  <appa_engine.data.grid.Grid.regular>`: 32 × 64 for T21, 64 × 128 for T42), latitude descending,
  longitude from 0. Since the model's fields are truncated spherical-harmonic series, they are
  *evaluated* at the regular nodes (an inverse Legendre/Fourier transform onto equiangular
  latitudes): exact interpolation of the model's own fields, with no extra smoothing.
- *Vertical.* Fields are interpolated from the sigma layer centres
  :math:`p_k = \sigma_k p_s` to the pressure levels linearly in :math:`\ln p`. Above the top or
  below the bottom layer centre, temperature and winds are held constant and geopotential is
  extended hydrostatically, :math:`\Phi(p) = \Phi_k - R\,T_k \ln(p / p_k)`.
- *Time.* Times are labels on a synthetic calendar starting at 2000-01-01 00:00 (the end of the
  spin-up is at ``2000-01-01 + spinup_days``). The forcing is time-independent, so dates carry no
  information.
- *Runs.* ``runs`` > 1 writes several independent trajectories one after the other: run
  :math:`r \ge 1` starts from the final state of run :math:`r-1` plus seeded noise and is integrated
  ``gap_days`` more (unwritten) before it is written. The gap decorrelates the runs (eddy
  memory is about a week) and leaves a hole in the time axis, so training windows, which never
  cross a gap (:mod:`appa_engine.data.windows`), never cross runs. A ``run`` coordinate along
  ``time`` says which run each state belongs to.

**Appending and resuming.** The store (zarr v3, float32, one time step per chunk) is appended one
simulated day at a time, and the model state needed to continue is checkpointed atomically next to
it (:func:`state_path`: ``OUT.zarr.synth-state.npz``). Rerunning the same call continues an
interrupted generation where it stopped; asking for more ``days`` (single run) or more ``runs``
extends the store; a call whose configuration differs in anything else raises
:class:`~appa_engine.errors.ConfigError`. For a given configuration the output is deterministic, and
a resumed or extended generation equals an uninterrupted one exactly (same machine and library
versions).

Example:
    >>> generate_planet("planet.zarr", SynthConfig.preset("small"))  # ~10 min on 2 cores
    >>> generate_planet("planet.zarr", SynthConfig.preset("small", days=720))   # extends it

References:
    | A Proposal for the Intercomparison of the Dynamical Cores of Atmospheric General
      Circulation Models (Held & Suarez, 1994)
    | https://doi.org/10.1175/1520-0477(1994)075<1825:APFTIO>2.0.CO;2
    | Neural General Circulation Models for Weather and Climate (Kochkov et al., 2024), whose
      dynamical core is ``dinosaur``
    | https://arxiv.org/abs/2311.07222
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from appa_engine.data.grid import Grid
from appa_engine.errors import AppaError, ConfigError, DataError, require
from appa_engine.io.atomic import atomic_write_bytes

__all__ = [
    "EPOCH",
    "PRESETS",
    "SynthConfig",
    "generate_planet",
    "log_pressure_interp",
    "state_path",
]

logger = logging.getLogger(__name__)

#: The synthetic calendar starts here (the first written time is ``EPOCH + spinup_days``).
EPOCH = np.datetime64("2000-01-01T00:00", "ns")

#: Spectral truncation → (latitudes, longitudes) of the model's nodal grid and of the output.
RESOLUTIONS = {"T21": (32, 64), "T42": (64, 128)}

#: Fields that must agree between a store and a call that continues it (all but days and runs).
_IDENTITY = (
    "resolution",
    "layers",
    "levels",
    "output_hours",
    "seed",
    "spinup_days",
    "gap_days",
    "dt_minutes",
)

_CHECKPOINT_FORMAT = 1
_STATE_KEYS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")
_NOISE_K = 0.1  # std of the seeded temperature noise (K), initial state and run branches
_HYPERDIFFUSION_DAYS = 0.1  # e-folding time of the smallest resolved scale under ∇⁸ diffusion


@dataclass(frozen=True)
class SynthConfig:
    """What to simulate and write.

    Arguments:
        resolution: Spectral truncation, ``"T21"`` (output 32 × 64) or ``"T42"`` (64 × 128).
        layers: Number of equally spaced sigma layers of the model.
        levels: Output pressure levels in hPa (stored ascending, as in WeatherBench2).
        output_hours: Hours between written states; divides 24.
        days: Written days per run.
        runs: Independent runs, written one after the other with a time gap.
        seed: Seed of the initial noise and of the run perturbations.
        spinup_days: Days integrated (and not written) before the first run.
        gap_days: Days integrated (and not written) between two runs.
        dt_minutes: Model time step in minutes; divides ``output_hours``.
    """

    resolution: Literal["T21", "T42"] = "T21"
    layers: int = 20
    levels: tuple[int, ...] = (100, 250, 500, 700, 850, 925)
    output_hours: int = 6
    days: int = 360
    runs: int = 1
    seed: int = 0
    spinup_days: int = 200
    gap_days: int = 20
    dt_minutes: int = 60

    def __post_init__(self):
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(
                f"unknown resolution {self.resolution!r}",
                hint=f"use one of {', '.join(RESOLUTIONS)}",
            )
        ints = (
            "layers",
            "output_hours",
            "days",
            "runs",
            "seed",
            "spinup_days",
            "gap_days",
            "dt_minutes",
        )
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        for name, low in (
            ("layers", 4),
            ("output_hours", 1),
            ("days", 1),
            ("runs", 1),
            ("gap_days", 1),
            ("dt_minutes", 1),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"'{name}' must be at least {low}, got {getattr(self, name)}")
        for name in ("seed", "spinup_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"'{name}' must be non-negative, got {getattr(self, name)}")
        if 24 % self.output_hours:
            raise ConfigError(
                f"output_hours = {self.output_hours} does not divide a day",
                hint="use 1, 2, 3, 4, 6, 8, 12 or 24",
            )
        if (60 * self.output_hours) % self.dt_minutes:
            raise ConfigError(
                f"the time step ({self.dt_minutes} min) does not divide the output interval "
                f"({self.output_hours} h)",
                hint="choose dt_minutes among the divisors of 60 × output_hours (e.g. 20, 30, 60)",
            )
        values = tuple(self.levels) if isinstance(self.levels, (list, tuple)) else ()
        if not values or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values
        ):
            raise ConfigError(
                f"levels must be a non-empty list of integers in hPa, got {self.levels!r}"
            )
        levels = tuple(sorted({int(v) for v in values}))
        top = 1000.0 / (2 * self.layers)  # centre of the top layer at a 1000 hPa surface pressure
        if levels[0] < top or levels[-1] > 1100:
            raise ConfigError(
                f"levels must lie between {top:g} hPa (centre of the top model layer with "
                f"{self.layers} layers) and 1100 hPa, got {list(levels)}",
                hint="drop the level or add layers",
            )
        object.__setattr__(self, "levels", levels)
        for name in ints:
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """A named preset (:data:`PRESETS`) with some fields replaced."""

        if name not in PRESETS:
            raise ConfigError(
                f"unknown synth preset {name!r}", hint=f"use one of {', '.join(PRESETS)}"
            )
        return dataclasses.replace(PRESETS[name], **overrides)

    @property
    def grid(self) -> Grid:
        """The regular output grid."""
        return Grid.regular(*RESOLUTIONS[self.resolution], poles=False)

    @property
    def outputs_per_day(self) -> int:
        return 24 // self.output_hours

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    def identity(self) -> dict[str, Any]:
        """The fields a continued store must share (everything but ``days`` and ``runs``)."""
        return {k: v for k, v in self.to_dict().items() if k in _IDENTITY}


#: ``tiny``: a minute on 2 cores with compilation, not spun up (10 days) but with jets and eddies;
#: ``small``: T21, spun up, the CPU default; ``default``: T42, spun up.
PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(resolution="T21", layers=10, days=4, spinup_days=10, gap_days=5),
    "small": SynthConfig(resolution="T21", layers=20, days=360, spinup_days=200),
    "default": SynthConfig(resolution="T42", layers=20, days=360, spinup_days=200, dt_minutes=20),
}


def state_path(out: str | os.PathLike) -> Path:
    """Where the resumable model state of the store ``out`` lives: ``OUT.synth-state.npz``."""

    out = Path(out)
    return out.with_name(out.name + ".synth-state.npz")


# ----------------------------------------------------------------------------- vertical
def log_pressure_interp(f, T, log_sigma, x, *, R: float = 0.0, xp=np):
    r"""Interpolate columns from sigma layers to pressure levels, linearly in :math:`\ln p`.

    With :math:`x = \ln(p / p_s)` the target and :math:`\ln\sigma_k` the layer centres (the same
    thing, since :math:`\ln p_k = \ln\sigma_k + \ln p_s`), values between two centres are linear
    in :math:`x`; outside, ``f`` is held constant, plus (for geopotential, ``R`` > 0) the
    hydrostatic term :math:`-R\,T_{edge}(x - \ln\sigma_{edge})`.

    Arguments:
        f: Field on the layers, shape ``(L, ...)`` (``L`` layers, top first).
        T: Temperature on the layers, shape ``(L, ...)``; used only when ``R`` > 0.
        log_sigma: :math:`\ln\sigma` of the layer centres, ascending, shape ``(L,)``.
        x: :math:`\ln(p / p_s)` of the targets, shape ``(P, ...)``.
        R: Gas constant in the units of ``f / T`` (0 for fields other than geopotential).
        xp: Array namespace (``numpy`` or ``jax.numpy``).

    Returns:
        The field at the targets, shape ``(P, ...)``.
    """

    L = log_sigma.shape[0]
    i = xp.clip(xp.searchsorted(log_sigma, x), 1, L - 1)
    x0, x1 = log_sigma[i - 1], log_sigma[i]
    w = xp.clip((x - x0) / (x1 - x0), 0.0, 1.0)
    f0 = xp.take_along_axis(f, i - 1, axis=0)
    f1 = xp.take_along_axis(f, i, axis=0)
    out = f0 + w * (f1 - f0)
    if R:
        below = xp.maximum(x - log_sigma[-1], 0.0)  # deeper than the bottom centre (> 0)
        above = xp.minimum(x - log_sigma[0], 0.0)  # higher than the top centre (< 0)
        out = out - R * (T[-1] * below + T[0] * above)
    return out


# ----------------------------------------------------------------------------- the model
class _Model:
    """The compiled dinosaur model of one (resolution, layers, dt, output) setting.

    ``day(state) -> (state, outputs)`` integrates one day and returns the diagnosed fields at the
    start of each output interval, on the regular grid, in SI units, dinosaur's ``(…, lon, lat)``
    order with latitude ascending (:meth:`canonical` turns them around).
    """

    def __init__(
        self,
        resolution: str,
        layers: int,
        dt_minutes: int,
        output_hours: int,
        levels: tuple[int, ...],
    ):
        require("dinosaur", extra="synth", purpose="generating the synthetic planet")
        import dinosaur
        import jax
        import jax.numpy as jnp
        from dinosaur import (
            coordinate_systems,
            held_suarez,
            primitive_equations,
            scales,
            sigma_coordinates,
            spherical_harmonic,
            time_integration,
        )

        self.jax, self.jnp = jax, jnp
        self.version = dinosaur.__version__
        self.jax_version = jax.__version__
        units = scales.units
        self.units = units
        specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
        self.specs = specs
        nlat, nlon = RESOLUTIONS[resolution]
        grid = getattr(spherical_harmonic.Grid, resolution)(radius=specs.radius)
        assert grid.nodal_shape == (nlon, nlat), grid.nodal_shape
        # The output grid: same spectral truncation, equiangular cell-centred latitude nodes.
        self.out_grid = dataclasses.replace(grid, latitude_spacing="equiangular")
        self.grid = grid
        self.coords = coordinate_systems.CoordinateSystem(
            grid, sigma_coordinates.SigmaCoordinates.equidistant(layers)
        )
        self.sigma = np.asarray(self.coords.vertical.centers, dtype=np.float64)
        self.tref = np.full((layers,), specs.nondimensionalize(288.0 * units.degK))
        self.forcing = held_suarez.HeldSuarezForcingSigma(self.coords, specs, self.tref)
        orography = jnp.zeros(grid.modal_shape, dtype=jnp.float32)
        dynamics = primitive_equations.PrimitiveEquationsSigma(
            self.tref, orography, self.coords, specs
        )
        dt = specs.nondimensionalize(dt_minutes * units.minute)
        step = time_integration.imex_rk_sil3(
            time_integration.compose_equations([dynamics, self.forcing]), dt
        )
        filters = [
            time_integration.exponential_step_filter(grid, dt),
            time_integration.horizontal_diffusion_step_filter(
                grid, dt, tau=specs.nondimensionalize(_HYPERDIFFUSION_DAYS * units.day), order=4
            ),
        ]
        step = time_integration.step_with_filters(step, filters)

        # SI scale factors of the nondimensional fields.
        self.K = float(specs.dimensionalize(1.0, units.degK).m)
        self.ms = float(specs.dimensionalize(1.0, units.m / units.s).m)
        self.m2s2 = float(specs.dimensionalize(1.0, units.m**2 / units.s**2).m)
        self.Pa = float(specs.dimensionalize(1.0, units.pascal).m)
        R_si = float(specs.dimensionalize(specs.R, units.J / units.kg / units.degK).m)

        log_sigma = jnp.asarray(np.log(self.sigma), dtype=jnp.float32)
        log_p = jnp.asarray(np.log(np.asarray(levels, dtype=np.float64) * 100.0), dtype=jnp.float32)
        out_grid, coords, tref = self.out_grid, self.coords, self.tref

        def diagnose(state):
            T = (tref[:, None, None] + out_grid.to_nodal(state.temperature_variation)) * self.K
            u, v = spherical_harmonic.vor_div_to_uv_nodal(
                out_grid, state.vorticity, state.divergence
            )
            u, v = u * self.ms, v * self.ms
            phi = (
                primitive_equations.get_geopotential_on_sigma(
                    T / self.K,
                    nodal_orography=jnp.zeros(T.shape[1:]),
                    sigma=coords.vertical,
                    gravity_acceleration=specs.g,
                    ideal_gas_constant=specs.R,
                )
                * self.m2s2
            )
            sp = jnp.exp(out_grid.to_nodal(state.log_surface_pressure))[0] * self.Pa
            x = log_p[:, None, None] - jnp.log(sp)[None]
            interp = functools.partial(log_pressure_interp, log_sigma=log_sigma, x=x, xp=jnp)
            return {
                "geopotential": interp(phi, T, R=R_si),
                "temperature": interp(T, T),
                "u_component_of_wind": interp(u, T),
                "v_component_of_wind": interp(v, T),
                "surface_pressure": sp,
                "2m_temperature": T[-1],
                "10m_u_component_of_wind": u[-1],
                "10m_v_component_of_wind": v[-1],
            }

        n_out = 24 // output_hours
        inner = (60 * output_hours) // dt_minutes
        self.day = jax.jit(
            time_integration.trajectory_from_step(
                step, n_out, inner, start_with_input=True, post_process_fn=diagnose
            )
        )

    # -- states
    def initial_state(self, seed: int):
        """At rest, 1000 hPa, temperature of the radiative equilibrium plus seeded noise."""

        from dinosaur import primitive_equations

        jnp, g = self.jnp, self.grid
        ps = np.full((1,) + g.nodal_shape, self.specs.nondimensionalize(1e5 * self.units.pascal))
        T_eq = np.asarray(self.forcing.equilibrium_temperature(ps))
        T_var = T_eq - self.tref[:, None, None] + self._noise(seed, 0)
        zeros = jnp.zeros((self.coords.vertical.layers,) + g.modal_shape, dtype=jnp.float32)
        return primitive_equations.State(
            vorticity=zeros,
            divergence=zeros,
            temperature_variation=jnp.asarray(g.to_modal(T_var.astype(np.float32))),
            log_surface_pressure=jnp.asarray(g.to_modal(np.log(ps).astype(np.float32))),
        )

    def perturb(self, state, seed: int, run: int):
        """The state plus seeded temperature noise (start of the gap before run ``run``)."""

        from dinosaur import primitive_equations

        noise = self.grid.to_modal(self._noise(seed, run).astype(np.float32))
        return primitive_equations.State(
            vorticity=state.vorticity,
            divergence=state.divergence,
            temperature_variation=state.temperature_variation + noise,
            log_surface_pressure=state.log_surface_pressure,
        )

    def _noise(self, seed: int, run: int) -> np.ndarray:
        rng = np.random.default_rng([seed, run])
        std = self.specs.nondimensionalize(_NOISE_K * self.units.degK)
        return std * rng.standard_normal((self.coords.vertical.layers,) + self.grid.nodal_shape)

    def to_arrays(self, state) -> dict[str, np.ndarray]:
        """The modal state as NumPy arrays (for the state file)."""
        return {k: np.asarray(getattr(state, k)) for k in _STATE_KEYS}

    def from_arrays(self, arrays: dict[str, np.ndarray]):
        """The modal state back from :meth:`to_arrays`."""

        from dinosaur import primitive_equations

        layers = self.coords.vertical.layers
        for k in _STATE_KEYS:
            expected = (1 if k == "log_surface_pressure" else layers,) + self.grid.modal_shape
            if arrays[k].shape != expected:
                raise DataError(
                    f"the saved model state '{k}' has shape {arrays[k].shape}, expected {expected}",
                    hint="delete the state file and the store, then generate again",
                )
        return primitive_equations.State(**{k: self.jnp.asarray(arrays[k]) for k in _STATE_KEYS})

    @staticmethod
    def canonical(a: np.ndarray) -> np.ndarray:
        """``(…, lon, lat ascending)`` → ``(…, lat descending, lon)``, float32."""
        return np.ascontiguousarray(
            np.swapaxes(np.asarray(a), -1, -2)[..., ::-1, :], dtype=np.float32
        )


@functools.lru_cache(maxsize=4)
def _model(
    resolution: str, layers: int, dt_minutes: int, output_hours: int, levels: tuple[int, ...]
) -> _Model:
    """One compiled model per setting and process (compilation takes seconds to a minute)."""
    return _Model(resolution, layers, dt_minutes, output_hours, levels)


# ----------------------------------------------------------------------------- timeline
def _timeline(config: SynthConfig) -> list[str]:
    """What each simulated day does: ``"spinup"``, ``"gap{r}"`` or ``"run{r}"`` (written)."""

    days = ["spinup"] * config.spinup_days
    for r in range(config.runs):
        if r:
            days += [f"gap{r}"] * config.gap_days
        days += [f"run{r}"] * config.days
    return days


def _times(config: SynthConfig, day: int) -> np.ndarray:
    """Times of the states written on simulated day ``day`` (the start of each output interval)."""

    hours = day * 24 + np.arange(config.outputs_per_day) * config.output_hours
    return EPOCH + hours.astype("timedelta64[h]").astype("timedelta64[ns]")


# ----------------------------------------------------------------------------- checkpoints
def _save_checkpoint(
    path: Path, model: _Model, state, *, config: SynthConfig, day: int, n_times: int
) -> None:
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "day": day,
        "n_times": n_times,
        "dinosaur_version": model.version,
        "jax_version": model.jax_version,
    }
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **model.to_arrays(state))
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in _STATE_KEYS}
    except Exception as e:  # any unreadable file is the same user problem
        raise DataError(
            f"the synthetic-planet state {path} is unreadable ({type(e).__name__}: {e})",
            hint="delete it and the store next to it, then generate again",
        ) from e
    if meta.get("format") != _CHECKPOINT_FORMAT:
        raise DataError(
            f"{path} has an unknown format {meta.get('format')!r}",
            hint="delete it and generate again",
        )
    return meta, arrays


def _store_length(out: Path) -> int | None:
    """Number of written times, or None if ``out`` holds no zarr group."""

    if not (out / "zarr.json").exists():
        return None
    import zarr

    group = zarr.open_group(str(out), mode="r")
    if "time" not in group:
        raise DataError(f"{out} is a zarr store without a time axis, not a synthetic planet")
    return int(group["time"].shape[0])


def _truncate(out: Path, n: int) -> None:
    """Cut every time-dependent array of the store to its first ``n`` times."""

    import zarr

    group = zarr.open_group(str(out), mode="r+")
    for _, array in group.arrays():
        dims = array.metadata.dimension_names or ()
        if dims and dims[0] == "time" and array.shape[0] > n:
            array.resize((n,) + tuple(array.shape[1:]))


# ----------------------------------------------------------------------------- output
_LEVEL_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
_SURFACE_VARS = (
    "surface_pressure",
    "mean_sea_level_pressure",
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
)


def _variable_attrs(sigma_bottom: float) -> dict[str, dict[str, str]]:
    low = f"at the lowest sigma level (sigma={sigma_bottom:.3f})"
    return {
        "geopotential": {
            "units": "m**2 s**-2",
            "long_name": "Geopotential",
            "standard_name": "geopotential",
        },
        "temperature": {
            "units": "K",
            "long_name": "Temperature",
            "standard_name": "air_temperature",
        },
        "u_component_of_wind": {
            "units": "m s**-1",
            "long_name": "U component of wind",
            "standard_name": "eastward_wind",
        },
        "v_component_of_wind": {
            "units": "m s**-1",
            "long_name": "V component of wind",
            "standard_name": "northward_wind",
        },
        "surface_pressure": {
            "units": "Pa",
            "long_name": "Surface pressure",
            "standard_name": "surface_air_pressure",
        },
        "mean_sea_level_pressure": {
            "units": "Pa",
            "long_name": "Mean sea level pressure; equal to the surface pressure "
            "(the planet has no orography)",
            "standard_name": "air_pressure_at_mean_sea_level",
        },
        "2m_temperature": {
            "units": "K",
            "long_name": f"Temperature {low}, stands in for 2m_temperature",
        },
        "10m_u_component_of_wind": {
            "units": "m s**-1",
            "long_name": f"U component of wind {low}, stands in for 10m_u_component_of_wind",
        },
        "10m_v_component_of_wind": {
            "units": "m s**-1",
            "long_name": f"V component of wind {low}, stands in for 10m_v_component_of_wind",
        },
    }


def _global_attrs(config: SynthConfig, model: _Model) -> dict[str, Any]:
    tiny = config.spinup_days < 100
    return {
        "title": "Synthetic planet: dry Held-Suarez atmosphere",
        "source": "appa_engine.data.synth.generate_planet",
        "model": f"dinosaur {model.version} (JAX {model.jax_version}): dry hydrostatic "
        f"primitive equations on {config.layers} equally spaced sigma layers, spectral "
        f"{config.resolution}, semi-implicit SIL3 Runge-Kutta, dt = {config.dt_minutes} min, "
        f"exponential filter and del^8 hyperdiffusion ({_HYPERDIFFUSION_DAYS} day at the "
        "smallest scale)",
        "forcing": "Held & Suarez (1994): Rayleigh friction below sigma = 0.7 (1/day at the "
        "surface), Newtonian relaxation to a zonal radiative equilibrium (1/40 to 1/4 days); "
        "no orography, moisture, seasons or diurnal cycle",
        "resolution": config.resolution,
        "grid": "regular cell-centred latitude-longitude grid; the spectral fields are evaluated "
        "at the regular nodes (no Gaussian-grid regridding); pressure levels interpolated "
        "linearly in ln p",
        "initial_state": "at rest, uniform 1000 hPa surface pressure, temperature of the "
        f"Held-Suarez radiative equilibrium plus {_NOISE_K} K seeded white noise",
        "spinup": f"{config.spinup_days} days before the first written time"
        + (
            " (short: jets and eddies are present but the model is not in statistical equilibrium)"
            if tiny
            else ""
        ),
        "runs": f"{config.runs} run(s) of {config.days} days; run r >= 1 starts from the end of "
        f"run r-1 plus seeded noise after {config.gap_days} unwritten days, so runs are "
        "separated by a time gap: training windows must not cross it",
        "time": "synthetic calendar starting 2000-01-01 00:00 at the start of the spin-up; "
        "dates carry no information",
        "seed": config.seed,
        "spinup_days": config.spinup_days,
        "dinosaur_version": model.version,
        "synth_config": json.dumps(config.to_dict()),
    }


def _dataset(
    outputs: dict[str, Any], times: np.ndarray, run: int, config: SynthConfig, model: _Model
):
    import xarray as xr

    grid = config.grid
    attrs = _variable_attrs(float(model.sigma[-1]))
    data = {}
    for name, value in outputs.items():
        dims = (
            ("time", "level", "latitude", "longitude")
            if name in _LEVEL_VARS
            else ("time", "latitude", "longitude")
        )
        data[name] = xr.Variable(dims, _Model.canonical(value), attrs=attrs[name])
    data["mean_sea_level_pressure"] = xr.Variable(
        data["surface_pressure"].dims,
        data["surface_pressure"].values.copy(),
        attrs=attrs["mean_sea_level_pressure"],
    )
    data = {name: data[name] for name in _LEVEL_VARS + _SURFACE_VARS}
    coords = {
        "time": ("time", times),
        "level": (
            "level",
            np.asarray(config.levels, dtype=np.int64),
            {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure"},
        ),
        "latitude": (
            "latitude",
            grid.lat,
            {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"},
        ),
        "longitude": (
            "longitude",
            grid.lon,
            {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"},
        ),
        "run": (
            "time",
            np.full(times.shape, run, dtype=np.int32),
            {"long_name": "index of the independent run; training windows must not cross runs"},
        ),
    }
    return xr.Dataset(data, coords=coords, attrs=_global_attrs(config, model))


def _encoding(ds) -> dict[str, dict]:
    enc: dict[str, dict] = {}
    for name, var in ds.data_vars.items():
        enc[name] = {"chunks": (1,) + var.shape[1:], "dtype": "float32"}
    enc["time"] = {
        "units": "hours since 2000-01-01 00:00:00",
        "calendar": "proleptic_gregorian",
        "dtype": "int64",
        "chunks": (4096,),
    }
    enc["run"] = {"chunks": (4096,)}
    return enc


# ----------------------------------------------------------------------------- generation
def generate_planet(out: str | os.PathLike, config: SynthConfig, *, progress: bool = True) -> Path:
    """Simulate the synthetic planet and write (or continue) the zarr store ``out``.

    Arguments:
        out: Zarr directory to write; created, continued or extended.
        config: What to simulate (e.g. ``SynthConfig.preset("small")``).
        progress: Show a progress bar over simulated days.

    Returns:
        The path of the store.

    Raises:
        ConfigError: ``out`` holds a planet made with a different configuration, or one that
            cannot be extended this way (more days after a later run was written).
        DataError: ``out`` exists but is not a synthetic planet, or its state file is missing
            or damaged.
    """

    if not isinstance(config, SynthConfig):
        raise ConfigError(
            f"config must be a SynthConfig, got {type(config).__name__}",
            hint="use SynthConfig.preset('small')",
        )
    out = Path(out)
    ckpt = state_path(out)
    timeline = _timeline(config)
    model = _model(
        config.resolution, config.layers, config.dt_minutes, config.output_hours, config.levels
    )

    state, day, n_times = _resume(out, ckpt, config, timeline, model)
    if state is None:
        state = model.initial_state(config.seed)
    if day >= len(timeline):
        logger.info(
            "%s already holds the requested %d run(s) of %d days", out, config.runs, config.days
        )
        return out

    from tqdm.auto import tqdm

    bar = tqdm(total=len(timeline) - day, unit="day", desc="synthetic planet", disable=not progress)
    try:
        while day < len(timeline):
            kind = timeline[day]
            if kind.startswith("gap") and timeline[day - 1] != kind:
                state = model.perturb(state, config.seed, int(kind[3:]))
            bar.set_postfix_str(kind)
            next_state, outputs = model.day(state)
            if kind.startswith("run"):
                outputs = {k: np.asarray(v) for k, v in outputs.items()}
                ds = _dataset(outputs, _times(config, day), int(kind[3:]), config, model)
                if not (out / "zarr.json").exists():
                    ds.to_zarr(
                        out, mode="w-", consolidated=False, zarr_format=3, encoding=_encoding(ds)
                    )
                else:
                    ds.to_zarr(out, mode="a", append_dim="time", consolidated=False)
                n_times += ds.sizes["time"]
            state, day = next_state, day + 1
            _save_checkpoint(ckpt, model, state, config=config, day=day, n_times=n_times)
            bar.update(1)
    finally:
        bar.close()
    logger.info("wrote %s: %d times", out, n_times)
    return out


def _resume(out: Path, ckpt: Path, config: SynthConfig, timeline: list[str], model: _Model):
    """``(state or None, day, n_times)`` to continue from, after checking the store agrees."""

    if out.exists() and not out.is_dir():
        raise DataError(
            f"{out} exists and is a file, not a zarr store", hint="choose another output path"
        )
    n_store = _store_length(out)
    if out.exists() and n_store is None and any(out.iterdir()):
        raise DataError(
            f"{out} exists and is not a zarr store", hint="choose another output path or remove it"
        )
    if not ckpt.exists():
        if n_store is not None:
            raise DataError(
                f"{out} exists but its state file {ckpt.name} is missing, so it cannot be "
                "continued",
                hint="choose another output path, or delete the store to generate it again",
            )
        return None, 0, 0
    meta, arrays = _load_checkpoint(ckpt)
    try:
        old = SynthConfig(**meta["config"])
    except (TypeError, AppaError) as e:
        raise DataError(
            f"{ckpt} holds an unreadable configuration ({e})", hint="delete it and generate again"
        ) from e
    day, n_times = int(meta["day"]), int(meta["n_times"])
    if n_store is None and n_times > 0:
        logger.warning("%s has no store next to it (deleted?): starting over", ckpt)
        ckpt.unlink()
        return None, 0, 0
    if old.identity() != config.identity():
        diff = {
            k: (old.identity()[k], v)
            for k, v in config.identity().items()
            if old.identity()[k] != v
        }
        if n_store is None:  # an interrupted spin-up of another configuration: nothing to keep
            logger.warning("discarding the spin-up state of another configuration in %s", ckpt)
            ckpt.unlink()
            return None, 0, 0
        raise ConfigError(
            f"{out} was generated with a different configuration: "
            + ", ".join(f"{k} = {a!r} there, {b!r} asked" for k, (a, b) in diff.items()),
            hint="use the same settings to continue it (only days and runs may grow), "
            "or write a new store",
        )
    done = _timeline(old)[:day]
    common = min(len(done), len(timeline))
    if timeline[:common] != done[:common]:
        first = next(i for i in range(common) if timeline[i] != done[i])
        raise ConfigError(
            f"{out} holds {old.runs} run(s) of {old.days} days; {config.runs} run(s) of "
            f"{config.days} days would change simulated day {first} ({done[first]} there, "
            f"{timeline[first]} asked), which is already done",
            hint="only the last run can be extended: ask for more runs, keep days, "
            "or write a new store",
        )
    if (
        meta.get("dinosaur_version") != model.version
        or meta.get("jax_version") != model.jax_version
    ):
        logger.warning(
            "%s was started with dinosaur %s / jax %s, now %s / %s: "
            "the continuation will not be bit-identical",
            out,
            meta.get("dinosaur_version"),
            meta.get("jax_version"),
            model.version,
            model.jax_version,
        )
    if n_store is not None and n_store != n_times:
        if n_store < n_times:
            raise DataError(
                f"{out} holds {n_store} times but its state file says {n_times} were written",
                hint="the store is damaged: delete it and its state file, then generate again",
            )
        logger.warning(
            "%s: dropping %d times written after the last saved state", out, n_store - n_times
        )
        _truncate(out, n_times)
    logger.info("resuming %s at simulated day %d of %d", out, day, len(timeline))
    return model.from_arrays(arrays), day, n_times
