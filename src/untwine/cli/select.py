"""`untwine select udr | dynamics RUN RUN ...` or `... S` (a study directory): unsupervised model selection. The
runs are grouped by specification (everything but the seed; in a study, its seed groups) and each group is scored
on its own; in a study the scores also go into its store (`study.selection.select_study`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from untwine.cli.app import app, console

RUNS_HELP = "run directories (each specification's seeds form a group), or one study directory"
FORCE_HELP = "in a study, score again the groups that already hold the score"


def _study(paths: list[Path]) -> Path | None:
    """The study directory when `paths` is one directory holding a study, else None (run directories)."""
    from untwine.study.studydir import StudyDir

    if len(paths) == 1 and StudyDir(paths[0]).exists():
        return paths[0]
    return None


def _select_study(study: Path, kind: str, force: bool, title: str, **options) -> None:
    """Score a study's seed groups, printing one row per group as it is done."""
    from untwine.study.selection import select_study

    table = Table(title=title)
    for column in ("group", "models", "status", "scores"):
        table.add_column(column)
    counts: dict[str, int] = {}

    def row(outcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        scores = ", ".join(f"{i} {v:.4f}" for i, v in outcome.scores.items()) if kind == "udr" else ""
        if kind == "dynamics" and outcome.scores:
            scores = f"{next(iter(outcome.scores.values())):.5f}"
        timing = f" ({outcome.elapsed_s:.0f} s)" if outcome.status == "scored" else ""
        table.add_row(outcome.label, str(len(outcome.model_ids)), outcome.status + timing, outcome.reason or scores)
        console.print(f"{outcome.label}: {outcome.status}{timing}", soft_wrap=True)

    try:
        select_study(study, kind, force=force, on_group=row, **options)
    finally:
        if table.rows:
            console.print(table)
            console.print(", ".join(f"{n} group(s) {s}" for s, n in counts.items()) + f" -> {study}/study.sqlite")


select_app = typer.Typer(help="Score models without labels: UDR and the training-dynamics score.", no_args_is_help=True)
app.add_typer(select_app, name="select")


@select_app.command("udr")
def select_udr(
    runs: list[Path] = typer.Argument(..., help=RUNS_HELP),
    correlation: str = typer.Option("lasso", help="lasso (UDR_L, the reference default) or spearman (UDR_S)"),
    num_points: int = typer.Option(1000, help="observations every model encodes (reference: 1000)"),
    batch_size: int = typer.Option(10, help="KL averaged per batch of this size (reference: 10)"),
    eval_seed: int = typer.Option(0, help="seed the observations are drawn from (reference: 0)"),
    filter_low_kl: bool = typer.Option(True, "--filter-low-kl/--no-filter-low-kl", help="drop latents with low KL"),
    kl_threshold: float = typer.Option(0.01, help="a latent is informative if its KL is above this"),
    no_informative: str = typer.Option("error", help="a model without informative latents: error, or zero (rPU)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """UDR of each run against the other seeds of its group; stored as udr.<correlation>.model_score."""
    from untwine.selection.groups import seed_groups
    from untwine.selection.udr import udr_for_runs

    options = dict(
        num_points=num_points,
        batch_size=batch_size,
        eval_seed=eval_seed,
        correlation=correlation,
        filter_low_kl=filter_low_kl,
        kl_threshold=kl_threshold,
        no_informative=no_informative,
        device=device,
    )
    study = _study(runs)
    if study is not None:
        _select_study(study, "udr", force, f"UDR ({correlation}, {num_points} points) of {study}", **options)
        return
    groups = seed_groups(runs)
    table = Table(title=f"UDR ({correlation}, {num_points} points)")
    for column in ("group", "run", "model score", "informative latents"):
        table.add_column(column, justify="right" if column in ("model score", "informative latents") else "left")
    for label, members in groups.items():
        result = udr_for_runs(members, group=label, **options)
        for name, score, active in zip(result["runs"], result["model_scores"], result["num_informative"]):
            table.add_row(label, name, f"{score:.4f}", str(active))
    console.print(table)


@select_app.command("dynamics")
def select_dynamics(
    runs: list[Path] = typer.Argument(..., help=RUNS_HELP + " (trained with --trace-every)"),
    components: int = typer.Option(10, help="dimensions of the joint embedding"),
    t: str = typer.Option("auto", help="diffusion time: auto (PHATE's entropy knee, median over runs) or a number"),
    seed: int = typer.Option(0, help="seed of the MMD subsampling (only used above 2,000 nodes)"),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """The training-dynamics score of each specification (mean MMD between its runs' joint embeddings; lower =
    more stable); stored as dynamics.score and dynamics.realisation_score in each results.json."""
    from untwine.errors import InvalidInputError
    from untwine.selection.dynamics import dynamics_for_runs
    from untwine.selection.groups import seed_groups

    if t != "auto":
        try:
            t = int(t)
        except ValueError:
            raise InvalidInputError(f"--t must be auto or a positive integer, got {t!r}") from None
    study = _study(runs)
    if study is not None:
        title = f"training dynamics of {study} (lower = more stable)"
        _select_study(study, "dynamics", force, title, n_components=components, t=t, seed=seed)
        return
    groups = seed_groups(runs)
    table = Table(title="training dynamics (lower = more stable)")
    for column in ("group", "score", "t", "runs: mean MMD^2 to the others"):
        table.add_column(column, justify="left" if column in ("group", "runs: mean MMD^2 to the others") else "right")
    for label, members in groups.items():
        result = dynamics_for_runs(members, group=label, n_components=components, t=t, seed=seed)
        own = ", ".join(f"{name} {score:.5f}" for name, score in zip(result["runs"], result["realisation_scores"]))
        table.add_row(label, f"{result['score']:.5f}", str(result["t"]), own)
    console.print(table)
