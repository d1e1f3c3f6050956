"""Metrics of ensembles against truth and observations (xarray in, xarray out)."""
