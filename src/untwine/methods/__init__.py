"""Training objectives, one file per method (spec §2.3)."""

from untwine.methods.annealed_vae import annealed_vae_loss, capacity
from untwine.methods.beta_tcvae import (
    beta_tcvae_loss,
    gaussian_log_density,
    total_correlation,
)
from untwine.methods.beta_vae import (
    bernoulli_reconstruction,
    beta_vae_loss,
    gaussian_kl,
)
from untwine.methods.dip_vae import (
    LAMBDA_D_FACTOR,
    covariance_of_means,
    dip_covariance,
    dip_regularizer,
    dip_vae_loss,
)
from untwine.methods.factor_vae import discriminator_loss, factor_vae_loss, permute_dims

__all__ = [
    "LAMBDA_D_FACTOR",
    "annealed_vae_loss",
    "bernoulli_reconstruction",
    "beta_tcvae_loss",
    "beta_vae_loss",
    "capacity",
    "covariance_of_means",
    "dip_covariance",
    "dip_regularizer",
    "dip_vae_loss",
    "discriminator_loss",
    "factor_vae_loss",
    "gaussian_kl",
    "gaussian_log_density",
    "permute_dims",
    "total_correlation",
]
