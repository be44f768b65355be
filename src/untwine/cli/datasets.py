"""`untwine datasets list | show | render`: the ground-truth data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from untwine.cli.app import app, console
from untwine.cli.common import JSON_OPTION, print_records
from untwine.config import parse_settings
from untwine.lock import storage_error

datasets_app = typer.Typer(help="List, inspect and render the ground-truth data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA", help="where data files live"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every data set: its factors and sizes, where its files go, and whether they are usable (checked as
    training checks them)."""
    from untwine.data.registry import availability, dataset_info, dataset_names

    records = []
    for name in dataset_names():
        info = dataset_info(name)
        usable, how = availability(name, data_dir)
        records.append(
            {
                "name": name,
                "factor_names": list(info.factor_names),
                "factor_sizes": list(info.factor_sizes),
                "factors": ", ".join(f"{n} ({s})" for n, s in zip(info.factor_names, info.factor_sizes)),
                "observation_shape": list(info.observation_shape),
                "observation": "x".join(map(str, info.observation_shape)),
                "files": list(info.files),
                "available": usable,
                "status": f"yes: {how}" if usable else f"no: {how}",
            }
        )
    title = "data sets" + (f" (data dir: {data_dir})" if data_dir else " (no --data-dir / UNTWINE_DATA)")
    columns = {
        "name": "name",
        "factors": "factors (sizes)",
        "observation": "observation",
        "files": "files (under the data dir)",
        "status": "available",
    }
    if as_json:
        keep = ("name", "factor_names", "factor_sizes", "observation_shape", "files", "available", "status")
        records = [{k: r[k] for k in keep} for r in records]
    print_records(records, columns, title, as_json)


@datasets_app.command("show")
def datasets_show(
    name: str = typer.Argument(..., help="data set name"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default: <name>_factors.png)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA"),
    seed: int = typer.Option(0, help="seed of the base factor vector"),
    dataset_option: Optional[list[str]] = typer.Option(
        None, "--dataset-option", help="the data set's own setting, KEY=VALUE (repeatable)"
    ),
) -> None:
    """Describe a data set and write a factor-variation sheet (one row per factor) to PNG."""
    import torch

    from untwine.data import get_dataset
    from untwine.viz.datasets import factor_sheet

    out = check_image_path(out or Path(f"{name}_factors.png"))
    dataset = get_dataset(name, data_dir, **parse_settings(dataset_option, "--dataset-option"))
    info = dataset.describe()
    for key, value in info.items():
        console.print(f"{key}: {value}")
    sheet = factor_sheet(dataset, torch.Generator().manual_seed(seed))
    try:
        sheet.save(out)
    except OSError as exc:
        raise storage_error(exc, "write", out) from None
    console.print(f"factor-variation sheet: {out}")


def check_image_path(path: Path) -> Path:
    """An image file that can be written: not a directory, an existing parent directory, a known extension."""
    from PIL import Image

    from untwine.errors import StorageError

    if path.is_dir():
        raise StorageError(f"{path} is a directory; give a file name such as {path / 'sheet.png'}")
    if not path.parent.is_dir():
        raise StorageError(f"cannot write {path}: the directory {path.parent} does not exist")
    if path.suffix.lower() not in Image.registered_extensions():
        raise StorageError(f"cannot write {path}: unknown image extension {path.suffix!r} (use .png)")
    return path


@datasets_app.command("render")
def datasets_render(
    name: str = typer.Argument("dsprites", help="data set to render or preprocess"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA", help="where data files live"),
    cache_dir: Optional[Path] = typer.Option(None, help="cache directory (default $UNTWINE_CACHE or ~/.cache/untwine)"),
) -> None:
    """Render a procedural data set, or preprocess one read from files, into the cache (also done on first use)."""
    import time

    from untwine.data.registry import dataset_info

    info = dataset_info(name)
    start = time.perf_counter()
    source = "procedural" if info.procedural else "auto"
    dataset = info.build(data_dir=None if info.procedural else data_dir, source=source, cache_dir=cache_dir)
    console.print(f"{name}: {len(dataset)} factor combinations ready in {time.perf_counter() - start:.1f} s")
