"""Downstream classification from the representation (Locatello et al. 2019, §5 "downstream task"; spec §5.8).

For each training size n in (10, 100, 1000, 10000): sample n training points and a *fresh* test set of 5000,
fit one classifier per factor on the raw codes, and record train and test accuracy. Predictors:
- "logistic_regression": LogisticRegressionCV(Cs=10, cv=KFold(5)) — config downstream_task_logistic_regression
  (one-vs-rest as the study's scikit-learn; `logistic="multinomial"` for today's default);
- "boosted_trees": GradientBoostingClassifier() — config downstream_task_boosted_trees; grown by
  `estimator="untwine"` (default, untwine.metrics.gbt: every factor at once, sklearn's trees) or
  `estimator="sklearn"` (scikit-learn's own, to cross-check).
Keys as the reference: "{n}:mean_train_accuracy", "{n}:mean_test_accuracy", "{n}:min_train_accuracy",
"{n}:min_test_accuracy", "{n}:train_accuracy_factor_{k}", "{n}:test_accuracy_factor_{k}".

Beyond the reference: "sample_efficiency" = mean test accuracy at 100 / at 10000 points (the paper's statistical
efficiency, which the reference derives only during analysis), present when both sizes are evaluated.
Deviation: a factor whose training sample holds a single class (possible at n = 10) is predicted as that class;
the reference's classifiers raise an error there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.predictors import (
    check_estimator,
    fit_boosted_trees,
    fit_in_parallel,
    fit_quietly,
    gradient_boosting_classifier,
    logistic_regression_cv,
    one_blas_thread,
    sklearn_seed,
)
from untwine.metrics.utils import check_train_test

PREDICTORS = ("logistic_regression", "boosted_trees")


def make_predictor(name: str, random_state: int | None = None, logistic: str = "ovr"):
    if name == "logistic_regression":
        return logistic_regression_cv(logistic, random_state)
    if name == "boosted_trees":
        return gradient_boosting_classifier(random_state)
    raise InvalidInputError(f"unknown predictor {name!r}; choose {', '.join(PREDICTORS)}")


def _fit_and_score(x_train, y_train, x_test, y_test, predictor, random_state, logistic) -> tuple[float, float]:
    classes = np.unique(y_train)
    if classes.size == 1:
        pred_train, pred_test = np.full_like(y_train, classes[0]), np.full_like(y_test, classes[0])
    else:
        model = fit_quietly(make_predictor(predictor, random_state, logistic), x_train, y_train)
        with one_blas_thread():
            pred_train, pred_test = model.predict(x_train), model.predict(x_test)
    return float(np.mean(pred_train == y_train)), float(np.mean(pred_test == y_test))


def factor_accuracies(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    predictor: str = "logistic_regression",
    random_state: int | None = None,
    logistic: str = "ovr",
    n_jobs: int | None = None,
    estimator: str = "untwine",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-factor (train accuracy, test accuracy) of a fresh classifier per factor on the raw codes.

    The factors' classifiers are fitted in parallel (`n_jobs`, see `fit_in_parallel`); each gets `random_state`.
    Boosted trees with `estimator="untwine"`: every factor's GBT in one pass (`n_jobs`: numba threads).
    """
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    make_predictor(predictor, logistic=logistic)
    check_estimator(estimator)
    if predictor == "boosted_trees" and estimator == "untwine":
        return _boosted_trees_accuracies(codes_train, factors_train, codes_test, factors_test, random_state, n_jobs)
    jobs = [
        (codes_train, factors_train[:, k], codes_test, factors_test[:, k], predictor, random_state, logistic)
        for k in range(factors_train.shape[1])
    ]
    accuracies = np.array(fit_in_parallel(_fit_and_score, jobs, n_jobs))
    return accuracies[:, 0], accuracies[:, 1]


def _boosted_trees_accuracies(codes_train, factors_train, codes_test, factors_test, random_state, n_jobs):
    """`factor_accuracies` for boosted trees with the untwine estimator: one `gbt.fit` for all factors."""
    train_acc, test_acc = np.zeros(factors_train.shape[1]), np.zeros(factors_train.shape[1])
    fitted = [k for k in range(factors_train.shape[1]) if np.unique(factors_train[:, k]).size > 1]
    for k in set(range(factors_train.shape[1])) - set(fitted):  # a single class: predicted as that class
        train_acc[k] = 1.0
        test_acc[k] = float(np.mean(factors_test[:, k] == factors_train[0, k]))
    if fitted:
        labels = [factors_train[:, k] for k in fitted]
        models = fit_boosted_trees(codes_train, labels, [random_state] * len(fitted), "untwine", n_jobs)
        for k, model in zip(fitted, models):
            train_acc[k] = float(np.mean(model.predict_training() == factors_train[:, k]))
            test_acc[k] = float(np.mean(model.predict(codes_test) == factors_test[:, k]))
    return train_acc, test_acc


def downstream_scores(train_acc: np.ndarray, test_acc: np.ndarray, size: int) -> dict[str, float]:
    """The reference's keys for one training size."""
    s = str(size)
    scores = {
        f"{s}:mean_train_accuracy": float(np.mean(train_acc)),
        f"{s}:mean_test_accuracy": float(np.mean(test_acc)),
        f"{s}:min_train_accuracy": float(np.min(train_acc)),
        f"{s}:min_test_accuracy": float(np.min(test_acc)),
    }
    for k, (a, b) in enumerate(zip(train_acc, test_acc)):
        scores[f"{s}:train_accuracy_factor_{k}"] = float(a)
        scores[f"{s}:test_accuracy_factor_{k}"] = float(b)
    return scores


def evaluate(
    representation,
    dataset,
    generator: torch.Generator,
    num_train: Sequence[int] = (10, 100, 1000, 10_000),
    num_test: int = 5_000,
    predictor: str = "logistic_regression",
    logistic: str = "ovr",
    n_jobs: int | None = None,
    estimator: str = "untwine",
) -> dict[str, float]:
    """The reference protocol: for each training size, fresh train and test samples (spec §5.8).
    `estimator` chooses the boosted trees' implementation (see `factor_accuracies`)."""
    from untwine.evaluation.representation import sample_train_test

    make_predictor(predictor, logistic=logistic)  # validate the names before any encoding
    check_estimator(estimator)
    scores: dict[str, float] = {}
    for size in num_train:
        codes_train, factors_train, codes_test, factors_test = sample_train_test(
            representation, dataset, size, num_test, generator
        )
        seed = sklearn_seed(generator)
        train_acc, test_acc = factor_accuracies(
            codes_train, factors_train, codes_test, factors_test, predictor, seed, logistic, n_jobs, estimator
        )
        scores.update(downstream_scores(train_acc, test_acc, size))
    return with_sample_efficiency(scores)


def with_sample_efficiency(scores: dict[str, float]) -> dict[str, float]:
    """Add "sample_efficiency" = 100:mean_test_accuracy / 10000:mean_test_accuracy when both are present."""
    if "100:mean_test_accuracy" in scores and "10000:mean_test_accuracy" in scores:
        scores["sample_efficiency"] = scores["100:mean_test_accuracy"] / scores["10000:mean_test_accuracy"]
    return scores


evaluate_logistic_regression = functools.partial(evaluate, predictor="logistic_regression")
evaluate_boosted_trees = functools.partial(evaluate, predictor="boosted_trees")
