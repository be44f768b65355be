"""dSprites (Matthey et al. 2017) with the reference's factor conventions (spec §4.1, dsprites_full).

Two sources give the same FactorDataset:
- `render_dsprites()`: a procedural, offline renderer of the full grid — 3 shapes (square, ellipse, heart),
  6 scales linearly in [0.5, 1], 40 orientations i*2pi/40 in [0, 2pi), 32 x 32 positions linearly in [0, 1];
  737,280 binary 64 x 64 images. Each (shape, scale, orientation) sprite is rendered once as a 32 x 32 template
  (4 x 4 supersampled, covered if at least half of the pixel is inside the shape); position (x, y) places the
  template at pixel offset (x, y), so the sprite centre moves linearly from pixel 16 to 47 in steps of one pixel.
  The shapes approximate, but are not pixel-identical to, DeepMind's file.
- `load_dsprites_npz(path)`: the official `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`.

Factor order and flat index follow the reference: (shape, scale, orientation, posX, posY), row-major.
posX moves the sprite along image columns, posY along rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from untwine.data.files import cached_images
from untwine.data.stored import StoredDataset
from untwine.errors import DataNotFoundError, InvalidInputError

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.arange(40) * (2 * math.pi / 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
OFFICIAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
IMAGE_SIZE = 64
TEMPLATE_SIZE = 32
HALF_SIZE = 10.0  # half side of the square at scale 1, in pixels
RENDER_VERSION = 1  # bump when the procedural images change, so stale caches are not reused


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u right, v down; in units of the sprite's half size) in a shape at angle 0."""
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with y up; spans x in [-1.14, 1.14], y in [-1, 1.24]
    x = u * 1.2
    y = -v * 1.2 + 0.12
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def render_templates(supersample: int = 4) -> np.ndarray:
    """Binary sprite templates, bool [3, 6, 40, 32, 32], centred at the template's centre."""
    n = TEMPLATE_SIZE * supersample
    coords = (np.arange(n) + 0.5) / supersample - TEMPLATE_SIZE / 2  # pixel units, centred
    v, u = np.meshgrid(coords, coords, indexing="ij")
    out = np.zeros((len(SHAPES), len(SCALES), len(ORIENTATIONS), TEMPLATE_SIZE, TEMPLATE_SIZE), dtype=bool)
    for s, shape in enumerate(SHAPES):
        for c, scale in enumerate(SCALES):
            radius = HALF_SIZE * scale
            cos, sin = np.cos(ORIENTATIONS)[:, None, None], np.sin(ORIENTATIONS)[:, None, None]
            # rotate sample points by -theta into the shape's frame (counter-clockwise sprite rotation)
            ur = (cos * u + sin * v) / radius
            vr = (-sin * u + cos * v) / radius
            covered = _inside(shape, ur, vr).reshape(
                len(ORIENTATIONS), TEMPLATE_SIZE, supersample, TEMPLATE_SIZE, supersample
            )
            out[s, c] = covered.mean(axis=(2, 4)) >= 0.5
    return out


def render_dsprites_packed() -> np.ndarray:
    """The full grid, bit-packed: uint8 [737280, 512], rows in the reference's flat-index order."""
    templates = render_templates().reshape(-1, TEMPLATE_SIZE, TEMPLATE_SIZE).astype(np.uint8)
    num_templates = templates.shape[0]
    npos = FACTOR_SIZES[3]
    packed = np.empty((num_templates, npos, npos, IMAGE_SIZE * IMAGE_SIZE // 8), dtype=np.uint8)
    slab = np.zeros((num_templates, npos, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for x in range(npos):  # one slab of all templates x all y positions at a time keeps memory at ~95 MB
        slab.fill(0)
        for y in range(npos):
            slab[:, y, y : y + TEMPLATE_SIZE, x : x + TEMPLATE_SIZE] = templates
        packed[:, x] = np.packbits(slab.reshape(num_templates, npos, -1), axis=-1)
    return packed.reshape(-1, packed.shape[-1])


def render_dsprites(cache_dir: str | Path | None = None, use_cache: bool = True) -> StoredDataset:
    """Procedural dSprites; rendered once (~seconds), cached as a bit-packed .npy (377 MB) and memory-mapped."""
    shape = (math.prod(FACTOR_SIZES), IMAGE_SIZE * IMAGE_SIZE // 8)
    packed = cached_images(
        "dsprites_procedural", [], RENDER_VERSION, render_dsprites_packed, shape, cache_dir, use_cache
    )
    return _dataset(torch.from_numpy(packed), FACTOR_SIZES)


def _dataset(packed: torch.Tensor, sizes, name: str = "dsprites") -> StoredDataset:
    return StoredDataset(name, packed, sizes, FACTOR_NAMES, (1, IMAGE_SIZE, IMAGE_SIZE), packed=True)


def official_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "dsprites" / OFFICIAL_FILENAME


def _read_npz(path: Path, key: str):
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as npz:
            return npz[key]
    except Exception as exc:  # zip, pickle and key errors all mean the same to the user
        raise InvalidInputError(f"{path} is not a readable dSprites npz ({type(exc).__name__}: {exc})") from exc


def load_dsprites_npz(path: str | Path, cache_dir: str | Path | None = None, use_cache: bool = True) -> StoredDataset:
    """The official DeepMind file (keys `imgs` [N, 64, 64] uint8 0/1, `metadata` with `latents_sizes`).

    The colour factor (size 1) is dropped, giving (shape, scale, orientation, posX, posY). Any grid sizes in the
    metadata are honoured, so smaller files in the same format load too. The images are bit-packed once into the
    cache (360 MB for the full file) and memory-mapped from there afterwards.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"dSprites file not found: expected {path}")
    try:
        sizes = [int(s) for s in _read_npz(path, "metadata")[()]["latents_sizes"]]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise InvalidInputError(f"{path}: metadata has no readable latents_sizes ({exc})") from exc
    if len(sizes) != 6 or sizes[0] != 1:
        raise InvalidInputError(
            f"{path}: latents_sizes {sizes} is not the dSprites layout [1, shape, scale, orientation, x, y]"
        )
    n = math.prod(sizes)

    def pack() -> np.ndarray:
        imgs = _read_npz(path, "imgs")
        if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or imgs.shape[0] != n:
            raise InvalidInputError(f"{path}: imgs has shape {list(imgs.shape)}, expected [{n}, 64, 64]")
        return np.packbits(imgs.reshape(n, -1) != 0, axis=-1)

    shape = (n, IMAGE_SIZE * IMAGE_SIZE // 8)
    packed = cached_images("dsprites_official", [path], 1, pack, shape, cache_dir, use_cache)
    return _dataset(torch.from_numpy(packed), sizes[1:])


def dsprites_dataset(
    data_dir: str | Path | None = None, source: str = "auto", cache_dir: str | Path | None = None
) -> StoredDataset:
    """dSprites from the official file when present in `data_dir`, else rendered procedurally.

    source: "auto" (file if present, else procedural), "file" (error naming the expected path if absent) or
    "procedural".
    """
    if source not in ("auto", "file", "procedural"):
        raise InvalidInputError(f"unknown dSprites source {source!r}; choose auto, file or procedural")
    if source != "procedural" and data_dir is not None:
        path = official_path(data_dir)
        if path.exists() or source == "file":
            return load_dsprites_npz(path, cache_dir)
    if source == "file":
        raise DataNotFoundError(
            f"dSprites file not found: set --data-dir or UNTWINE_DATA and put {OFFICIAL_FILENAME} "
            "in <data-dir>/dsprites/"
        )
    return render_dsprites(cache_dir)
