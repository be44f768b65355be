"""`untwine pbt run | report` and `untwine rpu run | report`: PBT-VAE and rPU-VAE (Estermann et al. 2020) on Ray
Tune (selection/pbt.py, selection/rpu.py). Both resume when run again with the same --out and settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from untwine.cli.app import app, console
from untwine.cli.common import print_records

pbt_app = typer.Typer(help="Population-based training of beta-TCVAEs with a disentanglement fitness.")
rpu_app = typer.Typer(help="rPU-VAE: recursive PBT with UDR, surrogate labels and a final PBT.", no_args_is_help=True)
app.add_typer(pbt_app, name="pbt")
app.add_typer(rpu_app, name="rpu")

METRICS_HELP = "metrics of the exported model: comma-separated names, or 'default' (the cpu_study preset's list)"
NUM_POINTS_HELP = "their sample sizes (default: 1,000 for the default list, else the reference's)"


def _evaluation(metrics: str, num_points: Optional[int], option: list[str]) -> dict:
    """The final model's evaluation from the CLI's options (selection.pbt.final_evaluation)."""
    from untwine.evaluation import metric_names
    from untwine.evaluation.evaluate import parse_option
    from untwine.selection.pbt import final_evaluation
    from untwine.study.grid import CPU_STUDY

    names = None if metrics.strip() == "default" else metric_names(metrics)
    options: dict = {}
    for text in option:
        metric, key, value = parse_option(text, names or metric_names(CPU_STUDY.metrics))
        options.setdefault(metric, {})[key] = value
    return final_evaluation(names, num_points, options)


def _report(out: Path, evaluation: dict | None, extra: dict | None = None) -> None:
    """Evaluate what the exported model still lacks (unless `evaluation` is None), print the generations and
    write P/report.html."""
    from untwine.selection.pbt import evaluate_final, load_records
    from untwine.viz.pbt_report import GENERATION_HEADINGS, generation_table, write_pbt_report

    rows = [
        {k: round(v, 1) if k.endswith("_s") else v for k, v in r.items()} for r in generation_table(load_records(out))
    ]
    print_records(rows, GENERATION_HEADINGS, f"PBT {out}")
    if evaluation is not None and (out / "final" / "config.toml").exists():
        console.print(f"evaluating {out / 'final'} ({', '.join(evaluation['metrics'])}) ...")
        results = evaluate_final(out, evaluation)
        _print_final(results)
    path = write_pbt_report(out, extra)
    console.print(f"report: {path} (and {out / 'report.png'})")


def _print_final(results: dict) -> None:
    from untwine.metrics.headline import headline_table

    shown = []
    for row in headline_table(results):
        value = row.values.get(("trained", "mean"))
        if value is not None:
            shown.append(f"{row.label} {value:.3f}")
    export = results.get("pbt.export_fitness")
    if export is not None:
        shown.insert(0, f"fitness {results.get('pbt.fitness', float('nan')):.4f} (re-scored {export:.4f})")
    console.print("final model: " + "; ".join(shown), soft_wrap=True, highlight=False)


@pbt_app.command("run")
def pbt_run(
    out: Path = typer.Option(..., "--out", help="the run's directory (rerun the same command to resume)"),
    dataset: str = typer.Option("dsprites", help="data set name (untwine datasets list)"),
    data_dir: Optional[str] = typer.Option(None, help="where the data set's files are"),
    fitness: str = typer.Option("mig", help="mig (50,000 labels), mig:N (N labels), dci, dci:N, udr, udr:N"),
    population: int = typer.Option(56, help="members (the reference: 56)"),
    generations: int = typer.Option(17, help="rounds of training and scoring (the reference: max_epoch + 2)"),
    interval_samples: int = typer.Option(480_000, help="samples each member trains per round (ready interval)"),
    init_population_factor: int = typer.Option(1, help="2: keep the best half after the first round"),
    architecture: str = typer.Option("rpu_conv", help="rpu_conv (the rPU code's network), conv or fc"),
    latent_dim: int = typer.Option(10, help="latent dimensions"),
    models_per_member: Optional[int] = typer.Option(None, help="models per member (default: 5 for udr, else 1)"),
    kl_estimator: str = typer.Option("sample", help="objective's KL: sample (rPU/Chen code) or analytic"),
    kl_estimate: str = typer.Option("code", help="UDR fitness KL: code (rPU's |mean log sigma|) or correct"),
    seed: int = typer.Option(0, help="master seed (hyperparameters, initialisations, explorer)"),
    exploit: bool = typer.Option(True, "--exploit/--no-exploit", help="--no-exploit: random search, same compute"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (HOST:PORT or auto)"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all)"),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs per member"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    metrics: str = typer.Option("default", help=METRICS_HELP),
    num_points: Optional[int] = typer.Option(None, help=NUM_POINTS_HELP),
    option: list[str] = typer.Option([], "--option", help="metric.setting=value for the evaluation (repeatable)"),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="evaluate the exported model"),
) -> None:
    """Run (or resume) PBT-VAE; writes P/study.sqlite, P/best, P/final (a run directory: the best member over all
    rounds, re-scored at export, then evaluated with --metrics) and P/report.html."""
    from untwine.selection.pbt import PBTSettings, run_pbt

    settings = PBTSettings(
        fitness=fitness,
        population=population,
        generations=generations,
        interval_samples=interval_samples,
        init_population_factor=init_population_factor,
        dataset=dataset,
        data_dir=data_dir,
        architecture=architecture,
        latent_dim=latent_dim,
        models_per_member=models_per_member,
        kl_estimator=kl_estimator,
        kl_estimate=kl_estimate,
        seed=seed,
        device=device,
        exploit=exploit,
    )
    evaluation = _evaluation(metrics, num_points, option) if evaluate else None  # bad options: before training
    result = run_pbt(out, settings, address=address, num_cpus=num_cpus, cpus_per_trial=cpus_per_trial)
    best = result.best
    console.print(
        f"{out}: {result.generations} generations ({result.stop}); best member m{best.get('member')} of round "
        f"{best.get('round')}, fitness {best.get('fitness', float('nan')):.4f} -> {out / 'final'}; "
        f"{result.wall_s:.0f} s"
    )
    _report(out, evaluation)


@pbt_app.command("report")
def pbt_report(
    out: Path = typer.Argument(..., help="a PBT run directory"),
    metrics: str = typer.Option("default", help=METRICS_HELP),
    num_points: Optional[int] = typer.Option(None, help=NUM_POINTS_HELP),
    option: list[str] = typer.Option([], "--option", help="metric.setting=value for the evaluation (repeatable)"),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="evaluate what the exported model lacks"),
) -> None:
    """The per-generation table, and P/report.html + P/report.png: fitness, hyperparameters, lineage, wall and CPU
    time per generation, the exported model's scores (evaluated first where missing) and traversals."""
    from untwine.selection.pbt import load_records

    load_records(out)  # no run: a one-line error before any evaluation
    _report(out, _evaluation(metrics, num_points, option) if evaluate else None)


@rpu_app.command("run")
def rpu_run(
    out: Path = typer.Option(..., "--out", help="the run's directory (rerun the same command to resume)"),
    dataset: str = typer.Option("dsprites", help="data set name"),
    data_dir: Optional[str] = typer.Option(None, help="where the data set's files are"),
    population: int = typer.Option(56, help="members of each PBT-UDR run"),
    generations: int = typer.Option(30, help="cap on the rounds of the x-run and of each leaf level"),
    interval_samples: int = typer.Option(480_000, help="samples per round of the x-run"),
    leaf_interval_samples: Optional[int] = typer.Option(None, help="per round of leaf levels (max(10k, |D|))"),
    models_per_member: int = typer.Option(5, help="VAEs per member (UDR among them)"),
    leaf_runs: int = typer.Option(3, help="leaf runs (branches)"),
    levels: int = typer.Option(3, help="surrogate-label levels per leaf run"),
    final_population: int = typer.Option(56, help="members of the final PBT-S-VAE (halved after round 1)"),
    final_generations: int = typer.Option(17, help="rounds of the final PBT-S-VAE"),
    final_interval_samples: int = typer.Option(480_000, help="samples per round of the final PBT-S-VAE"),
    final_points: int = typer.Option(50_000, help="images per level for the surrogate-label MIG"),
    architecture: str = typer.Option("rpu_conv", help="rpu_conv, conv or fc"),
    failure_threshold: float = typer.Option(0.1, help="stop when the best UDR of a round is below this"),
    seed: int = typer.Option(0, help="master seed"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (HOST:PORT or auto)"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    metrics: str = typer.Option("default", help=METRICS_HELP),
    num_points: Optional[int] = typer.Option(None, help=NUM_POINTS_HELP),
    option: list[str] = typer.Option([], "--option", help="metric.setting=value for the evaluation (repeatable)"),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="evaluate the final model"),
) -> None:
    """Run (or resume) rPU-VAE: x-run, leaf runs, surrogate labels, final PBT-S-VAE (R/final/final), then
    R/report.html."""
    from untwine.selection.rpu import RPUSettings, run_rpu

    settings = RPUSettings(
        dataset=dataset,
        data_dir=data_dir,
        population=population,
        generations=generations,
        interval_samples=interval_samples,
        leaf_interval_samples=leaf_interval_samples,
        models_per_member=models_per_member,
        leaf_runs=leaf_runs,
        levels=levels,
        final_population=final_population,
        final_generations=final_generations,
        final_interval_samples=final_interval_samples,
        final_points=final_points,
        architecture=architecture,
        failure_threshold=failure_threshold,
        seed=seed,
        device=device,
    )
    evaluation = _evaluation(metrics, num_points, option) if evaluate else None
    summary = run_rpu(out, settings, address=address, num_cpus=num_cpus)
    _rpu_summary(out, summary, evaluation)


@rpu_app.command("report")
def rpu_report(
    out: Path = typer.Argument(..., help="an rPU-VAE run directory"),
    metrics: str = typer.Option("default", help=METRICS_HELP),
    num_points: Optional[int] = typer.Option(None, help=NUM_POINTS_HELP),
    option: list[str] = typer.Option([], "--option", help="metric.setting=value for the evaluation (repeatable)"),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="evaluate what the final model lacks"),
) -> None:
    """R/report.html: each level's labelled subset (size, true factors held fixed), each level's model's
    traversals, every PBT run's generations and times, the final model's scores and traversals."""
    from untwine.errors import InvalidInputError

    path = out / "rpu.json"
    if not path.exists():
        raise InvalidInputError(f"{out} holds no finished rPU-VAE run (no rpu.json)")
    _rpu_summary(out, json.loads(path.read_text()), _evaluation(metrics, num_points, option) if evaluate else None)


def _rpu_summary(out: Path, summary: dict, evaluation: dict | None) -> None:
    from untwine.selection.pbt import evaluate_final
    from untwine.viz.pbt_report import rpu_levels_table, rpu_run_rows, write_rpu_report

    rows = rpu_levels_table(summary)
    columns = {k: k for k in (rows[0] if rows else {"level": 0})}
    print_records(rows, columns, f"rPU-VAE {out}: labelled levels")
    runs, _ = rpu_run_rows(out)
    runs = [{k: round(v, 1) if isinstance(v, float) and k.endswith(" s") else v for k, v in r.items()} for r in runs]
    if runs:
        print_records(runs, {k: k for k in runs[0]}, f"rPU-VAE {out}: PBT runs")
    if evaluation is not None and (out / "final" / "final" / "config.toml").exists():
        console.print(f"evaluating {out / 'final' / 'final'} ({', '.join(evaluation['metrics'])}) ...")
        _print_final(evaluate_final(out / "final", evaluation))
    console.print(f"report: {write_rpu_report(out)}")
    console.print(f"{out}: {summary.get('stop')} in {summary.get('wall_s', 0):.0f} s")
