"""`untwine evaluate` and `untwine report`: score a trained run, write its HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from untwine.cli.app import app, console


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="run directory"),
    metrics: str = typer.Option("mig", help="comma-separated metric names, or all"),
    representation: str = typer.Option("mean,sampled", help="mean, sampled, or both (comma-separated)"),
    untrained: bool = typer.Option(False, help="also evaluate the same network before training"),
    num_points: Optional[int] = typer.Option(
        None, help="quick look: shrink every metric's sample sizes to this (not the reference protocol)"
    ),
    option: list[str] = typer.Option(
        [], "--option", help="metric.setting=value, e.g. dci.importance=lightgbm (repeatable)"
    ),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Score a trained run with disentanglement metrics; results go to <run>/results.json."""
    from untwine.errors import MetricsFailedError
    from untwine.evaluation import evaluate_run, metric_names
    from untwine.evaluation.evaluate import parse_option, scaled_options
    from untwine.training.trainer import resolve_device

    names = metric_names(metrics)
    reps = [r.strip() for r in representation.split(",") if r.strip()]
    options = {name: scaled_options(name, num_points) for name in names} if num_points is not None else {}
    for text in option:
        metric, key, value = parse_option(text, names)
        options.setdefault(metric, {})[key] = value
    resolve_device(device)
    # each metric's results are saved as it finishes; failures are reported at the end, one line each
    results, failures = {}, []
    for network in (False, True) if untrained else (False,):
        try:
            results.update(evaluate_run(run, names, reps, untrained=network, options=options, device=device))
        except MetricsFailedError as exc:
            results.update(exc.results)
            failures.extend(exc.lines)
    _print_results(results)
    if failures:
        raise MetricsFailedError(failures, results)


def _print_results(results: dict) -> None:
    table = Table(title="results")
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in sorted(results.items()):
        if not key.endswith("elapsed_s"):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def report(
    run: Path = typer.Argument(..., help="run directory"),
    regenerate: bool = typer.Option(False, help="redraw the figures even if they exist"),
) -> None:
    """Write <run>/report.html: config, curves, reconstructions, samples, traversals, metrics."""
    from untwine.runs import RunDir
    from untwine.viz.report import write_report

    run_dir = RunDir(run).require()
    run_dir.read_results()  # a corrupt results.json is an error before any figure is drawn
    path = write_report(run_dir, regenerate_figures=regenerate)
    console.print(f"report: {path}")
