"""The classifiers the reference metrics fit (spec §5.0), with the study's behaviour available.

disentanglement_lib pinned no scikit-learn version; the study ran in 2018 (sklearn 0.19–0.20), whose
`LogisticRegression()` default was liblinear, one-vs-rest. Since sklearn 0.22 the default is lbfgs, multinomial.
`logistic_regression(flavour)` gives either:
- "liblinear_ovr" (default, the study's): one-vs-rest liblinear, C = 1, L2, tol 1e-4, max_iter 100, intercept
  regularised as liblinear does; predict_proba normalises the per-class sigmoids, as old sklearn did.
- "lbfgs": today's sklearn default (multinomial), for comparison with runs made with sklearn >= 0.22.

Gradient-boosted trees (`fit_boosted_trees`): `estimator="untwine"` (default) grows sklearn's
`GradientBoostingClassifier()` ensembles with untwine.metrics.gbt, all factors at once (same trees, same
tie-breaking for the same random_state; ~30x fewer CPU-seconds); `estimator="sklearn"` fits scikit-learn's own,
one per factor, to cross-check.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier
from threadpoolctl import threadpool_limits

from untwine.errors import InvalidInputError

LOGISTIC_FLAVOURS = ("liblinear_ovr", "lbfgs")
ESTIMATORS = ("untwine", "sklearn")


def sklearn_seed(generator: torch.Generator) -> int:
    """A random_state for scikit-learn drawn from a torch generator (so a metric's randomness has one source)."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))


def logistic_regression(flavour: str = "liblinear_ovr", random_state: int | None = None):
    """sklearn's default `LogisticRegression()` as of the study (liblinear OvR) or of today (lbfgs)."""
    if flavour == "liblinear_ovr":
        return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=random_state))
    if flavour == "lbfgs":
        return LogisticRegression(random_state=random_state)
    raise InvalidInputError(f"unknown logistic regression flavour {flavour!r}; choose {', '.join(LOGISTIC_FLAVOURS)}")


def logistic_regression_cv(flavour: str = "ovr", random_state: int | None = None):
    """The reference's `logistic_regression_cv`: LogisticRegressionCV(Cs=10, cv=KFold(5)), unshuffled folds,
    accuracy scoring, lbfgs. flavour "ovr" (the study's sklearn <= 0.21: one-vs-rest, best C per class) or
    "multinomial" (sklearn >= 0.22)."""
    model = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring="accuracy", random_state=random_state)
    if flavour == "ovr":
        return OneVsRestClassifier(model)
    if flavour == "multinomial":
        return model
    raise InvalidInputError(f"unknown logistic regression CV flavour {flavour!r}; choose ovr or multinomial")


def gradient_boosting_classifier(random_state: int | None = None):
    """The reference's `gradient_boosting_classifier`: sklearn defaults (100 trees, depth 3, lr 0.1).

    The reference leaves random_state None (only tie-breaking between equally good splits is random); here it is
    drawn from the metric's generator so results are reproducible.
    """
    return GradientBoostingClassifier(random_state=random_state)


def check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise InvalidInputError(f"unknown estimator {estimator!r}; choose {', '.join(ESTIMATORS)}")
    return estimator


def fit_boosted_trees(x, labels: list, random_states: list, estimator: str = "untwine", n_jobs=None) -> list:
    """One `GradientBoostingClassifier(random_state=r)` per label vector, all on the codes x [N, d].

    Returns fitted classifiers with sklearn's `predict`, `classes_` and `feature_importances_`, in order.
    estimator "untwine": untwine.metrics.gbt, every classifier in one pass (n_jobs: numba threads);
    "sklearn": scikit-learn's, one fit per classifier (n_jobs: joblib workers, see `fit_in_parallel`).
    """
    from untwine.metrics import gbt

    check_estimator(estimator)
    if estimator == "untwine":
        ensembles = gbt.fit(x, labels, random_states, n_jobs=n_jobs)
        return [ensembles.classifier(c) for c in range(len(labels))]
    x = gbt.as_float32(x, "codes")  # what sklearn's trees see; the same checks as the untwine path
    for k, y in enumerate(labels):
        if np.unique(y).size < 2:
            raise InvalidInputError(
                f"labels {k} take a single value in this sample; a classifier needs at least two classes"
            )
    jobs = [(gradient_boosting_classifier(seed), x, y) for y, seed in zip(labels, random_states)]
    return fit_in_parallel(fit_quietly, jobs, n_jobs)


def one_blas_thread():
    """A context with BLAS limited to one thread. scikit-learn's lbfgs fits on metric-sized problems ([10,000,
    10] codes) are too small to share: OpenBLAS's threads spin waiting for work, and LogisticRegressionCV cost 6-13x
    the CPU-seconds with two threads on a shared 2-core machine (bitwise-equal coefficients either way; see
    docs/design-notes.md). Parallelism comes from fitting the factors in parallel (`fit_in_parallel`)."""
    return threadpool_limits(limits=1, user_api="blas")


def fit_quietly(model, x, y):
    """Fit with one BLAS thread (`one_blas_thread`), silencing convergence warnings (the reference runs with the
    same iteration limits) and scikit-learn's announcements of future default changes (the settings used here are
    explicit)."""
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return model.fit(x, y)


def fit_in_parallel(function, jobs: list[tuple], n_jobs: int | None = None) -> list:
    """[function(*job) for job in jobs], spread over joblib workers (one classifier fit per job).

    n_jobs: None uses every core (capped at the number of jobs); 1 runs in this process; a negative number is
    joblib's count. joblib's default process pool costs about a second to start once per process; choose another
    backend with `joblib.parallel_backend`. Each job carries its own seed, so results do not depend on n_jobs.
    """
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if n_jobs == 0:
        raise InvalidInputError("n_jobs must be a positive number of workers, a negative joblib count, or None")
    if n_jobs > 0:
        n_jobs = min(int(n_jobs), max(1, len(jobs)))
    if n_jobs == 1:
        return [function(*job) for job in jobs]
    return Parallel(n_jobs=n_jobs)(delayed(function)(*job) for job in jobs)
