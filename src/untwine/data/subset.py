"""A subset of a factor data set (rPU-VAE's reduced data set D_cur, Estermann et al. 2020 §4.2; spec
model-selection-methods.md §1.5 B.4): the observations at given flat grid indices of a base data set.

`len()` is the subset's size |D_cur| (the beta-TCVAE estimator's N, `Trainer` passes `len(dataset)`), batches are
drawn i.i.d. uniformly over the subset, and `factors()` gives the subset's ground-truth factors (for checking which
factors a level holds fixed). The base data set's own sampler is not used: a subset is a list of grid points.
"""

from __future__ import annotations

import numpy as np
import torch

from untwine.data.base import FactorDataset
from untwine.errors import InvalidInputError


class SubsetDataset(FactorDataset):
    """`base` restricted to the flat grid `indices` (positions in `base`'s row-major factor grid)."""

    def __init__(self, base: FactorDataset, indices):
        indices = np.asarray(indices, dtype=np.int64).ravel()
        if indices.size < 1:
            raise InvalidInputError("a subset data set needs at least one observation")
        if indices.min() < 0 or indices.max() >= len(base):
            raise InvalidInputError(f"subset indices must lie in [0, {len(base)}) of {base.name}")
        self.base = base
        self.indices = torch.from_numpy(indices)
        self.name = f"{base.name}[subset of {indices.size}]"
        self.factor_names = base.factor_names
        self.factor_sizes = base.factor_sizes
        self.observation_shape = base.observation_shape
        self.device = base.device

    def __len__(self) -> int:
        return int(self.indices.numel())

    def factors(self) -> np.ndarray:
        """The subset's factor indices [|D|, K], in subset order."""
        return self.base.index_to_factors(self.indices).cpu().numpy()

    def sample_factors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if n < 0:
            raise InvalidInputError(f"cannot sample {n} factor vectors")
        picks = torch.randint(len(self), (n,), generator=generator, device=generator.device).cpu()
        return self.base.index_to_factors(self.indices[picks]).to(generator.device)

    def _observations(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.base.observations(factors, generator)

    def to(self, device: str | torch.device) -> "SubsetDataset":
        self.base.to(device)
        self.device = self.base.device
        return self

    def describe(self) -> dict:
        return {**self.base.describe(), "name": self.name, "subset_size": len(self)}
