import importlib

import numpy as np
import pytest
import scipy.stats
import torch
from factories import factor_pixels_dataset, read_pixels

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
    with pytest.raises(InvalidInputError, match="no votes"):
        votes_accuracy(np.zeros((2, 2), dtype=int), np.ones((2, 2), dtype=int))
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
