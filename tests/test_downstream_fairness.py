import numpy as np
import pytest
import torch
from factories import factor_pixels_dataset, read_pixels

from untwine.errors import InvalidInputError
from untwine.metrics import downstream, fairness


def test_downstream_keys_and_perfect_representation():
    data = factor_pixels_dataset()
    g = torch.Generator().manual_seed(0)
    scores = downstream.evaluate(read_pixels, data, g, num_train=(10, 100), num_test=200, predictor="boosted_trees")
    for n in (10, 100):
        for key in (
            "mean_train_accuracy",
            "mean_test_accuracy",
            "min_train_accuracy",
            "min_test_accuracy",
            "train_accuracy_factor_0",
            "test_accuracy_factor_1",
        ):
            assert f"{n}:{key}" in scores
    assert scores["100:mean_test_accuracy"] == 1.0, "trees separate integer-valued codes exactly"
    assert "sample_efficiency" not in scores, "needs both 100 and 10000"
    for n in (10, 100):  # the summaries are the mean and minimum of the per-factor accuracies
        for split in ("train", "test"):
            per_factor = [scores[f"{n}:{split}_accuracy_factor_{k}"] for k in range(2)]
            assert scores[f"{n}:mean_{split}_accuracy"] == pytest.approx(np.mean(per_factor), abs=1e-15)
            assert scores[f"{n}:min_{split}_accuracy"] == min(per_factor)
    assert len(scores) == 2 * (4 + 2 * 2)


def test_downstream_logistic_regression_and_efficiency():
    data = factor_pixels_dataset((2, 3))
    g = torch.Generator().manual_seed(0)
    scores = downstream.evaluate(read_pixels, data, g, num_train=(100,), num_test=300)
    assert scores["100:test_accuracy_factor_0"] == 1.0  # binary factor: linearly separable
    assert 0.5 < scores["100:test_accuracy_factor_1"] <= 1.0
    ratio = downstream.with_sample_efficiency({"100:mean_test_accuracy": 0.6, "10000:mean_test_accuracy": 0.8})
    assert ratio["sample_efficiency"] == pytest.approx(0.75)


def test_downstream_noise_is_near_chance():
    rng = np.random.default_rng(0)
    factors, test_factors = rng.integers(0, 4, (200, 2)), rng.integers(0, 4, (400, 2))
    train, test = downstream.factor_accuracies(
        rng.normal(size=(200, 3)),
        factors,
        rng.normal(size=(400, 3)),
        test_factors,
        predictor="boosted_trees",
        random_state=0,
    )
    assert np.all(test < 0.4) and np.all(train > 0.5), "trees fit noise in training, not in testing"


def test_downstream_parallel_fits_give_the_same_accuracies():
    from joblib import parallel_backend

    rng = np.random.default_rng(1)
    factors, test_factors = rng.integers(0, 3, (120, 3)), rng.integers(0, 3, (60, 3))
    codes, test_codes = (
        factors + rng.normal(0, 0.7, factors.shape),
        test_factors + rng.normal(0, 0.7, test_factors.shape),
    )
    one = downstream.factor_accuracies(codes, factors, test_codes, test_factors, random_state=0, n_jobs=1)
    with parallel_backend("threading"):
        two = downstream.factor_accuracies(codes, factors, test_codes, test_factors, random_state=0, n_jobs=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert 0.5 < one[1].mean() < 1.0  # informative but noisy codes
    with pytest.raises(InvalidInputError, match="n_jobs"):
        downstream.factor_accuracies(codes, factors, test_codes, test_factors, n_jobs=0)


def test_downstream_logistic_default_is_the_study_one_vs_rest_cv():
    """The study's LogisticRegressionCV(Cs=10, cv=KFold(5), accuracy) was one-vs-rest: each class picks its own C
    by cross-validation and the largest decision value wins; today's default is one multinomial model."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    def ordered(n, seed):  # one code, three ordered classes
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        return (y + rng.normal(0, 0.35, n))[:, None], y

    (x, y), (x_test, y_test) = ordered(150, 0), ordered(300, 1)

    def cv_model():
        return LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring="accuracy")

    decisions = np.stack([cv_model().fit(x, y == c).decision_function(x_test) for c in range(3)], axis=1)
    ovr = np.mean(decisions.argmax(1) == y_test)
    multinomial = np.mean(cv_model().fit(x, y).predict(x_test) == y_test)
    assert ovr != multinomial, "the case separates the two flavours"
    _, test = downstream.factor_accuracies(x, y[:, None], x_test, y_test[:, None], random_state=0, n_jobs=1)
    assert test[0] == pytest.approx(ovr, abs=1e-12)
    _, test = downstream.factor_accuracies(
        x, y[:, None], x_test, y_test[:, None], random_state=0, logistic="multinomial", n_jobs=1
    )
    assert test[0] == pytest.approx(multinomial, abs=1e-12)


def test_downstream_single_class_training_sample_predicts_that_class():
    codes = np.arange(10, dtype=float)[:, None]
    factors = np.zeros((10, 1), dtype=int)
    train, test = downstream.factor_accuracies(
        codes, factors, codes, np.r_[np.zeros(5), np.ones(5)].astype(int)[:, None]
    )
    assert train[0] == 1.0 and test[0] == 0.5


def test_downstream_validation():
    with pytest.raises(InvalidInputError, match="unknown predictor"):
        downstream.make_predictor("svm")
    with pytest.raises(InvalidInputError, match="unknown estimator"):
        downstream.factor_accuracies(
            np.zeros((5, 1)),
            np.zeros((5, 1), int),
            np.zeros((5, 1)),
            np.zeros((5, 1), int),
            predictor="boosted_trees",
            estimator="xgboost",
        )
    with pytest.raises(InvalidInputError, match="dimensions but codes_train has"):
        downstream.factor_accuracies(np.zeros((5, 2)), np.zeros((5, 1), int), np.zeros((5, 3)), np.zeros((5, 1), int))


def test_inter_group_fairness_by_hand():
    assert fairness.inter_group_fairness([[1, 1], [1, 1]]) == (0.0, 0.0)
    assert fairness.inter_group_fairness([[2, 0], [0, 2]]) == pytest.approx((0.5, 0.5))
    # overall (4/6, 2/6); group 0 (3/4, 1/4): TV 1/12; group 1 (1/2, 1/2): TV 1/6; weighted (4/12 + 2/6) / 6 = 1/9
    assert fairness.inter_group_fairness([[3, 1], [1, 1]]) == pytest.approx((1 / 9, 1 / 6))
    with pytest.raises(InvalidInputError):
        fairness.inter_group_fairness([[1, 0], [1, 0]])


def test_fairness_aggregation_by_hand():
    m = np.array([[0, 1, 2], [3, 0, 4], [5, 6, 0]], dtype=float)
    s = fairness.fairness_scores(m, "mean_fairness")
    assert s["mean_fairness:pred1:sens2"] == 4
    assert s["mean_fairness:pred0:mean_sens"] == 1.5 and s["mean_fairness:pred2:max_sens"] == 6
    assert s["mean_fairness:sens0:mean_pred"] == 4 and s["mean_fairness:sens1:max_pred"] == 6
    assert s["mean_fairness:mean_pred:mean_sens"] == pytest.approx((1.5 + 3.5 + 5.5) / 3)
    assert s["mean_fairness:mean_sens:mean_pred"] == pytest.approx((4 + 3.5 + 3) / 3)
    assert s["mean_fairness:max_pred:max_sens"] == 6 and s["mean_fairness:max_sens:mean_pred"] == 4
    assert len(s) == 6 + 2 * 3 + 2 * 3 + 8


def test_fairness_protocol():
    data = factor_pixels_dataset()
    fair = fairness.evaluate(
        read_pixels, data, torch.Generator().manual_seed(0), num_train=300, num_test_points_per_class=20
    )
    assert fair["mean_fairness:mean_pred:mean_sens"] == 0.0, "predictions depend only on the target factor"
    only_b = lambda x: read_pixels(x)[:, 1:]  # noqa: E731  factor a is invisible: its prediction follows b
    unfair = fairness.evaluate(
        only_b, data, torch.Generator().manual_seed(0), num_train=300, num_test_points_per_class=20
    )
    assert unfair["mean_fairness:pred0:sens1"] > 0.3
    # factor a is predicted from b alone, as some g(b): sensitive group b = c predicts g(c) only, so with n_k of the
    # 8 groups predicting class k (P(k) = n_k / 8), mean TV = 1 - sum_k P(k)^2 and max TV = 1 - min_k P(k)
    mean, worst = unfair["mean_fairness:pred0:sens1"], unfair["max_fairness:pred0:sens1"]
    consistent = [
        counts
        for counts in _partitions(8)
        if mean == pytest.approx(1 - sum((c / 8) ** 2 for c in counts), abs=1e-12)
        and worst == pytest.approx(1 - min(counts) / 8, abs=1e-12)
    ]
    assert consistent, (mean, worst)
    # b is read exactly, so its prediction is the same in every group of a: perfectly fair
    assert unfair["mean_fairness:pred1:sens0"] == unfair["max_fairness:pred1:sens0"] == 0.0

    # scikit-learn's own GBT (the cross-check): integer codes have no ties, so the very same predictions
    theirs = fairness.evaluate(
        only_b, data, torch.Generator().manual_seed(0), num_train=300, num_test_points_per_class=20, estimator="sklearn"
    )
    assert theirs == unfair


def _partitions(n, largest=None):
    """The integer partitions of n (tuples of positive parts, non-increasing)."""
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    return [(k, *rest) for k in range(min(n, largest), 0, -1) for rest in _partitions(n - k, k)]
