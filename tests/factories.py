"""Small data the tests make: data sets and codes whose ground truth is known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from untwine.data import StoredDataset


def factor_pixels_dataset(sizes=(5, 8)) -> StoredDataset:
    """Observations whose pixels are the factor indices: a representation reading them is perfectly disentangled."""
    grid = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.uint8)
    storage = torch.from_numpy(grid).view(-1, 1, 1, len(sizes))
    names = tuple("abcdefg"[: len(sizes)])
    return StoredDataset("factor_pixels", storage, sizes, names, (1, 1, len(sizes)))


def read_pixels(observations: torch.Tensor) -> np.ndarray:
    """The representation that reads the factor indices back from `factor_pixels_dataset` observations."""
    return observations.flatten(1).numpy() * 255.0


def balanced_grid(*sizes, repeat=4) -> np.ndarray:
    """Every factor combination `repeat` times: the factors are exactly independent in the sample."""
    grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
    return np.repeat(grid, repeat, axis=0)
