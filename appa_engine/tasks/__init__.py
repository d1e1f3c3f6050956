"""Tasks: reanalysis, filtering and forecasting on top of the guided latent sampler."""
