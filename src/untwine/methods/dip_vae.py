"""DIP-VAE-I and DIP-VAE-II objectives (spec §2.3, §10 item 6).

Kumar et al. 2018 ("Variational Inference of Disentangled Latent Concepts from Unlabeled Observations"), eqs. 6
(DIP-I) and 7 (DIP-II), minimised here as
    loss = reconstruction + KL + lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2,
with the full KL kept at weight 1, lambda_d = lambda_d_factor * lambda_od, and C computed on the current batch:
* DIP-I:  C = Cov[mu] = E[mu mu^T] - E[mu] E[mu]^T, the biased (divide by B) batch covariance of the means;
* DIP-II: C = Cov_q[z] = E_batch[diag(exp(logvar))] + Cov[mu].
The study uses lambda_d_factor = 10 for DIP-I and 1 for DIP-II (`LAMBDA_D_FACTOR`, the defaults here) and
lambda_od in {1, 2, 5, 10, 20, 50}.
"""

from __future__ import annotations

import torch

from untwine.errors import InvalidInputError
from untwine.methods.beta_vae import bernoulli_reconstruction, gaussian_kl, logged_terms

DIP_TYPES = ("i", "ii")
LAMBDA_D_FACTOR = {"i": 10.0, "ii": 1.0}


def covariance_of_means(mean: torch.Tensor) -> torch.Tensor:
    """[d, d] biased batch covariance E[mu mu^T] - E[mu] E[mu]^T (no Bessel correction), as the reference."""
    expectation_outer = (mean[:, :, None] * mean[:, None, :]).mean(0)
    expectation = mean.mean(0)
    return expectation_outer - expectation[:, None] * expectation[None, :]


def dip_covariance(mean: torch.Tensor, logvar: torch.Tensor, dip_type: str = "i") -> torch.Tensor:
    """The regularised matrix: Cov[mu] (DIP-I) or E[diag(exp(logvar))] + Cov[mu] (DIP-II)."""
    _check_type(dip_type)
    cov = covariance_of_means(mean)
    if dip_type == "ii":
        cov = cov + torch.diag_embed(logvar.exp()).mean(0)
    return cov


def dip_regularizer(covariance: torch.Tensor, lambda_od, lambda_d) -> torch.Tensor:
    """lambda_od * sum of squared off-diagonal entries + lambda_d * sum_i (C_ii - 1)^2."""
    diagonal = torch.diagonal(covariance)
    off_diagonal = covariance - torch.diag_embed(diagonal)
    return lambda_od * off_diagonal.square().sum() + lambda_d * (diagonal - 1.0).square().sum()


def _check_type(dip_type: str) -> None:
    if dip_type not in DIP_TYPES:
        raise InvalidInputError(f"unknown dip_type {dip_type!r}; choose one of {', '.join(DIP_TYPES)}")


def dip_vae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    lambda_od,
    lambda_d_factor=None,
    dip_type: str = "i",
) -> dict[str, torch.Tensor]:
    """loss, reconstruction_loss, kl_loss, regularizer (= KL + DIP penalty), elbo, and dip_regularizer.

    lambda_d_factor=None takes the study's value for `dip_type` (10 for "i", 1 for "ii").
    """
    _check_type(dip_type)
    if lambda_d_factor is None:
        lambda_d_factor = LAMBDA_D_FACTOR[dip_type]
    reconstruction = bernoulli_reconstruction(logits, targets).mean()
    kl = gaussian_kl(mean, logvar).mean()
    penalty = dip_regularizer(dip_covariance(mean, logvar, dip_type), lambda_od, lambda_d_factor * lambda_od)
    regularizer = kl + penalty
    return logged_terms(reconstruction, kl, regularizer, dip_regularizer=penalty)
