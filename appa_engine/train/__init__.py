"""Training loops for the autoencoder and the latent diffusion prior (one process or torchrun)."""
