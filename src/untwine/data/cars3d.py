"""Cars3D (Reed et al. 2015) with the reference's factor conventions (spec §4.1, cars3d).

Files: `<data-dir>/cars/*.mat`, the 183 files of `nips2015-analogy-data.tar.gz` (its `data/cars` folder). Each
holds `im`, uint8 [128, 128, 3, 24 azimuths, 4 elevations]; its 96 images are resized to 64 x 64 with Lanczos
(the reference's `thumbnail((64, 64), ANTIALIAS)`, identical for square images) and divided by 255.

Factors (K = 3): elevation 4, azimuth 24, object 183; 17,568 observations of 3 x 64 x 64.

Deliberate difference: the object index is the file's position in the *sorted* file names. The reference takes
the order of an unsorted directory listing, which depends on the file system, so its object labels cannot be
reproduced in general; any fixed order gives the same metrics up to a relabelling of the object factor.
`object_order="listing"` takes the reference's order (`os.listdir`, what its `ListDirectory` returns for a local
folder) on this machine's file system.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from untwine.data.files import cached_images, data_root, resize_lanczos
from untwine.data.stored import StoredDataset
from untwine.errors import DataNotFoundError, InvalidInputError

DIRECTORY = "cars"
FACTOR_NAMES = ("elevation", "azimuth", "object")
FACTOR_SIZES = (4, 24, 183)
PREPROCESS_VERSION = 1


OBJECT_ORDERS = ("sorted", "listing")


def mat_files(data_dir: str | Path | None, object_order: str = "sorted") -> list[Path]:
    """The .mat files (any name containing ".mat", as the reference), sorted by name or in listing order."""
    if object_order not in OBJECT_ORDERS:
        raise InvalidInputError(f"cars3d: unknown object_order {object_order!r}; choose {' or '.join(OBJECT_ORDERS)}")
    root = data_root(data_dir, "cars3d") / DIRECTORY
    names = [n for n in os.listdir(root) if ".mat" in n and (root / n).is_file()] if root.is_dir() else []
    files = [root / n for n in (sorted(names) if object_order == "sorted" else names)]
    if not files:
        raise DataNotFoundError(
            f"cars3d: no .mat files in {root}; put the 183 files of Reed et al.'s nips2015-analogy-data.tar.gz "
            f"(data/cars/*.mat) in {root}/"
        )
    return files


def _check_shape(path: Path, shape) -> None:
    if len(shape) != 5 or shape[0] != shape[1] or tuple(shape[2:]) != (3, 24, 4):
        raise InvalidInputError(f"{path}: im has shape {list(shape)}, expected [128, 128, 3, 24, 4]")


def check_mat(path: Path) -> None:
    """Check a car file's header (variable `im` of the right shape) without reading its images."""
    from scipy.io import whosmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns before it fails on foreign files; the error says it all
            variables = {name: shape for name, shape, _ in whosmat(str(path))}
    except Exception as exc:  # scipy raises several types for truncated or foreign files
        raise InvalidInputError(f"{path} is not a readable .mat file ({type(exc).__name__}: {exc})") from exc
    if "im" not in variables:
        raise InvalidInputError(f"{path} has no variable 'im'")
    _check_shape(path, variables["im"])


def read_mesh(path: Path) -> np.ndarray:
    """One car's 96 images, uint8 [24 azimuths, 4 elevations, H, W, 3] (the reference's einsum abcde->deabc)."""
    from scipy.io import loadmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = loadmat(str(path))["im"]
    except KeyError:
        raise InvalidInputError(f"{path} has no variable 'im'") from None
    except Exception as exc:  # scipy raises several types for truncated or foreign files
        raise InvalidInputError(f"{path} is not a readable .mat file ({type(exc).__name__}: {exc})") from exc
    _check_shape(path, im.shape)
    if im.dtype != np.uint8:
        if im.min() < 0 or im.max() > 255:
            raise InvalidInputError(f"{path}: im values outside 0..255")
        im = im.astype(np.uint8)
    return np.einsum("abcde->deabc", im)


def load_cars3d(
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    object_order: str = "sorted",
) -> StoredDataset:
    """Cars3D from the official .mat files: elevation x azimuth x object, 3 x 64 x 64.

    object_order: "sorted" (file names, default) or "listing" (the reference's directory-listing order).
    """
    files = mat_files(data_dir, object_order)
    for path in files:  # headers first: a foreign or truncated file is an error before any warning or work
        check_mat(path)
    if len(files) != FACTOR_SIZES[2]:
        warnings.warn(f"cars3d: {len(files)} .mat files found, the official data set has 183", stacklevel=2)
    n_elev, n_azim = FACTOR_SIZES[:2]

    def build() -> np.ndarray:
        grid = np.empty((n_elev, n_azim, len(files), 64, 64, 3), dtype=np.uint8)
        for obj, path in enumerate(files):
            mesh = read_mesh(path)
            resized = resize_lanczos(mesh.reshape(-1, *mesh.shape[2:])).reshape(n_azim, n_elev, 64, 64, 3)
            grid[:, :, obj] = resized.transpose(1, 0, 2, 3, 4)
        return grid.reshape(-1, 64, 64, 3)

    sizes = (n_elev, n_azim, len(files))
    shape = (n_elev * n_azim * len(files), 64, 64, 3)
    storage = cached_images("cars3d", files, PREPROCESS_VERSION, build, shape, cache_dir, use_cache)
    return StoredDataset("cars3d", torch.from_numpy(storage), sizes, FACTOR_NAMES, (3, 64, 64), channels_last=True)
