import warnings

import numpy as np
import pytest
import torch
from factories import balanced_grid, factor_pixels_dataset, read_pixels
from sklearn.exceptions import ConvergenceWarning

from untwine.errors import InvalidInputError
from untwine.metrics.sap import evaluate, sap, sap_score_matrix

ROTATION = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)


def noisy(f, seed=0, scale=0.05):
    return f + np.random.default_rng(seed).normal(0, scale, f.shape)


# --- discrete mode (the study's): 1-D LinearSVC test accuracy -----------------------------------------------------


def test_binary_factors_by_construction():
    f_train, f_test = balanced_grid(2, 2, repeat=50), balanced_grid(2, 2, repeat=25)
    s = sap_score_matrix(noisy(f_train), f_train, noisy(f_test, 1), f_test, random_state=0)
    # the aligned code predicts its factor perfectly; any function of an independent code is right exactly half
    # the time on a balanced grid
    assert s.tolist() == [[1.0, 0.5], [0.5, 1.0]]
    assert sap(noisy(f_train), f_train, noisy(f_test, 1), f_test, random_state=0)["SAP_score"] == pytest.approx(0.5)
    # duplicating factor 0 in a third code closes factor 0's gap
    train, test = np.c_[noisy(f_train), noisy(f_train[:, 0], 2)], np.c_[noisy(f_test, 1), noisy(f_test[:, 0], 3)]
    assert sap(train, f_train, test, f_test, random_state=0)["SAP_score"] == pytest.approx(0.25)


def test_multiclass_aligned_rotated_and_noise():
    f_train, f_test = balanced_grid(4, 4, repeat=15), balanced_grid(4, 4, repeat=8)
    aligned = sap(noisy(f_train), f_train, noisy(f_test, 1), f_test, random_state=0)["SAP_score"]
    # a linear one-vs-rest SVM on one code separates 3 of 4 ordered classes: 0.75 vs chance 0.25
    assert aligned == pytest.approx(0.5)
    rotated = sap(noisy(f_train) @ ROTATION, f_train, noisy(f_test, 1) @ ROTATION, f_test, random_state=0)
    assert rotated["SAP_score"] < 0.1
    rng = np.random.default_rng(0)
    noise = sap(rng.normal(size=(len(f_train), 3)), f_train, rng.normal(size=(len(f_test), 3)), f_test, random_state=0)
    assert noise["SAP_score"] < 0.1


def test_dual_reaches_the_svm():
    """Codes on a scale of 1000: liblinear's dual solver stops at max_iter = 1000 far from the optimum that the
    primal one reaches, so the setting visibly changes S (and each entry is that solver's 1-D test accuracy)."""
    from sklearn.svm import LinearSVC

    f_train, f_test = balanced_grid(4, 2, repeat=40), balanced_grid(4, 2, repeat=20)
    train, test = 1000 * noisy(f_train, scale=0.3), 1000 * noisy(f_test, 1, scale=0.3)
    matrices = {}
    for dual in (True, False, "auto"):
        expected = np.zeros((2, 2))
        for i in range(2):
            for k in range(2):
                svm = LinearSVC(C=0.01, class_weight="balanced", dual=dual, max_iter=1000, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    svm.fit(train[:, i : i + 1], f_train[:, k])
                expected[i, k] = np.mean(svm.predict(test[:, i : i + 1]) == f_test[:, k])
        matrices[dual] = sap_score_matrix(train, f_train, test, f_test, dual=dual, random_state=0)
        assert np.array_equal(matrices[dual], expected), dual
    assert np.abs(matrices[True] - matrices[False]).max() > 0.1
    # the study's dual=True is the default, of the matrix and of the score
    assert np.array_equal(sap_score_matrix(train, f_train, test, f_test, random_state=0), matrices[True])
    top = np.sort(matrices[True], axis=0)
    assert sap(train, f_train, test, f_test, random_state=0)["SAP_score"] == pytest.approx(np.mean(top[-1] - top[-2]))
    # settings as the command line gives them (strings, any case)
    for text, dual in (("False", False), ("true", True), ("TRUE", True), ("Auto", "auto")):
        got = sap_score_matrix(train, f_train, test, f_test, dual=text, random_state=0)
        assert np.array_equal(got, matrices[dual]), text
    with pytest.raises(InvalidInputError, match="dual"):
        sap_score_matrix(train, f_train, test, f_test, dual="primal")
    with pytest.raises(InvalidInputError, match="dual"):
        sap_score_matrix(train, f_train, test, f_test, dual=1)


def test_classes_are_balanced():
    """class_weight="balanced": on a 9:1 binary factor with overlapping codes the rare class still gets predicted,
    as an independent LinearSVC(C=0.01, class_weight="balanced") does, unlike an unweighted one."""
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    y = (np.arange(400) % 10 == 0).astype(int)  # 10 % ones
    x = y + rng.normal(0, 0.7, 400)
    y_test = (np.arange(200) % 10 == 0).astype(int)
    x_test = y_test + rng.normal(0, 0.7, 200)
    codes, codes_test = np.c_[x, rng.normal(size=400)], np.c_[x_test, rng.normal(size=200)]
    factors, factors_test = np.c_[y, rng.integers(0, 2, 400)], np.c_[y_test, rng.integers(0, 2, 200)]

    def accuracy(class_weight):
        svm = LinearSVC(C=0.01, class_weight=class_weight, dual=True, max_iter=1000, random_state=0)
        return np.mean(svm.fit(x[:, None], y).predict(x_test[:, None]) == y_test)

    assert accuracy("balanced") != accuracy(None)
    s = sap_score_matrix(codes, factors, codes_test, factors_test, random_state=0)
    assert s[0, 0] == accuracy("balanced")


def test_dual_is_a_protocol_option():
    data, g = factor_pixels_dataset((4, 2)), torch.Generator
    scaled = lambda x: 1000 * read_pixels(x) + np.random.default_rng(0).normal(0, 300, (len(x), 2))  # noqa: E731
    study = evaluate(scaled, data, g().manual_seed(0), num_train=300, num_test=200)
    primal = evaluate(scaled, data, g().manual_seed(0), num_train=300, num_test=200, dual=False)
    assert study != primal
    assert evaluate(scaled, data, g().manual_seed(0), num_train=300, num_test=200, dual=True) == study
    with pytest.raises(InvalidInputError, match="dual"):
        evaluate(scaled, data, g().manual_seed(0), num_train=300, num_test=200, dual="primal")


# --- continuous mode: squared correlation on the training set -----------------------------------------------------


def test_continuous_mode_is_squared_correlation():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 6, size=(300, 3))
    codes = np.c_[f[:, 0] + rng.normal(0, 1, 300), rng.normal(size=300), f[:, 1] - f[:, 2] + rng.normal(0, 2, 300)]
    s = sap_score_matrix(codes, f, codes[:5], f[:5], continuous_factors=True)
    expected = np.corrcoef(codes.T, f.T)[:3, 3:] ** 2
    assert np.allclose(s, expected)
    top = np.sort(expected, axis=0)
    assert sap(codes, f, codes[:5], f[:5], continuous_factors=True)["SAP_score"] == pytest.approx(
        np.mean(top[-1] - top[-2])
    )
    # a constant code scores 0 instead of dividing by zero (and without a RuntimeWarning)
    with_constant = np.c_[codes, np.full(300, 2.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sap_score_matrix(with_constant, f, with_constant[:5], f[:5], continuous_factors=True)
    assert np.all(s[3] == 0.0)


def test_continuous_mode_zeroes_codes_of_variance_up_to_1e_12():
    """S[i, k] = 0 where var(c_i) (ddof 1) <= 1e-12, the squared correlation otherwise, whatever the code's scale."""
    f = balanced_grid(3, 2, repeat=50)  # 300 points
    unit = (f[:, 0] - f[:, 0].mean()) / f[:, 0].std(ddof=1)  # variance exactly 1 up to rounding
    for variance, expected in ((5e-13, 0.0), (2e-12, 1.0), (1.0, 1.0)):
        codes = np.c_[np.sqrt(variance) * unit, f[:, 1].astype(float)]
        s = sap_score_matrix(codes, f, codes[:5], f[:5], continuous_factors=True)
        assert s[0, 0] == pytest.approx(expected, abs=1e-9), variance
        assert s[1, 1] == pytest.approx(1.0) and s[1, 0] == pytest.approx(0.0, abs=1e-12)


def test_continuous_mode_by_construction():
    f = balanced_grid(4, 4)
    codes = f.astype(float)
    assert sap(codes, f, codes, f, continuous_factors=True)["SAP_score"] == pytest.approx(1.0)
    assert sap(np.c_[codes, codes[:, 0]], f, np.c_[codes, codes[:, 0]], f, continuous_factors=True)[
        "SAP_score"
    ] == pytest.approx(0.5)
    assert sap(codes @ ROTATION, f, codes @ ROTATION, f, continuous_factors=True)["SAP_score"] == pytest.approx(0.0)


def test_bad_input_is_rejected():
    f = balanced_grid(2, 2, repeat=3)
    c = f.astype(float)
    with pytest.raises(InvalidInputError, match="NaN"):
        sap(np.full((12, 2), np.nan), f, c, f)
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        sap(c, f, np.zeros(12), f)
    with pytest.raises(InvalidInputError, match="rows"):
        sap(c, f[:10], c, f)
    with pytest.raises(InvalidInputError, match="dimensions"):
        sap(c, f, np.c_[c, c], f)
    with pytest.raises(InvalidInputError, match="at least 2 code"):
        sap(c[:, :1], f, c[:, :1], f)
    with pytest.raises(InvalidInputError, match="single value"):
        sap(c, np.zeros_like(f), c, f)
    with pytest.raises(InvalidInputError, match="single value"):
        sap(c, np.zeros_like(f), c, f, continuous_factors=True)


def test_sap_protocol_on_a_perfect_representation():
    g = torch.Generator().manual_seed(0)
    data = factor_pixels_dataset()
    result = evaluate(read_pixels, data, g, num_train=500, num_test=200, continuous_factors=True)
    # each code is its factor (squared correlation 1); the runner-up is the squared sample correlation of the two
    # independent factors in the training sample (the protocol's first draw)
    f = data.sample_factors(500, torch.Generator().manual_seed(0)).numpy()
    assert result["SAP_score"] == pytest.approx(1 - np.corrcoef(f.T)[0, 1] ** 2, abs=1e-12)
    binary = factor_pixels_dataset((2, 2))
    result = evaluate(read_pixels, binary, torch.Generator().manual_seed(0), num_train=300, num_test=200)
    assert result["SAP_score"] > 0.4  # ceiling 0.5: the other code is at chance on a binary factor
    again = evaluate(read_pixels, binary, torch.Generator().manual_seed(0), num_train=300, num_test=200)
    assert again == result
