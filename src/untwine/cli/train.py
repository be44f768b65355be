"""`untwine train` and `untwine demo`: train one model or a sweep into run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from untwine.cli.app import app, console
from untwine.cli.common import config_from, numbers, progress_bar, train_run
from untwine.config import parse_settings
from untwine.nn.stack import stackable

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
    architecture: Optional[str] = typer.Option(None, help="conv (reference), fc, rpu_conv (rPU-VAE's net)"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda"),
    log_every: Optional[int] = typer.Option(None, help="log every N steps"),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint every N steps"),
    trace_every: Optional[int] = typer.Option(
        None, help="record the decoder's activations on fixed observations every N steps (training-dynamics score)"
    ),
    trace_samples: Optional[int] = typer.Option(None, help="observations traced (default 100)"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with a run config; flags override it"),
    resume: bool = typer.Option(False, "--resume", help="continue the run(s) in --out from the last checkpoint"),
    stack_size: Optional[int] = typer.Option(
        None, help="several runs: train up to N at once as one ModelStack (default: all; 1: one at a time)"
    ),
) -> None:
    """Train one model, or every combination of listed hyperparameter values and seeds, into run directories.

    Several runs of one method are trained together as a ModelStack (each is still its own run directory);
    FactorVAE runs and traced runs (--trace-every) are trained one after another."""
    from untwine.runs import RunDir
    from untwine.study.grid import run_name, study_config

    sweeps = {
        name: numbers(value, name, int if name == "iteration_threshold" else float)
        for name, value in dict(
            beta=beta,
            gamma=gamma,
            c_max=c_max,
            iteration_threshold=iteration_threshold,
            lambda_od=lambda_od,
            lambda_d_factor=lambda_d_factor,
        ).items()
    }
    if seed is not None and seeds is not None:
        raise typer.BadParameter("give --seed or --seeds, not both")
    seed_list = numbers(seeds, "seeds", int) + ([seed] if seed is not None else [])
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
        trace_every=trace_every,
        trace_samples=trace_samples,
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
        train_run(config_from(config_path, **{**base, **combos[0]}), out, resume)
        return
    configs = [config_from(config_file, **{**base, **combo}) for combo in combos]
    names = [run_name(config) for config in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise typer.BadParameter(f"the sweep lists run {twice[0]} twice (a repeated seed or value); list each once")
    if stack_size is not None and stack_size < 1:
        raise typer.BadParameter("--stack-size must be at least 1")
    if resume and not any(RunDir(out / name).exists() for name in names):
        raise typer.BadParameter(f"{out} holds none of these runs to resume; drop --resume to start them")
    one_at_a_time = (
        configs[0].method == "factor_vae" or configs[0].trace_every or not stackable(configs[0].architecture)
    )
    size = 1 if one_at_a_time else (stack_size or len(configs))
    console.print(
        f"{len(configs)} runs into {out}/ ({'stacks of up to ' + str(size) if size > 1 else 'one at a time'})"
    )
    # the groups are the same on every call, so a resumed stack has the members it was started with
    pending = [(config, out / name) for config, name in zip(configs, names)]
    for start in range(0, len(pending), size):
        group = pending[start : start + size]
        again = resume and any(RunDir(target).exists() for _, target in group)
        if len(group) == 1:
            train_run(group[0][0], group[0][1], again)
        else:
            _train_stack([c for c, _ in group], [t for _, t in group], again)


def _train_stack(configs, targets, resume: bool) -> None:
    from untwine.training.stack_trainer import StackTrainer

    trainer = StackTrainer(configs, targets)
    progress, update = progress_bar(configs[0].steps, 0, f"train stack of {len(configs)}")
    trainer.progress = update
    with progress:
        summaries = trainer.train(resume=resume)
    if all(m.already_finished for m in trainer.members):
        console.print(f"{', '.join(str(t) for t in targets)}: already finished at step {trainer.step}")
        return
    console.print(
        f"trained {len(configs)} runs x {summaries[0]['train.global_step']} steps in "
        f"{summaries[0]['train.elapsed_s']:.0f} s -> {', '.join(str(t) for t in targets)}"
    )


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
    from untwine.training.trainer import resolve_device
    from untwine.viz.report import write_report

    if eval_points < 2:
        raise typer.BadParameter(f"--eval-points must be at least 2, got {eval_points}")
    resolve_device(device)

    config = config_from(
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
        train_run(config, out, resume)
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
