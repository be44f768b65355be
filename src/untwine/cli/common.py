"""Helpers the command groups share: tables (or JSON), progress display, config assembly, number lists."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from untwine.cli.app import console

JSON_OPTION = typer.Option(False, "--json", help="print JSON (one array of objects) instead of a table")


def print_records(records: Sequence[dict], columns: dict[str, str], title: str, as_json: bool = False) -> None:
    """List/status output: `records` (JSON-ready dicts) as a table of `columns` {key: header}, or with `as_json`
    as one JSON array on stdout. Values that are lists print one per line in their cell. On a terminal the table
    fits the width and long cells fold; elsewhere (a pipe, a file) cells never wrap, so each name stays whole."""
    if as_json:
        typer.echo(json.dumps(list(records), indent=1))
        return
    terminal = console.is_terminal
    table = Table(title=title)
    for header in columns.values():
        table.add_column(header, overflow="fold" if terminal else "ignore", no_wrap=not terminal)
    for record in records:
        cells = []
        for key in columns:
            value = record.get(key, "")
            cells.append("\n".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        table.add_row(*cells)
    # a pipe gets the table at its natural width (rich would otherwise squeeze it into 80 columns)
    (console if terminal else Console(file=console.file, width=100_000)).print(table)


def progress_bar(total: int, start: int, label: str):
    """A rich progress bar on a terminal; elsewhere (CI logs, pipes) a plain line at every tenth of the run."""
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = progress.add_task(label, total=total, completed=start, loss="")
    printed = {"tenth": start * 10 // max(total, 1)}

    def update(step: int, steps: int, values: dict[str, float]) -> None:
        loss = f"loss {values.get('loss', float('nan')):.1f}"
        progress.update(task, completed=step, loss=loss)
        tenth = step * 10 // max(steps, 1)
        if not console.is_terminal and tenth > printed["tenth"]:
            printed["tenth"] = tenth
            console.print(f"{label}: step {step}/{steps}, {loss}, {values.get('elapsed_s', 0):.0f} s")

    return progress, update


def train_run(config, out: Path, resume: bool) -> None:
    from untwine.training import Trainer

    trainer = Trainer(config, out)
    progress, update = progress_bar(config.steps, 0, f"train {out.name}")
    trainer.progress = update
    with progress:
        summary = trainer.train(resume=resume)
    if trainer.already_finished:
        console.print(f"{out}: already finished at step {trainer.step} (ask for more --steps to extend it)")
        return
    console.print(
        f"trained {summary['train.global_step']} steps in {summary['train.elapsed_s']:.0f} s -> {out}/checkpoints/final"
    )


def config_from(config_file: Optional[Path], **overrides):
    from untwine.config import TrainConfig

    base = TrainConfig.read(config_file).model_dump() if config_file else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.build(**base)


def numbers(text: Optional[str], name: str, kind=float) -> list:
    """ "1,2,4" -> [1.0, 2.0, 4.0]; seeds also take ranges: "0-4" -> [0, 1, 2, 3, 4]."""
    if text is None:
        return []
    values = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            if kind is int and "-" in part[1:]:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                values.extend(range(low, high + 1))
            else:
                values.append(kind(part))
        except ValueError:
            raise typer.BadParameter(f"--{name.replace('_', '-')}: cannot read {part!r} as a number or range") from None
    return values
