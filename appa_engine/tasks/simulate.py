"""Synthetic observations drawn from a truth trajectory (observing-system simulation experiments).

:func:`simulate` fills every observer of a set with values ``A(x*) + noise`` computed from a truth
store on the model's grid; :func:`random_stations` and :func:`paper_satellite` build the observers
of Appa's experiments; :func:`make_scenario` puts it together into a reproducible scenario file.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from appa_engine.data.grid import Grid
from appa_engine.errors import DataError
from appa_engine.observations.observers import ObservationSet, SatelliteSwath, Stations
from appa_engine.observations.orbits import CircularOrbit

__all__ = ["truth_window", "simulate", "random_stations", "paper_satellite", "make_scenario"]


def truth_window(model, truth: xr.Dataset, times: np.ndarray) -> torch.Tensor:
    """Standardised true states of ``times`` from a canonical truth dataset, ``(T, C, H, W)``."""

    grid = Grid.from_arrays(truth["latitude"].values, truth["longitude"].values)
    if grid != model.grid:
        raise DataError(f"the truth is on {grid!r} but the model on {model.grid!r}",
                        hint="regrid the truth to the model's grid, or use a model trained on it")
    missing = [t for t in times if t not in truth["time"].values]
    if missing:
        raise DataError(
            f"the truth has no state at {', '.join(str(t)[:16] for t in missing[:3])}"
            f"{' …' if len(missing) > 3 else ''} (it covers {str(truth['time'].values[0])[:16]} to "
            f"{str(truth['time'].values[-1])[:16]})",
            hint="choose a window inside the truth's time range, on the model's time step",
        )
    x = model.channels.to_tensor(truth.sel(time=times))
    return model.standardize(x.to(model.device)).cpu()


def simulate(model, observations: ObservationSet, truth: xr.Dataset, times: np.ndarray, *,
             seed: int = 0) -> ObservationSet:
    """The observation set with values simulated from ``truth`` (noise drawn with ``seed``)."""

    from appa_engine.tasks.assimilator import compile_for

    compiled = compile_for(model, observations, times)
    x = truth_window(model, truth, times)
    z = None
    if compiled.has_latent:
        with torch.no_grad():
            z = model.encode(x.to(model.device)).cpu()
    values = compiled.simulate(x, truth_z=z, generator=seed)
    return compiled.with_values(values)


def random_stations(n: int, *, times, variables=("2m_temperature", "mean_sea_level_pressure"),
                    errors=None, seed: int = 0, name: str = "stations") -> Stations:
    """``n`` stations uniform on the sphere (seeded), observing ``variables`` at ``times``."""

    rng = np.random.default_rng(seed)
    lon = rng.uniform(0.0, 360.0, n)
    lat = np.rad2deg(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    if errors is None:
        errors = {v: default_error(v) for v in variables}
    return Stations(name=name, lon=lon, lat=lat, times=times, variables=list(variables), errors=errors)


def default_error(variable: str) -> float:
    """Plausible station error standard deviations (physical units)."""

    table = {"temperature": 0.5, "2m_temperature": 0.5, "mean_sea_level_pressure": 50.0, "surface_pressure": 50.0,
             "u_component_of_wind": 1.0, "v_component_of_wind": 1.0, "10m_u_component_of_wind": 1.0,
             "10m_v_component_of_wind": 1.0, "geopotential": 50.0, "specific_humidity": 5e-4}
    return table.get(variable, 1.0)


def paper_satellite(*, start, end, variables, levels, errors=None, name: str = "polar-orbiter",
                    samples_per_hour: int = 60, phase_deg: float = 0.0) -> SatelliteSwath:
    """Appa's polar orbiter: 800 km, 75° inclination, 5° field-of-view radius, 60 samples per hour."""

    orbit = CircularOrbit(800.0, 75.0, phase_deg=phase_deg, epoch=start)
    if errors is None:
        errors = {v: default_error(v) for v in variables}
    return SatelliteSwath(name=name, orbit=orbit, fov_radius_deg=5.0, samples_per_hour=samples_per_hour,
                          start=start, end=end, variables=list(variables), levels=list(levels), errors=errors)


def make_scenario(model, truth: xr.Dataset, *, start, hours: int, stations: int = 0,
                  satellite: bool = False, task: str = "reanalysis", lead_hours: int = 0,
                  members: int = 8, seed: int = 0, model_name: str = "default", sampler=None, guidance=None):
    """A scenario with ``stations`` random stations (+ the paper's satellite), values from ``truth``."""

    from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings, Scenario
    from appa_engine.tasks.assimilator import window_times

    times = window_times(start, hours, model.time_step)
    observers = []
    surface = [v for v in model.channels.surface_variables][:2]
    if stations:
        observers.append(random_stations(stations, times=times, variables=surface or list(model.channels.variables[:1]),
                                         seed=seed))
    if satellite:
        level_vars = list(model.channels.level_variables)
        dt = model.time_step.astype("timedelta64[ns]")
        observers.append(paper_satellite(start=times[0] - dt / 2, end=times[-1] + dt / 2, variables=level_vars,
                                         levels=list(model.channels.levels)))
    obs = simulate(model, ObservationSet(observers), truth, times, seed=seed) if observers else ObservationSet()
    return Scenario(start=str(times[0])[:19], observations=obs, model=model_name, task=task, hours=hours,
                    lead_hours=lead_hours, members=members, seed=seed,
                    sampler=sampler or SamplerSettings(), guidance=guidance or GuidanceSettings())
