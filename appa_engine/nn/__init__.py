"""Neural backbones: the state autoencoder and the latent diffusion transformer."""
