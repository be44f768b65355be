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


class PixelModel(torch.nn.Module):
    """A "model" for `factor_pixels_dataset`: code i of its encoder mean is weights[i] x factor (i mod K), and every
    log-variance is `logvar` (the default makes the posteriors point masses in practice)."""

    def __init__(self, weights=(1.0, 1.0), logvar=-20.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(255.0))
        self.weights = torch.tensor(weights)
        self.logvar = logvar

    def encode(self, x):
        pixels = x.flatten(1) * self.scale
        mean = pixels[:, torch.arange(len(self.weights)) % pixels.shape[1]] * self.weights
        return mean, torch.full_like(mean, self.logvar)


def balanced_grid(*sizes, repeat=4) -> np.ndarray:
    """Every factor combination `repeat` times: the factors are exactly independent in the sample."""
    grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
    return np.repeat(grid, repeat, axis=0)


# --- small files in exactly the official formats (written here independently of untwine's readers) ---

NORB_MAGIC = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54}


def write_norb_matrix(path, array: np.ndarray) -> None:
    """NORB binary matrix: int32 magic, int32 ndim, max(3, ndim) int32 dims (padded with 1), raw data."""
    import struct

    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    header = struct.pack(f"<ii{len(dims)}i", NORB_MAGIC[array.dtype], array.ndim, *dims)
    path.write_bytes(header + np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def norb_code(category, instance, elevation, azimuth, lighting, sizes) -> int:
    """The grey value of a tiny SmallNORB's first-camera image: 5 x its row-major grid index (azimuth halved),
    modulo 256 (unique for grids of up to 52 entries)."""
    index = np.ravel_multi_index((category, instance, elevation, azimuth, lighting), sizes)
    return int(5 * index) % 256


def norb_image(code: int, structured: bool) -> np.ndarray:
    """A tiny SmallNORB's first-camera 96 x 96 image: the constant `code`, or (structured) a diagonal ramp with an
    off-centre block, shifted by the code (modulo 256), whose resize depends on the filter and the orientation."""
    if not structured:
        return np.full((96, 96), code, dtype=np.uint8)
    rows, cols = np.mgrid[:96, :96]
    image = 2 * rows + cols // 2 + 60 * ((rows > 10) & (rows < 30) & (cols > 50) & (cols < 58))
    return ((image + code) % 256).astype(np.uint8)


def write_small_norb(root, sizes=(2, 2, 2, 3, 2), seed=0, structured=False) -> tuple[int, ...]:
    """SmallNORB's six files for a small grid [category, instance, elevation, azimuth, lighting].

    Instance 0 goes to the testing split, the others to training (as the official 5x01235 / 5x46789 split), rows
    are shuffled within each file, raw azimuths are even (0, 2, ...), the first camera's 96 x 96 image is
    `norb_image(norb_code)` (constant unless `structured`) and the second camera's is its complement.
    """
    from untwine.data.smallnorb import SPLITS

    rng = np.random.default_rng(seed)
    folder = root / "small_norb"
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
    for split, rows in zip(SPLITS, (grid[grid[:, 1] != 0], grid[grid[:, 1] == 0])):
        rows = rows[rng.permutation(len(rows))]
        codes = np.array([norb_code(*r, sizes) for r in rows], dtype=np.uint8)
        dat = np.empty((len(rows), 2, 96, 96), dtype=np.uint8)
        dat[:, 0] = [norb_image(code, structured) for code in codes]
        dat[:, 1] = 255 - dat[:, 0]
        info = np.column_stack([rows[:, 1], rows[:, 2], 2 * rows[:, 3], rows[:, 4]]).astype(np.int32)
        write_norb_matrix(folder / f"{split}-dat.mat", dat)
        write_norb_matrix(folder / f"{split}-cat.mat", rows[:, 0].astype(np.int32))
        write_norb_matrix(folder / f"{split}-info.mat", info)
    return tuple(sizes)


def car_image(elevation, azimuth, obj) -> np.ndarray:
    """A structured 128 x 128 x 3 Cars3D image (for `write_cars(structured=True)`): noise seeded by the factors,
    so that a resize filter, a transposition or a swapped label each change what is read."""
    return np.random.default_rng([elevation, azimuth, obj]).integers(0, 256, (128, 128, 3), dtype=np.uint8)


def car_colour(elevation, azimuth, obj) -> tuple[int, int, int]:
    """The constant RGB of a tiny Cars3D image."""
    return 10 * azimuth, 60 * elevation + 5, (80 * obj + 7) % 256


def write_cars(root, names=("car_b.mat", "car_a.mat", "car_c.mat"), structured=False) -> list[str]:
    """Cars3D .mat files: `im` uint8 [128, 128, 3, 24 azimuths, 4 elevations], constant `car_colour` images (or,
    with `structured`, `car_image`s).

    The object index is the position in the sorted names, so the images are assigned in sorted order.
    """
    from scipy.io import savemat

    folder = root / "cars"
    folder.mkdir(parents=True, exist_ok=True)
    for obj, name in enumerate(sorted(names)):
        im = np.empty((128, 128, 3, 24, 4), dtype=np.uint8)
        for azimuth in range(24):
            for elevation in range(4):
                image = car_image(elevation, azimuth, obj) if structured else car_colour(elevation, azimuth, obj)
                im[:, :, :, azimuth, elevation] = image
        savemat(folder / name, {"im": im})
    return sorted(names)


def grid_images(sizes, shape=(64, 64, 3)) -> np.ndarray:
    """uint8 images whose constant value encodes the row-major grid index: R = index % 256, G = index // 256."""
    index = np.arange(int(np.prod(sizes)))
    images = np.zeros((len(index), *shape), dtype=np.uint8)
    images[..., 0] = (index % 256)[:, None, None]
    images[..., 1] = (index // 256)[:, None, None]
    return images


def grid_index_of(observations: torch.Tensor) -> np.ndarray:
    """Decode `grid_images`' index from float observations [n, 3, H, W]."""
    pixels = np.rint(observations[:, :, 0, 0].numpy() * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


def write_shapes3d_h5(path, sizes=(2, 2, 3, 2, 2, 2), order=None, compressed=True) -> None:
    """DeepMind's 3dshapes.h5 layout: `images` uint8 [N, 64, 64, 3], `labels` float64 [N, 6] (physical values);
    gzip-chunked images (as the public file) or, with compressed=False, contiguous ones."""
    import h5py

    grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
    labels = grid / np.maximum(np.array(sizes) - 1, 1) * 0.9 + 0.05  # floats, as the official hue/scale/angle
    images = grid_images(sizes)
    if order is not None:
        labels, images = labels[order], images[order]
    with h5py.File(path, "w") as f:
        if compressed:
            f.create_dataset("images", data=images, compression="gzip", chunks=(1, 64, 64, 3))
        else:
            f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
