"""Diffusion engine: noise schedules, denoisers and their loss, samplers, guidance, linear algebra."""
