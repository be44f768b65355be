"""`untwine study run | status | analyze | export | import | presets`: studies of many models on Ray Tune."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from untwine.cli.app import app, console
from untwine.cli.common import numbers

study_app = typer.Typer(
    help="Studies: many models (methods x hyperparameters x seeds x data sets) trained, evaluated and analysed.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")

HEADLINES = (
    ("eval.mean.mig.discrete_mig", "MIG"),
    ("eval.mean.dci.disentanglement", "DCI"),
    ("eval.mean.factor_vae.eval_accuracy", "FactorVAE"),
    ("eval.mean.beta_vae.eval_accuracy", "BetaVAE"),
    ("eval.mean.sap.SAP_score", "SAP"),
    ("eval.mean.unsupervised.gaussian_total_correlation", "TC(mean)"),
)


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [part.strip() for part in text.split(",") if part.strip()] if text is not None else None


def _describe(model: dict) -> str:
    value, axes = model.get("value"), [a for a in (model.get("hyperparameter") or "").split(",") if a]
    config = model.get("config")
    config = json.loads(config) if isinstance(config, str) else config or {}
    if len(axes) > 1 and all(isinstance(config.get(a), (int, float)) for a in axes):  # a TOML grid of several axes
        setting = " ".join(f"{a}={config[a]:g}" for a in axes)
    else:
        setting = f"{axes[0]}={value:g}" if axes and isinstance(value, (int, float)) else ""
    return " ".join(p for p in (model["method"], setting, f"seed {model['seed']}", model["dataset"]) if p)


class _Console:
    """StudyEvents on the terminal: one overall progress bar, one line per finished model."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("[bold]study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("models"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = None
        self.done = 0
        self.total = 0

    def started(self, pending: int, counts: dict) -> None:
        self.total = pending
        console.print(
            f"{pending} models to train and evaluate ({counts['done']} done, {counts['failed']} failed before)"
        )
        self.progress.start()
        self.task = self.progress.add_task("study", total=pending)

    def finished(self, model: dict, status: str, reason, results: dict, counts: dict) -> None:
        self.done += 1
        self.progress.update(self.task, completed=self.done)
        head = f"[{self.done}/{self.total}] {model['model_id']} {_describe(model)}"
        if status == "done":
            scores = ", ".join(f"{label} {results[k]:.3f}" for k, label in HEADLINES if _number(results.get(k)))
            train, evaluate = results.get("train.elapsed_s"), None
            timing = f"train {train:.0f} s" if _number(train) else ""
            elapsed = [v for k, v in results.items() if k.startswith("eval.") and k.endswith(".elapsed_s")]
            evaluate = sum(v for v in elapsed if _number(v))
            timing += f", eval {evaluate:.0f} s" if elapsed else ""
            console.print(f"{head}: done  {scores}  ({timing})", soft_wrap=True)
        else:
            console.print(f"{head}: [red]failed[/red]: {reason}", soft_wrap=True)

    def message(self, text: str) -> None:
        console.print(text)

    def stopped(self) -> None:
        self.progress.stop()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@study_app.command("run")
def run(
    out: Path = typer.Option(..., "--out", "-o", help="study directory (created if new)"),
    preset: Optional[str] = typer.Option(None, help="a study preset: unsupervised_study_v1, cpu_study"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a TOML grid (any TrainConfig field a list)"),
    datasets: Optional[str] = typer.Option(None, help="only these data sets (comma-separated)"),
    methods: Optional[str] = typer.Option(None, help="only these methods (comma-separated)"),
    value_indices: Optional[str] = typer.Option(None, help="only these indices of each method's values, e.g. 0,3"),
    seeds: Optional[str] = typer.Option(None, help="only these seeds, e.g. 0-4 or 0,3"),
    steps: Optional[int] = typer.Option(None, help="training steps of every model (preset only)"),
    setting: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE: a TrainConfig value for every model (preset only; repeatable)"
    ),
    metrics: Optional[str] = typer.Option(None, help="metrics (comma-separated) or all; default: the study's"),
    sampled_metrics: Optional[str] = typer.Option(
        None, help="the metrics also run on the sampled representation (default: all of them)"
    ),
    num_points: Optional[int] = typer.Option(None, help="shrink every metric's sample sizes to this"),
    option: list[str] = typer.Option([], "--option", help="metric.setting=value (repeatable)"),
    label_noise: Optional[str] = typer.Option(
        None, help="also score with noisy labels, Holtz et al.'s regimes (e.g. 1,2,3), mean representation"
    ),
    label_noise_metrics: Optional[str] = typer.Option(
        None, help="the metrics scored with noisy labels (default: every metric but unsupervised)"
    ),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster: HOST:PORT or auto (default: local)"),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs each model's trial asks for (its torch threads)"),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs each trial asks for; fractional shares a GPU"),
    cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all cores)"),
    stack_size: int = typer.Option(
        1, help="train up to N models that differ only in seed/hyperparameters as one stack"
    ),
    max_failures: int = typer.Option(2, help="retries of a trial whose worker died (from its checkpoints)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="also rerun models stored as failed"),
    ray_temp_dir: Optional[Path] = typer.Option(None, help="Ray's temporary files (default: $TMPDIR/untwine-ray)"),
) -> None:
    """Train and evaluate every model of a study that is not done yet; rerun the same command to resume."""
    from untwine.config import parse_settings
    from untwine.study.definition import preset_study, toml_study
    from untwine.study.runner import RunOptions, run_study

    if (preset is None) == (config_file is None):
        raise typer.BadParameter("give exactly one of --preset and --config")
    filters = dict(
        datasets=_names(datasets),
        methods=_names(methods),
        value_indices=numbers(value_indices, "value_indices", int) if value_indices else None,
        seeds=numbers(seeds, "seeds", int) if seeds else None,
        metrics=metrics,
        num_points=num_points,
        options=option or None,
        sampled_metrics=sampled_metrics,
        label_noise=numbers(label_noise, "label_noise", int) if label_noise else None,
        label_noise_metrics=label_noise_metrics,
    )
    if preset is not None:
        settings = parse_settings(setting, "--set")
        definition = preset_study(preset, steps=steps, settings=settings, **filters)
    else:
        if steps is not None or setting:
            raise typer.BadParameter("--steps and --set belong in the TOML grid with --config")
        definition = toml_study(config_file, **filters)
    per_rep = definition.evaluation["per_representation"]
    scored = "; ".join(f"{rep}: {', '.join(names)}" for rep, names in per_rep.items())
    console.print(
        f"study {definition.name}: {len(definition.models)} models -> {out} (metrics {scored})", soft_wrap=True
    )
    events = _Console()
    try:
        summary = run_study(
            definition,
            out,
            RunOptions(
                address=address,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                num_cpus=cpus,
                max_failures=max_failures,
                stack_size=stack_size,
                retry_failed=retry_failed,
                temp_dir=ray_temp_dir,
            ),
            events,
        )
    finally:
        events.stopped()
    counts = summary.counts
    if summary.scheduled:
        console.print(
            f"stored {summary.stored} models, {summary.failed} failed, in {summary.wall_s:.0f} s "
            f"(Ray start-up {summary.ray_start_s:.1f} s); the study now has {counts['done']} done, "
            f"{counts['failed']} failed, {counts['pending']} pending -> untwine study analyze {out}"
        )


def study_status(study_dir: Path) -> dict:
    """Counts, the driver, an ETA and the failures of the study in `study_dir` (what `status` prints)."""
    from untwine.study.studydir import StudyDir

    study = StudyDir(study_dir)
    with study.store() as store:
        models = store.models()
        description = store.meta("study") or {}
    driver = study.driver_pid()
    counts = {s: 0 for s in ("done", "running", "failed", "pending")}
    for model in models:
        status = model["status"]
        if status == "running" and driver is None:
            status = "pending"  # left over from a driver that stopped
        counts[status] += 1
    durations = sorted(
        m["finished_at"] - m["started_at"]
        for m in models
        if m["status"] == "done" and m["finished_at"] and m["started_at"] and m["finished_at"] >= m["started_at"]
    )
    eta = None
    if driver is not None and durations:
        concurrency = max(1, counts["running"])
        mean = sum(durations) / len(durations)
        eta = mean * (counts["pending"] + counts["running"] / 2) / concurrency
    return {
        "study": str(study.path),
        "name": description.get("name"),
        "kind": description.get("kind"),
        "models": len(models),
        "counts": counts,
        "driver_pid": driver,
        "mean_model_s": sum(durations) / len(durations) if durations else None,
        "eta_s": eta,
        "failed": [
            {"model_id": m["model_id"], "model": _describe(m), "reason": m["reason"]}
            for m in models
            if m["status"] == "failed"
        ],
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@study_app.command("status")
def status(
    study_dir: Path = typer.Argument(..., help="study directory"),
    as_json: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Done / running / failed / pending models of a study, and an estimate of the time left."""
    info = study_status(study_dir)
    if as_json:
        print(json.dumps(info, indent=1))
        return
    counts = info["counts"]
    console.print(
        f"study {info['name']} ({info['kind']}) in {info['study']}: {info['models']} models: {counts['done']} done, "
        f"{counts['running']} running, {counts['failed']} failed, {counts['pending']} pending",
        soft_wrap=True,
    )
    if info["driver_pid"] is not None:
        eta = f"; about {_duration(info['eta_s'])} left" if info["eta_s"] is not None else ""
        console.print(f"running (driver pid {info['driver_pid']}){eta}")
    elif counts["pending"]:
        console.print("not running: `untwine study run` with the same arguments continues it")
    if info["mean_model_s"] is not None:
        console.print(f"a model takes {_duration(info['mean_model_s'])} on average (training + evaluation)")
    for failure in info["failed"][:20]:
        console.print(f"failed {failure['model_id']} {failure['model']}: {failure['reason']}", soft_wrap=True)
    if len(info["failed"]) > 20:
        console.print(f"... and {len(info['failed']) - 20} more failed (see --json)")


@study_app.command("analyze")
def analyze(study_dir: Path = typer.Argument(..., help="study directory")) -> None:
    """The papers' analyses of the study: S/report.html (self-contained), S/figures/*.png, S/tables/*.csv."""
    from untwine.viz.study_report import write_study_report

    path = write_study_report(study_dir)
    console.print(f"report: {path.resolve()}")


@study_app.command("export")
def export(
    study_dir: Path = typer.Argument(..., help="study directory"),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, parquet or dislib-json"),
    out: Path = typer.Option(..., "--out", "-o", help="the file to write"),
) -> None:
    """Write the study's results as a table: csv/parquet (one row per model) or disentanglement_lib's JSON."""
    from untwine.study.exchange import export_study

    rows = export_study(study_dir, fmt, out)
    console.print(f"wrote {rows} rows ({fmt}) -> {out}")


@study_app.command("import")
def import_(
    source: Path = typer.Argument(..., help="a csv/parquet export, or disentanglement_lib's aggregated JSON"),
    out: Path = typer.Option(..., "--out", "-o", help="the new study directory"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv, parquet or dislib-json (default: by suffix)"),
) -> None:
    """Create a study from exported results, so that `untwine study analyze` runs on them."""
    from untwine.study.exchange import import_study

    count = import_study(source, out, fmt)
    console.print(f"imported {count} models -> {out} (untwine study analyze {out})")


@study_app.command("presets")
def presets() -> None:
    """The study presets and their sizes."""
    from untwine.study.grid import PRESETS

    for grid in PRESETS.values():
        sweeps = ", ".join(f"{s.method} {s.hyperparameter} {'/'.join(f'{v:g}' for v in s.values)}" for s in grid.sweeps)
        default = ""
        if grid.default_seeds is not None:
            count = grid.num_models // grid.num_seeds * len(grid.default_seeds)
            default = f" ({count} with the default seeds {', '.join(map(str, grid.default_seeds))})"
        console.print(
            f"{grid.name}: {grid.num_models} models{default} = {len(grid.datasets)} data sets "
            f"({', '.join(grid.datasets)}) x [{sweeps}] x {grid.num_seeds} seeds; {grid.steps} steps; metrics "
            f"{', '.join(grid.metrics)} on {grid.num_points or 'the reference numbers of'} points. {grid.description}",
            soft_wrap=True,
            markup=False,
        )
