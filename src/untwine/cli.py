"""The `untwine` command line: a thin skin over the library (parse, call, print).

Every error a user can cause (a bad argument, a missing file, a diverged run) prints one line and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from untwine.config import parse_settings
from untwine.errors import UntwineError

app = typer.Typer(
    help="untwine: learn, evaluate and select disentangled representations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="List, inspect and render the ground-truth data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()
err_console = Console(stderr=True)


def _progress_bar(total: int, start: int, label: str):
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


def _train(config, out: Path, resume: bool) -> None:
    from untwine.training import Trainer

    trainer = Trainer(config, out)
    progress, update = _progress_bar(config.steps, 0, f"train {out.name}")
    trainer.progress = update
    with progress:
        summary = trainer.train(resume=resume)
    console.print(
        f"trained {summary['train.global_step']} steps in {summary['train.elapsed_s']:.0f} s -> {out}/checkpoints/final"
    )


def _config_from(config_file: Optional[Path], **overrides):
    from untwine.config import TrainConfig

    base = TrainConfig.read(config_file).model_dump() if config_file else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.build(**base)


def _numbers(text: Optional[str], name: str, kind=float) -> list:
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


SWEEPABLE = ("beta", "gamma", "c_max", "iteration_threshold", "lambda_od", "lambda_d_factor")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", "-o", help="run directory (several models: a folder of run directories)"),
    method: Optional[str] = typer.Option(
        None, help="vae, beta_vae, annealed_vae, factor_vae, beta_tcvae, dip_vae_i, dip_vae_ii"
    ),
    preset: Optional[str] = typer.Option(None, help="a study grid, e.g. unsupervised_study_v1 (with --value-index)"),
    value_index: Optional[int] = typer.Option(None, help="with --preset: index of the method's swept value (0-5)"),
    beta: Optional[str] = typer.Option(None, help="beta-VAE KL weight / beta-TCVAE TC weight; a list trains several"),
    gamma: Optional[str] = typer.Option(None, help="FactorVAE TC weight / AnnealedVAE |KL - C| weight"),
    c_max: Optional[str] = typer.Option(None, help="AnnealedVAE final capacity"),
    iteration_threshold: Optional[str] = typer.Option(None, help="AnnealedVAE capacity ramp length in steps"),
    lambda_od: Optional[str] = typer.Option(None, help="DIP-VAE off-diagonal weight"),
    lambda_d_factor: Optional[str] = typer.Option(None, help="DIP-VAE diagonal weight / lambda_od"),
    tc_estimator: Optional[str] = typer.Option(None, help="beta-TCVAE: reference (default), mws or mss"),
    double_count_steps: Optional[bool] = typer.Option(
        None, "--double-count-steps/--single-count-steps", help="FactorVAE: 2 steps per iteration as the reference"
    ),
    dataset: Optional[str] = typer.Option(None, help="data set name (see `untwine datasets list`)"),
    dataset_option: Optional[list[str]] = typer.Option(
        None, "--dataset-option", help="the data set's own setting, KEY=VALUE (repeatable): object_order=listing"
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA", help="where data files live"),
    steps: Optional[int] = typer.Option(None, help="training steps (reference: 300000)"),
    seed: Optional[int] = typer.Option(None, help="random seed of the run"),
    seeds: Optional[str] = typer.Option(None, help="several seeds, e.g. 0-4 or 0,3,7 (one run each)"),
    batch_size: Optional[int] = typer.Option(None, help="batch size (reference: 64)"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (reference: 1e-4)"),
    latent_dim: Optional[int] = typer.Option(None, help="latent dimensions (reference: 10)"),
    architecture: Optional[str] = typer.Option(None, help="conv (reference) or fc"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda"),
    log_every: Optional[int] = typer.Option(None, help="log every N steps"),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint every N steps"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with a run config; flags override it"),
    resume: bool = typer.Option(False, "--resume", help="continue the run(s) in --out from the last checkpoint"),
    stack_size: Optional[int] = typer.Option(
        None, help="several runs: train up to N at once as one ModelStack (default: all; 1: one at a time)"
    ),
) -> None:
    """Train one model, or every combination of listed hyperparameter values and seeds, into run directories.

    Several runs of one method are trained together as a ModelStack (each is still its own run directory);
    FactorVAE runs are trained one after another."""
    from untwine.runs import RunDir
    from untwine.study.grid import run_name, study_config

    sweeps = {
        name: _numbers(value, name, int if name == "iteration_threshold" else float)
        for name, value in dict(
            beta=beta,
            gamma=gamma,
            c_max=c_max,
            iteration_threshold=iteration_threshold,
            lambda_od=lambda_od,
            lambda_d_factor=lambda_d_factor,
        ).items()
    }
    seed_list = _numbers(seeds, "seeds", int) + ([seed] if seed is not None else [])
    base = dict(
        method=method,
        dataset=dataset,
        dataset_options=parse_settings(dataset_option, "--dataset-option") or None,
        data_dir=str(data_dir) if data_dir else None,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        latent_dim=latent_dim,
        tc_estimator=tc_estimator,
        double_count_steps=double_count_steps,
        architecture=architecture,
        device=device,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
    )
    if preset is not None:
        if method is None or value_index is None:
            raise typer.BadParameter("--preset needs --method and --value-index")
        if any(sweeps.values()):
            raise typer.BadParameter("--preset fixes the hyperparameters; drop --beta/--gamma/...")
        grid_values = study_config(preset, method, value_index, seed_list[0] if seed_list else 0, dataset or "dsprites")
        base = {**grid_values, **{k: v for k, v in base.items() if v is not None and k != "method"}}
    elif value_index is not None:
        raise typer.BadParameter("--value-index needs --preset")
    combos = [{}]
    for name, values in sweeps.items():
        if values:
            combos = [{**c, name: v} for c in combos for v in values]
    combos = [{**c, "seed": s} for c in combos for s in (seed_list or [None])]
    if len(combos) == 1:
        run = RunDir(out)
        config_path = config_file
        if resume and run.exists() and config_file is None:
            config_path = run.config_path  # resume the stored config; flags (e.g. --steps) may extend it
        _train(_config_from(config_path, **{**base, **combos[0]}), out, resume)
        return
    configs = [_config_from(config_file, **{**base, **combo}) for combo in combos]
    names = [run_name(config) for config in configs]
    if stack_size is not None and stack_size < 1:
        raise typer.BadParameter("--stack-size must be at least 1")
    size = 1 if configs[0].method == "factor_vae" else (stack_size or len(configs))
    console.print(
        f"{len(configs)} runs into {out}/ ({'stacks of up to ' + str(size) if size > 1 else 'one at a time'})"
    )
    pending = []
    for config, name in zip(configs, names):
        if resume and RunDir(out / name).checkpoints.final.exists():
            console.print(f"{name}: already trained")
        else:
            pending.append((config, out / name))
    for start in range(0, len(pending), size):
        group = pending[start : start + size]
        again = resume and any(RunDir(target).exists() for _, target in group)
        if len(group) == 1:
            _train(group[0][0], group[0][1], again)
        else:
            _train_stack([c for c, _ in group], [t for _, t in group], again)


def _train_stack(configs, targets, resume: bool) -> None:
    from untwine.training.stack_trainer import StackTrainer

    trainer = StackTrainer(configs, targets)
    progress, update = _progress_bar(configs[0].steps, 0, f"train stack of {len(configs)}")
    trainer.progress = update
    with progress:
        summaries = trainer.train(resume=resume)
    console.print(
        f"trained {len(configs)} runs x {summaries[0]['train.global_step']} steps in "
        f"{summaries[0]['train.elapsed_s']:.0f} s -> {', '.join(str(t) for t in targets)}"
    )


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
    from untwine.evaluation import evaluate_run, metric_names
    from untwine.evaluation.evaluate import parse_option, scaled_options

    names = metric_names(metrics)
    reps = [r.strip() for r in representation.split(",") if r.strip()]
    options = {name: scaled_options(name, num_points) for name in names} if num_points else {}
    for text in option:
        metric, key, value = parse_option(text, names)
        options.setdefault(metric, {})[key] = value
    results = evaluate_run(run, names, reps, options=options, device=device)
    if untrained:
        results.update(evaluate_run(run, names, reps, untrained=True, options=options, device=device))
    _print_results(results)


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

    path = write_report(RunDir(run).require(), regenerate_figures=regenerate)
    console.print(f"report: {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="run directory"),
    steps: int = typer.Option(3000, help="training steps (the reference trains 300000)"),
    beta: float = typer.Option(16.0, help="KL weight of the beta-VAE (16 is the reference grid's largest)"),
    learning_rate: float = typer.Option(
        5e-4, "--lr", help="Adam learning rate (reference 1e-4; 5e-4 for a short demo)"
    ),
    seed: int = typer.Option(0, help="random seed"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="UNTWINE_DATA", help="where data files live"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted demo run"),
    eval_points: int = typer.Option(10_000, help="points for MIG (the reference uses 10000)"),
) -> None:
    """The main job: train a beta-VAE on dSprites (rendered offline), evaluate it, write report.html."""
    from untwine.evaluation import evaluate_run
    from untwine.runs import RunDir
    from untwine.viz.report import write_report

    config = _config_from(
        None,
        method="beta_vae",
        beta=beta,
        dataset="dsprites",
        data_dir=str(data_dir) if data_dir else None,
        steps=steps,
        seed=seed,
        device=device,
        checkpoint_every=500,
        learning_rate=learning_rate,
    )
    run = RunDir(out)
    if run.checkpoints.final.exists() and not resume:
        console.print(f"{out} already holds a finished run; evaluating it again (use another --out for a new one)")
    else:
        _train(config, out, resume)
    console.print(f"evaluating MIG ({eval_points} points, mean and sampled) of the trained and the untrained network")
    options = {"mig": {"num_train": eval_points}}
    results = evaluate_run(out, ["mig"], options=options, device=device)
    results.update(evaluate_run(out, ["mig"], untrained=True, options=options, device=device))
    path = write_report(run, regenerate_figures=True)
    table = Table(title=f"MIG on {config.dataset} ({steps} steps, beta={beta:g}, lr={learning_rate:g})")
    for column in ("representation", "untrained", "trained"):
        table.add_column(column, justify="right")
    for rep in ("mean", "sampled"):
        key = f"eval.{rep}.mig.discrete_mig"
        table.add_row(rep, f"{results['untrained.' + key]:.4f}", f"{results[key]:.4f}")
    console.print(table)
    console.print(f"report: {path.resolve()}")


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every user error into one line on stderr and exit status 2."""
    try:
        result = app(args=argv, prog_name="untwine", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except UntwineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # Typer/Click usage errors
            if not exc.format_message():  # a group called without a command: its help was printed
                return 0
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
            return exc.exit_code or 2
        raise


if __name__ == "__main__":
    sys.exit(main())
