"""Files: atomic writes, checkpoints, model packages and dataset outputs."""
