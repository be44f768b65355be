import importlib
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from factories import factor_pixels_dataset, read_pixels

from untwine.data.base import FactorDataset
from untwine.errors import InvalidInputError
from untwine.metrics.factor_vae_score import active_dims, factor_vae_votes, votes_accuracy

# the module (untwine.metrics may export a function of the same name)
factor_vae_score = importlib.import_module("untwine.metrics.factor_vae_score")

SMALL = {"num_variance_estimate": 1000, "num_train": 200, "num_eval": 100}
KEYS = {"train_accuracy", "eval_accuracy", "num_active_dims"}


def noise_representation(seed=0, dims=4):
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), dims))


def test_votes_accuracy_on_hand_made_votes():
    train = np.array([[3, 0, 1, 0], [1, 2, 1, 0]])
    evaluation = np.array([[1, 1, 1, 1], [1, 1, 1, 1]])
    # classes per column: 0, 1, tie -> 0, empty -> 0
    result = votes_accuracy(train, evaluation)
    assert result == {"train_accuracy": pytest.approx(6 / 8), "eval_accuracy": pytest.approx(4 / 8)}
    perfect = votes_accuracy(np.eye(3, dtype=int) * 5, np.eye(3, dtype=int))
    assert perfect == {"train_accuracy": 1.0, "eval_accuracy": 1.0}


def test_votes_on_hand_made_codes():
    global_variances = np.array([1.0, 4.0, 100.0])
    active = np.array([True, False, True])
    codes = np.array(
        [
            [[0.0, 0.0, 0.0], [1.0, 0.0, 5.0], [2.0, 0.0, 10.0]],  # local var 1, 0, 25 -> ratios 1, -, 0.25
            [[0.0, 5.0, 0.0], [0.1, 9.0, 5.0], [0.2, 1.0, 10.0]],  # local var 0.01, 16, 25 -> ratios 0.01, -, 0.25
        ]
    )
    votes = factor_vae_votes(codes, np.array([1, 0]), global_variances, active, num_factors=2)
    # group 0 votes for active position 1 (dim 2); group 1 for active position 0 (dim 0); dim 1 (inactive,
    # ratio 0) is never chosen
    assert votes.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert active_dims(np.array([0.0025, 0.0024, 1.0])).tolist() == [True, False, True]  # threshold on the std


def test_sample_votes_casts_one_vote_per_group_with_uniform_labels():
    data = factor_pixels_dataset((4, 5, 6))
    gv, active = np.ones(3), np.ones(3, dtype=bool)
    for num_votes, batch_size in ((1, 2), (700, 8), (130, 64)):  # one group; 600-group chunks; 64-group chunks
        votes = factor_vae_score.sample_votes(
            read_pixels, data, torch.Generator().manual_seed(0), num_votes, batch_size, gv, active
        )
        assert votes.sum() == num_votes and votes.shape == (3, 3)
        # a perfect representation: the fixed factor's own code has zero local variance, so votes are diagonal
        assert np.array_equal(votes, np.diag(np.diag(votes)))
    votes = factor_vae_score.sample_votes(read_pixels, data, torch.Generator().manual_seed(1), 6000, 2, gv, active)
    assert scipy.stats.chisquare(votes.sum(1)).pvalue > 0.01  # the fixed factor k is uniform over the 3 factors


def test_votes_edge_cases_by_hand():
    # the smallest groups (B = 2) and one code; variances with ddof = 1 (the factor (B - 1) / B would cancel anyway)
    codes = np.array([[[0.0, 1.0], [0.2, 3.0]], [[5.0, 0.0], [1.0, 0.1]]])  # local var: (0.02, 2), (8, 0.005)
    votes = factor_vae_votes(codes, np.array([0, 1]), np.array([1.0, 1.0]), np.array([1, 1]), num_factors=2)
    assert votes.tolist() == [[1, 0], [0, 1]], "an active mask of 0/1 integers is a mask, not indices"
    one_code = factor_vae_votes(codes[:, :, :1], np.array([1, 1]), np.ones(1), np.ones(1, dtype=bool), 2)
    assert one_code.tolist() == [[0], [2]]
    # a zero global variance (prune_threshold 0 keeps constant codes): x / 0 and 0 / 0 without a RuntimeWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = np.array([[[1.0, 2.0, 7.0], [1.0, 2.5, 7.0]]])
        votes = factor_vae_votes(flat, np.array([0]), np.array([0.0, 1.0, 0.0]), np.ones(3, dtype=bool), 1)
        assert votes.sum() == 1
    ones = np.ones(2)
    with pytest.raises(InvalidInputError, match="labels"):
        factor_vae_votes(codes, np.array([0, 1, 1]), ones, ones > 0, 2)  # integer labels of the wrong length
    with pytest.raises(InvalidInputError, match="global_variances"):
        factor_vae_votes(codes, np.array([0, 1]), np.ones(3), ones > 0, 2)
    with pytest.raises(InvalidInputError, match="global_variances and active"):
        factor_vae_votes(codes, np.array([0, 1]), ones, np.ones(3, dtype=bool), 2)


class AlternatingFactors(FactorDataset):
    """Two binary factors drawn in a fixed order (row r: r mod 2, r // 2 mod 2): sample statistics known by hand."""

    name, factor_sizes, observation_shape = "alternating", (2, 2), (1, 1, 2)

    def sample_factors(self, n, generator):
        r = torch.arange(n)
        return torch.stack([r % 2, r // 2 % 2], dim=1)

    def _observations(self, factors, generator):
        return factors.float().view(-1, 1, 1, 2)


def test_global_variances_use_ddof_one():
    """Codes 0.095 a, 0.07 a and b of two binary factors drawn in a fixed order. Over the first 3 rows, a = b =
    (0, 1, 0) up to order: sum of squares 2/3, so std = 0.471, 0.577 or 0.816 x the scale with ddof 0, 1 (the
    reference) or 2. Against the threshold 0.05, scale 0.095 is active with ddof >= 1, 0.07 only with ddof 2."""
    rep = lambda x: np.c_[0.095 * x[:, 0, 0, 0].numpy(), 0.07 * x[:, 0, 0, 0].numpy(), x[:, 0, 0, 1].numpy()]  # noqa: E731
    g = torch.Generator().manual_seed(0)

    def active(num_variance_estimate):
        options = {"num_variance_estimate": num_variance_estimate, "num_train": 5, "num_eval": 5}
        return factor_vae_score.evaluate(rep, AlternatingFactors(), g, **options)["num_active_dims"]

    assert active(3) == 2  # 0.095 a (std 0.055) and b (std 0.577); not 0.07 a (std 0.040)
    # 2 rows: a = (0, 1), b = (0, 0): std (ddof 1) 0.067, 0.049, 0
    assert active(2) == 1


def test_smallest_settings_are_accepted():
    data = factor_pixels_dataset((4, 5, 6))
    g = torch.Generator().manual_seed(0)
    result = factor_vae_score.evaluate(
        read_pixels, data, g, batch_size=2, num_variance_estimate=2, num_train=1, num_eval=1
    )
    assert set(result) == KEYS and result["train_accuracy"] == 1.0
    for bad, message in (
        ({"num_train": 0}, "num_train must be positive"),
        ({"num_eval": 0}, "num_eval must be positive"),
        ({"num_variance_estimate": 1}, "num_variance_estimate must be >= 2"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            factor_vae_score.evaluate(read_pixels, data, g, **{**SMALL, **bad})


def test_perfect_representation_scores_one():
    data = factor_pixels_dataset((4, 5, 6))
    result = factor_vae_score.evaluate(read_pixels, data, torch.Generator().manual_seed(0), **SMALL)
    assert result == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}


def test_num_active_dims_is_the_true_count():
    data = factor_pixels_dataset()
    rep = lambda x: np.c_[read_pixels(x), np.full(len(x), 7.0), 0.01 * read_pixels(x)[:, :1]]  # noqa: E731
    result = factor_vae_score.evaluate(rep, data, torch.Generator().manual_seed(0), **SMALL)
    # dim 2 is constant, dim 3 has std ~0.014 < 0.05: 2 active dims of 4 (the reference would store 4)
    assert result == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 2}


def test_noise_representation_scores_chance():
    data = factor_pixels_dataset((4, 5, 6))
    result = factor_vae_score.evaluate(noise_representation(), data, torch.Generator().manual_seed(0), **SMALL)
    assert result["num_active_dims"] == 4
    assert 0.15 < result["eval_accuracy"] < 0.55  # chance is 1/3


def test_constant_representation_gives_zeros():
    data = factor_pixels_dataset()
    result = factor_vae_score.evaluate(lambda x: np.ones((len(x), 3)), data, torch.Generator().manual_seed(0), **SMALL)
    assert result == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_deterministic_for_a_seed():
    data = factor_pixels_dataset()
    run = lambda seed: factor_vae_score.evaluate(  # noqa: E731
        noise_representation(), data, torch.Generator().manual_seed(seed), batch_size=8, **SMALL
    )
    a = run(5)
    assert a == run(5) and set(a) == KEYS


def test_bad_input_is_rejected():
    with pytest.raises(InvalidInputError, match="train_votes holds no votes"):
        votes_accuracy(np.zeros((2, 2), dtype=int), np.ones((2, 2), dtype=int))
    with pytest.raises(InvalidInputError, match="eval_votes has negative counts"):
        votes_accuracy(np.ones((2, 2), dtype=int), -np.ones((2, 2), dtype=int))
    with pytest.raises(InvalidInputError, match="integer matrix"):
        votes_accuracy(np.ones((2, 2)), np.ones((2, 2), dtype=int))
    with pytest.raises(InvalidInputError, match="shape"):
        votes_accuracy(np.ones((2, 2), dtype=int), np.ones((2, 3), dtype=int))
    with pytest.raises(InvalidInputError, match="negative"):
        votes_accuracy(-np.ones((2, 2), dtype=int), np.ones((2, 2), dtype=int))
    ones = np.ones(3)
    with pytest.raises(InvalidInputError, match=r"\[P, B >= 2, d\]"):
        factor_vae_votes(np.zeros((2, 3)), np.array([0, 1]), ones, ones > 0, 2)
    with pytest.raises(InvalidInputError, match="NaN"):
        factor_vae_votes(np.full((2, 3, 3), np.nan), np.array([0, 1]), ones, ones > 0, 2)
    with pytest.raises(InvalidInputError, match=r"lie in"):
        factor_vae_votes(np.zeros((2, 3, 3)), np.array([0, 2]), ones, ones > 0, 2)
    data = factor_pixels_dataset()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InvalidInputError, match="batch_size"):
        factor_vae_score.evaluate(read_pixels, data, g, batch_size=1, **SMALL)
    with pytest.raises(InvalidInputError, match="NaN"):
        factor_vae_score.evaluate(lambda x: np.full((len(x), 2), np.inf), data, g, **SMALL)
