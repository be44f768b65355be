"""`untwine reproduce <paper>`: a paper's experiment run through the study layer, with a report comparing the
findings with the paper's (one command per paper)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from untwine.cli.app import app, console

reproduce_app = typer.Typer(
    help="Reproduce papers' experiments (through the study layer) and compare with their findings.",
    no_args_is_help=True,
)
app.add_typer(reproduce_app, name="reproduce")


@reproduce_app.command("holtz2022")
def holtz2022(
    out: Path = typer.Option(..., "--out", "-o", help="directory: holtz2022.toml, study/, report.md"),
    scale: str = typer.Option("cpu", help="cpu (80 models, ~2 h on 2 cores) or paper (625 models: GPU/cluster)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster: HOST:PORT or auto (default: local)"),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs each model's trial asks for"),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs each trial asks for; fractional shares a GPU"),
    cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all cores)"),
) -> None:
    """Holtz et al. 2022: beta-VAEs on dSprites (beta x latent size x seeds), traced; the training-dynamics score
    and UDR against the BetaVAE / FactorVAE / MIG metrics (Table 1, also as the seeds grow; Fig. 4a), the metrics
    under label noise (Table 3) and the scores against the unfairness (Table 4). Rerun the same command to continue
    an interrupted run, or to extend an earlier, smaller reproduction in the same directory (its models reused)."""
    from untwine.cli.study import _Console
    from untwine.reproduce.holtz2022 import reproduce
    from untwine.study.runner import RunOptions

    options = RunOptions(address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, num_cpus=cpus)
    events = _Console()
    try:
        path = reproduce(out, scale, options, events, device="cuda" if gpus_per_trial > 0 else "cpu", log=console.print)
    finally:
        events.stopped()
    console.print(path.read_text(), markup=False, soft_wrap=True)
    console.print(f"report: {path.resolve()}")


@reproduce_app.command("estermann2020")
def estermann2020(
    out: Path = typer.Option(
        ..., "--out", "-o", help="directory: one PBT/rPU run per approach and seed, table.json, report.md"
    ),
    scale: str = typer.Option("cpu", help="cpu (small populations and intervals, ~2 h on 2 cores) or paper"),
    seeds: str = typer.Option("0", help="seeds, e.g. 0-4 or 0,3"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster: HOST:PORT or auto (default: local)"),
    cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all cores)"),
) -> None:
    """Estermann et al. 2020: PBT-VAE with a supervised (MIG) and an unsupervised (UDR) fitness, random search and
    rPU-VAE on dSprites; the final models' MIG and DCI, wall and CPU time per generation, and the paper's Fig. 1, 2
    and 4a claims beside them. Rerun the same command to continue after an interruption (kill -9 included)."""
    from untwine.cli.common import numbers
    from untwine.reproduce.estermann2020 import reproduce_estermann2020, table_markdown

    rows = reproduce_estermann2020(
        out, scale, seeds=numbers(seeds, "seeds", int), address=address, num_cpus=cpus, progress=console.print
    )
    console.print(table_markdown(rows), markup=False, soft_wrap=True)
