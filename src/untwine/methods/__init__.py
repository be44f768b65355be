"""Training objectives, one file per method (spec §2.3)."""

from untwine.methods.beta_vae import bernoulli_reconstruction, beta_vae_loss, gaussian_kl

__all__ = ["bernoulli_reconstruction", "beta_vae_loss", "gaussian_kl"]
