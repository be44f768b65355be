"""What each latent dimension does: its KL to the prior and the factor it captures most, for the labels of the
traversal rows in the run report.

- KL of latent i: the mean over observations of KL(q(z_i|x) || N(0, 1)) = (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2) / 2
  (nats), the per-dimension term of the VAE's KL loss (Kingma & Welling 2014, appendix B).
- A latent is *inactive* when its KL is below `INACTIVE_KL` nats: its posterior is the prior for every input, so
  it carries no information about x (a collapsed dimension). Its traversal row is greyed.
- The factor it captures: argmax_k of row i of the code x factor mutual-information matrix that MIG (or, without
  MIG, modularity) was computed from on the trained network's mean representation (stored by `evaluate_run`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from untwine.evaluation.arrays import read_arrays
from untwine.viz.images import _device

INACTIVE_KL = 0.01  # nats
MI_SOURCES = ("mig", "modularity_explicitness")  # metrics whose stored arrays hold "mutual_info" [d, K]


@torch.no_grad()
def latent_kl(model: torch.nn.Module, observations: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """[d]: mean over `observations` of KL(q(z_i|x) || N(0, 1)) per latent dimension, in nats."""
    x = torch.as_tensor(observations, dtype=torch.float32)
    total = None
    for start in range(0, len(x), batch_size):
        mean, logvar = model.encode(x[start : start + batch_size].to(_device(model)))
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
        part = kl.double().sum(0).cpu()
        total = part if total is None else total + part
    return (total / len(x)).numpy()


def stored_mutual_info(run_dir) -> tuple[np.ndarray, list[str], str] | None:
    """(mutual_info [d, K], factor names, source metric) of the trained network's mean representation, from the
    first of MIG or modularity that the run stores; None if neither was evaluated (since matrices are stored)."""
    for metric in MI_SOURCES:
        arrays = read_arrays(run_dir, metric, "mean", "trained")
        if arrays is not None and "mutual_info" in arrays:
            return arrays["mutual_info"], [str(n) for n in arrays["factor_names"]], metric
    return None


def captured_factors(mutual_info: np.ndarray, factor_names: Sequence[str]) -> list[str]:
    """The factor each latent shares the most mutual information with (row-wise argmax; ties: the first)."""
    return [str(factor_names[k]) for k in np.asarray(mutual_info).argmax(axis=1)]


def latent_labels(kl: Sequence[float], captures: Sequence[str] | None = None) -> tuple[list[str], list[bool]]:
    """Row labels and inactive flags for a traversal grid: "z3: posX (KL 2.10)", "z7: inactive (KL 0.00)", or
    "z3 (KL 2.10)" without `captures`."""
    labels, inactive = [], []
    for i, value in enumerate(kl):
        off = bool(value < INACTIVE_KL)
        if off:
            labels.append(f"z{i}: inactive (KL {value:.2f})")
        elif captures is not None:
            labels.append(f"z{i}: {captures[i]} (KL {value:.2f})")
        else:
            labels.append(f"z{i} (KL {value:.2f})")
        inactive.append(off)
    return labels, inactive
