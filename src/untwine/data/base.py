"""The FactorDataset interface (disentanglement_lib's GroundTruthData, spec §4.0), in PyTorch.

Factors are always integer indices (never physical values). Observations are float tensors of shape
[N, C, H, W] with values in [0, 1]. Every random draw comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from untwine.errors import InvalidInputError


def factors_to_index(factors: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Row-major (C order) flat index of factor tuples: sum_k f_k * prod_{j>k} n_j."""
    index = torch.zeros(factors.shape[0], dtype=torch.long, device=factors.device)
    for k, size in enumerate(sizes):
        index = index * size + factors[:, k]
    return index


def index_to_factors(index: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Inverse of `factors_to_index`."""
    index = torch.as_tensor(index, dtype=torch.long)
    columns = []
    for size in reversed(sizes):
        columns.append(index % size)
        index = torch.div(index, size, rounding_mode="floor")
    return torch.stack(columns[::-1], dim=1)


class FactorDataset:
    """A data set whose observations are generated from discrete ground-truth factors.

    Subclasses set `name`, `factor_names`, `factor_sizes`, `observation_shape` (C, H, W) and implement
    `_observations(factors, generator)`; this class supplies sampling, validation and index conversion.
    """

    name: str = "dataset"
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    observation_shape: tuple[int, int, int] = (1, 64, 64)
    device: torch.device = torch.device("cpu")

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        """Number of distinct ground-truth factor combinations."""
        return math.prod(self.factor_sizes)

    def sample_factors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n factor vectors, each factor i.i.d. uniform over its values: int64 [n, K] on the generator's device."""
        if n < 0:
            raise InvalidInputError(f"cannot sample {n} factor vectors")
        columns = [
            torch.randint(size, (n,), generator=generator, device=generator.device) for size in self.factor_sizes
        ]
        return torch.stack(columns, dim=1)

    def observations(self, factors: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Observations for the given factor indices: float32 [n, C, H, W] in [0, 1] on `self.device`.

        `generator` drives any observation noise or nuisance factor (colour, background, instance).
        """
        factors = self.check_factors(factors).to(self.device)
        return self._observations(factors, generator)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(factors, observations) for n i.i.d. draws."""
        factors = self.sample_factors(n, generator)
        return factors, self.observations(factors, generator)

    def factors_to_index(self, factors: torch.Tensor) -> torch.Tensor:
        return factors_to_index(self.check_factors(factors), self.factor_sizes)

    def index_to_factors(self, index: torch.Tensor) -> torch.Tensor:
        return index_to_factors(index, self.factor_sizes)

    def check_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """Validate a factor matrix [n, K] of integer indices within range."""
        factors = torch.as_tensor(factors)
        if factors.dtype.is_floating_point or factors.dtype == torch.bool:
            raise InvalidInputError(f"factors must be integer indices, got dtype {factors.dtype}")
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise InvalidInputError(
                f"factors must have shape [n, {self.num_factors}] for {self.name}, got {list(factors.shape)}"
            )
        factors = factors.long()
        sizes = torch.tensor(self.factor_sizes, device=factors.device)
        if factors.numel() and (bool((factors < 0).any()) or bool((factors >= sizes).any())):
            raise InvalidInputError(f"factor indices out of range for sizes {list(self.factor_sizes)}")
        return factors

    def to(self, device: str | torch.device) -> "FactorDataset":
        """Move any stored observations to `device` (once); returns self."""
        self.device = torch.device(device)
        return self

    def _observations(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-friendly summary: name, factors, sizes, observation shape."""
        return {
            "name": self.name,
            "factors": dict(zip(self.factor_names, self.factor_sizes)),
            "num_combinations": len(self),
            "observation_shape": list(self.observation_shape),
        }
