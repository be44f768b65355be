"""Images of a trained model: reconstructions, samples, latent traversals (spec §8.1).

Every function takes a `GaussianVAE` and float observations [N, C, H, W] in [0, 1], and returns a uint8 numpy
image (H, W, 3) or a list of them. Decoding is done under `torch.no_grad()` and the decoder's Bernoulli logits go
through a sigmoid. Conversion to uint8 is the reference's: grayscale repeated to RGB, x255, truncated (§8.1); we
cast to uint8 ourselves, which avoids the reference's grey-GIF problem (§8.1, issue #26).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from untwine.errors import InvalidInputError

WHITE = 255
GREY = 128


# ---------------------------------------------------------------------------------------------------------------
# Conversion, tiling, saving


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float images [N, C, H, W] (or one [C, H, W]) in [0, 1] -> uint8 [N, H, W, 3] (or [H, W, 3]).

    Grayscale is repeated to RGB; values are clipped to [0, 1], multiplied by 255 and truncated (spec §8.1).
    """
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    single = x.ndim == 3
    if single:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InvalidInputError(f"expected images [N, 1 or 3, H, W], got shape {list(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    out = (x.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return out[0] if single else out


def tile(
    images: np.ndarray | Sequence[np.ndarray], rows: int, cols: int, pad: int = 2, pad_value: int = WHITE
) -> np.ndarray:
    """Tile uint8 images [N, H, W, 3] row-major into a rows x cols grid, `pad` pixels of `pad_value` between cells.

    Cells beyond N are filled with `pad_value` (as the reference's `padded_grid`, §8.1).
    """
    images = np.asarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    if n > rows * cols:
        raise InvalidInputError(f"{n} images do not fit a {rows} x {cols} grid")
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = images[i]
    return out


def square_grid(images: np.ndarray, pad: int = 2, pad_value: int = WHITE) -> np.ndarray:
    """Tile images in a near-square grid: ceil(sqrt(n)) columns (64 images -> 8 x 8)."""
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    return tile(images, max(1, math.ceil(n / cols)), cols, pad, pad_value)


def best_num_rows(n: int, max_ratio: int = 4) -> int:
    """Rows for tiling n images (the reference's `best_num_rows`, §8.1): 2 for n = 10 (2 x 5).

    Tries r = floor(sqrt(n)) downwards while n <= max_ratio * r^2 and keeps the r with the fewest empty cells
    (the larger r on ties).
    """
    if n < 1:
        raise InvalidInputError(f"cannot tile {n} images")
    best, best_empty = None, n
    r = math.isqrt(n)
    while r >= 1 and n <= max_ratio * r * r:
        empty = -n % r
        if empty == 0:
            return r
        if empty < best_empty:
            best, best_empty = r, empty
        r -= 1
    return best or 1


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 image (H, W, 3) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10) -> Path:
    """Write uint8 frames (H, W, 3) as a GIF that loops forever, at `fps` frames per second.

    Gray frames are stored in "L" mode (exact grey levels); colour frames get an adaptive palette per frame.
    Pillow merges consecutive identical frames into one longer frame, so the timing is kept either way.
    """
    if not frames:
        raise InvalidInputError("a GIF needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.asarray(f, dtype=np.uint8) for f in frames]
    gray = all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]) for a in arrays)
    pictures = [Image.fromarray(a[..., 0] if gray else a) for a in arrays]
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Model images


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, 1) draws from `generator` (on its own device), moved to `device`."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=where).to(device)


@torch.no_grad()
def decode_images(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """sigmoid(decoder logits): float images [N, C, H, W] in [0, 1]."""
    return torch.sigmoid(model.decode(z.to(_device(model))))


@torch.no_grad()
def encode_means(model: torch.nn.Module, observations: torch.Tensor) -> torch.Tensor:
    """Encoder means [N, d] of observations [N, C, H, W] (or one [C, H, W])."""
    x = torch.as_tensor(observations, dtype=torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    return model.encode(x.to(_device(model)))[0]


@torch.no_grad()
def reconstructions(
    model: torch.nn.Module,
    observations: torch.Tensor,
    generator: torch.Generator | None = None,
    num: int = 64,
    pad: int = 4,
) -> np.ndarray:
    """Each of the first `num` observations side by side with its reconstruction, tiled (spec §8.1).

    The reconstruction is decoded from a *sampled* z = mean + exp(logvar / 2) * eps, as the reference does.
    64 images give an 8 x 8 grid of (input | reconstruction) pairs.
    """
    x = torch.as_tensor(observations, dtype=torch.float32)[:num].to(_device(model))
    if x.ndim != 4 or len(x) == 0:
        raise InvalidInputError(f"expected observations [N, C, H, W] with N >= 1, got shape {list(x.shape)}")
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * _normal(tuple(mean.shape), generator, mean.device)
    pairs = torch.cat([x, decode_images(model, z)], dim=3)  # side by side along the width
    return square_grid(to_uint8(pairs), pad=pad)


@torch.no_grad()
def samples(model: torch.nn.Module, n: int = 64, generator: torch.Generator | None = None, pad: int = 4) -> np.ndarray:
    """Decodes of n codes z ~ N(0, I_d), tiled in a near-square grid (spec §8.1)."""
    z = _normal((n, model.latent_dim), generator, _device(model))
    return square_grid(to_uint8(decode_images(model, z)), pad=pad)


def _format_value(value: float) -> str:
    return f"{round(value, 4) + 0.0:.2g}"  # + 0.0 turns -0.0 into 0


@torch.no_grad()
def traversal_grid(
    model: torch.nn.Module,
    observation: torch.Tensor,
    values: Sequence[float] | None = None,
    pad: int = 2,
    annotate: bool = True,
    row_labels: Sequence[str] | None = None,
    inactive: Sequence[bool] | None = None,
) -> np.ndarray:
    """Latent traversals around one image: row i varies latent dimension i, column j sets it to values[j].

    The base code is the encoder mean of `observation`; the dimension's value is *replaced* by values[j]
    (absolute, not an offset), with values = linspace(-1, 1, 11) by default (spec §8.1; the reference puts
    dimensions in columns, we put them in rows). With `annotate`, rows are labelled (`row_labels`, by default z0,
    z1, ...) and columns with their values; rows flagged in `inactive` are greyed (blended 70% towards white).
    """
    values_t = torch.linspace(-1.0, 1.0, 11) if values is None else torch.as_tensor(values, dtype=torch.float32)
    base = encode_means(model, observation)[0]
    d, v = base.shape[0], values_t.shape[0]
    codes = base.repeat(d, v, 1)  # [d, v, d]
    dims = torch.arange(d)
    codes[dims, :, dims] = values_t.to(base.device)
    images = to_uint8(decode_images(model, codes.reshape(d * v, d)))
    if inactive is not None:
        images = images.reshape(d, v, *images.shape[1:]).copy()
        grey = np.asarray(inactive, dtype=bool)
        images[grey] = (0.3 * images[grey] + 0.7 * WHITE).astype(np.uint8)
        images = images.reshape(d * v, *images.shape[2:])
    grid = tile(images, d, v, pad=pad)
    if not annotate:
        return grid
    cell_h, cell_w = images.shape[1] + pad, images.shape[2] + pad
    labels = list(row_labels) if row_labels is not None else [f"z{i}" for i in range(d)]
    if len(labels) != d:
        raise InvalidInputError(f"{len(labels)} row labels for {d} latent dimensions")
    return _annotate(
        grid,
        labels,
        [_format_value(float(x)) for x in values_t],
        cell_h,
        cell_w,
        muted=list(inactive) if inactive is not None else [],
    )


def _annotate(
    grid: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    cell_h: int,
    cell_w: int,
    left: int = 36,
    top: int = 18,
    muted: Sequence[bool] = (),
) -> np.ndarray:
    """Add a white margin with row labels on the left (widened to fit them; `muted` rows in light grey) and
    column labels on top."""
    font = ImageFont.load_default(size=12)
    left = max(left, 12 + math.ceil(max((font.getlength(label) for label in row_labels), default=0)))
    canvas = Image.new("RGB", (grid.shape[1] + left, grid.shape[0] + top), (WHITE, WHITE, WHITE))
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(row_labels):
        colour = (170, 170, 170) if i < len(muted) and muted[i] else (40, 40, 40)
        draw.text((left - 6, top + i * cell_h + (cell_h - 2) // 2), label, fill=colour, font=font, anchor="rm")
    for j, label in enumerate(col_labels):
        draw.text((left + j * cell_w + (cell_w - 2) // 2, top - 4), label, fill=(40, 40, 40), font=font, anchor="ms")
    return np.asarray(canvas)


# ---------------------------------------------------------------------------------------------------------------
# Animated traversals


def triangle_positions(start: float, num_frames: int = 20) -> np.ndarray:
    """Positions in [0, 1] of a triangle wave (spec §8.1): from `start`, advance 2 units over `num_frames` frames
    (endpoint excluded), reflecting at 1 and at 0. start=0 gives 0, 0.1, ..., 1, 0.9, ..., 0.1 for 20 frames.

    [deviation] A start outside [0, 1] is clipped to it; the reference's formula would leave the interval.
    """
    start = min(max(float(start), 0.0), 1.0)
    phase = np.linspace(start, start + 2.0, num_frames, endpoint=False) % 2.0
    return np.where(phase <= 1.0, phase, 2.0 - phase)


def fixed_interval_cycle(
    base_value: float, num_frames: int = 20, interval: tuple[float, float] = (-2.0, 2.0)
) -> np.ndarray:
    """Values of one latent over the animation: the triangle wave over `interval` that starts at `base_value`
    (the reference's `fixed_interval_cycle`, §8.1)."""
    low, high = float(interval[0]), float(interval[1])
    if not high > low:
        raise InvalidInputError(f"interval must have low < high, got {interval}")
    return low + (high - low) * triangle_positions((base_value - low) / (high - low), num_frames)


@torch.no_grad()
def traversal_frames(
    model: torch.nn.Module,
    observation: torch.Tensor,
    num_frames: int = 20,
    interval: tuple[float, float] = (-2.0, 2.0),
    pad: int = 10,
) -> list[np.ndarray]:
    """Frames of the animated traversal around one image (the reference's fixed_interval_cycle GIF, §8.1).

    Base code = encoder mean of `observation`. In every frame, tile k shows latent dimension k moved along its
    triangle wave (`fixed_interval_cycle`) with the other dimensions at the base code; all d tiles are laid out
    in `best_num_rows(d)` rows (2 x 5 for d = 10), `pad` px of white between them and in empty cells.
    """
    base = encode_means(model, observation)[0]
    d = base.shape[0]
    waves = np.stack([fixed_interval_cycle(float(b), num_frames, interval) for b in base.cpu()], axis=1)  # [F, d]
    codes = base.repeat(num_frames, d, 1)  # [F, d, d]
    dims = torch.arange(d)
    codes[:, dims, dims] = torch.as_tensor(waves, dtype=base.dtype, device=base.device)
    images = to_uint8(decode_images(model, codes.reshape(num_frames * d, d)))
    images = images.reshape(num_frames, d, *images.shape[1:])
    rows = best_num_rows(d)
    cols = math.ceil(d / rows)
    return [tile(frame, rows, cols, pad=pad, pad_value=WHITE) for frame in images]
