import numpy as np
import pytest
import torch
from factories import balanced_grid, factor_pixels_dataset, read_pixels

from untwine.errors import InvalidInputError
from untwine.metrics.modularity import (
    evaluate,
    explicitness_per_factor,
    modularity,
    modularity_explicitness,
    standardise,
)
from untwine.metrics.predictors import logistic_regression

ROTATION = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
KEYS = {"modularity_score", "explicitness_score_train", "explicitness_score_test"}


def noisy(f, seed=0, scale=0.05):
    return f + np.random.default_rng(seed).normal(0, scale, f.shape)


# --- the modularity formula -------------------------------------------------------------------------------------


def test_modularity_formula_by_hand():
    # row 0: m^2 = (4, 1), theta = 4, delta = (5 - 4) / (4 * 1) = 1/4 -> 3/4; row 1: theta = 0 -> 0 (still counted)
    assert modularity(np.array([[2.0, 1.0], [0.0, 0.0]])) == pytest.approx(0.375)
    # row 0: equal MI with both factors -> delta 1 -> 0; row 1: a single factor -> 1
    assert modularity(np.array([[1.0, 1.0], [0.0, 3.0]])) == pytest.approx(0.5)
    # K = 3: m^2 = (9, 1, 1), delta = 2 / (9 * 2) -> 8/9
    assert modularity(np.array([[3.0, 1.0, 1.0]])) == pytest.approx(8 / 9)
    assert modularity(np.eye(3)) == 1.0
    assert modularity(np.zeros((2, 2))) == 0.0
    # one factor: every informative code is modular (the reference returns NaN for K = 1)
    assert modularity(np.array([[0.5], [0.0]])) == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="non-negative"):
        modularity(np.array([[-1.0, 1.0]]))
    with pytest.raises(InvalidInputError, match="shape"):
        modularity(np.ones(3))
    for empty in (np.zeros((0, 2)), np.zeros((2, 0))):
        with pytest.raises(InvalidInputError, match="shape"):
            modularity(empty)


# --- the full metric ------------------------------------------------------------------------------------------------


def test_aligned_codes_are_modular_and_explicit():
    f_train, f_test = balanced_grid(4, 4, repeat=15), balanced_grid(4, 4, repeat=8)
    result = modularity_explicitness(f_train.astype(float), f_train, noisy(f_test), f_test)
    assert set(result) == KEYS
    # each discretised code determines one factor and is exactly independent of the other on the grid
    assert result["modularity_score"] == pytest.approx(1.0)
    assert result["explicitness_score_train"] > 0.99 and result["explicitness_score_test"] > 0.99
    # a duplicated factor keeps every code modular
    train, test = np.c_[f_train, f_train[:, 0]].astype(float), np.c_[noisy(f_test), noisy(f_test[:, 0], 1)]
    assert modularity_explicitness(train, f_train, test, f_test)["modularity_score"] == pytest.approx(1.0)


def test_rotation_and_noise_lower_modularity():
    f_train, f_test = balanced_grid(4, 4, repeat=15), balanced_grid(4, 4, repeat=8)
    rotated = modularity_explicitness(f_train @ ROTATION, f_train, noisy(f_test) @ ROTATION, f_test)
    # by symmetry each rotated code carries the same MI about both factors: delta = 1
    assert rotated["modularity_score"] == pytest.approx(0.0, abs=1e-9)
    assert rotated["explicitness_score_test"] > 0.9  # the information is still linearly available
    rng, f_test = np.random.default_rng(0), balanced_grid(4, 4, repeat=30)
    train, test = rng.normal(size=(len(f_train), 3)), rng.normal(size=(len(f_test), 3))
    noise = modularity_explicitness(train, f_train, test, f_test)
    assert noise["modularity_score"] < 0.5
    assert abs(noise["explicitness_score_test"] - 0.5) < 0.05  # chance AUC


def test_explicitness_by_construction():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = np.c_[y + rng.normal(0, 0.1, 100), rng.normal(size=100)]
    assert explicitness_per_factor(x, y, x[::-1], y[::-1]) == (1.0, 1.0)
    auc_train, auc_test = explicitness_per_factor(x[:, 1:], y, x[:, 1:], y[::-1])
    assert abs(auc_test - 0.5) < 0.15
    # a class absent from the test set is left out of the test average; an unseen test class is an error
    y3 = np.repeat([0, 1, 2], 40)
    x3 = (y3 + rng.normal(0, 0.1, 120))[:, None]
    assert explicitness_per_factor(x3, y3, x3[:80], y3[:80])[1] > 0.99
    with pytest.raises(InvalidInputError, match="training set lacks"):
        explicitness_per_factor(x3[:80], y3[:80], x3, y3)
    with pytest.raises(InvalidInputError, match="unknown logistic"):
        explicitness_per_factor(x, y, x, y, logistic="newton")
    assert explicitness_per_factor(x, y, x, y, logistic="lbfgs") == (1.0, 1.0)


def test_explicitness_default_is_the_study_one_vs_rest():
    """Macro ROC-AUC of the study's classifier: one liblinear model per class, predict_proba = the per-class sigmoids
    normalised to sum 1 (old sklearn's one-vs-rest), which ranks points differently from today's multinomial model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def ordered(n, seed):  # one code, three ordered classes
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        return (y + rng.normal(0, 0.35, n))[:, None], y

    (raw, y), (raw_test, y_test) = ordered(150, 0), ordered(300, 1)
    x, x_test = (raw - raw.mean()) / raw.std(), (raw_test - raw.mean()) / raw.std()  # as the metric standardises

    def macro_auc(proba, labels):
        return np.mean([roc_auc_score(labels == c, proba[:, c]) for c in range(3)])

    sigmoids = np.stack(
        [LogisticRegression(solver="liblinear").fit(x, y == c).predict_proba(x_test)[:, 1] for c in range(3)], axis=1
    )
    ovr = macro_auc(sigmoids / sigmoids.sum(1, keepdims=True), y_test)
    multinomial = macro_auc(LogisticRegression().fit(x, y).predict_proba(x_test), y_test)
    assert abs(ovr - multinomial) > 5e-4, "the case separates the two flavours"
    assert explicitness_per_factor(x, y, x_test, y_test)[1] == pytest.approx(ovr, abs=1e-12)
    assert explicitness_per_factor(x, y, x_test, y_test, logistic="lbfgs")[1] == pytest.approx(multinomial, abs=1e-12)
    result = modularity_explicitness(raw, y[:, None], raw_test, y_test[:, None])
    assert result["explicitness_score_test"] == pytest.approx(ovr, abs=1e-9)
    on_train = np.stack(
        [LogisticRegression(solver="liblinear").fit(x, y == c).predict_proba(x)[:, 1] for c in range(3)], axis=1
    )
    train_auc = macro_auc(on_train / on_train.sum(1, keepdims=True), y)
    assert train_auc != pytest.approx(ovr, abs=1e-3)
    assert result["explicitness_score_train"] == pytest.approx(train_auc, abs=1e-9)


def test_standardise_per_code_with_the_training_statistics():
    train = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [5.0, 20.0, 5.0]])
    test = np.array([[2.0, 0.0, 6.0]])
    # per column: mean (3, 20, 5), std ddof 0 (sqrt(8/3), sqrt(200/3), 0 -> 1: only centred)
    std = np.array([np.sqrt(8 / 3), np.sqrt(200 / 3), 1.0])
    x_train, x_test = standardise(train, test)
    assert np.allclose(x_train, (train - [3.0, 20.0, 5.0]) / std)
    assert np.allclose(x_test, [[-1 / np.sqrt(8 / 3), -20 / np.sqrt(200 / 3), 1.0]])


def test_macro_auc_keeps_classes_seen_once_and_refuses_a_single_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    x = (y + rng.normal(0, 0.8, 90))[:, None]
    y_test = np.array([0, 0, 0, 1, 2, 2])  # class 1 appears once: its AUC is defined and counted
    x_test = (y_test + rng.normal(0, 0.8, 6))[:, None]
    from sklearn.metrics import roc_auc_score

    proba = logistic_regression().fit(x, y).predict_proba(x_test)
    aucs = [roc_auc_score(y_test == c, proba[:, c]) for c in range(3)]
    assert aucs[1] < min(aucs[0], aucs[2]), "leaving class 1 out would change the mean"
    assert explicitness_per_factor(x, y, x_test, y_test)[1] == pytest.approx(np.mean(aucs), abs=1e-12)
    with pytest.raises(InvalidInputError, match="ROC-AUC is undefined"):
        explicitness_per_factor(x, y, x_test[:3], y_test[:3])  # every evaluated label is class 0


def test_constant_code_is_left_centred():
    f = balanced_grid(3, 3, repeat=10)
    codes = np.c_[f, np.full(len(f), 7.0)].astype(float)
    result = modularity_explicitness(codes, f, codes, f)
    assert all(np.isfinite(v) for v in result.values())
    assert result["modularity_score"] == pytest.approx(2 / 3)  # the constant code has zero MI: 0, still counted


def test_bad_input_is_rejected():
    f = balanced_grid(2, 2, repeat=3)
    c = f.astype(float)
    with pytest.raises(InvalidInputError, match="NaN"):
        modularity_explicitness(c, f, np.full((12, 2), np.inf), f)
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        modularity_explicitness(np.zeros(12), f, c, f)
    with pytest.raises(InvalidInputError, match="rows"):
        modularity_explicitness(c, f, c, f[:5])
    with pytest.raises(InvalidInputError, match="dimensions"):
        modularity_explicitness(c, f, c[:, :1], f)
    with pytest.raises(InvalidInputError, match="single value"):
        modularity_explicitness(c, np.zeros_like(f), c, f)
    with pytest.raises(InvalidInputError, match="num_bins"):
        modularity_explicitness(c, f, c, f, num_bins=0)
    f3 = balanced_grid(3, 2, repeat=3)
    seen = f3[:, 0] < 2
    with pytest.raises(InvalidInputError, match="training set lacks"):
        modularity_explicitness(f3[seen].astype(float), f3[seen], f3.astype(float), f3)


def test_protocol_on_a_perfect_representation():
    data = factor_pixels_dataset()
    result = evaluate(read_pixels, data, torch.Generator().manual_seed(0), num_train=1000, num_test=200)
    assert set(result) == KEYS
    # the only non-modular MI is the finite-sample MI between the independent factors
    assert result["modularity_score"] > 0.99
    assert result["explicitness_score_train"] > 0.95 and result["explicitness_score_test"] > 0.95
    again = evaluate(read_pixels, data, torch.Generator().manual_seed(0), num_train=1000, num_test=200)
    assert again == result
