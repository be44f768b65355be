"""dummy_data (spec §4.1): 10 factors of 5 values each; observations are U(0, 1) noise, 1 x 64 x 64, that carry
no information about the factors. The reference uses it to test metrics and pipelines; so can untwine's users
(every metric should score it near its chance level)."""

from __future__ import annotations

import torch

from untwine.data.base import FactorDataset

FACTOR_NAMES = tuple(f"factor_{k}" for k in range(10))
FACTOR_SIZES = (5,) * 10


class DummyData(FactorDataset):
    name = "dummy_data"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (1, 64, 64)

    def _observations(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0)
        shape = (factors.shape[0], *self.observation_shape)
        return torch.rand(shape, generator=generator, device=generator.device).to(self.device)
