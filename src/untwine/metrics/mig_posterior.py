"""MIG with Chen et al.'s posterior-based estimator (Chen et al. 2018, eqs. 5–6, Appendix C).

I(z_j; v_k) = H(z_j) - H(z_j | v_k), with the aggregate posterior q(z_j) = 1/N sum_n q(z_j | x_n) taken over the
N sampled points and q(z_j | v_k = v) over the points whose factor k equals v. Each entropy is estimated by
Monte Carlo with one draw z_j ~ q(z_j | x_m) per point: H(z_j) ~ -1/N sum_m log q(z_j^(m)), and likewise
within each factor value. MIG = 1/K sum_k (I_(1) - I_(2)) / H(v_k), with H(v_k) the empirical entropy of the
sampled factor values (log n_k for a uniform factor). Unlike the reference's histogram MIG (`mig.py`), no
binning is involved; the numbers differ from `discrete_mig`. Result key: `posterior_mig`.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.utils import check_codes, check_factors, discrete_entropy

LOG_2PI = float(np.log(2 * np.pi))
MAX_ABS_LOGVAR = 700.0  # exp(+-700) is finite in float64


def posterior_mutual_info(means, logvars, factors, generator: torch.Generator, chunk: int = 1024) -> np.ndarray:
    """I(z_j; v_k) [d, K] in nats from the encoder's diagonal Gaussian posteriors of N points."""
    means = torch.from_numpy(check_codes(means, "means"))
    logvars = torch.from_numpy(check_codes(logvars, "logvars"))
    if means.shape != logvars.shape:
        raise InvalidInputError(f"means {list(means.shape)} and logvars {list(logvars.shape)} differ in shape")
    factors = check_factors(factors, means.shape[0])
    n, d = means.shape
    noise = torch.randn(means.shape, generator=generator, device=generator.device).to("cpu", torch.float64)
    z = means + torch.exp(0.5 * logvars) * noise
    # log q(z_m | x_n) = -1/2 (z_m^2 / v_n - 2 z_m mu_n / v_n + mu_n^2 / v_n + log v_n + log 2 pi): expanded into a
    # rank-3 product so that one [m, 3] @ [3, N] matmul per chunk forms the whole matrix (float64 throughout)
    inv_var = torch.exp(-logvars)
    coefficients = torch.stack([-0.5 * inv_var, means * inv_var, -0.5 * (means**2 * inv_var + logvars + LOG_2PI)])
    # all factors' one-hot indicators side by side [N, sum_k n_k]; column offsets[k] + v is "factor k equals v"
    widths = factors.max(0) + 1
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    columns = torch.from_numpy(factors + offsets)  # [N, K]
    onehot = torch.zeros(n, int(widths.sum()), dtype=torch.float64).scatter_(1, columns, 1.0)
    log_group_sizes = torch.log(onehot.sum(0))
    marginal = torch.zeros(d, dtype=torch.float64)
    conditional = torch.zeros(d, factors.shape[1], dtype=torch.float64)
    for j in range(d):
        for start in range(0, n, chunk):
            zj = z[start : start + chunk, j]  # [m] draws, one per point
            powers = torch.stack([zj * zj, zj, torch.ones_like(zj)], dim=1)  # [m, 3]
            log_q = powers @ coefficients[:, :, j]  # [m, N]
            top = log_q.max(1).values
            weights = log_q.sub_(top[:, None]).exp_()
            marginal[j] -= (top + torch.log(weights.sum(1)) - np.log(n)).sum()
            own = columns[start : start + chunk]  # [m, K]: each draw's own value of every factor
            group_sums = (weights @ onehot).gather(1, own)  # [m, K]
            conditional[j] -= (top[:, None] + torch.log(group_sums) - log_group_sizes[own]).sum(0)
    return ((marginal[:, None] - conditional) / n).numpy()


def mig_posterior(means, logvars, factors, generator: torch.Generator) -> dict[str, float]:
    """Chen et al.'s MIG from posterior means and log-variances [N, d] and integer factors [N, K]."""
    factors = check_factors(factors, np.asarray(means).shape[0])
    entropy = discrete_entropy(factors)
    if np.any(entropy == 0):
        raise InvalidInputError("a factor takes a single value in this sample; MIG's normalisation is undefined")
    if np.asarray(means).ndim != 2 or np.asarray(means).shape[1] < 2:
        raise InvalidInputError("MIG needs codes [N, d] with at least 2 dimensions")
    spread = np.abs(check_codes(logvars, "logvars")).max()
    if spread > MAX_ABS_LOGVAR:
        raise InvalidInputError(
            f"logvars reach {spread:.3g} in magnitude; the posterior MIG needs |log-variance| <= {MAX_ABS_LOGVAR:g} "
            "(exp overflows beyond)"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        mi = posterior_mutual_info(means, logvars, factors, generator)
    if not np.all(np.isfinite(mi)):
        raise InvalidInputError(
            "the posterior MIG's log-densities overflow for these posteriors (means up to "
            f"{np.abs(np.asarray(means)).max():.3g}, log-variances up to {spread:.3g} in magnitude)"
        )
    top = np.sort(mi, axis=0)[::-1]
    return {"posterior_mig": float(np.mean((top[0] - top[1]) / entropy))}


def evaluate(representation, dataset, generator: torch.Generator, num_train: int = 10_000) -> dict[str, float]:
    """Sample `num_train` points, encode them to q(z|x), and estimate MIG from the posteriors."""
    from untwine.evaluation.representation import encode_factors

    if getattr(representation, "gaussian_encoder", None) is None:
        raise InvalidInputError("the posterior MIG needs a model's Gaussian encoder (use untwine's representations)")
    factors = dataset.sample_factors(num_train, generator)
    parts = [
        encode_factors(representation, dataset, factors[i : i + 256], generator, gaussian=True)
        for i in range(0, num_train, 256)
    ]
    means = np.concatenate([p[0] for p in parts])
    logvars = np.concatenate([p[1] for p in parts])
    return mig_posterior(means, logvars, factors.cpu().numpy(), generator)
