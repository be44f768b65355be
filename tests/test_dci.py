import numpy as np
import pytest
import torch
from factories import balanced_grid, factor_pixels_dataset, read_pixels
from joblib import parallel_backend

from untwine.errors import InvalidInputError
from untwine.metrics.dci import completeness, dci, disentanglement, evaluate, importance_matrix

ROTATION = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    f_train, f_test = balanced_grid(4, 4, repeat=15), balanced_grid(4, 4, repeat=8)

    def noisy(f):
        return f + rng.normal(0, 0.05, f.shape)

    return rng, f_train, f_test, noisy


# --- the pure formulas on hand-made importance matrices ---------------------------------------------------------


def test_identity_and_uniform_importances():
    assert disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-9)
    assert completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-9)
    assert disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-12)
    assert completeness(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-12)
    # all-zero importances: uniform weights over uniform (smoothed) distributions
    assert disentanglement(np.zeros((3, 2))) == pytest.approx(0.0, abs=1e-12)
    assert completeness(np.zeros((3, 2))) == pytest.approx(0.0, abs=1e-12)


def test_duplicated_code_and_one_code_for_everything():
    # codes 0 and 1 share factor 0, code 2 is factor 1: every code is pure, factor 0 is split over two codes
    r = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    assert disentanglement(r) == pytest.approx(1.0, abs=1e-9)
    # C_0 = 1 - H_3(1/2, 1/2, 0) = 1 - log 2 / log 3, C_1 = 1, equal factor weights
    assert completeness(r) == pytest.approx(0.5 * (1 - np.log(2) / np.log(3)) + 0.5, abs=1e-9)
    # one code explains both factors, the other code nothing: D = 0 (its weight is 1), C = 1
    r = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert disentanglement(r) == pytest.approx(0.0, abs=1e-9)
    assert completeness(r) == pytest.approx(1.0, abs=1e-9)


def test_weighted_hand_computed_case():
    r = np.array([[3.0, 1.0], [0.0, 2.0]])
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))  # base K = 2 entropy of row 0
    assert disentanglement(r) == pytest.approx(4 / 6 * (1 - h) + 2 / 6 * 1, abs=1e-9)
    # columns: (1, 0) -> C = 1 with weight 3/6; (1/3, 2/3) -> base d = 2 entropy, weight 3/6
    h_col = -(1 / 3 * np.log2(1 / 3) + 2 / 3 * np.log2(2 / 3))
    assert completeness(r) == pytest.approx(0.5 * 1 + 0.5 * (1 - h_col), abs=1e-9)
    # scaling R changes nothing
    assert disentanglement(10 * r) == pytest.approx(disentanglement(r))
    # a single factor: one outcome has zero normalised entropy (the reference returns NaN here)
    assert disentanglement(np.array([[1.0], [0.0]])) == pytest.approx(1.0)


def test_bad_importance_matrices_are_rejected():
    with pytest.raises(InvalidInputError, match="shape"):
        disentanglement(np.ones(3))
    with pytest.raises(InvalidInputError, match="non-negative"):
        completeness(np.array([[1.0, -1.0]]))
    with pytest.raises(InvalidInputError, match="finite"):
        completeness(np.array([[1.0, np.nan]]))


# --- the GBT protocol ---------------------------------------------------------------------------------------------


def test_aligned_codes(split):
    rng, f_train, f_test, noisy = split
    result = dci(noisy(f_train), f_train, noisy(f_test), f_test, random_state=0, n_jobs=1)
    assert set(result) == {"disentanglement", "completeness", "informativeness_train", "informativeness_test"}
    assert result["disentanglement"] > 0.99 and result["completeness"] > 0.99
    assert result["informativeness_train"] == 1.0 and result["informativeness_test"] == 1.0


def test_importance_matrix_is_impurity_importance_per_factor(split):
    rng, f_train, f_test, noisy = split
    r, acc_train, acc_test = importance_matrix(noisy(f_train), f_train, noisy(f_test), f_test, random_state=0, n_jobs=1)
    assert r.shape == (2, 2) and acc_train.shape == acc_test.shape == (2,)
    assert np.allclose(r.sum(axis=0), 1.0)  # impurity importances of each factor's GBT sum to one
    assert r[0, 0] > 0.99 and r[1, 1] > 0.99


def test_rotation_lowers_the_scores(split):
    rng, f_train, f_test, noisy = split
    result = dci(noisy(f_train) @ ROTATION, f_train, noisy(f_test) @ ROTATION, f_test, random_state=0, n_jobs=1)
    assert result["disentanglement"] < 0.3 and result["completeness"] < 0.3
    assert result["informativeness_test"] > 0.9  # the information is still there


def test_duplicated_factor_lowers_completeness_only(split):
    rng, f_train, f_test, noisy = split
    train = np.c_[noisy(f_train), noisy(f_train[:, :1])]
    test = np.c_[noisy(f_test), noisy(f_test[:, :1])]
    result = dci(train, f_train, test, f_test, random_state=0, n_jobs=1)
    assert result["disentanglement"] > 0.99
    assert 0.6 < result["completeness"] < 0.8  # an even split over two codes gives 1 - log 2 / (2 log 3) = 0.68


def test_noise_codes(split):
    rng, f_train, f_test, noisy = split
    train, test = rng.normal(size=(len(f_train), 3)), rng.normal(size=(len(f_test), 3))
    result = dci(train, f_train, test, f_test, random_state=0, n_jobs=1)
    assert result["disentanglement"] < 0.05 and result["completeness"] < 0.05
    assert abs(result["informativeness_test"] - 0.25) < 0.1  # chance for 4 balanced classes


def test_result_does_not_depend_on_n_jobs(split):
    rng, f_train, f_test, noisy = split
    args = (rng.normal(size=(len(f_train), 3)), f_train, rng.normal(size=(len(f_test), 3)), f_test)
    one = importance_matrix(*args, random_state=3, n_jobs=1)
    with parallel_backend("threading"):  # the default process pool gives the same; threads avoid its start-up cost
        two = importance_matrix(*args, random_state=3, n_jobs=2)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_bad_input_is_rejected():
    f = balanced_grid(2, 2, repeat=3)
    c = f.astype(float)
    with pytest.raises(InvalidInputError, match="NaN"):
        dci(np.full((12, 2), np.nan), f, c, f)
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        dci(np.zeros(12), f, c, f)
    with pytest.raises(InvalidInputError, match="rows"):
        dci(c[:10], f, c, f)
    with pytest.raises(InvalidInputError, match="dimensions"):
        dci(c, f, np.c_[c, c], f)
    with pytest.raises(InvalidInputError, match="factors"):
        dci(c, f, c, f[:, :1])
    with pytest.raises(InvalidInputError, match="single value"):
        dci(c, np.zeros_like(f), c, f)
    with pytest.raises(InvalidInputError, match="unknown importance"):
        dci(c, f, c, f, importance="xgboost")
    with pytest.raises(InvalidInputError, match="unknown estimator"):
        dci(c, f, c, f, estimator="xgboost")
    with pytest.raises(InvalidInputError, match="n_jobs"):
        dci(c, f, c, f, n_jobs=0)


def test_lightgbm_estimator_orders_representations_like_the_reference(split):
    rng, f_train, f_test, noisy = split
    aligned = dci(noisy(f_train), f_train, noisy(f_test), f_test, importance="lightgbm", random_state=0, n_jobs=1)
    rotated = dci(
        noisy(f_train) @ ROTATION, f_train, noisy(f_test) @ ROTATION, f_test, importance="lightgbm", random_state=0
    )
    train, test = rng.normal(size=(len(f_train), 3)), rng.normal(size=(len(f_test), 3))
    noise = dci(train, f_train, test, f_test, importance="lightgbm", random_state=0, n_jobs=1)
    assert aligned["disentanglement"] > 0.9 and aligned["completeness"] > 0.9
    assert aligned["informativeness_test"] == 1.0
    assert rotated["disentanglement"] < 0.5 and rotated["informativeness_test"] > 0.9
    assert noise["disentanglement"] < 0.2 and noise["informativeness_test"] < 0.5


def test_lightgbm_importances_are_normalised_and_reproducible(split):
    rng, f_train, f_test, noisy = split
    args = (noisy(f_train), f_train, noisy(f_test), f_test)
    one = importance_matrix(*args, importance="lightgbm", random_state=1, n_jobs=1)
    with parallel_backend("threading"):
        two = importance_matrix(*args, importance="lightgbm", random_state=1, n_jobs=2)
    assert np.allclose(one[0].sum(axis=0), 1.0)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_lightgbm_accuracies_and_uninformative_codes():
    f_train, f_test = balanced_grid(4, 4, repeat=15), balanced_grid(4, 4, repeat=8)
    # separable codes: both informativeness values are accuracies (1 here, not error rates)
    result = dci(f_train + 0.1, f_train, f_test + 0.1, f_test, importance="lightgbm", random_state=0, n_jobs=1)
    assert result["informativeness_train"] == 1.0 and result["informativeness_test"] == 1.0
    # constant codes: LightGBM splits nothing, every gain is 0; the importances stay 0 (not 0 / 0) and D, C use the
    # uniform weights of an all-zero matrix
    constant, constant_test = np.ones((len(f_train), 2)), np.ones((len(f_test), 2))
    r, _, _ = importance_matrix(constant, f_train, constant_test, f_test, "lightgbm", random_state=0, n_jobs=1)
    assert np.array_equal(r, np.zeros((2, 2)))
    flat = dci(constant, f_train, constant_test, f_test, importance="lightgbm", random_state=0, n_jobs=1)
    assert flat["disentanglement"] == pytest.approx(0.0, abs=1e-9) and flat["completeness"] == pytest.approx(
        0.0, abs=1e-9
    )


def test_dci_protocol_on_a_perfect_representation():
    data = factor_pixels_dataset()
    result = evaluate(read_pixels, data, torch.Generator().manual_seed(0), num_train=300, num_test=200, n_jobs=1)
    assert result["disentanglement"] > 0.99 and result["completeness"] > 0.99
    assert result["informativeness_train"] == 1.0 and result["informativeness_test"] > 0.99
    again = evaluate(read_pixels, data, torch.Generator().manual_seed(0), num_train=300, num_test=200, n_jobs=1)
    assert again == result, "seeded by the generator"


def test_sklearn_estimator_cross_checks_the_default(split):
    """`estimator="sklearn"` fits scikit-learn's GradientBoostingClassifier; on these aligned codes both find the
    same near-perfect structure (exact agreement is tests/test_gbt.py's), and the option is reachable by name."""
    from untwine.evaluation.evaluate import parse_option

    rng, f_train, f_test, noisy = split
    args = (noisy(f_train), f_train, noisy(f_test), f_test)
    ours = dci(*args, random_state=0, n_jobs=1)
    theirs = dci(*args, random_state=0, n_jobs=1, estimator="sklearn")
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=0.01)
    assert parse_option("dci.estimator=sklearn", ["dci"]) == ("dci", "estimator", "sklearn")
