"""One entry point for every method's objective (spec §2.3): method name + hyperparameters -> logged terms.

`objective_terms` dispatches to the method's file. Hyperparameters may be floats or tensors (a ModelStack
passes per-member values under torch.func.vmap). FactorVAE also needs its discriminator (a callable z -> logits).
"""

from __future__ import annotations

import torch

from untwine.errors import InvalidInputError
from untwine.methods.annealed_vae import annealed_vae_loss
from untwine.methods.beta_tcvae import beta_tcvae_loss
from untwine.methods.beta_vae import beta_vae_loss
from untwine.methods.dip_vae import dip_vae_loss
from untwine.methods.factor_vae import factor_vae_loss

# untwine's tc_estimator names -> (dataset size needed, sampling) of `beta_tcvae_loss`
TC_SAMPLING = {"reference": (False, "mws"), "mws": (True, "mws"), "mss": (True, "mss")}


def objective_terms(
    method: str,
    logits: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor,
    step,
    hyperparameters: dict,
    discriminator=None,
    tc_estimator: str = "reference",
    dataset_size: int | None = None,
    kl_estimator: str = "analytic",
) -> dict[str, torch.Tensor]:
    """The reference's logged terms of `method` for one batch; `step` is the global step before this update."""
    h = hyperparameters
    if method in ("vae", "beta_vae"):
        return beta_vae_loss(logits, targets, mean, logvar, h["beta"])
    if method == "annealed_vae":
        return annealed_vae_loss(logits, targets, mean, logvar, h["gamma"], h["c_max"], h["iteration_threshold"], step)
    if method == "beta_tcvae":
        if tc_estimator not in TC_SAMPLING:
            raise InvalidInputError(f"unknown tc_estimator {tc_estimator!r}; choose {', '.join(TC_SAMPLING)}")
        needs_size, sampling = TC_SAMPLING[tc_estimator]
        if needs_size and dataset_size is None:
            raise InvalidInputError(f"tc_estimator {tc_estimator!r} needs the data set's size")
        return beta_tcvae_loss(
            logits, targets, mean, logvar, z, h["beta"], dataset_size if needs_size else None, sampling, kl_estimator
        )
    if method in ("dip_vae_i", "dip_vae_ii"):
        return dip_vae_loss(
            logits, targets, mean, logvar, h["lambda_od"], h["lambda_d_factor"], method.removeprefix("dip_vae_")
        )
    if method == "factor_vae":
        if discriminator is None:
            raise InvalidInputError("factor_vae needs its discriminator")
        return factor_vae_loss(logits, targets, mean, logvar, z, h["gamma"], discriminator)
    raise InvalidInputError(f"unknown method {method!r}")
