"""Color-, Noisy- and Scream-dSprites: dSprites with a random appearance per observation (spec §4.1).

Same five factors as dSprites; observations are 64 x 64 x 3. The appearance is re-drawn every time an
observation is generated (it is not a factor), from the batch's generator, so batches are reproducible from the
seed:
- color_dsprites: the binary sprite times a per-image RGB colour, each channel U(0.5, 1); black background.
- noisy_dsprites: sprite + per-pixel, per-channel U(0, 1) noise, clipped at 1 (white sprite on noise).
- scream_dsprites: a random 64 x 64 patch of the Scream painting averaged with a random colour c ~ U(0, 1)^3,
  background = (patch + c) / 2, and 1 - background where the sprite is. The painting is read from
  `<data-dir>/scream/scream.jpg`, fitted within 350 x 274 (width x height) keeping the aspect ratio exactly as the
  reference's Pillow (<= 6) `thumbnail` did (`reference_thumbnail`), scaled by 1/255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from untwine.data.base import FactorDataset
from untwine.errors import DataNotFoundError, InvalidInputError

SCREAM_FILE = "scream/scream.jpg"
SCREAM_MAX_SIZE = (350, 274)  # width, height, as the reference's thumbnail call


class DSpritesVariant(FactorDataset):
    """dSprites (any FactorDataset of 1-channel binary images) with a per-observation appearance transform."""

    observation_shape = (3, 64, 64)

    def __init__(self, base: FactorDataset, name: str):
        if tuple(base.observation_shape) != (1, 64, 64):
            raise InvalidInputError(f"{name} needs binary 64 x 64 x 1 dSprites, got {base.observation_shape}")
        self.base = base
        self.name = name
        self.factor_names = base.factor_names
        self.factor_sizes = base.factor_sizes
        self.device = base.device

    def to(self, device: str | torch.device) -> DSpritesVariant:
        self.base.to(device)
        self.device = torch.device(device)
        return self

    def _observations(self, factors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0)
        sprites = self.base.observations(factors, generator)  # [N, 1, 64, 64] in {0, 1}
        return self._appearance(sprites, generator)

    def _uniform(self, shape, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=generator.device).to(self.device)

    def _appearance(self, sprites: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class ColorDSprites(DSpritesVariant):
    def __init__(self, base: FactorDataset):
        super().__init__(base, "color_dsprites")

    def _appearance(self, sprites, generator):
        colour = 0.5 + 0.5 * self._uniform((sprites.shape[0], 3, 1, 1), generator)
        return sprites.expand(-1, 3, -1, -1) * colour


class NoisyDSprites(DSpritesVariant):
    def __init__(self, base: FactorDataset):
        super().__init__(base, "noisy_dsprites")

    def _appearance(self, sprites, generator):
        noise = self._uniform((sprites.shape[0], 3, *sprites.shape[2:]), generator)
        return torch.clamp(sprites.expand(-1, 3, -1, -1) + noise, max=1.0)


def reference_thumbnail(image: Image.Image, max_size: tuple[int, int]) -> Image.Image:
    """Pillow <= 6's `Image.thumbnail`, which the reference ran: the size computed with truncating arithmetic,
    JPEG draft-mode decoding at a reduced DCT scale, then a bicubic resize. (Today's Pillow rounds the size, e.g.
    222 instead of 221 columns, and drafts less aggressively.)"""
    x, y = image.size
    if x > max_size[0]:
        y = int(max(y * max_size[0] / x, 1))
        x = int(max_size[0])
    if y > max_size[1]:
        x = int(max(x * max_size[1] / y, 1))
        y = int(max_size[1])
    if (x, y) == image.size:
        return image
    image.draft(None, (x, y))
    return image.resize((x, y), Image.BICUBIC)


def scream_path(data_dir: str | Path | None) -> Path:
    """`<data-dir>/scream/scream.jpg`, or a DataNotFoundError saying where to put the painting."""
    path = Path(data_dir) / SCREAM_FILE if data_dir is not None else None
    if path is None or not path.is_file():
        where = path if path is not None else f"<data-dir>/{SCREAM_FILE}"
        raise DataNotFoundError(
            f"scream_dsprites needs the painting: put The_Scream.jpg at {where} (set --data-dir or UNTWINE_DATA)"
        )
    return path


def load_scream(data_dir: str | Path | None) -> torch.Tensor:
    """The painting as float [3, H, W] in [0, 1], fitted within 350 x 274; a clear error if the file is missing."""
    path = scream_path(data_dir)
    try:
        with Image.open(path) as image:
            image = reference_thumbnail(image, SCREAM_MAX_SIZE).convert("RGB")
            array = np.asarray(image, dtype=np.float32) / 255.0
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path} as an image: {exc}") from None
    if array.shape[0] <= 64 or array.shape[1] <= 64:
        raise InvalidInputError(f"{path} is too small ({array.shape[1]} x {array.shape[0]}) for 64 x 64 patches")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ScreamDSprites(DSpritesVariant):
    def __init__(self, base: FactorDataset, painting: torch.Tensor):
        super().__init__(base, "scream_dsprites")
        self.painting = painting

    def to(self, device: str | torch.device) -> ScreamDSprites:
        super().to(device)
        self.painting = self.painting.to(device)
        return self

    def _appearance(self, sprites, generator):
        n = sprites.shape[0]
        _, height, width = self.painting.shape
        # offsets in [0, H - 64) and [0, W - 64), the reference's exclusive upper bounds
        rows = torch.randint(height - 64, (n,), generator=generator, device=generator.device).to(self.device)
        cols = torch.randint(width - 64, (n,), generator=generator, device=generator.device).to(self.device)
        colour = self._uniform((n, 3, 1, 1), generator)
        steps = torch.arange(64, device=self.device)
        pixels = (rows[:, None] + steps)[:, :, None] * width + (cols[:, None] + steps)[:, None, :]  # [n, 64, 64]
        # one index_select over the flattened painting: ~4x faster than 4-d advanced indexing on CPU
        patches = self.painting.reshape(3, -1).index_select(1, pixels.reshape(-1)).view(3, n, 64, 64)
        patches = patches.permute(1, 0, 2, 3)  # [n, 3, 64, 64]
        background = (patches + colour) / 2
        return torch.where(sprites.expand(-1, 3, -1, -1) > 0.5, 1.0 - background, background)
