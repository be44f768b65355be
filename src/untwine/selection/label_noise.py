"""Label noise for the supervised metrics (Holtz et al. 2022, §4 "A failure mode of supervised methods", Tables 2-3).

The paper's three noise regimes (its Table 2) give each dSprites factor a probability of being perturbed; a
perturbed discrete factor (shape) is resampled uniformly, an ordinal one (scale, orientation, position) is moved by
zero-mean Gaussian noise:

    regime | p_shape | p_scale | p_orientation | p_position (x and y)
    1      | 0.05    | 0.1     | 0.05          | 0.05
    2      | 0.1     | 0.2     | 0.1           | 0.1
    3      | 0.3     | 0.3     | 0.3           | 0.3

How it is applied, in one place (`NoisyLabels`, a FactorDataset wrapper): a metric's protocol samples and builds
factor matrices as usual -- these are the LABELS it scores with -- but the observations it is handed are those of
`perturb_factors(labels)`. E.g. the BetaVAE and FactorVAE scores believe factor k is fixed across a batch while
each observation's factor k was perturbed with probability p_k: the paper's "when selecting samples with fixed
generative k, we perturb factor k". Drawing the true factors from the labels (rather than the labels from the true
factors) is the same joint distribution for uniform resampling of uniform factors, and for the Gaussian moves away
from the ends of a factor's range (where clipping makes the two directions differ slightly); it is the only
direction every protocol can be run through unchanged. The noise has its own generator, so a noisy evaluation
draws exactly the labels of the clean one (the paper's Table 3 correlates the two).

[PROPOSAL] where the paper is silent: the Gaussian's standard deviation, `sigma` = 0.1 of the factor's range
(n - 1 index steps), the move rounded to the nearest index and clipped to the range; a perturbed discrete factor is
resampled uniformly over ALL its values (so it keeps its value with probability 1/n). Other data sets: factors
named like a category (shape, object, colour, hue, category, lighting, background) are discrete, the others
ordinal, and so are unnamed ones (dummy_data's factor_k); scale/size factors take p_scale, the others p_shape
(= p_orientation = p_position in every regime).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from untwine.errors import InvalidInputError

REGIMES = {
    1: {"shape": 0.05, "scale": 0.1, "orientation": 0.05, "position": 0.05},
    2: {"shape": 0.1, "scale": 0.2, "orientation": 0.1, "position": 0.1},
    3: {"shape": 0.3, "scale": 0.3, "orientation": 0.3, "position": 0.3},
}
DISCRETE_WORDS = ("shape", "object", "color", "colour", "hue", "category", "lighting", "background", "factor_")
SIGMA = 0.1  # the Gaussian's standard deviation, as a fraction of the factor's range [PROPOSAL]


def factor_noise(
    factor_names: Sequence[str], factor_sizes: Sequence[int], regime: int, sigma: float = SIGMA
) -> tuple[list[float], list[bool], list[float]]:
    """(probabilities, discrete?, Gaussian std in index steps) per factor, for noise regime 1, 2 or 3."""
    if regime not in REGIMES:
        raise InvalidInputError(f"label_noise must be 1, 2 or 3 (Holtz et al. Table 2), got {regime!r}")
    table = REGIMES[regime]
    probabilities, discrete, stds = [], [], []
    for name, size in zip(factor_names, factor_sizes):
        name = name.lower()
        is_discrete = any(word in name for word in DISCRETE_WORDS) and "size" not in name
        if "scale" in name or "size" in name:
            p = table["scale"]
        elif "orientation" in name:
            p = table["orientation"]
        elif "position" in name:
            p = table["position"]
        else:
            p = table["shape"]
        probabilities.append(p)
        discrete.append(is_discrete)
        stds.append(sigma * (size - 1))
    return probabilities, discrete, stds


def perturb_factors(
    factors: torch.Tensor,
    factor_sizes: Sequence[int],
    probabilities: Sequence[float],
    discrete: Sequence[bool],
    stds: Sequence[float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(perturbed factors, applied mask), both [n, K]: entry (i, k) is perturbed with probability p_k -- resampled
    uniformly over the factor's values if discrete, else moved by round(N(0, std_k)) and clipped to the range.
    Three uniform/normal draws per entry are always made, so the stream does not depend on the outcome."""
    device = generator.device
    labels = factors.to(device).long()
    shape = labels.shape
    p = torch.tensor(list(probabilities), dtype=torch.float64, device=device)
    sizes = torch.tensor(list(factor_sizes), dtype=torch.long, device=device)
    applied = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) < p
    resampled = (torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * sizes).long()
    resampled = torch.minimum(resampled, sizes - 1)
    std = torch.tensor(list(stds), dtype=torch.float64, device=device)
    shift = torch.round(torch.randn(shape, generator=generator, device=device, dtype=torch.float64) * std).long()
    moved = torch.minimum(torch.clamp(labels + shift, min=0), sizes - 1)
    is_discrete = torch.tensor(list(discrete), dtype=torch.bool, device=device)
    noisy = torch.where(applied, torch.where(is_discrete, resampled, moved), labels)
    return noisy.to(factors.device), applied.to(factors.device)


class NoisyLabels:
    """A FactorDataset whose observations come from perturbed versions of the factors (labels) a metric holds.

    Everything but `observations` is the wrapped data set's; `observations(labels, g)` returns the observations of
    `perturb_factors(labels)` (the noise from this wrapper's own generator, `g` still drives nuisances)."""

    def __init__(self, dataset, regime: int, generator: torch.Generator, sigma: float = SIGMA):
        self.dataset = dataset
        self.regime = regime
        self.generator = generator
        self.probabilities, self.discrete, self.stds = factor_noise(
            dataset.factor_names, dataset.factor_sizes, regime, sigma
        )

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        factors = self.dataset.sample_factors(n, generator)
        return factors, self.observations(factors, generator)

    def _perturbed(self, factors: torch.Tensor) -> torch.Tensor:
        labels = self.dataset.check_factors(factors)
        true, _ = perturb_factors(
            labels, self.dataset.factor_sizes, self.probabilities, self.discrete, self.stds, self.generator
        )
        return true

    def observations(self, factors: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.dataset.observations(self._perturbed(factors), generator)

    def grid_index(self, factors: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Storage rows of the perturbed factors' observations (what a code cache gathers)."""
        return self.dataset.grid_index(self._perturbed(factors), generator)


def with_label_noise(dataset, metric: str, regime, eval_seed: int, representation: str) -> tuple[object, str]:
    """(data set, result label) for one metric's evaluation: the data set itself and `metric` when regime is 0 /
    None, else `NoisyLabels` (noise generator from the evaluation seed, the representation and the metric) and
    "<metric>_label_noise<regime>", so noisy results are stored beside the clean ones."""
    if not regime:
        return dataset, metric
    if metric == "unsupervised":
        raise InvalidInputError("label_noise applies to metrics that use factor labels, not to 'unsupervised'")
    regime = int(regime) if isinstance(regime, (int, float)) and float(regime).is_integer() else regime
    words = np.random.SeedSequence([eval_seed, *representation.encode(), *metric.encode(), *b"label_noise"])
    seed = int(words.generate_state(1, dtype=np.uint64)[0] >> 1)
    generator = torch.Generator(device=dataset.device).manual_seed(seed)
    return NoisyLabels(dataset, regime, generator), f"{metric}_label_noise{regime}"
