"""Data set names -> constructors. `untwine datasets list` shows them and whether each one's files were found.

Procedural data sets (dSprites and its variants) read the official file when it is present and render
otherwise; the others are read from the official files (data/files.py says where each is expected).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import untwine.data.cars3d as _cars3d
import untwine.data.dsprites as _dsprites
import untwine.data.dummy as _dummy
import untwine.data.mpi3d as _mpi3d
import untwine.data.shapes3d as _shapes3d
import untwine.data.smallnorb as _smallnorb
import untwine.data.variants as _variants
from untwine.data.base import FactorDataset
from untwine.data.files import require
from untwine.data.stored import StoredDataset
from untwine.errors import DataNotFoundError, InvalidInputError, UntwineError


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
    files: tuple[str, ...]  # where its files go, relative to the data directory (for display)
    procedural: bool  # available without any file
    build: Callable[..., FactorDataset]
    description: str
    locate: Callable[[Path | None], object]  # raises DataNotFoundError, naming what is missing, without its files
    options: tuple[str, ...] = ()  # the loader's own settings (TrainConfig.dataset_options, --dataset-option)


REGISTRY: dict[str, DatasetInfo] = {}
DSPRITES_FILE = f"dsprites/{_dsprites.OFFICIAL_FILENAME}"


def register(info: DatasetInfo, *aliases: str) -> None:
    for key in (info.name, *aliases):
        REGISTRY[key] = info


def _dsprites_file(data_dir: Path | None) -> Path:
    root = data_dir if data_dir is not None else Path("<data-dir>")
    return require(root / DSPRITES_FILE, "dsprites", f"{_dsprites.OFFICIAL_FILENAME} in {root / 'dsprites'}/")


def _from_files(loader: Callable[..., FactorDataset]) -> Callable[..., FactorDataset]:
    """A constructor for a data set read only from files (`source` may be "auto" or "file")."""

    def build(data_dir=None, source="auto", cache_dir=None, **options) -> FactorDataset:
        if source not in ("auto", "file"):
            raise InvalidInputError(f"source {source!r}: this data set is read from files (no procedural renderer)")
        return loader(data_dir, cache_dir=cache_dir, **options)

    return build


register(
    DatasetInfo(
        name="dsprites",
        factor_names=_dsprites.FACTOR_NAMES,
        factor_sizes=_dsprites.FACTOR_SIZES,
        observation_shape=(1, 64, 64),
        files=(DSPRITES_FILE,),
        procedural=True,
        build=lambda data_dir=None, source="auto", cache_dir=None: _dsprites.dsprites_dataset(
            data_dir, source, cache_dir
        ),
        description="dSprites (reference dsprites_full): official file if present, else rendered offline",
        locate=_dsprites_file,
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
            files=(DSPRITES_FILE,),
            procedural=True,
            build=lambda data_dir=None, source="auto", cache_dir=None, _variant=_variant: _variant(
                _dsprites.dsprites_dataset(data_dir, source, cache_dir)
            ),
            description=f"{_name} (reference {_name}): dSprites with a random appearance per observation",
            locate=_dsprites_file,
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
        files=(DSPRITES_FILE,),
        procedural=True,
        build=_dsprites_noshape,
        description="dsprites_noshape: dSprites with shape drawn at random per observation (a nuisance factor)",
        locate=_dsprites_file,
    )
)

register(
    DatasetInfo(
        name="scream_dsprites",
        factor_names=_dsprites.FACTOR_NAMES,
        factor_sizes=_dsprites.FACTOR_SIZES,
        observation_shape=(3, 64, 64),
        files=(_variants.SCREAM_FILE, DSPRITES_FILE),
        procedural=False,
        build=lambda data_dir=None, source="auto", cache_dir=None: _variants.ScreamDSprites(
            _dsprites.dsprites_dataset(data_dir, source, cache_dir), _variants.load_scream(data_dir)
        ),
        description="scream_dsprites: dSprites over patches of the Scream painting (dSprites rendered if absent)",
        locate=_variants.scream_path,
    )
)

register(
    DatasetInfo(
        name="smallnorb",
        factor_names=_smallnorb.FACTOR_NAMES,
        factor_sizes=_smallnorb.FACTOR_SIZES,
        observation_shape=(1, 64, 64),
        files=tuple(f"{_smallnorb.DIRECTORY}/{s}-{p}.mat" for s in _smallnorb.SPLITS for p in _smallnorb.PARTS),
        procedural=False,
        build=_from_files(_smallnorb.load_smallnorb),
        description="SmallNORB: both splits, first camera, instance as a nuisance factor, resized to 64 x 64",
        locate=_smallnorb.split_paths,
    )
)

register(
    DatasetInfo(
        name="cars3d",
        factor_names=_cars3d.FACTOR_NAMES,
        factor_sizes=_cars3d.FACTOR_SIZES,
        observation_shape=(3, 64, 64),
        files=(f"{_cars3d.DIRECTORY}/*.mat (183 files)",),
        procedural=False,
        build=_from_files(_cars3d.load_cars3d),
        description="Cars3D: Reed et al.'s 183 car models, objects ordered by sorted file name",
        locate=_cars3d.mat_files,
        options=("object_order",),
    )
)

register(
    DatasetInfo(
        name="shapes3d",
        factor_names=_shapes3d.FACTOR_NAMES,
        factor_sizes=_shapes3d.FACTOR_SIZES,
        observation_shape=(3, 64, 64),
        files=(f"{_shapes3d.DIRECTORY}/{_shapes3d.H5_FILENAME} (or the reference's npz)",),
        procedural=False,
        build=_from_files(_shapes3d.load_shapes3d),
        description="Shapes3D: DeepMind's 3dshapes.h5 (or the reference's npz layout)",
        locate=_shapes3d.locate,
    ),
    "3dshapes",
)

for _variant_name in _mpi3d.VARIANTS:
    register(
        DatasetInfo(
            name=f"mpi3d_{_variant_name}",
            factor_names=_mpi3d.FACTOR_NAMES,
            factor_sizes=_mpi3d.REFERENCE_SIZES[_variant_name],
            observation_shape=(3, 64, 64),
            files=(_mpi3d.relative_path(_variant_name),),
            procedural=False,
            build=_from_files(lambda data_dir, _v=_variant_name, **options: _mpi3d.load_mpi3d(_v, data_dir, **options)),
            description=f"MPI3D-{_variant_name} (Gondal et al. 2019); the grid follows the file's image count",
            locate=lambda data_dir, _v=_variant_name: _mpi3d.locate(_v, data_dir),
            options=("factor_sizes",),
        )
    )


register(
    DatasetInfo(
        name="dummy_data",
        factor_names=_dummy.FACTOR_NAMES,
        factor_sizes=_dummy.FACTOR_SIZES,
        observation_shape=(1, 64, 64),
        files=(),
        procedural=True,
        build=lambda data_dir=None, source="auto", cache_dir=None: _dummy.DummyData(),
        description="dummy_data: 10 factors of 5 values, pure-noise observations (for testing pipelines)",
        locate=lambda data_dir: None,
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


def availability(name: str, data_dir: str | Path | None = None) -> tuple[bool, str]:
    """(usable, how): whether the data set can be built with the files under `data_dir` (or $UNTWINE_DATA).

    The files are checked by the loader itself, as training loads them (`files.probing`: every check, but no image
    read or preprocessed), so a file that training would reject is reported unusable here with the same message.
    """
    from untwine.data.files import probing

    info = dataset_info(name)
    if not info.files:
        return True, "generated (reads no files)"
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        info.locate(root)
        found = True
    except DataNotFoundError as exc:
        if not info.procedural:
            return False, str(exc)
        found = False
    try:
        with probing(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info.build(data_dir=root)
    except UntwineError as exc:
        return False, str(exc)
    return True, "files found" if found else "rendered offline (official file not found)"


def get_dataset(
    name: str,
    data_dir: str | Path | None = None,
    source: str = "auto",
    cache_dir: str | Path | None = None,
    **options,
) -> FactorDataset:
    """Build a data set by name. `data_dir` defaults to $UNTWINE_DATA; `options` are the data set's own settings
    (`DatasetInfo.options`, e.g. cars3d's object_order, mpi3d's factor_sizes)."""
    info = dataset_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        known = ", ".join(info.options) or "none"
        raise InvalidInputError(f"{name} has no option {', '.join(map(repr, unknown))}; its options: {known}")
    if data_dir is None:
        data_dir = default_data_dir()
    return info.build(data_dir=data_dir, source=source, cache_dir=cache_dir, **options)
