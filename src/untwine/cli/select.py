"""`untwine select udr | dynamics RUN RUN ...`: unsupervised model selection over a group of runs that share
everything but the seed (the study-level `select udr S` / `select dynamics S` build on these)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from untwine.cli.app import app, console

select_app = typer.Typer(help="Score models without labels: UDR and the training-dynamics score.", no_args_is_help=True)
app.add_typer(select_app, name="select")


@select_app.command("udr")
def select_udr(
    runs: list[Path] = typer.Argument(..., help="run directories of one group (same spec, different seeds)"),
    correlation: str = typer.Option("lasso", help="lasso (UDR_L, the reference default) or spearman (UDR_S)"),
    num_points: int = typer.Option(1000, help="observations every model encodes (reference: 1000)"),
    batch_size: int = typer.Option(10, help="KL averaged per batch of this size (reference: 10)"),
    eval_seed: int = typer.Option(0, help="seed the observations are drawn from (reference: 0)"),
    filter_low_kl: bool = typer.Option(True, "--filter-low-kl/--no-filter-low-kl", help="drop latents with low KL"),
    kl_threshold: float = typer.Option(0.01, help="a latent is informative if its KL is above this"),
    no_informative: str = typer.Option("error", help="a model without informative latents: error, or zero (rPU)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """UDR of each run against the others; stored as udr.<correlation>.model_score in each results.json."""
    from untwine.selection.udr import udr_for_runs

    result = udr_for_runs(
        runs,
        num_points=num_points,
        batch_size=batch_size,
        eval_seed=eval_seed,
        correlation=correlation,
        filter_low_kl=filter_low_kl,
        kl_threshold=kl_threshold,
        no_informative=no_informative,
        device=device,
    )
    table = Table(title=f"UDR ({correlation}, {num_points} points, {result['elapsed_s']:.1f} s)")
    for column in ("run", "model score", "informative latents"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, score, active in zip(result["runs"], result["model_scores"], result["num_informative"]):
        table.add_row(name, f"{score:.4f}", str(active))
    console.print(table)


@select_app.command("dynamics")
def select_dynamics(
    runs: list[Path] = typer.Argument(..., help="run directories of one specification, trained with --trace-every"),
    components: int = typer.Option(10, help="dimensions of the joint embedding"),
    t: str = typer.Option("auto", help="diffusion time: auto (PHATE's entropy knee, median over runs) or a number"),
    seed: int = typer.Option(0, help="seed of the MMD subsampling (only used above --max-points nodes)"),
) -> None:
    """The training-dynamics score of the runs' specification (mean MMD between their joint embeddings; lower =
    more stable); stored as dynamics.score and dynamics.realisation_score in each results.json."""
    from untwine.errors import InvalidInputError
    from untwine.selection.dynamics import dynamics_for_runs

    if t != "auto":
        try:
            t = int(t)
        except ValueError:
            raise InvalidInputError(f"--t must be auto or a positive integer, got {t!r}") from None
    result = dynamics_for_runs(runs, n_components=components, t=t, seed=seed)
    table = Table(
        title=f"training dynamics: score {result['score']:.5f} (t = {result['t']}, {result['elapsed_s']:.1f} s)"
    )
    table.add_column("run")
    table.add_column("mean MMD^2 to the others", justify="right")
    for name, score in zip(result["runs"], result["realisation_scores"]):
        table.add_row(name, f"{score:.5f}")
    console.print(table)
