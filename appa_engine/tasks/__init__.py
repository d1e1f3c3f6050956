"""Tasks: reanalysis, filtering and forecasting on top of the guided latent sampler."""

from appa_engine.tasks.assimilator import SAMPLERS, Assimilator
from appa_engine.tasks.simulate import make_scenario, paper_satellite, random_stations, simulate

__all__ = ["Assimilator", "SAMPLERS", "make_scenario", "paper_satellite", "random_stations", "simulate"]
