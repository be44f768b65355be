"""`untwine datasets list | show | render`: the ground-truth data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from untwine.cli.app import app, console
from untwine.config import parse_settings

datasets_app = typer.Typer(help="List, inspect and render the ground-truth data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA", help="where data files live"),
) -> None:
    """Every data set: its factors and sizes, where its files go, and whether they were found."""
    from untwine.data.registry import availability, dataset_info, dataset_names

    table = Table(title="data sets" + (f" (data dir: {data_dir})" if data_dir else " (no --data-dir / UNTWINE_DATA)"))
    for column in ("name", "factors (sizes)", "observation", "files (under the data dir)", "available"):
        table.add_column(column, overflow="fold")
    for name in dataset_names():
        info = dataset_info(name)
        usable, how = availability(name, data_dir)
        factors = ", ".join(f"{n} ({s})" for n, s in zip(info.factor_names, info.factor_sizes))
        status = f"yes: {how}" if usable else f"no: {how}"
        table.add_row(name, factors, "x".join(map(str, info.observation_shape)), "\n".join(info.files), status)
    console.print(table)


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

    dataset = get_dataset(name, data_dir, **parse_settings(dataset_option, "--dataset-option"))
    info = dataset.describe()
    for key, value in info.items():
        console.print(f"{key}: {value}")
    out = out or Path(f"{name}_factors.png")
    factor_sheet(dataset, torch.Generator().manual_seed(seed)).save(out)
    console.print(f"factor-variation sheet: {out}")


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
