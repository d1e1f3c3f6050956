"""Metrics of ensembles against truth and observations (xarray in, xarray out)."""

from appa_engine.metrics.balance import geostrophic_balance, geostrophic_wind
from appa_engine.metrics.deterministic import area_mean, bias, ensemble_mean, mae, rmse
from appa_engine.metrics.evaluate import METRICS, evaluate, format_table
from appa_engine.metrics.observation import innovation_statistics
from appa_engine.metrics.probabilistic import (
    crps,
    crps_fair_pointwise,
    rank_histogram,
    spread,
    spread_skill_ratio,
)
from appa_engine.metrics.spectra import wavelength_km, zonal_spectrum

__all__ = [
    "METRICS",
    "area_mean",
    "bias",
    "crps",
    "crps_fair_pointwise",
    "ensemble_mean",
    "evaluate",
    "format_table",
    "geostrophic_balance",
    "geostrophic_wind",
    "innovation_statistics",
    "mae",
    "rank_histogram",
    "rmse",
    "spread",
    "spread_skill_ratio",
    "wavelength_km",
    "zonal_spectrum",
]
