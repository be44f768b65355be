"""Mutual Information Gap (Chen et al. 2018, eq. 6), with the reference protocol (spec §5.3).

    MIG = 1/K sum_k (I(z_{j(1)}; v_k) - I(z_{j(2)}; v_k)) / H(v_k)

where j(1), j(2) are the code dimensions with the largest and second-largest MI with factor k. As in
disentanglement_lib: each code dimension is discretised into `num_bins` equal-width bins over its sample range,
factors are used as raw indices (not discretised), MI is the plug-in estimate in nats, and H(v_k) is the empirical
entropy of the sampled factor values. Result key: `discrete_mig`.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.utils import (
    Scores,
    check_codes,
    check_factors,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
)

NAME = "mig"
DEFAULTS = {"num_train": 10_000, "num_bins": 20}  # reference batch_size 16 only chunks the encoding


def mig(codes, factors, num_bins: int = 20) -> dict[str, float]:
    """Reference MIG on arrays: codes [N, d] floats, factors [N, K] integer indices -> {"discrete_mig": ...}.

    The result's `.arrays` hold the d x K matrix it is computed from ("mutual_info", nats) and the factors'
    entropies ("factor_entropy", nats): MIG = mean_k (top1 - top2 of column k) / factor_entropy[k]."""
    codes = check_codes(codes)
    factors = check_factors(factors, codes.shape[0])
    if codes.shape[1] < 2:
        raise InvalidInputError("MIG needs at least 2 code dimensions (it is a gap between the top two)")
    entropy = discrete_entropy(factors)
    constant = np.flatnonzero(entropy == 0)
    if constant.size:
        raise InvalidInputError(
            f"factor column(s) {constant.tolist()} take a single value in this sample; MIG's normalisation by "
            "their entropy is undefined"
        )
    m = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    top = np.sort(m, axis=0)[::-1]
    gaps = (top[0] - top[1]) / entropy
    return Scores({"discrete_mig": float(np.mean(gaps))}, {"mutual_info": m, "factor_entropy": entropy})


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: int = 10_000,
    num_bins: int = 20,
    estimator: str = "histogram",
) -> dict[str, float]:
    """The reference protocol: encode `num_train` fresh samples of `dataset`, then `mig` (spec §5.3).

    estimator="posterior" uses Chen et al.'s estimator on the encoder's posteriors instead (`mig_posterior.py`;
    key `posterior_mig`, different numbers; independent of the mean/sampled choice).
    """
    from untwine.evaluation.representation import sample_codes

    if estimator == "posterior":
        from untwine.metrics.mig_posterior import evaluate as evaluate_posterior

        return evaluate_posterior(representation, dataset, generator, num_train)
    if estimator != "histogram":
        raise InvalidInputError(f"unknown MIG estimator {estimator!r}; choose histogram or posterior")

    codes, factors = sample_codes(representation, dataset, num_train, generator)
    return mig(codes, factors, num_bins)
