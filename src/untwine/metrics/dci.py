"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018, sec. 3); spec §5.4.

With R the d x K importance matrix (R[i, k]: importance of code i for predicting factor k):

    D = sum_i rho_i (1 - H_K(P_i.)),   P_ik = R_ik / sum_k R_ik,   rho_i = sum_k R_ik / sum_ik R_ik   (eqs. 1-2)
    C = sum_k w_k (1 - H_d(R_.k / sum_i R_ik)),   w_k = sum_i R_ik / sum_ik R_ik                      (eq. 3)

As disentanglement_lib (spec §5.4, §10 item 13): per factor one sklearn `GradientBoostingClassifier()` with default
settings on the raw (unstandardised) training codes; R = |feature_importances_| (impurity importances, each column
sums to 1); entropies in bases K (D) and d (C) with +1e-11 added to R; uniform weights if R is all zero;
"informativeness" is the mean classification *accuracy* over factors (not the paper's error), on train and test.

The GBTs are grown by `estimator="untwine"` (default): untwine.metrics.gbt, an exact re-implementation of
sklearn's `GradientBoostingClassifier()` fitting every factor's classifier in one pass; `estimator="sklearn"` fits
scikit-learn's own (the same trees for the same seeds, up to float rounding at exactly tied splits; see
docs/design-notes.md for the agreement figures).

Deliberate differences from the reference:
- each GBT gets a random_state derived deterministically from `random_state` (the reference leaves it None; it only
  breaks ties between equally good splits), so results are reproducible and do not depend on `n_jobs`;
- codes are handed to the GBT as float32, which sklearn's trees convert them to anyway (identical numbers);
- with K = 1 (D) or d = 1 (C) the normalised entropy of a single outcome is taken as 0 (the reference divides by
  log 1 and returns NaN);
- `importance="lightgbm"` (opt-in) is a faster estimator that gives DIFFERENT numbers: LightGBM's histogram
  GBT with its defaults (100 trees, 31 leaves), gain importances, each column normalised to sum 1, accuracy of the
  LightGBM classifier. Numbers from it are not comparable with published DCI values.
Result keys: `disentanglement`, `completeness`, `informativeness_train`, `informativeness_test`.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.predictors import check_estimator, fit_boosted_trees, fit_in_parallel, sklearn_seed
from untwine.metrics.utils import Scores, check_classes, check_train_test

NAME = "dci"
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "importance": "gbt", "estimator": "untwine"}  # batch_size: chunks
IMPORTANCES = ("gbt", "lightgbm")
SMOOTHING = 1e-11


def _normalised_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base `base`) of each column of `p` after normalising it to sum 1, as scipy.stats.entropy."""
    p = p / p.sum(axis=0, keepdims=True)
    if base < 2:
        return np.zeros(p.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=0) / np.log(base)


def _check_matrix(r) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise InvalidInputError(f"the importance matrix must have shape [d, K], got {list(r.shape)}")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InvalidInputError("the importance matrix must be finite and non-negative")
    return r


def _weights(r: np.ndarray, axis: int) -> np.ndarray:
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return r.sum(axis=axis) / r.sum()


def disentanglement(r) -> float:
    """D from a d x K importance matrix (eqs. 1-2): code-importance-weighted mean of 1 - H_K(row)."""
    r = _check_matrix(r)
    per_code = 1.0 - _normalised_entropy(r.T + SMOOTHING, r.shape[1])
    return float(np.sum(per_code * _weights(r, axis=1)))


def completeness(r) -> float:
    """C from a d x K importance matrix (eq. 3): factor-importance-weighted mean of 1 - H_d(column)."""
    r = _check_matrix(r)
    per_factor = 1.0 - _normalised_entropy(r + SMOOTHING, r.shape[0])
    return float(np.sum(per_factor * _weights(r, axis=0)))


def _gbt_results(x_train, factors_train, x_test, factors_test, seeds, estimator, n_jobs) -> list:
    """[(importance, train accuracy, test accuracy)] of one GradientBoostingClassifier per factor."""
    labels = [factors_train[:, k] for k in range(factors_train.shape[1])]
    models = fit_boosted_trees(x_train, labels, seeds, estimator, n_jobs)
    results = []
    for k, model in enumerate(models):
        train = model.predict_training() if hasattr(model, "predict_training") else model.predict(x_train)
        test = model.predict(x_test)
        importance = np.abs(model.feature_importances_)
        results.append((importance, np.mean(train == labels[k]), np.mean(test == factors_test[:, k])))
    return results


def _fit_lightgbm(x_train, y_train, x_test, y_test, seed):
    import lightgbm

    model = lightgbm.LGBMClassifier(importance_type="gain", random_state=seed, n_jobs=1, verbose=-1)
    model.fit(x_train, y_train)
    importance = np.abs(np.asarray(model.feature_importances_, dtype=np.float64))
    if importance.sum() > 0:
        importance = importance / importance.sum()
    return importance, np.mean(model.predict(x_train) == y_train), np.mean(model.predict(x_test) == y_test)


def _factor_seeds(random_state, num_factors: int) -> list:
    if random_state is None:
        return [None] * num_factors
    return [int(s) for s in np.random.RandomState(random_state).randint(2**31 - 1, size=num_factors)]


def importance_matrix(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    importance: str = "gbt",
    random_state=None,
    n_jobs=None,
    estimator: str = "untwine",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R [d, K], train accuracy [K], test accuracy [K]): one classifier per factor.

    `estimator` (GBT only): "untwine" fits every factor's GBT at once (`n_jobs`: numba threads, None: all cores);
    "sklearn" fits scikit-learn's, and LightGBM's are fitted, in parallel (`n_jobs`: joblib workers, None: all
    cores, capped at K; joblib's default process pool, whose start-up costs a few seconds once per process; use
    `joblib.parallel_backend` to choose another). Factor k's fit gets its own seed derived from `random_state`,
    so the result does not depend on `n_jobs` or the backend.
    """
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    check_classes(factors_train)
    check_estimator(estimator)
    if importance not in IMPORTANCES:
        raise InvalidInputError(f"unknown importance estimator {importance!r}; choose {', '.join(IMPORTANCES)}")
    num_factors = factors_train.shape[1]
    # sklearn's trees work in float32: converting once here gives the same numbers without a copy per fit
    x_train = np.ascontiguousarray(codes_train, dtype=np.float32)
    x_test = np.ascontiguousarray(codes_test, dtype=np.float32)
    seeds = _factor_seeds(random_state, num_factors)
    if importance == "gbt":
        results = _gbt_results(x_train, factors_train, x_test, factors_test, seeds, estimator, n_jobs)
    else:
        jobs = [(x_train, factors_train[:, k], x_test, factors_test[:, k], seed) for k, seed in enumerate(seeds)]
        results = fit_in_parallel(_fit_lightgbm, jobs, n_jobs)
    r = np.stack([res[0] for res in results], axis=1).astype(np.float64)
    return r, np.array([res[1] for res in results]), np.array([res[2] for res in results])


def dci(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    importance: str = "gbt",
    random_state=None,
    n_jobs=None,
    estimator: str = "untwine",
) -> dict[str, float]:
    """Reference DCI on arrays (codes [N, d] floats, factors [N, K] integer indices) -> the four result keys.

    The result's `.arrays` hold the d x K importance matrix ("importance") and the per-factor accuracies
    ("accuracy_train", "accuracy_test") the scores are computed from."""
    r, acc_train, acc_test = importance_matrix(
        codes_train, factors_train, codes_test, factors_test, importance, random_state, n_jobs, estimator
    )
    scores = {
        "disentanglement": disentanglement(r),
        "completeness": completeness(r),
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
    }
    return Scores(scores, {"importance": r, "accuracy_train": acc_train, "accuracy_test": acc_test})


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
    importance: str = "gbt",
    n_jobs=None,
    estimator: str = "untwine",
) -> dict[str, float]:
    """The reference protocol: encode `num_train` then `num_test` fresh samples, then `dci` (spec §5.4)."""
    from untwine.evaluation.representation import sample_train_test

    check_estimator(estimator)
    codes_train, factors_train, codes_test, factors_test = sample_train_test(
        representation, dataset, num_train, num_test, generator
    )
    seed = sklearn_seed(generator)
    return dci(codes_train, factors_train, codes_test, factors_test, importance, seed, n_jobs, estimator)
