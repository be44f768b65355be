"""Data set names -> constructors. `untwine datasets list` shows them and where each expects its files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import untwine.data.dsprites as _dsprites
import untwine.data.variants as _variants
from untwine.data.base import FactorDataset
from untwine.data.stored import StoredDataset
from untwine.errors import InvalidInputError


def default_data_dir() -> Path | None:
    """The data directory: $UNTWINE_DATA if set (the CLI's --data-dir overrides it)."""
    value = os.environ.get("UNTWINE_DATA")
    return Path(value) if value else None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    observation_shape: tuple[int, int, int]
    files: tuple[str, ...]  # paths relative to the data directory
    procedural: bool  # available without any file
    build: Callable[..., FactorDataset]
    description: str


REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo, *aliases: str) -> None:
    for key in (info.name, *aliases):
        REGISTRY[key] = info


register(
    DatasetInfo(
        name="dsprites",
        factor_names=_dsprites.FACTOR_NAMES,
        factor_sizes=_dsprites.FACTOR_SIZES,
        observation_shape=(1, 64, 64),
        files=(f"dsprites/{_dsprites.OFFICIAL_FILENAME}",),
        procedural=True,
        build=lambda data_dir=None, source="auto", cache_dir=None: _dsprites.dsprites_dataset(
            data_dir, source, cache_dir
        ),
        description="dSprites (reference dsprites_full): official file if present, else rendered offline",
    ),
    "dsprites_full",
)


for _name, _variant in (("color_dsprites", _variants.ColorDSprites), ("noisy_dsprites", _variants.NoisyDSprites)):
    register(
        DatasetInfo(
            name=_name,
            factor_names=_dsprites.FACTOR_NAMES,
            factor_sizes=_dsprites.FACTOR_SIZES,
            observation_shape=(3, 64, 64),
            files=(f"dsprites/{_dsprites.OFFICIAL_FILENAME}",),
            procedural=True,
            build=lambda data_dir=None, source="auto", cache_dir=None, _variant=_variant: _variant(
                _dsprites.dsprites_dataset(data_dir, source, cache_dir)
            ),
            description=f"{_name} (reference {_name}): dSprites with a random appearance per observation",
        )
    )


def _dsprites_noshape(data_dir=None, source="auto", cache_dir=None) -> StoredDataset:
    """dSprites with shape as a nuisance factor (reference dsprites_noshape, DSprites([2, 3, 4, 5]))."""
    base = _dsprites.dsprites_dataset(data_dir, source, cache_dir)
    return StoredDataset(
        "dsprites_noshape",
        base.storage,
        base.grid_sizes,
        base.grid_names,
        base.observation_shape,
        base.packed,
        latent_indices=(1, 2, 3, 4),
    )


register(
    DatasetInfo(
        name="dsprites_noshape",
        factor_names=_dsprites.FACTOR_NAMES[1:],
        factor_sizes=_dsprites.FACTOR_SIZES[1:],
        observation_shape=(1, 64, 64),
        files=(f"dsprites/{_dsprites.OFFICIAL_FILENAME}",),
        procedural=True,
        build=_dsprites_noshape,
        description="dsprites_noshape: dSprites with shape drawn at random per observation (a nuisance factor)",
    )
)

register(
    DatasetInfo(
        name="scream_dsprites",
        factor_names=_dsprites.FACTOR_NAMES,
        factor_sizes=_dsprites.FACTOR_SIZES,
        observation_shape=(3, 64, 64),
        files=(_variants.SCREAM_FILE, f"dsprites/{_dsprites.OFFICIAL_FILENAME}"),
        procedural=False,
        build=lambda data_dir=None, source="auto", cache_dir=None: _variants.ScreamDSprites(
            _dsprites.dsprites_dataset(data_dir, source, cache_dir), _variants.load_scream(data_dir)
        ),
        description="scream_dsprites: dSprites over patches of the Scream painting (needs scream/scream.jpg)",
    )
)


def dataset_names() -> list[str]:
    """Canonical names (aliases excluded), in registration order."""
    seen: list[str] = []
    for info in REGISTRY.values():
        if info.name not in seen:
            seen.append(info.name)
    return seen


def dataset_info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInputError(f"unknown data set {name!r}; known: {', '.join(dataset_names())}") from None


def files_found(name: str, data_dir: str | Path | None = None) -> dict[str, bool]:
    """For each file a data set reads: whether it is present under `data_dir` (or $UNTWINE_DATA)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    info = dataset_info(name)
    return {str((root or Path(".")) / f): root is not None and (root / f).exists() for f in info.files}


def get_dataset(name: str, data_dir: str | Path | None = None, **options) -> FactorDataset:
    """Build a data set by name. `data_dir` defaults to $UNTWINE_DATA."""
    info = dataset_info(name)
    if data_dir is None:
        data_dir = default_data_dir()
    return info.build(data_dir=data_dir, **options)
