"""Unsupervised scores of Locatello et al. 2019 (§3 / Appendix: "unsupervised metrics"), as the reference (spec §5.7).

With Σ = np.cov of the codes (ddof = 1, d x d):
- `gaussian_total_correlation` = ½(Σ_i log Σ_ii − log det Σ) = KL(N(0, Σ) ‖ N(0, diag Σ)), via slogdet;
- `gaussian_wasserstein_correlation` = 2 tr Σ − 2 tr sqrtm(diag(Σ) Σ), the *squared* W2 distance between the same
  two Gaussians (scipy.linalg.sqrtm; the real part of the trace is kept);
- `gaussian_wasserstein_correlation_norm` = the previous value / tr Σ;
- `mutual_info_score` = mean over ordered off-diagonal pairs (sum / (d² − d)) of the plug-in MI (nats) between codes
  discretised with `num_bins` equal-width bins.
The factors are ignored.

Differences from the reference: fewer than 2 code dims raise InvalidInputError (the reference crashes in np.diag).
Where the reference returns NaN or inf, an InvalidInputError says why: an exactly constant code dim (log 0 in the
total correlation, 0/0 in the normalised Wasserstein score), no more points than dims, or linearly dependent dims
(a covariance of deficient rank by numpy's `matrix_rank` tolerance: an infinite total correlation, which rounding
would otherwise turn into an arbitrary large number).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.utils import check_codes, discrete_mutual_info, histogram_discretize

NAME = "unsupervised"
DEFAULTS = {"num_train": 10_000, "num_bins": 20}  # reference batch_size 16 only chunks the encoding


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """½(Σ_i log Σ_ii − log det Σ)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """2 tr Σ − 2 tr sqrtm(diag(Σ) Σ) (rows of Σ scaled by Σ_ii)."""
    root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    return float(2.0 * np.trace(cov) - 2.0 * np.real(np.trace(root)))


def unsupervised(codes, num_bins: int = 20) -> dict[str, float]:
    """Reference unsupervised scores on codes [N, d] (d >= 2); keys as in the module docstring."""
    codes = check_codes(codes)
    n, d = codes.shape
    if d < 2:
        raise InvalidInputError("the unsupervised scores need at least 2 code dimensions")
    if n <= d:
        raise InvalidInputError(
            f"the unsupervised scores need more points than code dimensions ({n} <= {d}): the covariance is singular"
        )
    constant = np.flatnonzero(codes.max(axis=0) == codes.min(axis=0))
    if constant.size:
        raise InvalidInputError(
            f"code column(s) {constant.tolist()} are constant in this sample: the Gaussian total correlation is "
            "undefined (log of a zero variance)"
        )
    cov = np.cov(codes, rowvar=False, ddof=1)
    if np.linalg.matrix_rank(cov) < d:  # numpy's SVD tolerance: rounding must not pass for a finite TC
        raise InvalidInputError(
            "the codes' covariance is singular (linearly dependent code dimensions): the Gaussian total correlation "
            "is infinite"
        )
    wasserstein = gaussian_wasserstein_correlation(cov)
    wasserstein_norm = wasserstein / np.sum(np.diag(cov))
    discrete = histogram_discretize(codes, num_bins)
    mi = discrete_mutual_info(discrete, discrete)
    np.fill_diagonal(mi, 0.0)
    scores = {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": float(wasserstein_norm),
        "mutual_info_score": float(np.sum(mi) / (d * d - d)),
    }
    bad = [k for k, v in scores.items() if not np.isfinite(v)]
    if bad:
        raise InvalidInputError(f"the unsupervised score(s) {', '.join(bad)} are not finite for these codes")
    return scores


def evaluate(
    representation, dataset, generator: torch.Generator, num_train: int = 10_000, num_bins: int = 20
) -> dict[str, float]:
    """The reference protocol: encode `num_train` fresh samples of `dataset`, then `unsupervised` (spec §5.7)."""
    from untwine.evaluation.representation import sample_codes

    codes, _ = sample_codes(representation, dataset, num_train, generator)
    return unsupervised(codes, num_bins)
