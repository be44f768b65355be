"""FactorVAE objectives: the VAE side and the discriminator side (spec §1.6, §2.3, §2.4, §10 item 4).

Kim & Mnih 2018 ("Disentangling by Factorising"), eq. 2, as disentanglement_lib computes it:

* **VAE side** (`factor_vae_loss`), minimised over encoder and decoder only:
      loss = reconstruction + KL + gamma * TC,   TC = mean_batch [D(z)_0 - D(z)_1],
  with D the discriminator's *logits* on the un-permuted z (the reparameterised sample that feeds the decoder),
  real class at index 0; gradients flow into the encoder. KL keeps weight 1. Logged terms: loss,
  reconstruction_loss, kl_loss, regularizer (= KL + gamma TC) -- the reference logs no elbo for FactorVAE -- and
  total_correlation (TC) as an extra.
* **Discriminator side** (`discriminator_loss`), minimised over the discriminator only:
      loss = -(1/2 mean log p_0(z) + 1/2 mean log p_1(z_perm)),
  p the softmax probabilities clipped to [1e-6, 1 - 1e-6]; z_perm = `permute_dims(z)`, each latent column
  permuted independently across the **same** batch (the reference's `shuffle_codes`; the paper uses a second batch).
  Its "discriminator_loss" entry is the reference's tensor of that name, i.e. the objective itself (<= 0), -loss.

Update scheme: both losses come from one forward pass and both optimisers step together (a simultaneous update):
Adam(1e-4, 0.9, 0.999) on encoder + decoder for the VAE loss, Adam(1e-4, betas (0.5, 0.9)) on the discriminator
for its loss. The reference restricts each optimiser's variable list instead of stopping gradients, so a trainer
must keep the VAE loss's gradient out of the discriminator (its TC term depends on the discriminator's weights)
and the discriminator loss's gradient out of the encoder (`discriminator_loss` detaches z for that reason).

Double-counted global step: both `minimize` calls receive the TF global step, so one iteration advances it by 2
and `train(steps=300000)` stops after ~150,000 iterations (150k VAE and 150k discriminator updates) while the saved
`global_step` reads 300000 [inferred from TF1 semantics, spec §2.5]. Nothing here depends on the step; a trainer
reproducing the published models should run half the nominal iterations (or count 2 steps per iteration).
"""

from __future__ import annotations

import torch

from untwine.errors import InvalidInputError
from untwine.methods.beta_vae import bernoulli_reconstruction, gaussian_kl
from untwine.nn.discriminator import clipped_probabilities


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Permute each latent column independently across the batch (dim -2); leading dims (models) independent too.

    Randomness comes only from `generator` (not vmap-safe by design: call it outside torch.func.vmap).
    """
    if z.dim() < 2:
        raise InvalidInputError(f"z must be [..., batch, latent], got shape {tuple(z.shape)}")
    keys = torch.rand(z.shape, generator=generator, dtype=torch.float64, device=generator.device)
    order = keys.argsort(dim=-2).to(z.device)
    return z.gather(-2, order)


def total_correlation_logits(logits: torch.Tensor) -> torch.Tensor:
    """TC estimate from discriminator logits on real z: mean over the batch of logit_0 - logit_1."""
    return (logits[..., 0] - logits[..., 1]).mean(-1)


def factor_vae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor,
    gamma,
    discriminator,
) -> dict[str, torch.Tensor]:
    """VAE-side terms: loss, reconstruction_loss, kl_loss, regularizer (= KL + gamma TC), total_correlation.

    `discriminator` is any callable z -> logits [N, 2] (a FactorDiscriminator, or a functional_call closure).
    """
    reconstruction = bernoulli_reconstruction(logits, targets).mean()
    kl = gaussian_kl(mean, logvar).mean()
    tc = total_correlation_logits(discriminator(z))
    regularizer = kl + gamma * tc
    return {
        "loss": reconstruction + regularizer,
        "reconstruction_loss": reconstruction,
        "kl_loss": kl,
        "regularizer": regularizer,
        "total_correlation": tc,
    }


def discriminator_loss(discriminator, z: torch.Tensor, z_permuted: torch.Tensor) -> dict[str, torch.Tensor]:
    """Discriminator-side terms: loss (minimised) and discriminator_loss (the reference's objective, = -loss).

    z and z_permuted are detached: the reference's discriminator optimiser updates only discriminator weights.
    """
    probs_real = clipped_probabilities(discriminator(z.detach()))
    probs_permuted = clipped_probabilities(discriminator(z_permuted.detach()))
    objective = 0.5 * probs_real[..., 0].log().mean() + 0.5 * probs_permuted[..., 1].log().mean()
    return {"loss": -objective, "discriminator_loss": objective}
