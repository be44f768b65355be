"""A data set held as one uint8 tensor indexed by the flat factor index (DESIGN.md, data/stored.py).

The tensor lives on the training device; a batch is one gather there, with no DataLoader round trips.
Binary data sets (dSprites) are stored bit-packed (8 pixels per byte, numpy `packbits` order): 512 bytes per
64 x 64 image, 360 MB for the whole dSprites grid instead of 2.9 GB.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from untwine.data.base import FactorDataset, factors_to_index
from untwine.errors import InvalidInputError

_BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, num_values: int) -> torch.Tensor:
    """Unpack rows of numpy-`packbits` bytes [n, B] into uint8 0/1 values [n, num_values]."""
    shifts = _BIT_SHIFTS.to(packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], -1)[:, :num_values]


class StoredDataset(FactorDataset):
    """Observations stored for every point of a factor grid.

    Args:
        storage: uint8 tensor, either [N, C, H, W] (values 0..255, divided by 255), [N, H, W, C] with
            `channels_last=True` (the official files' layout, kept so that they can stay memory-mapped; batches
            come out as channels_last-strided [n, C, H, W] tensors, what the conv models run fastest on), or,
            with `packed=True`, [N, ceil(C*H*W/8)] bit-packed binary images (values 0/1).
        grid_sizes: sizes of all grid dimensions in storage order (row-major), nuisance ones included.
        grid_names: names of the grid dimensions.
        observation_shape: (C, H, W).
        latent_indices: which grid dimensions are ground-truth factors; the others are nuisance factors,
            drawn uniformly from the generator on every observation (spec §4.0, SplitDiscreteStateSpace).
    """

    def __init__(
        self,
        name: str,
        storage: torch.Tensor,
        grid_sizes: Sequence[int],
        grid_names: Sequence[str],
        observation_shape: Sequence[int],
        packed: bool = False,
        latent_indices: Sequence[int] | None = None,
        channels_last: bool = False,
    ):
        grid_sizes = tuple(int(s) for s in grid_sizes)
        observation_shape = tuple(int(s) for s in observation_shape)
        num = 1
        for s in grid_sizes:
            num *= s
        if storage.dtype != torch.uint8:
            raise InvalidInputError(f"{name}: storage must be uint8, got {storage.dtype}")
        if storage.shape[0] != num:
            raise InvalidInputError(
                f"{name}: storage holds {storage.shape[0]} observations but the factor grid {list(grid_sizes)} "
                f"has {num}"
            )
        pixels = observation_shape[0] * observation_shape[1] * observation_shape[2]
        c, h, w = observation_shape
        expected = (num, (pixels + 7) // 8) if packed else (num, h, w, c) if channels_last else (num, c, h, w)
        if tuple(storage.shape) != expected:
            raise InvalidInputError(f"{name}: storage has shape {list(storage.shape)}, expected {list(expected)}")
        self.name = name
        self.storage = storage
        self.packed = packed
        self.channels_last = channels_last
        self.grid_sizes = grid_sizes
        self.grid_names = tuple(grid_names)
        self.latent_indices = tuple(range(len(grid_sizes)) if latent_indices is None else latent_indices)
        self.nuisance_indices = tuple(i for i in range(len(grid_sizes)) if i not in self.latent_indices)
        self.factor_sizes = tuple(grid_sizes[i] for i in self.latent_indices)
        self.factor_names = tuple(self.grid_names[i] for i in self.latent_indices)
        self.observation_shape = observation_shape  # type: ignore[assignment]
        self.device = storage.device

    def to(self, device: str | torch.device) -> "StoredDataset":
        self.storage = self.storage.to(device)
        self.device = self.storage.device
        return self

    def grid_index(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Flat storage index for ground-truth factors, drawing the nuisance factors from `generator`."""
        if not self.nuisance_indices:
            return factors_to_index(factors, self.grid_sizes)
        if generator is None:
            raise InvalidInputError(f"{self.name} has nuisance factors: observations need a generator")
        full = torch.empty(factors.shape[0], len(self.grid_sizes), dtype=torch.long, device=factors.device)
        full[:, list(self.latent_indices)] = factors
        for i in self.nuisance_indices:
            draw = torch.randint(self.grid_sizes[i], (factors.shape[0],), generator=generator, device=generator.device)
            full[:, i] = draw.to(factors.device)
        return factors_to_index(full, self.grid_sizes)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """Float observations [n, C, H, W] in [0, 1] at flat storage indices."""
        rows = self.storage.index_select(0, index.to(self.storage.device))  # ~20x faster than storage[index]
        if self.packed:
            c, h, w = self.observation_shape
            return unpack_bits(rows, c * h * w).view(-1, c, h, w).float()
        if self.channels_last:
            rows = rows.permute(0, 3, 1, 2)
        return rows.float().div_(255.0)

    def _observations(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.images_at(self.grid_index(factors, generator))
