"""`untwine evaluate` and `untwine report`: score a trained run, write its HTML report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every result key, not only the headline"),
    as_json: bool = typer.Option(False, "--json", help="write all results to stdout as JSON (nothing else)"),
) -> None:
    """Score a trained run with disentanglement metrics; results go to <run>/results.json.

    Prints the headline scores (one row per score; columns mean / sampled representation, trained / untrained)."""
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
    _print_results(results, run, verbose=verbose, as_json=as_json)
    if failures:
        raise MetricsFailedError(failures, results)


def _format(value) -> str:
    if value is None:
        return "\u2014"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_results(results: dict, run: Path, verbose: bool = False, as_json: bool = False) -> None:
    """The headline table (untwine.metrics.headline); every key with `verbose`; JSON alone on stdout with `as_json`."""
    from untwine.metrics.headline import headline_table, used_columns

    if as_json:
        sys.stdout.write(json.dumps(results, indent=1, sort_keys=True) + "\n")
        return
    if verbose:  # one unwrapped line per key, easy to grep
        width = max((len(key) for key in results), default=0)
        for key, value in sorted(results.items()):
            console.print(f"{key:<{width}}  {_format(value)}", soft_wrap=True, highlight=False, markup=False)
        return
    rows = headline_table(results)
    columns = used_columns(rows)
    table = Table(title=f"headline scores of {run.name}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("score")
    for network, representation in columns:
        table.add_column(f"{network}\n{representation}", justify="right")
    for row in rows:
        label = f"{row.label} \u2193" if row.headline.better == "lower" else row.label
        table.add_row(label, *(_format(row.values[c]) for c in columns))
    console.print(table)
    elapsed = sum(v for k, v in results.items() if k.endswith(".elapsed_s"))
    console.print(f"\u2193 lower is better; \u2014 not computed at these sample sizes; {elapsed:.0f} s of metrics")
    console.print(f"all {len(results)} keys: --verbose, --json or {run / 'results.json'}", soft_wrap=True)


@app.command()
def report(
    run: Path = typer.Argument(..., help="run directory"),
    regenerate: bool = typer.Option(False, help="redraw the figures even if they exist"),
) -> None:
    """Write <run>/report.html: headline scores, which latent captures which factor, traversals, every score,
    evaluation times, curves, reconstructions, samples, config."""
    from untwine.runs import RunDir
    from untwine.viz.report import write_report

    run_dir = RunDir(run).require()
    run_dir.read_results()  # a corrupt results.json is an error before any figure is drawn
    path = write_report(run_dir, regenerate_figures=regenerate)
    console.print(f"report: {path}")
