"""VAE and beta-VAE objectives with the reference's terms (spec §2.1–2.3).

Higgins et al. 2017, eq. 4: L = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)); minimised here as
    loss = reconstruction + beta * KL,
with reconstruction = per-image **sum** of sigmoid cross-entropy on logits (over pixels and channels), averaged
over the batch, and KL = batch mean of 1/2 sum_j (mu_j^2 + exp(lv_j) - lv_j - 1). beta = 1 is the plain VAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli_reconstruction(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of sigmoid cross-entropy(logits, targets) [N]; targets in [0, 1] are not binarised."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.flatten(1).sum(1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mean, exp(logvar)) || N(0, I)) summed over latents [N]."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1.0).sum(1)


def logged_terms(reconstruction: torch.Tensor, kl: torch.Tensor, regularizer: torch.Tensor, **extra) -> dict:
    """The reference's logged terms from the batch-mean reconstruction, KL and the method's regularizer:
    loss = recon + regularizer, elbo = -(recon + KL), plus any method-specific `extra` terms."""
    return {
        "loss": reconstruction + regularizer,
        "reconstruction_loss": reconstruction,
        "kl_loss": kl,
        "regularizer": regularizer,
        "elbo": -(reconstruction + kl),
        **extra,
    }


def beta_vae_loss(
    logits: torch.Tensor, targets: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> dict[str, torch.Tensor]:
    """The reference's logged terms: loss, reconstruction_loss, kl_loss, regularizer, elbo (= -(recon + KL))."""
    reconstruction = bernoulli_reconstruction(logits, targets).mean()
    kl = gaussian_kl(mean, logvar).mean()
    return logged_terms(reconstruction, kl, beta * kl)
