"""Shapes3D (Burgess & Kim 2018) with the reference's factor conventions (spec §4.1, shapes3d).

Factors (K = 6): floor hue 10, wall hue 10, object hue 10, scale 8, shape 4, orientation 15; 480,000 observations
of 3 x 64 x 64, row-major over the factors, divided by 255. Two layouts are read from `<data-dir>/3dshapes/`:
- the reference's `look-at-object-room_floor-hueXwall-hueXobj-hueXobj-sizeXobj-shapeXview-azi.npz`, `images`
  uint8 [10, 10, 10, 8, 4, 15, 64, 64, 3] (never released publicly; used when present);
- DeepMind's public `3dshapes.h5`: `images` uint8 [480000, 64, 64, 3] and `labels` float [480000, 6]. The labels
  are checked to be the row-major grid (grid sizes = distinct values per column), so a reordered file is refused
  rather than silently mislabelled.

Images stay uint8 in their file layout, memory-mapped: in place when stored uncompressed, else (the public .h5 is
gzip-compressed) from a decompressed copy written once to the cache (5.9 GB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from untwine.data.files import cached_images, data_root, npz_array
from untwine.data.stored import StoredDataset
from untwine.errors import DataNotFoundError, InvalidInputError

DIRECTORY = "3dshapes"
NPZ_FILENAME = "look-at-object-room_floor-hueXwall-hueXobj-hueXobj-sizeXobj-shapeXview-azi.npz"
H5_FILENAME = "3dshapes.h5"
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
PREPROCESS_VERSION = 1


def locate(data_dir: str | Path | None) -> Path:
    """The reference's npz if present, else DeepMind's 3dshapes.h5; an error names both."""
    root = data_root(data_dir, "shapes3d") / DIRECTORY
    for name in (NPZ_FILENAME, H5_FILENAME):
        if (root / name).is_file():
            return root / name
    raise DataNotFoundError(f"shapes3d: put DeepMind's {H5_FILENAME} (or the reference's {NPZ_FILENAME}) in {root}/")


def labels_grid(labels: np.ndarray, path: Path) -> tuple[int, ...]:
    """Grid sizes from the labels (distinct values per column), checking that rows are in row-major order."""
    if labels.ndim != 2 or labels.shape[1] != len(FACTOR_NAMES):
        raise InvalidInputError(f"{path}: labels have shape {list(labels.shape)}, expected [n, 6]")
    sizes, index = [], np.zeros(labels.shape[0], dtype=np.int64)
    for column in labels.T:
        values, ranks = np.unique(column, return_inverse=True)
        sizes.append(len(values))
        index = index * len(values) + ranks.reshape(-1)
    if int(np.prod(sizes)) != labels.shape[0] or not np.array_equal(index, np.arange(labels.shape[0])):
        raise InvalidInputError(
            f"{path}: labels are not the row-major factor grid (distinct values per factor: {sizes}) — "
            "the images cannot be indexed by factors"
        )
    return tuple(sizes)


def read_h5(
    path: Path, cache_dir: str | Path | None = None, use_cache: bool = True
) -> tuple[np.ndarray, tuple[int, ...]]:
    """(images uint8 [n, 64, 64, 3], grid sizes) of a 3dshapes.h5.

    Contiguous images are memory-mapped in place. Compressed ones (the public file) are decompressed once into the
    cache (5.9 GB) and memory-mapped from there: later loads take no time and concurrent runs share the pages.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            images, labels = f["images"], f["labels"][()]
            if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
                raise InvalidInputError(f"{path}: images {list(images.shape)} {images.dtype}, expected [n, 64, 64, 3]")
            if images.shape[0] != labels.shape[0]:
                raise InvalidInputError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
            sizes = labels_grid(labels, path)
            offset = images.id.get_offset()
            if images.chunks is None and images.compression is None and offset is not None:
                return np.memmap(path, np.uint8, "c", offset, images.shape), sizes
            shape = images.shape
    except KeyError as exc:
        raise InvalidInputError(f"{path} lacks the 'images' or 'labels' dataset ({exc})") from None
    except OSError as exc:
        raise InvalidInputError(f"{path} is not a readable HDF5 file ({exc})") from exc

    def decompress() -> np.ndarray:
        array = np.empty(shape, dtype=np.uint8)
        with h5py.File(path, "r") as f:
            f["images"].read_direct(array)
        return array

    return cached_images("shapes3d", [path], PREPROCESS_VERSION, decompress, shape, cache_dir, use_cache), sizes


def load_shapes3d(
    data_dir: str | Path | None = None, cache_dir: str | Path | None = None, use_cache: bool = True
) -> StoredDataset:
    """Shapes3D from the reference's npz or DeepMind's 3dshapes.h5: 6 factors, 3 x 64 x 64."""
    path = locate(data_dir)
    if path.suffix == ".npz":
        images = npz_array(path, "images", "shapes3d_npz", cache_dir, use_cache)
        if images.ndim != 9 or images.shape[6:] != (64, 64, 3) or images.dtype != np.uint8:
            raise InvalidInputError(
                f"{path}: images {list(images.shape)} {images.dtype}, expected uint8 [10, 10, 10, 8, 4, 15, 64, 64, 3]"
            )
        sizes = images.shape[:6]
        images = images.reshape(-1, 64, 64, 3)
    else:
        images, sizes = read_h5(path, cache_dir, use_cache)
    return StoredDataset("shapes3d", torch.from_numpy(images), sizes, FACTOR_NAMES, (3, 64, 64), channels_last=True)
