"""Scores recomputed from subsets of a specification's seeds (selection/seeds.py, Holtz et al. Table 1 "as the number
of seeds grows"): the draws of seeds, UDR within a subset from the stored pair scores, and the training-dynamics
score of a subset, each against a brute-force recomputation from the subset's realisations alone."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from untwine.errors import InvalidInputError
from untwine.selection.dynamics import dynamics_score
from untwine.selection.seeds import all_subsets, seed_subsets, subset_sizes, udr_subset_score
from untwine.selection.udr import udr


def test_subset_sizes_run_from_two_to_all_seeds():
    assert subset_sizes(2) == [2]
    assert subset_sizes(5) == [2, 3, 4, 5]
    assert subset_sizes(7) == [2, 3, 4, 5, 7]  # the full set is always one of them
    assert subset_sizes(25) == [2, 3, 4, 5, 10, 15, 20, 25]
    assert subset_sizes(12, sizes=[5, 10, 30]) == [5, 10, 12]
    with pytest.raises(InvalidInputError, match="at least 2 seeds"):
        subset_sizes(1)


def test_every_subset_when_few_else_the_first_seeds_and_random_ones():
    assert seed_subsets(5, 2) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    assert seed_subsets(5, 4) == [(0, 1, 2, 3), (0, 1, 2, 4), (0, 1, 3, 4), (0, 2, 3, 4), (1, 2, 3, 4)]
    assert seed_subsets(5, 5) == [(0, 1, 2, 3, 4)]
    many = seed_subsets(25, 5, max_subsets=10)
    assert len(many) == 10 and len(set(many)) == 10 and many[0] == (0, 1, 2, 3, 4)
    assert all(len(s) == 5 and list(s) == sorted(s) and max(s) < 25 for s in many)
    assert seed_subsets(25, 5, max_subsets=10) == many  # deterministic
    assert seed_subsets(6, 3, max_subsets=20) == list(itertools.combinations(range(6), 3))
    # 5 seeds: C(5, 2) + C(5, 3) + C(5, 4) + 1 draws
    assert len(list(all_subsets(5))) == math.comb(5, 2) + math.comb(5, 3) + math.comb(5, 4) + 1
    with pytest.raises(InvalidInputError, match="between 2 and 4"):
        seed_subsets(4, 5)


def test_udr_within_a_subset_is_the_median_of_its_pair_scores():
    pairs = {"1": 0.2, "2": 0.9, "3": 0.4}  # pairwise[j, model 0] for j = seeds 1, 2, 3
    assert udr_subset_score(pairs, "0", ["0", "1", "2", "3"]) == pytest.approx(0.4)
    assert udr_subset_score(pairs, "0", ["0", "1", "2"]) == pytest.approx(0.55)
    assert udr_subset_score(pairs, "0", ["0", "3"]) == pytest.approx(0.4)
    with pytest.raises(InvalidInputError, match="against 7"):
        udr_subset_score(pairs, "0", ["0", "7"])


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
def test_udr_of_a_subset_equals_udr_of_the_subset_alone(correlation):
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(200, 3))
    representations = np.stack([factors @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(200, 4)) for _ in range(5)])
    kl = rng.uniform(0.0, 2.0, size=(5, 4))
    kl[1, 2] = 0.001  # a dead latent, filtered
    full = udr(representations, kl, correlation=correlation)["pairwise_disentanglement_scores"]
    for subset in [(0, 2), (1, 3, 4), (0, 1, 2, 4)]:
        alone = udr(representations[list(subset)], kl[list(subset)], correlation=correlation)["model_scores"]
        for position, model in enumerate(subset):
            pairs = {str(j): full[j, model] for j in range(5) if j != model}
            recomputed = udr_subset_score(pairs, str(model), [str(m) for m in subset])
            assert recomputed == pytest.approx(alone[position], abs=1e-12)


def _traces(count: int, steps: int = 5, samples: int = 8, features: int = 6) -> list[np.ndarray]:
    """Realisations whose activations drift apart with their index (so that subsets differ)."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=(steps, samples, features)).cumsum(axis=0)
    return [base + (0.2 + 0.3 * r) * rng.normal(size=base.shape) for r in range(count)]


def test_the_dynamics_score_of_a_subset_equals_the_score_of_its_traces_alone():
    traces = _traces(4)
    subsets = [(0, 1), (1, 3), (0, 2, 3), (0, 1, 2, 3)]
    result = dynamics_score(traces, n_components=3, subsets=subsets)
    assert len(result["subset_scores"]) == len(subsets)
    for subset, score in zip(subsets, result["subset_scores"]):
        alone = dynamics_score([traces[i] for i in subset], n_components=3)
        assert score == pytest.approx(alone["score"], rel=1e-9, abs=1e-12)
    assert result["subset_scores"][-1] == result["score"]  # the full set is the score itself
    assert len(set(np.round(result["subset_scores"], 12))) == len(subsets)  # the subsets do differ
    # a fixed t as well
    fixed = dynamics_score(traces, t=3, n_components=3, subsets=[(2, 3)])
    assert fixed["subset_scores"][0] == pytest.approx(dynamics_score(traces[2:], t=3, n_components=3)["score"])
    with pytest.raises(InvalidInputError, match="at least 2 distinct"):
        dynamics_score(traces, subsets=[(0, 0)])
    with pytest.raises(InvalidInputError, match="at least 2 distinct"):
        dynamics_score(traces, subsets=[(0, 9)])
