"""Data-set pictures: the factor-variation sheet (one row per factor), as disentanglement_lib's
`visualize_dataset` variations_of_factor{k}.png (spec §8.2), all factors on one sheet."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from untwine.viz.images import tile, to_uint8

MAX_COLUMNS = 16


def factor_sheet(dataset, generator: torch.Generator, scale: int = 1) -> Image.Image:
    """Row k: one random base factor vector with factor k swept over (up to 16 evenly spaced of) its values."""
    base = dataset.sample_factors(1, generator).cpu()
    rows = []
    for k, size in enumerate(dataset.factor_sizes):
        values = np.unique(np.linspace(0, size - 1, min(size, MAX_COLUMNS)).round().astype(int))
        factors = base.repeat(len(values), 1)
        factors[:, k] = torch.from_numpy(values)
        images = to_uint8(dataset.observations(factors, generator).cpu())
        padding = np.full((MAX_COLUMNS - len(values), *images.shape[1:]), 255, dtype=np.uint8)
        rows.append(np.concatenate([images, padding]))
    grid = tile(np.concatenate(rows), len(rows), MAX_COLUMNS, pad=2)
    label_width = 110
    sheet = Image.new("RGB", (grid.shape[1] + label_width, grid.shape[0]), "white")
    sheet.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(sheet)
    cell = grid.shape[0] // len(rows)
    for k, (name, size) in enumerate(zip(dataset.factor_names, dataset.factor_sizes)):
        draw.text((4, k * cell + cell // 2 - 6), f"{name} ({size})", fill="black")
    if scale != 1:
        sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    return sheet
