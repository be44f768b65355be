"""The PBT schedule (selection/pbt_schedule.py; model-selection-methods.md §1.3, §1.5 A): initial values, truncation
selection, perturbation, halving, ready intervals, stop rules, lineage, and a toy objective."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from untwine.errors import InvalidInputError
from untwine.selection.pbt_schedule import (
    BATCH_SIZE_CHOICES,
    BETA_CHOICES,
    LR_CHOICES,
    PERTURB_FACTORS,
    Explorer,
    Hyperparameters,
    adaptive_interval,
    converged,
    exploit_and_explore,
    failed,
    fixed_length_rounds,
    fixed_length_stop,
    halve,
    initial_hyperparameters,
    initial_population,
    interval_batch_sizes,
    perturb,
    rank,
    truncation_size,
)


def rng(seed=0):
    return np.random.default_rng(seed)


# --- initial values (§1.3.2) -----------------------------------------------------------------------------------------


def test_initial_value_lists_are_the_specs():
    # the spec's list, computed there with numpy 2.4 from int(1.5 ** linspace(1, 15, 24)) without the first value
    assert BETA_CHOICES == (1, 2, 3, 4, 5, 6, 8, 10, 13, 17, 22, 28, 37, 47, 60, 77, 99, 127, 163, 208, 267, 342, 437)
    assert BATCH_SIZE_CHOICES == (8, 16, 32, 64, 128, 256, 512, 1024)
    assert len(LR_CHOICES) == 30 and LR_CHOICES[0] == pytest.approx(1e-5) and LR_CHOICES[-1] == pytest.approx(1.0)
    ratios = np.diff(np.log10(LR_CHOICES))
    assert np.allclose(ratios, 5 / 29)  # 30 log-spaced values: a constant step of 5/29 decades


def test_initial_hyperparameters_are_uniform_over_the_lists_and_seeded():
    draws = initial_population(4000, rng(1))
    assert draws == initial_population(4000, rng(1))
    assert draws != initial_population(4000, rng(2))
    for name, choices in (("lr", LR_CHOICES), ("batch_size", BATCH_SIZE_CHOICES), ("beta", BETA_CHOICES)):
        counts = Counter(getattr(h, name) for h in draws)
        assert set(counts) == set(choices), name  # every value drawn, nothing else
        expected = 4000 / len(choices)
        assert max(abs(c - expected) for c in counts.values()) < 5 * math.sqrt(expected), name
    assert all(isinstance(h.batch_size, int) and isinstance(h.beta, int) for h in draws)


# --- perturbation (§1.3.6) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factor,start,expected",
    [
        # (factor, (lr, batch, beta), (lr, batch, beta)) derived by hand: batch min(ceil(f bs), 1024), beta ceil(f b)
        (2.0, (0.5, 1024, 437), (1.0, 1024, 874)),  # batch capped; beta and lr unbounded
        (2.0, (1.0, 16, 1), (2.0, 32, 2)),  # lr leaves the initial range: no bounds
        (0.5, (1e-5, 8, 1), (5e-6, 4, 1)),  # ceil(0.5) = 1: beta stays >= 1
        (0.8, (0.1, 8, 3), (0.08000000000000002, 7, 3)),  # ceil(6.4) = 7, ceil(2.4) = 3
        (1.2, (0.1, 1000, 5), (0.12, 1024, 6)),  # ceil(1200) capped; 1.2 * 5 is exactly 6.0 in float64
        (1.2, (0.1, 9, 7), (0.12, 11, 9)),  # ceil(10.8) = 11, ceil(8.4) = 9
        (0.5, (0.1, 9, 9), (0.05, 5, 5)),  # ceil(4.5) = 5
    ],
)
def test_perturbation_rounding_and_bounds(factor, start, expected):
    new, used = perturb(Hyperparameters(*start), rng(), factors=(factor,))
    assert used == {"lr": factor, "batch_size": factor, "beta": factor}
    assert (new.lr, new.batch_size, new.beta) == pytest.approx(expected, rel=1e-12, abs=0)
    assert isinstance(new.batch_size, int) and isinstance(new.beta, int)


def test_perturbation_factors_are_independent_per_hyperparameter_and_within_the_set():
    start = Hyperparameters(1e-3, 64, 10)
    pairs = Counter()
    for seed in range(400):
        new, used = perturb(start, rng(seed))
        assert set(used.values()) <= set(PERTURB_FACTORS)
        assert new.lr == start.lr * used["lr"]
        assert new.batch_size == min(math.ceil(used["batch_size"] * 64), 1024)
        assert new.beta == math.ceil(used["beta"] * 10)
        pairs[(used["lr"], used["beta"])] += 1
    assert len(pairs) == 16  # every combination of two independent factors occurs


def test_only_the_evolved_hyperparameters_change():
    start = Hyperparameters(1e-3, 64, 10)
    new, used = perturb(start, rng(), evolve=("lr",))
    assert set(used) == {"lr"} and (new.batch_size, new.beta) == (64, 10) and new.lr != start.lr
    with pytest.raises(InvalidInputError, match="cannot evolve gamma"):
        perturb(start, rng(), evolve=("gamma",))


# --- truncation selection (§1.3.5) -----------------------------------------------------------------------------------


def test_truncation_size_is_ceil_of_a_fifth():
    assert [truncation_size(p) for p in (56, 28, 24, 10, 5, 3, 2)] == [12, 6, 5, 2, 1, 1, 1]
    with pytest.raises(InvalidInputError, match="too small"):
        truncation_size(1)
    with pytest.raises(InvalidInputError, match="cutoff"):
        truncation_size(10, 0.6)


def test_rank_breaks_ties_by_member_and_counts_nan_as_zero():
    assert rank({3: 0.5, 1: 0.5, 2: 0.9, 0: float("nan"), 4: -0.1}) == [2, 1, 3, 0, 4]


def test_bottom_members_copy_top_members_and_the_middle_keeps_its_values():
    scores = {m: s for m, s in zip(range(10), [0.3, 0.9, 0.1, 0.5, 0.8, 0.0, 0.6, 0.4, 0.2, 0.7])}
    hyper = {m: Hyperparameters(1e-3 * (m + 1), 64, m + 1) for m in range(10)}
    sources = Counter()
    for seed in range(300):
        records = exploit_and_explore(scores, hyper, rng(seed), iteration=2, round=5)
        # k = 2: the top two are members 1 (0.9) and 4 (0.8); the bottom two 2 (0.1) and 5 (0.0), k-th worst first
        assert [e.target for e in records] == [2, 5]
        for e in records:
            assert e.source in (1, 4)
            assert e.inherited == hyper[e.source] and e.source_score == scores[e.source]
            assert e.target_score == scores[e.target] and (e.iteration, e.round) == (2, 5)
            assert set(e.factors) == {"lr", "batch_size", "beta"}
            assert e.hyperparameters.lr == hyper[e.source].lr * e.factors["lr"]
        sources[tuple(e.source for e in records)] += 1
    # each bottom member picks uniformly with replacement: all four (source, source) pairs, about 75 times each
    assert set(sources) == {(1, 1), (1, 4), (4, 1), (4, 4)}
    assert all(40 < n < 110 for n in sources.values())


# --- halving, intervals, stop rules ----------------------------------------------------------------------------------


def test_halving_keeps_the_better_half():
    assert halve([5, 2, 7, 1, 0, 3], 2) == [5, 2, 7]
    assert halve([5, 2, 7, 1, 0], 2) == [5, 2]  # 5 // 2
    assert halve([5, 2, 7], 1) == [5, 2, 7]


@pytest.mark.parametrize(
    "samples,batch,expected",
    [
        (480_000, 1000, [1000] * 480),
        (10, 4, [4, 4, 2]),  # the last batch cut short: exactly 10 samples
        (9, 4, [4, 4]),  # 9 mod 4 == 1: one sample fewer, no batch of one
        (10_000, 3, [3] * 3333),  # 10,000 mod 3 == 1 -> 9,999
        (7, 8, [7]),
        (1, 8, []),
        (0, 8, []),
        (5, 1, [1] * 5),
    ],
)
def test_interval_batch_sizes_count_samples(samples, batch, expected):
    assert interval_batch_sizes(samples, batch) == expected


def test_adaptive_interval_and_fixed_length():
    assert adaptive_interval(5_000) == 10_000 and adaptive_interval(737_280) == 737_280
    assert fixed_length_rounds(15) == 17 and fixed_length_rounds(26) == 28
    assert not fixed_length_stop(15, 15) and fixed_length_stop(16, 15)


def test_convergence_needs_six_small_changes_of_the_per_round_best():
    steady = [0.3, 0.5, 0.502, 0.503, 0.501, 0.504, 0.505]
    assert not converged(steady)  # the change 0.3 -> 0.5 is among the last six
    assert converged(steady + [0.506])  # changes 0.002 0.001 0.002 0.003 0.001 0.001
    assert not converged([0.5] * 6)  # only five changes: a missing round counts as not converged
    assert converged([0.5] * 7)
    assert not converged([0.5, 0.5, 0.5, 0.505, 0.505, 0.505, 0.505])  # 0.005 is not < 0.005
    assert not converged([0.5, 0.5, 0.5, float("nan"), 0.5, 0.5, 0.5])
    # per-round, not running, best: a best that keeps dropping by 0.01 never converges though the max stays put
    assert not converged([0.6, 0.59, 0.6, 0.59, 0.6, 0.59, 0.6])


def test_failure_stop():
    assert failed(0.0999) and not failed(0.1) and failed(float("nan"))


# --- the explorer ----------------------------------------------------------------------------------------------------


def test_fixed_length_run_makes_max_epoch_plus_two_rounds_and_halves_after_the_first():
    population = dict(enumerate(initial_population(16, rng(0))))
    explorer = Explorer(population, rng(1), stop="fixed", max_epoch=3, init_population_factor=2)
    scores = {m: m / 100 for m in range(16)}  # member 15 is best
    first = explorer.step(scores)
    assert first.removed == list(range(7, -1, -1))  # the worse half, worst last
    assert explorer.members == list(range(8, 16))
    assert [e.target for e in first.exploits] == [9, 8] and all(e.source in (15, 14) for e in first.exploits)
    rounds = [first]
    while rounds[-1].stop is None:
        rounds.append(explorer.step({m: m / 100 for m in explorer.members}))
    assert len(rounds) == fixed_length_rounds(3) == 5
    assert [r.round for r in rounds] == [0, 1, 2, 3, 4] and rounds[-1].stop == "max_epoch"
    assert rounds[-1].exploits == [] and all(r.exploits for r in rounds[:-1])
    assert [r.new_best for r in rounds] == [True, False, False, False, False]  # 0.15 every round: strict >
    assert explorer.best.member == 15 and explorer.best.round == 0
    with pytest.raises(InvalidInputError, match="stopped"):
        explorer.step({m: 0.0 for m in explorer.members})


def test_the_copied_values_are_the_members_new_values():
    population = dict(enumerate(initial_population(10, rng(3))))
    explorer = Explorer(population, rng(4), stop="fixed", max_epoch=5)
    result = explorer.step({m: float(m) for m in range(10)})
    for e in result.exploits:
        assert explorer.hyperparameters[e.target] == e.hyperparameters
        assert e.inherited == population[e.source]
    untouched = set(range(10)) - {e.target for e in result.exploits}
    assert all(explorer.hyperparameters[m] == population[m] for m in untouched)
    assert explorer.lineage == result.exploits


def test_converge_mode_stops_on_convergence_or_failure_and_tracks_the_iteration_best():
    population = dict(enumerate(initial_population(5, rng(0))))
    explorer = Explorer(population, rng(1), stop="converge")
    bests = [0.3, 0.5, 0.502, 0.503, 0.501, 0.504, 0.505, 0.506]
    results = [explorer.step({0: b, 1: b - 0.2, 2: 0.0, 3: 0.1, 4: 0.05}) for b in bests]
    assert [r.stop for r in results] == [None] * 7 + ["converged"]
    assert explorer.best.score == 0.506 and explorer.best.round == 7
    assert [r.new_best for r in results] == [True, True, True, True, False, True, True, True]
    new = explorer.next_iteration()
    assert explorer.iteration == 1 and explorer.round == 0 and explorer.best.member is None
    assert new == explorer.hyperparameters and new != population  # drawn afresh
    failing = explorer.step({m: 0.05 for m in range(5)})
    assert failing.stop == "failed" and failing.iteration == 1
    with pytest.raises(InvalidInputError, match="converged"):
        explorer.next_iteration()


def test_converge_mode_tests_failure_before_convergence():
    explorer = Explorer(dict(enumerate(initial_population(5, rng(0)))), rng(1), stop="converge")
    results = [explorer.step({m: 0.09 for m in range(5)}) for _ in range(1)]
    assert results[0].stop == "failed"


def test_explorer_state_survives_json_and_continues_identically():
    def run(explorer, rounds, start=0):
        out = []
        for r in range(start, start + rounds):
            out.append(explorer.step({m: math.sin(7 * m + r) for m in explorer.members}))
        return out

    make = lambda: Explorer(dict(enumerate(initial_population(12, rng(5)))), rng(6), stop="fixed", max_epoch=9)  # noqa: E731
    straight = make()
    run(straight, 6)
    first = make()
    run(first, 3)
    state = json.loads(json.dumps(first.state_dict()))
    second = make()
    second.load_state_dict(state)
    run(second, 3, start=3)
    assert second.state_dict() == straight.state_dict()
    assert second.lineage == straight.lineage


def test_bad_input_is_a_clear_error():
    population = dict(enumerate(initial_population(4, rng(0))))
    with pytest.raises(InvalidInputError, match="max_epoch"):
        Explorer(population, rng(), stop="fixed")
    with pytest.raises(InvalidInputError, match="unknown stop rule"):
        Explorer(population, rng(), stop="forever")
    with pytest.raises(InvalidInputError, match="too small"):
        Explorer({0: population[0]}, rng(), stop="converge")
    with pytest.raises(InvalidInputError, match="too small"):  # 3 members halve to 1
        Explorer(dict(list(population.items())[:3]), rng(), stop="fixed", max_epoch=1, init_population_factor=2)
    with pytest.raises(InvalidInputError, match="Generator"):
        initial_hyperparameters(np.random.RandomState(0))
    explorer = Explorer(population, rng(), stop="fixed", max_epoch=1)
    with pytest.raises(InvalidInputError, match="exactly the members"):
        explorer.step({0: 1.0, 1: 0.5})


def test_pbt_finds_the_good_region_of_a_toy_objective():
    """Toy PBT: a member's "weights" w move towards beta-dependent targets; the score peaks at beta = 17 and falls
    with |w - 1|. Exploit copies (w, values) of good members, so the population's betas gather near 17 and the
    copies carry the source's w (a faithful copy)."""
    generator = rng(0)
    hyper = dict(enumerate(initial_population(20, generator)))
    weights = {m: 0.0 for m in hyper}
    explorer = Explorer(hyper, generator, stop="fixed", max_epoch=30)

    def score(m):
        return -abs(math.log(explorer.hyperparameters[m].beta / 17)) - abs(weights[m] - 1.0)

    start = np.median([abs(math.log(h.beta / 17)) for h in hyper.values()])
    while True:
        for m in explorer.members:  # "train" one interval
            weights[m] += min(1.0, 10 * explorer.hyperparameters[m].lr) * (1.0 - weights[m])
        scores = {m: score(m) for m in explorer.members}
        result = explorer.step(scores)
        if result.stop:
            break
        before = dict(weights)
        for e in result.exploits:  # copy the state of the source as it was when scored
            weights[e.target] = before[e.source]
            assert scores[e.source] >= sorted(scores.values())[-4]  # a top-4 member (k = 4 of 20)
            assert scores[e.target] <= sorted(scores.values())[3]  # a bottom-4 member
    end = np.median([abs(math.log(h.beta / 17)) for h in explorer.hyperparameters.values()])
    assert end < start / 3
    assert max(scores.values()) > -0.3
