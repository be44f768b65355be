import numpy as np
import pytest
import torch
from factories import PixelModel, balanced_grid, factor_pixels_dataset
from sklearn.metrics import mutual_info_score

from untwine.errors import InvalidInputError
from untwine.evaluation import evaluate_model, representation
from untwine.metrics import PROTOCOLS, mig_posterior
from untwine.metrics.mig_posterior import posterior_mutual_info


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _brute_force_mi(means, logvars, factors, seed):
    """Chen et al.'s estimator by an O(N^2) loop over the same draws z = mu + exp(lv / 2) eps (eps from `seed`):
    I(z_j; v_k) = H(z_j) - sum_v p(v) H(z_j | v), each entropy -1/|S| sum_{m in S} log(1/|S| sum_{n in S} q(z_mj|x_n))
    over the points S of the whole sample or of one factor value."""
    n, d = means.shape
    eps = torch.randn(means.shape, generator=_gen(seed)).double().numpy()
    z = means + np.exp(logvars / 2) * eps

    def density(m, i, j):  # q(z_mj | x_i), a 1-D normal with per-point variance
        var = np.exp(logvars[i, j])
        return np.exp(-((z[m, j] - means[i, j]) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)

    def entropy(points, j):
        return -np.mean([np.log(np.mean([density(m, i, j) for i in points])) for m in points])

    mi = np.zeros((d, factors.shape[1]))
    for j in range(d):
        marginal = entropy(range(n), j)
        for k in range(factors.shape[1]):
            groups = [np.flatnonzero(factors[:, k] == v) for v in np.unique(factors[:, k])]
            conditional = sum(len(g) / n * entropy(g, j) for g in groups)
            mi[j, k] = marginal - conditional
    return mi


def test_aligned_duplicated_and_noise_codes():
    f = balanced_grid(5, 8, repeat=50)
    sharp = np.full((len(f), 2), np.log(1e-4))
    assert mig_posterior(f.astype(float), sharp, f, _gen())["posterior_mig"] == pytest.approx(1.0, abs=1e-6)
    duplicated = np.c_[f[:, 0], f[:, 0], f[:, 1]].astype(float)
    assert mig_posterior(duplicated, np.c_[sharp, sharp[:, :1]], f, _gen())["posterior_mig"] == pytest.approx(
        0.5, abs=1e-6
    )
    noise = np.random.default_rng(0).normal(size=(len(f), 3))
    assert mig_posterior(noise, np.zeros((len(f), 3)), f, _gen())["posterior_mig"] < 0.01


def test_mutual_information_of_a_sharp_code_is_the_factor_entropy():
    f = balanced_grid(4, 2, repeat=100)
    mi = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1e-4)), f, _gen())
    assert mi[0, 0] == pytest.approx(np.log(4), abs=1e-6) and mi[1, 1] == pytest.approx(np.log(2), abs=1e-6)
    assert abs(mi[0, 1]) < 1e-6 and abs(mi[1, 0]) < 1e-6


def test_per_point_log_variances_match_a_brute_force_loop():
    """Every point has its own log-variance (a shared one would cancel from the log-density differences)."""
    rng = np.random.default_rng(3)
    f = balanced_grid(3, 2, repeat=8)  # 48 points
    means = np.c_[f[:, 0] + rng.normal(0, 0.3, len(f)), rng.normal(size=len(f)), f[:, 1] - 0.5 * f[:, 0]]
    logvars = rng.uniform(-3.0, 1.0, means.shape)
    expected = _brute_force_mi(means, logvars, f, seed=11)
    got = posterior_mutual_info(means, logvars, f, _gen(11), chunk=7)  # chunks that do not divide N
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12)
    top = np.sort(expected, axis=0)[::-1]
    entropy = np.array([np.log(3), np.log(2)])  # balanced factors
    mig = np.mean((top[0] - top[1]) / entropy)
    assert mig_posterior(means, logvars, f, _gen(11))["posterior_mig"] == pytest.approx(mig, rel=1e-9)
    # three factors (the one-hot blocks of all factors side by side), one of them unbalanced
    f3 = np.c_[f, (np.arange(len(f)) % 5 == 0).astype(int)]
    got = posterior_mutual_info(means, logvars, f3, _gen(12))
    assert np.allclose(got, _brute_force_mi(means, logvars, f3, seed=12), rtol=1e-9, atol=1e-12)


def test_broad_posteriors_carry_less_information():
    f = balanced_grid(4, 4, repeat=100)
    sharp = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1e-4)), f, _gen())[0, 0]
    broad = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1.0)), f, _gen())[0, 0]
    assert 0 < broad < 0.8 * sharp


def test_protocol_with_a_model_and_validation():
    data = factor_pixels_dataset()  # factors of 5 and 8 values
    # sharp posteriors on the factor values: I(z_k; v_k) = H(v_k) and the runner-up is the sample's MI between the
    # two (independent) factors, so MIG = mean_k (H_k - I(v_0; v_1)) / H_k over the sampled factors
    for weights, gap_of_a in (((1.0, 1.0), True), ((1.0, 1.0, 1.0, 1.0), False)):  # codes a, b or a, b, a, b
        result = PROTOCOLS["mig_posterior"](representation(PixelModel(weights), "mean"), data, _gen(5), num_train=400)
        f = data.sample_factors(400, _gen(5)).numpy()  # the protocol's first draw
        entropy = np.array([mutual_info_score(f[:, k], f[:, k]) for k in range(2)])
        shared = mutual_info_score(f[:, 0], f[:, 1])
        # a duplicated code closes every gap: the top two MIs are both H_k
        expected = np.mean((entropy - shared) / entropy) if gap_of_a else 0.0
        assert result["posterior_mig"] == pytest.approx(expected, abs=1e-9)
    results = evaluate_model(
        PixelModel(), data, ["mig", "mig_posterior"], ["mean"], options={"mig_posterior": {"num_train": 400}}
    )
    assert 0.95 < results["eval.mean.mig_posterior.posterior_mig"] < 1.0
    assert not any(k.startswith("reference.mean.mig_posterior") for k in results), "no reference counterpart"
    with pytest.raises(InvalidInputError, match="Gaussian encoder"):
        PROTOCOLS["mig_posterior"](lambda x: x.flatten(1).numpy(), factor_pixels_dataset(), _gen())
    with pytest.raises(InvalidInputError, match="unknown MIG estimator"):
        PROTOCOLS["mig"](lambda x: x.flatten(1).numpy(), factor_pixels_dataset(), _gen(), estimator="kde")
    with pytest.raises(InvalidInputError, match="means contains NaN"):
        mig_posterior(np.full((10, 2), np.nan), np.zeros((10, 2)), np.tile([[0], [1]], (5, 1)), _gen())
    with pytest.raises(InvalidInputError, match="logvars contains NaN"):
        mig_posterior(np.zeros((10, 2)), np.full((10, 2), np.inf), np.tile([[0], [1]], (5, 1)), _gen())
    with pytest.raises(InvalidInputError, match="differ in shape"):
        mig_posterior(np.zeros((10, 3)), np.zeros((10, 2)), np.tile([[0], [1]], (5, 1)), _gen())
    with pytest.raises(InvalidInputError, match="single value"):
        mig_posterior(np.zeros((10, 2)), np.zeros((10, 2)), np.c_[np.tile([0, 1], 5), np.ones(10, int)], _gen())
    with pytest.raises(InvalidInputError, match="at least 2 dimensions"):
        mig_posterior(np.zeros((10, 1)), np.zeros((10, 1)), np.tile([[0], [1]], (5, 1)), _gen())
