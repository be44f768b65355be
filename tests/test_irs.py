import importlib
import warnings

import numpy as np
import pytest
import torch
from factories import balanced_grid, factor_pixels_dataset, read_pixels

from untwine.errors import InvalidInputError
from untwine.metrics.irs import irs, irs_matrix

# the module (untwine.metrics may export a function of the same name)
irs_module = importlib.import_module("untwine.metrics.irs")


def noise_representation(seed=0, dims=4):
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), dims))


def test_codes_equal_to_factors_score_one():
    factors = balanced_grid(5, 7)
    result = irs(factors.astype(float), factors)
    assert result == {"IRS": pytest.approx(1.0), "num_active_dims": 2}
    # monotone rescaling, permutation and an extra constant code change nothing but are counted correctly
    codes = np.c_[3 * factors[:, ::-1] - 1.0, np.full(len(factors), 0.1)]
    assert irs(codes, factors) == {"IRS": pytest.approx(1.0), "num_active_dims": 2}


def test_independent_codes_score_low():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 10, size=(4000, 3))
    result = irs(rng.normal(size=(4000, 5)), factors)
    assert result["num_active_dims"] == 5
    assert result["IRS"] < 0.5


def test_hand_computed_case():
    factors = np.array([[0], [0], [0], [1], [1], [1]])
    codes = np.array([[0.0], [0.0], [3.0], [10.0], [10.0], [10.0]])
    # value 0: mean 1, |z - 1| = [1, 1, 2], linear 99th percentile = 1 + 0.98 * (2 - 1) = 1.98; value 1: 0.
    # accumulated = (1.98 + 0) / 2 = 0.99; max_dev = max |z - 5.5| = 5.5; IRS = 1 - 0.99 / 5.5
    assert irs(codes, factors)["IRS"] == pytest.approx(1 - 0.99 / 5.5)
    # two latents, weighted by max_dev: z1 gives 1 - 0.5 / 1.5, z2 (independent of the factor) gives 0
    factors = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    inner = irs_matrix(codes, factors)
    assert np.allclose(inner["max_deviations"], [1.5, 0.5])
    assert np.allclose(inner["IRS_matrix"], [[1 - 0.5 / 1.5], [0.0]])
    assert inner["parents"].tolist() == [0, 0]
    assert set(inner) == {"IRS_matrix", "disentanglement_scores", "parents", "max_deviations", "avg_score"}
    assert np.allclose(inner["disentanglement_scores"], [1 - 0.5 / 1.5, 0.0])
    assert inner["avg_score"] == pytest.approx((2 / 3 * 1.5 + 0 * 0.5) / 2.0)
    assert irs(codes, factors) == {"IRS": pytest.approx(0.5), "num_active_dims": 2}
    # diff_quantile = 0.5 uses the median instead
    factors = np.array([[0], [0], [0], [1], [1], [1]])
    codes = np.array([[0.0], [0.0], [3.0], [10.0], [10.0], [10.0]])
    assert irs(codes, factors, diff_quantile=0.5)["IRS"] == pytest.approx(1 - 0.5 / 5.5)


def test_scale_does_not_matter_and_the_quantile_ends_are_allowed():
    """IRS is scale-free: codes a thousand times smaller (max deviations summing below 1) score the same; the
    quantile may be anything in [0, 1], both ends included (0: the smallest deviation, 1: the largest)."""
    factors = np.array([[0, 1], [0, 0], [1, 1], [1, 0], [2, 1], [2, 0]])
    codes = np.array([[0.0, 5.0], [0.4, 1.0], [2.0, 4.0], [2.2, 0.0], [3.9, 6.0], [4.1, 2.0]])
    big, small = irs_matrix(codes, factors), irs_matrix(codes / 1000, factors)
    assert small["max_deviations"].sum() < 1 < big["max_deviations"].sum()
    assert small["avg_score"] == pytest.approx(big["avg_score"], rel=1e-9)
    assert irs(codes / 1000, factors)["IRS"] == pytest.approx(irs(codes, factors)["IRS"], rel=1e-9)
    # latent 0, factor 0: groups {0, 0.4}, {2, 2.2}, {3.9, 4.1}: |z - group mean| = 0.2, 0.1, 0.1 in each pair;
    # quantile 0 -> the minimum 0.2, 0.1, 0.1, quantile 1 -> the maximum, the same here; max_dev = |0 - 2.1|
    for q in (0.0, 1.0):
        assert irs_matrix(codes, factors, diff_quantile=q)["IRS_matrix"][0, 0] == pytest.approx(1 - (0.4 / 3) / 2.1)
    uneven = np.array([[0.0], [1.0], [3.0], [10.0], [10.0], [10.0]])
    binary = np.array([[0], [0], [0], [1], [1], [1]])
    # group 0: mean 4/3, deviations 4/3, 1/3, 5/3; group 1: 0. max_dev = |0 - 34/6|
    assert irs_matrix(uneven, binary, diff_quantile=0.0)["avg_score"] == pytest.approx(1 - (1 / 3) / 2 / (34 / 6))
    assert irs_matrix(uneven, binary, diff_quantile=1.0)["avg_score"] == pytest.approx(1 - (5 / 3) / 2 / (34 / 6))


def test_factors_are_discretised_into_20_bins():
    factors = np.repeat(np.arange(40), 3)[:, None]
    # 20 equal-width bins over [0, 39] merge the values in pairs {2m, 2m+1}: within-bin deviation 0.5 for every
    # bin, max_dev = 19.5
    assert irs(factors.astype(float), factors)["IRS"] == pytest.approx(1 - 0.5 / 19.5)
    assert irs(factors.astype(float), factors, num_bins=40)["IRS"] == pytest.approx(1.0)


def test_all_max_deviations_zero_use_the_plain_mean():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 here is expected: no RuntimeWarning reaches the user
        inner = irs_matrix(np.zeros((4, 2)), np.array([[0], [0], [1], [1]]))
        assert np.isnan(inner["avg_score"])  # 1 - 0/0 as in the reference; irs() never gets here (dims dropped)
        # and one point is a valid (if degenerate) input of the reference's function
        assert np.isnan(irs_matrix(np.ones((1, 2)), np.array([[0]]))["avg_score"])


def test_constant_codes_score_zero():
    factors = balanced_grid(3, 4)
    assert irs(np.full((len(factors), 3), 2.5), factors) == {"IRS": 0.0, "num_active_dims": 0}


def test_bad_input_is_rejected():
    f = np.zeros((10, 2), dtype=int)
    with pytest.raises(InvalidInputError, match="NaN"):
        irs(np.full((10, 3), np.nan), f)
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        irs(np.zeros(10), f)
    with pytest.raises(InvalidInputError, match="rows"):
        irs(np.zeros((9, 3)), f)
    with pytest.raises(InvalidInputError, match="integer"):
        irs(np.zeros((10, 3)), f + 0.5)
    with pytest.raises(InvalidInputError, match="diff_quantile"):
        irs(np.zeros((10, 3)), f, diff_quantile=1.5)
    with pytest.raises(InvalidInputError, match="diff_quantile"):
        irs(np.zeros((10, 3)), f, diff_quantile=-0.01)


def test_protocol_on_a_perfect_representation_is_deterministic():
    data = factor_pixels_dataset()
    result = irs_module.evaluate(read_pixels, data, torch.Generator().manual_seed(0), num_train=2000)
    assert set(result) == {"IRS", "num_active_dims"}
    assert result == {"IRS": pytest.approx(1.0), "num_active_dims": 2}
    a = irs_module.evaluate(noise_representation(), data, torch.Generator().manual_seed(1), num_train=2000)
    b = irs_module.evaluate(noise_representation(), data, torch.Generator().manual_seed(1), num_train=2000)
    assert a == b and a["IRS"] < 0.5 and a["num_active_dims"] == 4
