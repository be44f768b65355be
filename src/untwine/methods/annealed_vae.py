"""AnnealedVAE objective with the reference's linear capacity ramp (spec §2.3, §10 item 7).

Burgess et al. 2018 ("Understanding disentangling in beta-VAE"), eq. 8: L = E_q[log p(x|z)] - gamma |KL - C|;
minimised here as
    loss = reconstruction + gamma * |KL - C(t)|,   C(t) = min(c_max, c_max * t / iteration_threshold),
the absolute value (not squared). t is the global step *before* this step's update (0 for the first update), so C
grows linearly from 0 and stays at c_max from t = iteration_threshold on; there is no lower clip (t is never
negative). The study uses gamma = 1000, iteration_threshold = 100000 and c_max in {5, 10, 25, 50, 75, 100}.
`elbo` is -(recon + KL), independent of C, as in beta_vae.
"""

from __future__ import annotations

import torch

from untwine.errors import InvalidInputError
from untwine.methods.beta_vae import bernoulli_reconstruction, gaussian_kl, logged_terms


def capacity(c_max, iteration_threshold, step, like: torch.Tensor | None = None) -> torch.Tensor:
    """C(t) = min(c_max, c_max * t / iteration_threshold) as a 0-d tensor (dtype/device of `like`).

    Any argument may be a Python number or a 0-d tensor (also under torch.func.vmap).
    """
    if isinstance(iteration_threshold, (int, float)) and iteration_threshold <= 0:
        raise InvalidInputError(f"iteration_threshold must be positive, got {iteration_threshold}")
    zero = torch.zeros(
        (),
        dtype=like.dtype if like is not None else torch.get_default_dtype(),
        device=like.device if like is not None else None,
    )
    ramp = zero + c_max * step / iteration_threshold
    return torch.minimum(zero + c_max, ramp)


def annealed_vae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    gamma,
    c_max,
    iteration_threshold,
    step,
) -> dict[str, torch.Tensor]:
    """loss, reconstruction_loss, kl_loss, regularizer (= gamma |KL - C|), elbo, and capacity (= C(step))."""
    reconstruction = bernoulli_reconstruction(logits, targets).mean()
    kl = gaussian_kl(mean, logvar).mean()
    c = capacity(c_max, iteration_threshold, step, like=kl)
    regularizer = gamma * (kl - c).abs()
    return logged_terms(reconstruction, kl, regularizer, capacity=c)
