"""SAP score, Separated Attribute Predictability (Kumar et al. 2018, sec. 4), reference protocol (spec §5.5).

With S the d x K score matrix (how well code i alone predicts factor k):

    SAP = 1/K sum_k (S[j(1), k] - S[j(2), k])      j(1), j(2): the largest and second-largest entries of column k

As disentanglement_lib (spec §5.5, §10 item 14):
- discrete mode (the study, default): S[i, k] = test accuracy of `LinearSVC(C=0.01, class_weight="balanced")`
  trained on the single code i (a 1-D feature) to predict factor index k; with the study's sklearn behaviour
  `dual=True`, max_iter 1000 (sklearn >= 1.3 defaults to dual="auto", which picks the primal solver here and gives
  slightly different numbers: pass dual="auto", e.g. `--option sap.dual=auto`, to compare with runs made that way);
- continuous mode: S[i, k] = cov(c_i, f_k)^2 / (var(c_i) var(f_k)) with ddof 1 on the training set, 0 if
  var(c_i) <= 1e-12.

Deliberate differences from the reference: the SVMs get `random_state` (the reference leaves it None; liblinear's
dual solver shuffles with it), so results are reproducible; in continuous mode a factor constant in the sample raises
InvalidInputError (the reference divides by zero). Result key: `SAP_score`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from untwine.errors import InvalidInputError
from untwine.metrics.predictors import sklearn_seed
from untwine.metrics.utils import check_classes, check_train_test

NAME = "sap"
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "continuous_factors": False}


def _continuous_scores(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    code_c = codes - codes.mean(axis=0)
    factor_c = factors - factors.mean(axis=0)
    n = codes.shape[0]
    var_code = (code_c**2).sum(axis=0) / (n - 1)
    var_factor = (factor_c**2).sum(axis=0) / (n - 1)
    constant = np.flatnonzero(var_factor == 0)
    if constant.size:
        raise InvalidInputError(
            f"factors_train column(s) {constant.tolist()} take a single value in this sample; "
            "the squared correlation is undefined"
        )
    cov = code_c.T @ factor_c / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = cov**2 / (var_code[:, None] * var_factor[None, :])
    s[var_code <= 1e-12, :] = 0.0
    return s


DUALS = (True, False, "auto")


def _check_dual(dual):
    """LinearSVC's `dual`: True (the study's), False, or "auto" (sklearn >= 1.3); the strings "true" and "false"
    (from the command line) are accepted too."""
    if isinstance(dual, str) and dual.lower() in ("true", "false", "auto"):
        dual = {"true": True, "false": False, "auto": "auto"}[dual.lower()]
    if dual not in DUALS or isinstance(dual, (int, float)) and not isinstance(dual, bool):
        raise InvalidInputError(f"SAP's dual must be True, False or 'auto', got {dual!r}")
    return dual


def _svm_accuracy(x_train, y_train, x_test, y_test, dual, random_state) -> float:
    model = LinearSVC(C=0.01, class_weight="balanced", dual=dual, max_iter=1000, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train[:, None], y_train)
    return float(np.mean(model.predict(x_test[:, None]) == y_test))


def sap_score_matrix(
    codes_train, factors_train, codes_test, factors_test, continuous_factors: bool = False, dual=True, random_state=None
) -> np.ndarray:
    """S [d, K]: 1-D LinearSVC test accuracy (discrete mode) or training-set squared correlation (continuous)."""
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    if continuous_factors:
        return _continuous_scores(codes_train, factors_train.astype(np.float64))
    dual = _check_dual(dual)
    check_classes(factors_train)
    d, num_factors = codes_train.shape[1], factors_train.shape[1]
    s = np.zeros((d, num_factors))
    for i in range(d):
        for k in range(num_factors):
            s[i, k] = _svm_accuracy(
                codes_train[:, i], factors_train[:, k], codes_test[:, i], factors_test[:, k], dual, random_state
            )
    return s


def sap(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    continuous_factors: bool = False,
    dual=True,
    random_state=None,
) -> dict[str, float]:
    """Reference SAP on arrays (codes [N, d] floats, factors [N, K] integer indices) -> {"SAP_score": ...}."""
    if np.ndim(codes_train) == 2 and np.shape(codes_train)[1] < 2:
        raise InvalidInputError("SAP needs at least 2 code dimensions (it is a gap between the top two)")
    s = sap_score_matrix(codes_train, factors_train, codes_test, factors_test, continuous_factors, dual, random_state)
    top = np.sort(s, axis=0)
    return {"SAP_score": float(np.mean(top[-1] - top[-2]))}


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
    continuous_factors: bool = False,
    dual=True,
) -> dict[str, float]:
    """The reference protocol: encode `num_train` then `num_test` fresh samples, then `sap` (spec §5.5)."""
    from untwine.evaluation.representation import sample_train_test

    if not continuous_factors:
        _check_dual(dual)  # before any encoding
    codes_train, factors_train, codes_test, factors_test = sample_train_test(
        representation, dataset, num_train, num_test, generator
    )
    return sap(
        codes_train,
        factors_train,
        codes_test,
        factors_test,
        continuous_factors,
        dual,
        random_state=sklearn_seed(generator),
    )
