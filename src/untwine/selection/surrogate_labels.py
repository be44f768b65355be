"""rPU-VAE's surrogate labels and the MIG that scores the final model against them (Estermann et al. 2020, §4.2
"Combining all learned factors"; spec: model-selection-methods.md §1.4(c), §1.5 Phase C; the rPU code's
prepare_leaf_run.py, vae_trainer.LeafMigVaeTrainer and metrics/nmig.compute_nmig_leaf).

A leaf run labels a chain of ever smaller data sets D_0 (the full data set) ⊃ D_1 ⊃ ... : level L holds the
surrogate labels of D_L (the active-latent means [|D_L|, a_L] of the model that labelled it) and the positions
of D_L+1 inside D_L (`rpu_reduction.reduce_dataset`'s indices); the last level has no next set (the reference
stores a dummy). The reference packs the first 3 levels of each leaf run; all leaf runs share level 0.

The surrogate-label MIG of a candidate model (`surrogate_mig`): for each leaf run and each level, sample
min(50,000, |D_L|) images of D_L without replacement, encode them to latent means, discretise the means and the
level's labels into 20 equal-width bins each (over that level's sample), and compute the MI between every latent
and every label column and each column's entropy; the leaf run's MIG is the mean over all columns of all levels of
(largest MI - second largest MI) / entropy. The fitness is the median over leaf runs. One
`numpy.random.RandomState(0)` (`score_random_seed = 0`) draws the samples of all leaf runs and levels in turn, as
the reference; any generator with `choice(n, size, replace=False)` may be passed. MI and discretisation are
`untwine.metrics.utils`' (the reference's `_histogram_discretize` and sklearn's `mutual_info_score`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from untwine.errors import InvalidInputError
from untwine.metrics.utils import discrete_entropy, discrete_mutual_info, histogram_discretize

LEVELS_USED = 3  # prepare_leaf_run(nr_its_to_use=3)
NUM_TRAIN = 50_000  # nmig_leaf.num_train
NUM_BINS = 20  # discretizer.num_bins
SCORE_SEED = 0  # score_random_seed


@dataclass(frozen=True)
class SurrogateLevel:
    """Level L of a leaf run: labels [|D_L|, a_L] and the positions of D_L+1 in D_L (None for the last level)."""

    labels: np.ndarray
    indices: np.ndarray | None = None


@dataclass(frozen=True)
class LeafRunLabels:
    """One leaf run's chain of levels, D_0 first."""

    levels: tuple[SurrogateLevel, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise InvalidInputError("a leaf run needs at least one level of labels")
        for L, level in enumerate(self.levels):
            labels = np.asarray(level.labels)
            if labels.ndim != 2 or labels.shape[0] < 2 or labels.shape[1] < 1:
                raise InvalidInputError(f"level {L}: labels must have shape [n >= 2, a >= 1], got {labels.shape}")
            if L + 1 < len(self.levels):
                if level.indices is None:
                    raise InvalidInputError(f"level {L} needs the positions of level {L + 1}'s images")
                indices = np.asarray(level.indices)
                if indices.size and (indices.min() < 0 or indices.max() >= labels.shape[0]):
                    raise InvalidInputError(f"level {L}: positions outside its {labels.shape[0]} images")
                if len(indices) != len(self.levels[L + 1].labels):
                    raise InvalidInputError(
                        f"level {L + 1} has {len(self.levels[L + 1].labels)} labels but level {L} selects "
                        f"{len(indices)} images for it"
                    )

    @property
    def size(self) -> int:
        """|D_0|, the full data set's size."""
        return len(self.levels[0].labels)

    def positions(self) -> list[np.ndarray]:
        """For each level, the positions of D_L's images in D_0 (level 0: all of them, in order)."""
        current = np.arange(self.size)
        out = [current]
        for level in self.levels[:-1]:
            current = current[np.asarray(level.indices, dtype=np.int64)]
            out.append(current)
        return out


def leaf_run_labels(
    labels: Sequence[np.ndarray], indices: Sequence[np.ndarray], levels: int = LEVELS_USED
) -> LeafRunLabels:
    """prepare_leaf_run: level i = (labels of iteration i, indices of iteration i) for the first `levels`
    iterations of a leaf run; the last level's indices are dropped (the reference writes a dummy)."""
    if levels < 1 or len(labels) < levels or len(indices) < levels - 1:
        raise InvalidInputError(
            f"{levels} levels need {levels} label arrays and {levels - 1} index arrays; got {len(labels)}, "
            f"{len(indices)}"
        )
    chain = [
        SurrogateLevel(np.asarray(labels[i], dtype=np.float64), np.asarray(indices[i]) if i + 1 < levels else None)
        for i in range(levels)
    ]
    return LeafRunLabels(tuple(chain))


def surrogate_mig_from_codes(
    codes: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_bins: int = NUM_BINS
) -> float:
    """One leaf run's MIG from per-level samples: codes[L] [k_L, d] latent means and labels[L] [k_L, a_L]."""
    if len(codes) != len(labels) or not codes:
        raise InvalidInputError(f"need codes and labels for every level, got {len(codes)} and {len(labels)}")
    mi, entropy = [], []
    for L, (c, y) in enumerate(zip(codes, labels)):
        c, y = np.asarray(c, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if c.ndim != 2 or y.ndim != 2 or len(c) != len(y) or c.shape[1] < 2:
            raise InvalidInputError(
                f"level {L}: codes [k, d >= 2] and labels [k, a] expected, got {c.shape}, {y.shape}"
            )
        discrete_labels = histogram_discretize(y, num_bins)
        h = discrete_entropy(discrete_labels)
        if np.any(h == 0):
            raise InvalidInputError(f"level {L}: a surrogate label column is constant in the sample (zero entropy)")
        mi.append(discrete_mutual_info(histogram_discretize(c, num_bins), discrete_labels))
        entropy.append(h)
    m, h = np.concatenate(mi, axis=1), np.concatenate(entropy)
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / h))


def _take(observations, positions: np.ndarray) -> torch.Tensor:
    if callable(observations):
        return observations(positions)
    batch = observations[torch.as_tensor(positions, dtype=torch.long)]
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


def surrogate_mig(
    represent: Callable[[torch.Tensor], np.ndarray],
    observations,
    leaf_runs: Sequence[LeafRunLabels],
    num_train: int = NUM_TRAIN,
    num_bins: int = NUM_BINS,
    random_state=None,
    batch_size: int = 256,
) -> dict[str, float | list[float]]:
    """The final model's fitness (§1.4(c)): {"surrogate_mig": median over leaf runs, "leaf_run_migs": [...]}.

    represent: observations [n, C, H, W] -> latent means [n, d] (e.g. `evaluation.representation(model, "mean")`);
    observations: D_0's images (a tensor [N, C, H, W], uint8 0..255 or float, indexed by position), or a function
    positions -> float images; random_state: defaults to RandomState(0), shared by all leaf runs and levels.
    """
    if not leaf_runs:
        raise InvalidInputError("the surrogate-label MIG needs at least one leaf run")
    if num_train < 2:
        raise InvalidInputError(f"num_train must be >= 2, got {num_train}")
    random_state = np.random.RandomState(SCORE_SEED) if random_state is None else random_state
    scores = []
    for leaf in leaf_runs:
        if not callable(observations) and len(observations) != leaf.size:
            raise InvalidInputError(f"the leaf run labels {leaf.size} images but the data set has {len(observations)}")
        codes, labels = [], []
        for level, positions in zip(leaf.levels, leaf.positions()):
            n = len(level.labels)
            chosen = random_state.choice(n, size=min(num_train, n), replace=False)
            images = positions[chosen]
            encoded = [
                represent(_take(observations, images[i : i + batch_size])) for i in range(0, len(images), batch_size)
            ]
            codes.append(np.concatenate(encoded))
            labels.append(np.asarray(level.labels)[chosen])
        scores.append(surrogate_mig_from_codes(codes, labels, num_bins))
    return {"surrogate_mig": float(np.median(scores)), "leaf_run_migs": scores}
