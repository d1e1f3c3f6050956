"""Observations: observers as data, differentiable observation operators, scenario files."""

from appa_engine.observations.compile import CompiledObservations, compile_observations
from appa_engine.observations.observers import (
    FullStateObserver,
    LatentObserver,
    ObservationSet,
    Profiles,
    SatelliteSwath,
    Stations,
    TrackSwath,
    WindSpeedStations,
    time_range,
)
from appa_engine.observations.orbits import CircularOrbit, TLEOrbit
from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings, Scenario

__all__ = [
    "CompiledObservations", "compile_observations", "FullStateObserver", "LatentObserver",
    "ObservationSet", "Profiles", "SatelliteSwath", "Stations", "TrackSwath", "WindSpeedStations",
    "time_range", "CircularOrbit", "TLEOrbit", "GuidanceSettings", "SamplerSettings", "Scenario",
]
