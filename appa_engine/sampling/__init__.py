"""Latent trajectory sampling: overlapping blankets folded and unfolded at every diffusion step."""
