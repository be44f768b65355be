"""SmallNORB (LeCun et al. 2004) with the reference's conventions (spec §4.1, smallnorb).

Files in `<data-dir>/small_norb/`: the six gunzipped NORB binary matrices
`smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat` and
`smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat`.

- Both splits are concatenated (48,600 entries); only the first camera's image (`dat[:, 0]`) is used.
- Each 96 x 96 image (raw bytes read as uint8) is resized to 64 x 64 with Lanczos and divided by 255.
- Features are [category, instance, elevation, azimuth, lighting] (`cat` then the 4 `info` columns); the raw
  azimuth 0, 2, ..., 34 is halved to 0..17.
- The grid [5, 10, 9, 18, 6] holds exactly one image per combination; the ground-truth factors are category,
  elevation, azimuth and lighting (K = 4) and instance is a nuisance factor drawn per observation.

The resized grid is cached (`files.cached_images`) so the ~8 s of resizing happens once per set of files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from untwine.data.base import factors_to_index
from untwine.data.files import cached_images, data_root, require, resize_lanczos
from untwine.data.stored import StoredDataset
from untwine.errors import InvalidInputError

DIRECTORY = "small_norb"
SPLITS = ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
PARTS = ("dat", "cat", "info")
GRID_NAMES = ("category", "instance", "elevation", "azimuth", "lighting")
GRID_SIZES = (5, 10, 9, 18, 6)
LATENT_INDICES = (0, 2, 3, 4)  # instance (1) is a nuisance factor
FACTOR_NAMES = tuple(GRID_NAMES[i] for i in LATENT_INDICES)
FACTOR_SIZES = tuple(GRID_SIZES[i] for i in LATENT_INDICES)
PREPROCESS_VERSION = 1

# NORB binary matrix magic numbers (little-endian int32) -> element type
MAGIC_DTYPES = {
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C55: np.dtype("u1"),  # "byte matrix"; the reference reads it as int8, pixels are really 0..255
    0x1E3D4C56: np.dtype("<i2"),
}


def read_norb_matrix(path: Path) -> np.ndarray:
    """A NORB binary matrix, memory-mapped: int32 magic, int32 ndim, max(3, ndim) int32 dims, then the data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(8), dtype="<i4")
        if head.size < 2 or int(head[0]) not in MAGIC_DTYPES:
            raise InvalidInputError(f"{path} is not a NORB binary matrix (bad magic number); gunzip it first?")
        magic, ndim = int(head[0]), int(head[1])
        if not 1 <= ndim <= 8:
            raise InvalidInputError(f"{path}: NORB header says {ndim} dimensions")
        stored_dims = max(3, ndim)
        dims = np.frombuffer(f.read(4 * stored_dims), dtype="<i4")
    if dims.size < stored_dims or (dims < 0).any():
        raise InvalidInputError(f"{path}: truncated or corrupt NORB header")
    shape = tuple(int(d) for d in dims[:ndim])
    dtype = MAGIC_DTYPES[magic]
    offset = 8 + 4 * stored_dims
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise InvalidInputError(f"{path} has {size} bytes but its header {list(shape)} ({dtype}) needs {expected}")
    return np.memmap(path, dtype, "r", offset, shape)


def split_paths(data_dir: str | Path | None) -> list[dict[str, Path]]:
    """Each split's dat, cat and info files; a DataNotFoundError names the first missing one."""
    root = data_root(data_dir, "smallnorb") / DIRECTORY
    where = f"the six gunzipped SmallNORB .mat files in {root}/"
    return [{part: require(root / f"{split}-{part}.mat", "smallnorb", where) for part in PARTS} for split in SPLITS]


def read_features(cat: np.ndarray, info: np.ndarray, path: Path) -> np.ndarray:
    """[category, instance, elevation, azimuth / 2, lighting] per entry, int64 [n, 5]."""
    cat = np.asarray(cat).reshape(-1)
    info = np.asarray(info)
    if info.ndim != 2 or info.shape[1] != 4 or info.shape[0] != cat.shape[0]:
        raise InvalidInputError(f"{path}: info has shape {list(info.shape)}, expected [{cat.shape[0]}, 4]")
    features = np.column_stack((cat, info)).astype(np.int64)
    features[:, 3] //= 2  # raw azimuths are 0, 2, ..., 34
    return features


def grid_order(features: np.ndarray, path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Grid sizes (max + 1 per feature) and, per grid position in row-major order, the entry that fills it.

    As the reference's StateSpaceAtomIndex, the features must cover every combination (here: exactly once).
    """
    if (features < 0).any():
        raise InvalidInputError(f"{path}: negative feature values")
    sizes = tuple(int(v) + 1 for v in features.max(axis=0))
    flat = factors_to_index(torch.from_numpy(features), sizes).numpy()
    counts = np.bincount(flat, minlength=int(np.prod(sizes)))
    if (counts != 1).any():
        raise InvalidInputError(
            f"{path}: the features do not cover the grid {list(sizes)} exactly once "
            f"({int((counts == 0).sum())} combinations missing, {int((counts > 1).sum())} repeated)"
        )
    return sizes, np.argsort(flat, kind="stable")


def load_smallnorb(
    data_dir: str | Path | None = None, cache_dir: str | Path | None = None, use_cache: bool = True
) -> StoredDataset:
    """SmallNORB from the official files: 4 factors (category, elevation, azimuth, lighting), 1 x 64 x 64."""
    splits = split_paths(data_dir)
    images, features = [], []
    for paths in splits:
        dat = read_norb_matrix(paths["dat"])
        if dat.ndim != 4 or dat.shape[1] != 2 or dat.shape[2] != dat.shape[3] or dat.dtype != np.uint8:
            raise InvalidInputError(f"{paths['dat']}: {list(dat.shape)} {dat.dtype}, expected [n, 2, 96, 96] bytes")
        split_features = read_features(read_norb_matrix(paths["cat"]), read_norb_matrix(paths["info"]), paths["info"])
        if split_features.shape[0] != dat.shape[0]:
            raise InvalidInputError(f"{paths['dat']}: {dat.shape[0]} images but {split_features.shape[0]} labels")
        images.append(dat)
        features.append(split_features)
    sizes, order = grid_order(np.concatenate(features), splits[0]["info"].parent)
    if len(sizes) != len(GRID_SIZES):
        raise InvalidInputError(f"smallnorb: expected 5 features, got {len(sizes)}")

    def build() -> np.ndarray:
        first_camera = np.concatenate([dat[:, 0] for dat in images])
        return resize_lanczos(first_camera[order])[:, None]

    sources = [p for paths in splits for p in paths.values()]
    shape = (len(order), 1, 64, 64)
    storage = cached_images("smallnorb", sources, PREPROCESS_VERSION, build, shape, cache_dir, use_cache)
    return StoredDataset(
        "smallnorb", torch.from_numpy(storage), sizes, GRID_NAMES, (1, 64, 64), latent_indices=LATENT_INDICES
    )
