"""Scores of a specification recomputed from a subset of its seeds: Holtz et al. (2022) Table 1 reports the rank
correlation of their score with the supervised metrics "for increasing number of initializations per model"
(n = 5 / 10 / 25) as mean ± std; the paper does not say how the std arises. Here: over draws of n of a
specification's seeds (`seed_subsets`), every score recomputed from the drawn realisations only.

- UDR: a pair score depends on its two models alone, so a model's score within a subset is the median of its
  stored pair scores against the subset's other models (`udr_subset_score`; the reference's model score, quirk 6
  of selection/udr.py, restricted to the subset). No model is encoded again.
- Training dynamics: the joint embedding depends on every realisation, so the score is recomputed over the
  subset's traces (`selection.dynamics.dynamics_score(..., subsets=...)`, reusing each realisation's operator).

Draws are positions in the specification's seeds sorted ascending, the same positions for every specification:
draw 0 of size n is the first n seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from untwine.errors import InvalidInputError

MAX_SUBSETS = 10  # draws per subset size (all C(S, n) subsets when there are at most this many)
SIZES = (2, 3, 4, 5, 10, 15, 20, 25)  # the subset sizes when a specification has many seeds (Holtz: 5, 10, 25)


def subset_sizes(count: int, sizes: Sequence[int] | None = None) -> list[int]:
    """The subset sizes for a specification of `count` seeds: `sizes` (default `SIZES`) from 2 to count, plus count
    itself (the full set, one draw)."""
    if count < 2:
        raise InvalidInputError(f"a specification needs at least 2 seeds to draw subsets from, got {count}")
    chosen = {int(n) for n in (SIZES if sizes is None else sizes) if 2 <= int(n) <= count}
    return sorted(chosen | {count})


def seed_subsets(count: int, size: int, max_subsets: int = MAX_SUBSETS, seed: int = 0) -> list[tuple[int, ...]]:
    """Draws of `size` positions out of range(count) (positions in the seeds sorted ascending): all C(count, size)
    subsets in lexicographic order (the first is the first `size` seeds) when there are at most `max_subsets`; else
    the first `size` positions, then `max_subsets - 1` other distinct subsets drawn uniformly (fixed `seed`)."""
    if not 2 <= size <= count:
        raise InvalidInputError(f"a subset of seeds has between 2 and {count} members, got {size}")
    if max_subsets < 1:
        raise InvalidInputError(f"max_subsets must be at least 1, got {max_subsets}")
    if math.comb(count, size) <= max_subsets:
        return list(itertools.combinations(range(count), size))
    rng = np.random.default_rng([seed, count, size])
    drawn = [tuple(range(size))]
    while len(drawn) < max_subsets:
        subset = tuple(sorted(int(i) for i in rng.choice(count, size, replace=False)))
        if subset not in drawn:
            drawn.append(subset)
    return drawn


def all_subsets(count: int, max_subsets: int = MAX_SUBSETS, sizes: Sequence[int] | None = None):
    """(size, draw, positions) for every subset size of `subset_sizes` and every draw of `seed_subsets`."""
    for size in subset_sizes(count, sizes):
        for draw, positions in enumerate(seed_subsets(count, size, max_subsets)):
            yield size, draw, positions


def udr_subset_score(pair_scores: Mapping, model, subset: Sequence) -> float:
    """A model's UDR score within a subset of its group: the median over the subset's other models j of the pair
    score with j as the source and the model as the target (its column of `pairwise_disentanglement_scores`).
    `pair_scores`: {j: pairwise[j, model]} over the group's other models (`udr.<correlation>.pair_scores`)."""
    others = [j for j in subset if j != model]
    if not others:
        raise InvalidInputError("a UDR score within a subset needs at least one other model in it")
    missing = [j for j in others if j not in pair_scores]
    if missing:
        raise InvalidInputError(f"no UDR pair score against {', '.join(map(str, missing))}")
    return float(np.median([float(pair_scores[j]) for j in others]))
