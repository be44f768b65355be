"""beta-TCVAE objective and its minibatch total-correlation estimators (spec §2.3, §10 item 5).

Chen et al. 2018 ("Isolating Sources of Disentanglement in VAEs"), eq. 4 with alpha = gamma = 1, written as the
ELBO plus an extra TC penalty and minimised here as
    loss = reconstruction + KL + (beta - 1) * TC,       regularizer = KL + (beta - 1) * TC,
so beta = 1 is the plain VAE. z is the reparameterised sample that also feeds the decoder.

TC estimators, for a batch of M samples z_j ~ q(z|x_j) and log q(z_jl | x_i) = `gaussian_log_density` [j, i, l]:

* default (`sampling="mws"`, `dataset_size=None`): **the reference's estimator** -- minibatch-weighted sampling
  (eq. 3) with the -log(N M) normalisers dropped:
      TC = mean_j [ logsumexp_i sum_l log q(z_jl|x_i) - sum_l logsumexp_i log q(z_jl|x_i) ].
  The i = j term keeps uniform weight. It is the MWS estimate minus (d - 1) log(N M): same gradients, offset value.
* `sampling="mws"`, `dataset_size=N`: Chen et al.'s MWS with the constants, i.e. every logsumexp_i gets
  -log(N M), which adds (d - 1) log(N M) to the default.
* `sampling="mss"` (needs `dataset_size=N`): minibatch-stratified sampling (Chen et al., appendix C.2). With
  M' = M - 1 other batch members, q(z_j) is estimated as sum_i w_ji q(z_j|x_i) with w_jj = 1/N, one "stratum"
  member i = (j + 1) mod M weighted (N - M') / (N M'), and the remaining M' - 1 members weighted 1/M'; the same
  weights are used for each marginal q(z_jl). The weights of each row sum to 1 (an unbiased estimate of q(z_j)).
  This is the paper's formula with the stratum member on the cyclic super-diagonal; the authors' released
  `_log_importance_weight_matrix` strides by the batch size and so fills columns instead of the diagonal
  (rtqichen/beta-tcvae PR #1), which we do not copy.
"""

from __future__ import annotations

import math

import torch

from untwine.errors import InvalidInputError
from untwine.methods.beta_vae import bernoulli_reconstruction, gaussian_kl, logged_terms

SAMPLING = ("mws", "mss")
KL_ESTIMATORS = ("analytic", "sample")


def gaussian_log_density(samples: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(samples; mean, exp(logvar)) = -1/2 [(s - mean)^2 exp(-logvar) + logvar + log 2 pi]."""
    diff = samples - mean
    return -0.5 * (diff * diff * torch.exp(-logvar) + logvar + math.log(2.0 * math.pi))


def _check(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, dataset_size, sampling: str) -> None:
    if sampling not in SAMPLING:
        raise InvalidInputError(f"unknown TC sampling {sampling!r}; choose one of {', '.join(SAMPLING)}")
    if z.dim() != 2 or z.shape != mean.shape or z.shape != logvar.shape:
        raise InvalidInputError(
            f"z, mean and logvar must share one [batch, latent] shape, got {tuple(z.shape)}, "
            f"{tuple(mean.shape)}, {tuple(logvar.shape)}"
        )
    if dataset_size is not None and (
        isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1
    ):
        raise InvalidInputError(f"dataset_size must be a positive integer, got {dataset_size!r}")
    if sampling == "mss":
        if dataset_size is None:
            raise InvalidInputError("sampling='mss' needs dataset_size (the number of training examples N)")
        if z.shape[0] < 2:
            raise InvalidInputError("sampling='mss' needs a batch of at least 2 samples")
        if dataset_size < z.shape[0]:
            raise InvalidInputError(
                f"sampling='mss' needs dataset_size >= batch size, got {dataset_size} < {z.shape[0]}"
            )


def _log_stratified_weights(batch_size: int, dataset_size: int, like: torch.Tensor) -> torch.Tensor:
    """[M, M] log w_ji of minibatch-stratified sampling: 1/N on the diagonal, (N - M')/(N M') on (j, j+1 mod M),
    1/M' elsewhere, with M' = M - 1."""
    n, m = dataset_size, batch_size - 1
    idx = torch.arange(batch_size, device=like.device)
    diagonal = idx[:, None] == idx[None, :]
    stratum = idx[None, :] == (idx[:, None] + 1) % batch_size
    weights = torch.full((batch_size, batch_size), 1.0 / m, dtype=like.dtype, device=like.device)
    weights = torch.where(stratum, torch.full_like(weights, (n - m) / (n * m)), weights)
    weights = torch.where(diagonal, torch.full_like(weights, 1.0 / n), weights)
    return weights.log()


def total_correlation(
    z: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    dataset_size: int | None = None,
    sampling: str = "mws",
) -> torch.Tensor:
    """Minibatch TC estimate (0-d); see the module docstring for the three variants. Default = the reference."""
    _check(z, mean, logvar, dataset_size, sampling)
    batch_size, latent_dim = z.shape
    log_qz_prob = gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])  # [j, i, l]
    if sampling == "mss":
        log_w = _log_stratified_weights(batch_size, dataset_size, log_qz_prob)
        log_qz = torch.logsumexp(log_w + log_qz_prob.sum(2), dim=1)
        log_qz_product = torch.logsumexp(log_w[:, :, None] + log_qz_prob, dim=1).sum(1)
        return (log_qz - log_qz_product).mean()
    log_qz = torch.logsumexp(log_qz_prob.sum(2), dim=1)
    log_qz_product = torch.logsumexp(log_qz_prob, dim=1).sum(1)
    tc = (log_qz - log_qz_product).mean()
    if dataset_size is not None:  # Chen et al. eq. 3: each logsumexp_i carries -log(N M); d - 1 of them survive
        tc = tc + (latent_dim - 1) * math.log(dataset_size * batch_size)
    return tc


def beta_tcvae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor,
    beta=1.0,
    dataset_size: int | None = None,
    sampling: str = "mws",
    kl_estimator: str = "analytic",
) -> dict[str, torch.Tensor]:
    """loss, reconstruction_loss, kl_loss, regularizer (= KL + (beta - 1) TC), elbo, and total_correlation.

    kl_estimator "analytic" (disentanglement_lib): the Gaussian KL in closed form. "sample" (Chen et al.'s code,
    which rPU-VAE trains with): the single-sample estimate sum_l log q(z_l|x) - log p(z_l) at the sampled z,
    whose expectation is the same KL (unbiased, noisier gradients)."""
    tc = total_correlation(z, mean, logvar, dataset_size=dataset_size, sampling=sampling)
    reconstruction = bernoulli_reconstruction(logits, targets).mean()
    if kl_estimator == "analytic":
        kl = gaussian_kl(mean, logvar).mean()
    elif kl_estimator == "sample":
        zeros = torch.zeros_like(z)
        kl = (gaussian_log_density(z, mean, logvar) - gaussian_log_density(z, zeros, zeros)).sum(1).mean()
    else:
        raise InvalidInputError(f"unknown kl_estimator {kl_estimator!r}; choose {', '.join(KL_ESTIMATORS)}")
    regularizer = kl + (beta - 1.0) * tc
    return logged_terms(reconstruction, kl, regularizer, total_correlation=tc)
