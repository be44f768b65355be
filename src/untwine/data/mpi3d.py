"""MPI3D toy, realistic and real (Gondal et al. 2019) with the reference's conventions (spec §4.1, mpi3d_*).

Files: `<data-dir>/mpi3d_<variant>/mpi3d_<variant>.npz`, key `images`, uint8 [N, 64, 64, 3] (or already shaped
as the grid, [*sizes, 64, 64, 3]), row-major over the factors (object colour, object shape, object size, camera
height, background colour, first DOF, second DOF), divided by 255 when sampled.

Grid sizes follow the number of images:
- 460,800 -> [4, 4, 2, 3, 3, 40, 40]: the reference's toy and realistic files (held-out colours and shapes removed);
- 1,036,800 -> [6, 6, 2, 3, 3, 40, 40]: the reference's real file, and the authors' current public release of all
  three variants. (The reference hard-codes [4, 4, ...] for toy and realistic and would silently read the first
  460,800 images of such a file with wrong labels; untwine uses the file's full grid instead.)
`factor_sizes=` names any other grid explicitly. The images are memory-mapped: in place when the npz member is
stored uncompressed, else from a copy decompressed once into the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from untwine.data.files import data_root, npz_array, require
from untwine.data.stored import StoredDataset
from untwine.errors import InvalidInputError

VARIANTS = ("toy", "realistic", "real")
FACTOR_NAMES = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "first_dof",
    "second_dof",
)
HELD_OUT_SIZES = (4, 4, 2, 3, 3, 40, 40)
FULL_SIZES = (6, 6, 2, 3, 3, 40, 40)
REFERENCE_SIZES = {"toy": HELD_OUT_SIZES, "realistic": HELD_OUT_SIZES, "real": FULL_SIZES}
SIZES_BY_COUNT = {460_800: HELD_OUT_SIZES, 1_036_800: FULL_SIZES}


def relative_path(variant: str) -> str:
    return f"mpi3d_{variant}/mpi3d_{variant}.npz"


def locate(variant: str, data_dir: str | Path | None) -> Path:
    """The variant's npz, or a DataNotFoundError saying where to put it."""
    if variant not in VARIANTS:
        raise InvalidInputError(f"unknown MPI3D variant {variant!r}; choose {', '.join(VARIANTS)}")
    root = data_root(data_dir, f"mpi3d_{variant}")
    return require(root / relative_path(variant), f"mpi3d_{variant}", f"mpi3d_{variant}.npz in {root}/mpi3d_{variant}/")


def load_mpi3d(
    variant: str,
    data_dir: str | Path | None = None,
    factor_sizes: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> StoredDataset:
    """MPI3D `variant` (toy, realistic or real): 7 factors, 3 x 64 x 64."""
    name = f"mpi3d_{variant}"
    path = locate(variant, data_dir)
    images = npz_array(path, "images", name, cache_dir, use_cache)
    if images.ndim < 4 or images.shape[-3:] != (64, 64, 3) or images.dtype != np.uint8:
        raise InvalidInputError(f"{path}: images {list(images.shape)} {images.dtype}, expected uint8 [n, 64, 64, 3]")
    if factor_sizes is not None:
        sizes = tuple(int(s) for s in factor_sizes)
    elif images.ndim == 3 + len(FACTOR_NAMES):
        sizes = images.shape[:-3]
    elif images.ndim == 4 and images.shape[0] in SIZES_BY_COUNT:
        sizes = SIZES_BY_COUNT[images.shape[0]]
    else:
        raise InvalidInputError(
            f"{path}: {list(images.shape[:-3])} images fit no MPI3D grid (expected 460,800 or 1,036,800); "
            "pass factor_sizes= for another layout"
        )
    if len(sizes) != len(FACTOR_NAMES):
        raise InvalidInputError(f"{name}: factor_sizes {list(sizes)} must have {len(FACTOR_NAMES)} entries")
    images = images.reshape(-1, 64, 64, 3)
    return StoredDataset(name, torch.from_numpy(images), sizes, FACTOR_NAMES, (3, 64, 64), channels_last=True)
