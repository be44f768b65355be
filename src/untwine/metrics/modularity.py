"""Modularity and Explicitness (Ridgeway & Mozer 2018, sec. 3), reference protocol (spec §5.6).

Modularity, from the d x K mutual-information matrix m (codes x factors, nats; training set only):

    theta_i = max_k m_ik^2,   delta_i = (sum_k m_ik^2 - theta_i) / (theta_i (K - 1)),   modularity_i = 1 - delta_i

with modularity_i = 0 where theta_i = 0, and the score the plain mean over ALL d codes (inactive ones included).
m is the 20-bin equal-width histogram MI, exactly as for MIG (spec §10 item 11).

Explicitness: codes standardised with the training mean and std (ddof 0); per factor a default
`LogisticRegression` (the study's liblinear one-vs-rest, see predictors.py); macro ROC-AUC of the one-hot labels
against predict_proba on train and on test; averaged over factors (spec §10 item 17).

Deliberate differences from the reference:
- a code with zero training std is left centred (divided by 1) instead of producing NaN;
- labels are one-hot encoded with the TRAINING classes (the reference refits the binariser on the test labels and
  fails when the two sets of classes differ); a test class unseen in training raises InvalidInputError, and a
  training class absent from the evaluated set is left out of that set's macro average (its AUC is undefined);
- with K = 1, modularity_i = 1 where theta_i > 0 (the reference divides by K - 1 = 0 and returns NaN).
Result keys: `modularity_score`, `explicitness_score_train`, `explicitness_score_test`.
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.predictors import fit_quietly, logistic_regression, sklearn_seed
from untwine.metrics.utils import Scores, check_classes, check_train_test, discrete_mutual_info, histogram_discretize

NAME = "modularity_explicitness"
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "num_bins": 20}


def modularity(mi_matrix) -> float:
    """Modularity score from a d x K mutual-information matrix (codes x factors)."""
    m = np.asarray(mi_matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InvalidInputError(f"the mutual-information matrix must have shape [d, K], got {list(m.shape)}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise InvalidInputError("the mutual-information matrix must be finite and non-negative")
    squared = m**2
    theta = squared.max(axis=1)
    active = theta > 0
    per_code = np.zeros(m.shape[0])
    if m.shape[1] == 1:
        per_code[active] = 1.0
    else:
        delta = (squared[active].sum(axis=1) - theta[active]) / (theta[active] * (m.shape[1] - 1))
        per_code[active] = 1.0 - delta
    return float(np.mean(per_code))


def standardise(codes_train: np.ndarray, codes_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean_train) / std_train (ddof 0) for both sets; zero-std columns are only centred."""
    mean = codes_train.mean(axis=0)
    std = codes_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (codes_train - mean) / std, (codes_test - mean) / std


def _macro_auc(labels: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    one_hot = labels[:, None] == classes[None, :]
    aucs = [
        sklearn.metrics.roc_auc_score(one_hot[:, c], proba[:, c])
        for c in range(classes.size)
        if 0 < one_hot[:, c].sum() < labels.size
    ]
    if not aucs:
        raise InvalidInputError("ROC-AUC is undefined: the evaluated labels of a factor take a single value")
    return float(np.mean(aucs))


def explicitness_per_factor(x_train, y_train, x_test, y_test, logistic: str = "liblinear_ovr", random_state=None):
    """(train AUC, test AUC) of one factor: logistic regression on standardised codes, macro ROC-AUC."""
    classes = np.unique(y_train)
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if unseen.size:
        raise InvalidInputError(
            f"the test set has factor value(s) {unseen.tolist()} that the training set lacks; "
            "explicitness needs every test class in training (use more training points)"
        )
    model = fit_quietly(logistic_regression(logistic, random_state), x_train, y_train)
    if not np.array_equal(model.classes_, classes):
        raise InvalidInputError("internal error: classifier classes do not match the training labels")
    return (
        _macro_auc(y_train, model.predict_proba(x_train), classes),
        _macro_auc(y_test, model.predict_proba(x_test), classes),
    )


def modularity_explicitness(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    num_bins: int = 20,
    logistic: str = "liblinear_ovr",
    random_state=None,
) -> dict[str, float]:
    """Reference modularity and explicitness on arrays (codes [N, d] floats, factors [N, K] integer indices).

    The result's `.arrays` hold the training set's d x K mutual-information matrix ("mutual_info", nats) that
    modularity is computed from."""
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    check_classes(factors_train)
    mi = discrete_mutual_info(histogram_discretize(codes_train, num_bins), factors_train)
    x_train, x_test = standardise(codes_train, codes_test)
    aucs = np.array(
        [
            explicitness_per_factor(x_train, factors_train[:, k], x_test, factors_test[:, k], logistic, random_state)
            for k in range(factors_train.shape[1])
        ]
    )
    scores = {
        "modularity_score": modularity(mi),
        "explicitness_score_train": float(np.mean(aucs[:, 0])),
        "explicitness_score_test": float(np.mean(aucs[:, 1])),
    }
    return Scores(scores, {"mutual_info": mi})


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
    num_bins: int = 20,
    logistic: str = "liblinear_ovr",
) -> dict[str, float]:
    """The reference protocol: encode `num_train` then `num_test` fresh samples, then the scores (spec §5.6)."""
    from untwine.evaluation.representation import sample_train_test

    codes_train, factors_train, codes_test, factors_test = sample_train_test(
        representation, dataset, num_train, num_test, generator
    )
    return modularity_explicitness(
        codes_train, factors_train, codes_test, factors_test, num_bins, logistic, random_state=sklearn_seed(generator)
    )
