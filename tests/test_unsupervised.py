import importlib

import numpy as np
import pytest
import torch

from untwine.data import StoredDataset
from untwine.data.base import FactorDataset
from untwine.errors import InvalidInputError
from untwine.evaluation import sample_codes
from untwine.metrics.unsupervised import unsupervised

# the module (untwine.metrics may export a function of the same name)
unsupervised_module = importlib.import_module("untwine.metrics.unsupervised")

KEYS = {
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "gaussian_wasserstein_correlation_norm",
    "mutual_info_score",
}


def sample_cov(codes):
    centred = codes - codes.mean(axis=0)
    return centred.T @ centred / (len(codes) - 1)


def independent_wasserstein(cov):
    """2 tr S - 2 tr sqrt(D S): D S is similar to the symmetric D^1/2 S D^1/2, so tr sqrt = sum sqrt(eigenvalues)."""
    half = np.sqrt(np.diag(cov))
    eig = np.linalg.eigvalsh(half[:, None] * cov * half[None, :])
    return 2 * np.trace(cov) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None)))


def test_independent_gaussian_codes_score_near_zero():
    codes = np.random.default_rng(0).normal(size=(10_000, 4)) * [1.0, 2.0, 0.5, 3.0]
    result = unsupervised(codes)
    assert set(result) == KEYS
    assert abs(result["gaussian_total_correlation"]) < 0.01
    assert abs(result["gaussian_wasserstein_correlation_norm"]) < 0.01
    # plug-in MI of independent 20-bin codes: only the finite-sample bias (~ (20 - 1)^2 / (2 N) nats)
    assert 0 <= result["mutual_info_score"] < 0.03


def test_known_covariance_matches_closed_forms():
    rng = np.random.default_rng(1)
    mixing = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.5, 2.0]])
    codes = rng.normal(size=(3000, 3)) @ mixing.T
    cov = sample_cov(codes)  # ddof = 1
    result = unsupervised(codes)
    tc = 0.5 * (np.sum(np.log(np.diag(cov))) - np.sum(np.log(np.linalg.eigvalsh(cov))))
    assert result["gaussian_total_correlation"] == pytest.approx(tc, rel=1e-9)
    w = independent_wasserstein(cov)
    assert result["gaussian_wasserstein_correlation"] == pytest.approx(w, rel=1e-7)
    assert result["gaussian_wasserstein_correlation_norm"] == pytest.approx(w / np.trace(cov), rel=1e-7)
    # the population values are close: Σ = M Mᵀ
    population = mixing @ mixing.T
    expected_tc = 0.5 * (np.sum(np.log(np.diag(population))) - np.log(np.linalg.det(population)))
    assert result["gaussian_total_correlation"] == pytest.approx(expected_tc, abs=0.05)


def test_two_dimensional_case_by_hand_uses_ddof_one():
    codes = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]])
    # ddof 1: var = 1, 1; cov = 0.5 -> TC = -½ log(1 - 0.25); W = 2*2 - 2 tr sqrtm([[1, .5], [.5, 1]])
    result = unsupervised(codes)
    assert result["gaussian_total_correlation"] == pytest.approx(-0.5 * np.log(0.75))
    w = 4 - 2 * (np.sqrt(1.5) + np.sqrt(0.5))
    assert result["gaussian_wasserstein_correlation"] == pytest.approx(w)
    assert result["gaussian_wasserstein_correlation_norm"] == pytest.approx(w / 2)
    # 3 distinct values per code, each pair of codes is a bijection: MI = log 3 for both ordered pairs
    assert result["mutual_info_score"] == pytest.approx(np.log(3))


def test_duplicated_code_gives_large_mutual_information():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5000, 3))
    # (an exact copy makes the covariance singular, which is an error: see test_degenerate_codes_are_errors)
    duplicated = unsupervised(np.c_[x, x[:, 0] + 1e-6 * rng.normal(size=5000)])["mutual_info_score"]
    independent = unsupervised(np.c_[x, rng.normal(size=5000)])["mutual_info_score"]
    assert independent < 0.03
    # the duplicated pair (both orders) carries ~ H(20-bin gaussian) ~ 2.3 nats: 2 of 12 ordered pairs
    assert duplicated > 0.3 and duplicated > 10 * independent


def test_bad_input_is_rejected():
    with pytest.raises(InvalidInputError, match="NaN"):
        unsupervised(np.full((10, 3), np.nan))
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        unsupervised(np.zeros(10))
    with pytest.raises(InvalidInputError, match="at least 2 code"):
        unsupervised(np.zeros((10, 1)))


class WithExtraFactor(FactorDataset):
    """`base` with a third factor (7 values, from a private generator) that the observations do not show: the same
    generator yields the same observations as `base`, with different factors."""

    def __init__(self, base):
        self.base, self.name, self.observation_shape = base, "with_extra", base.observation_shape
        self.factor_sizes = (*base.factor_sizes, 7)
        self.private = torch.Generator().manual_seed(99)

    def sample_factors(self, n, generator):
        extra = torch.randint(7, (n, 1), generator=self.private)
        return torch.cat([self.base.sample_factors(n, generator), extra], dim=1)

    def _observations(self, factors, generator):
        return self.base.observations(factors[:, :-1], generator)


def test_protocol_scores_the_codes_only_and_is_deterministic():
    sizes = (5, 8)
    grid = np.stack(np.unravel_index(np.arange(40), sizes), axis=1).astype(np.uint8)
    data = StoredDataset("factor_pixels", torch.from_numpy(grid).view(-1, 1, 1, 2), sizes, ("a", "b"), (1, 1, 2))
    read = lambda x: x.flatten(1).numpy() * 255.0  # noqa: E731
    a = unsupervised_module.evaluate(read, data, torch.Generator().manual_seed(0), num_train=2000)
    b = unsupervised_module.evaluate(read, data, torch.Generator().manual_seed(0), num_train=2000)
    assert a == b and set(a) == KEYS
    assert abs(a["gaussian_total_correlation"]) < 0.01  # the two factors are sampled independently
    # the same codes with other factors give the same scores; the scores are those of the codes alone
    extra = unsupervised_module.evaluate(read, WithExtraFactor(data), torch.Generator().manual_seed(0), num_train=2000)
    assert extra == a
    codes, _ = sample_codes(read, data, 2000, torch.Generator().manual_seed(0))
    assert unsupervised(codes) == a
    other = unsupervised_module.evaluate(read, data, torch.Generator().manual_seed(1), num_train=2000)
    assert other != a, "the scores are estimates from fresh samples"


def test_degenerate_codes_are_errors_not_nan():
    """Where the reference returns NaN or inf, an InvalidInputError says why (module docstring)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4))
    with pytest.raises(InvalidInputError, match=r"column\(s\) \[0, 1, 2, 3\] are constant"):
        unsupervised(np.ones((200, 4)))
    constant_column = x.copy()
    constant_column[:, 2] = 7.0
    with pytest.raises(InvalidInputError, match=r"column\(s\) \[2\] are constant"):
        unsupervised(constant_column)
    with pytest.raises(InvalidInputError, match="more points than code dimensions"):
        unsupervised(x[:2])
    with pytest.raises(InvalidInputError, match="singular"):
        unsupervised(np.c_[x, x[:, 0] + x[:, 1]])  # a dimension that is a sum of two others
