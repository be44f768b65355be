"""Fairness of downstream predictions (Locatello et al. 2019b, "On the fairness of disentangled
representations", eq. 1 and §4; spec §5.9).

For each target factor i, a gradient-boosted classifier is trained on 10,000 codes. For each sensitive factor
j != i, 100 factor vectors are sampled once; for every value c of factor j, factor j is set to c, observations are
generated and encoded, and the predictions of factor i are counted. Unfairness of (i, j) is the total-variation
distance between the prediction distribution of each sensitive group and the overall one: its group-size-weighted
mean ("mean_fairness") and its maximum ("max_fairness"). The paper's score is
`mean_fairness:mean_pred:mean_sens`. Lower is fairer.

The boosted trees are grown by `estimator="untwine"` (default; untwine.metrics.gbt, all targets at once) or
`estimator="sklearn"` (scikit-learn's own, to cross-check); logistic regression is always scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.downstream import make_predictor
from untwine.metrics.predictors import check_estimator, fit_boosted_trees, fit_in_parallel, fit_quietly, sklearn_seed


def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
    """counts[p, c]: predictions of class p in sensitive group c -> (weighted mean TV distance, max TV distance)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or np.any(counts < 0) or np.any(counts.sum(0) == 0):
        raise InvalidInputError("counts must be a non-negative [predicted classes, groups] matrix with no empty group")
    overall = counts.sum(1) / counts.sum()
    per_group = counts / counts.sum(0, keepdims=True)
    tv = np.abs(per_group - overall[:, None]).sum(0) / 2.0
    group_sizes = counts.sum(0)
    return float(np.sum(tv * group_sizes) / group_sizes.sum()), float(np.max(tv))


def fairness_scores(matrix: np.ndarray, prefix: str) -> dict[str, float]:
    """The reference's aggregation of a [target, sensitive] matrix (diagonal ignored) into named scores."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if n < 2 or matrix.shape != (n, n):
        raise InvalidInputError("a fairness matrix is square with at least 2 factors")
    off = ~np.eye(n, dtype=bool)
    scores = {f"{prefix}:pred{i}:sens{j}": float(matrix[i, j]) for i in range(n) for j in range(n) if i != j}
    rows = [matrix[i][off[i]] for i in range(n)]
    cols = [matrix[:, j][off[:, j]] for j in range(n)]
    row_mean, row_max = np.array([r.mean() for r in rows]), np.array([r.max() for r in rows])
    col_mean, col_max = np.array([c.mean() for c in cols]), np.array([c.max() for c in cols])
    for i in range(n):
        scores[f"{prefix}:pred{i}:mean_sens"] = float(row_mean[i])
        scores[f"{prefix}:pred{i}:max_sens"] = float(row_max[i])
    for j in range(n):
        scores[f"{prefix}:sens{j}:mean_pred"] = float(col_mean[j])
        scores[f"{prefix}:sens{j}:max_pred"] = float(col_max[j])
    scores[f"{prefix}:mean_sens:mean_pred"] = float(col_mean.mean())
    scores[f"{prefix}:mean_sens:max_pred"] = float(col_max.mean())
    scores[f"{prefix}:max_sens:mean_pred"] = float(col_mean.max())
    scores[f"{prefix}:max_sens:max_pred"] = float(col_max.max())
    scores[f"{prefix}:mean_pred:mean_sens"] = float(row_mean.mean())
    scores[f"{prefix}:mean_pred:max_sens"] = float(row_max.mean())
    scores[f"{prefix}:max_pred:mean_sens"] = float(row_mean.max())
    scores[f"{prefix}:max_pred:max_sens"] = float(row_max.max())
    return scores


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: int = 10_000,
    num_test_points_per_class: int = 100,
    predictor: str = "boosted_trees",
    batch_size: int = 4096,
    n_jobs: int | None = None,
    estimator: str = "untwine",
) -> dict[str, float]:
    """The reference protocol (spec §5.9); keys `mean_fairness:*` and `max_fairness:*`.

    The K target classifiers are fitted first, in parallel (`n_jobs`, see `fit_in_parallel`; with boosted trees
    and `estimator="untwine"` all at once, `n_jobs` numba threads)."""
    from untwine.evaluation.representation import encode_factors, sample_codes

    sizes = dataset.factor_sizes
    num = len(sizes)
    if num < 2:
        raise InvalidInputError("fairness needs at least two factors (a target and a sensitive one)")
    make_predictor(predictor)
    check_estimator(estimator)
    codes, factors = sample_codes(representation, dataset, num_train, generator)
    seeds = [sklearn_seed(generator) for _ in range(num)]
    if predictor == "boosted_trees":
        models = fit_boosted_trees(codes, [factors[:, i] for i in range(num)], seeds, estimator, n_jobs)
    else:
        jobs = [(make_predictor(predictor, seed), codes, factors[:, i]) for i, seed in enumerate(seeds)]
        models = fit_in_parallel(fit_quietly, jobs, n_jobs)
    mean_matrix, max_matrix = np.zeros((num, num)), np.zeros((num, num))
    for i, model in enumerate(models):
        for j in range(num):
            if i == j:
                continue
            base = dataset.sample_factors(num_test_points_per_class, generator)
            groups = base.repeat(sizes[j], 1)  # every value c of factor j applied to the same base vectors
            groups[:, j] = torch.arange(sizes[j], device=base.device).repeat_interleave(num_test_points_per_class)
            codes_groups = encode_factors(representation, dataset, groups, generator, batch_size)
            predictions = model.predict(codes_groups).reshape(sizes[j], -1)
            counts = np.stack([np.bincount(p, minlength=sizes[i]) for p in predictions], axis=1)
            mean_matrix[i, j], max_matrix[i, j] = inter_group_fairness(counts)
    return {**fairness_scores(mean_matrix, "mean_fairness"), **fairness_scores(max_matrix, "max_fairness")}
