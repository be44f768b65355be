"""One trial of a study: train a unit of models (one model, or a stack of models that differ only in seed and
hyperparameters) and evaluate each; hand every finished model to `report`.

Everything a study does with untwine's training and evaluation API happens in this module (`Trainer`,
`StackTrainer`, `evaluate_run`, `RunDir`), so a change there touches one place. The trial is idempotent: a model
whose run directory holds a final checkpoint is not trained again, one whose results.json holds every requested
evaluation is not evaluated again, and an unfinished model resumes from its latest checkpoint. It runs without Ray;
the Ray Tune trainable (`runner.tune_trial`) only passes Tune's `report`.

`report` receives one dict per model: {"model_id", "status": "done" | "failed" | "aborted", "reason", "results",
"train_s", "eval_s", "resumed_from_step"}. "failed" is for good (diverged, bad data, a metric that cannot be
computed); "aborted" means the study cannot go on here (no space left on the device).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from untwine.config import TrainConfig
from untwine.errors import UntwineError
from untwine.runs import RunDir
from untwine.training.checkpoint import read_state

# Test hook, read by the driver and handed to every trial: "worker_kill_at_step=N" kills a trial's process (SIGKILL)
# the first time one of its models reaches step N; "driver_kill_before_store=N" / "driver_kill_after_store=N" kill
# the driver around storing its N-th model.
FAULT_ENV = "UNTWINE_STUDY_FAULT"
ABORT_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_trained(run: RunDir, steps: int) -> bool:
    """Whether the run holds a final checkpoint of at least `steps` steps."""
    final = run.checkpoints.final
    try:
        return (final / "state.json").exists() and int(read_state(final)["step"]) >= steps
    except UntwineError:
        return False


def latest_step(run: RunDir) -> int:
    """The step of the run's latest checkpoint (0 if it has none)."""
    latest = run.checkpoints.latest()
    if latest is None:
        return 0
    try:
        return int(read_state(latest)["step"])
    except UntwineError:
        return 0


def missing_evaluations(results: dict, evaluation: dict) -> dict[str, list[str]]:
    """representation -> the requested metrics results.json does not hold yet (`eval.<rep>.<metric>.elapsed_s`
    marks a finished evaluation: evaluate_run writes all of a call's keys at once)."""
    missing = {}
    per_rep = evaluation.get("per_representation") or {}
    for rep in evaluation["representations"]:
        wanted = per_rep.get(rep, evaluation["metrics"])
        names = [m for m in wanted if f"eval.{rep}.{m}.elapsed_s" not in results]
        if names:
            missing[rep] = names
    return missing


def missing_label_noise(results: dict, evaluation: dict) -> dict[int, list[str]]:
    """regime -> the metrics whose noisy-label score (mean representation, `eval.mean.<metric>_label_noise<r>.*`)
    results.json does not hold yet; empty unless the study asks for label noise."""
    noise = evaluation.get("label_noise") or {}
    missing = {}
    for regime in noise.get("regimes", []):
        names = [m for m in noise["metrics"] if f"eval.mean.{m}_label_noise{regime}.elapsed_s" not in results]
        if names:
            missing[int(regime)] = names
    return missing


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, UntwineError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _aborts(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ABORT_ERRNOS


def _fault_hook(run: RunDir, fault: str | None) -> Callable | None:
    """The test hook of `FAULT_ENV`: kill this process (SIGKILL) the first time training reaches step N."""
    if not fault or not fault.startswith("worker_kill_at_step="):
        return None
    at = int(fault.split("=", 1)[1])
    marker = run.path / ".fault-worker-killed"

    def hook(step: int, steps: int, values: dict) -> None:
        if step >= at and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def train_unit(members: list[tuple[TrainConfig, RunDir]], fault: str | None = None) -> tuple[dict[str, str], float]:
    """Train the members that are not trained yet (as one stack when there are several, else with Trainer);
    returns ({run path: failure reason} for members that failed, wall seconds)."""
    from untwine.training.stack_trainer import StackTrainer
    from untwine.training.trainer import Trainer

    todo = [(c, r) for c, r in members if not is_trained(r, c.steps)]
    failures: dict[str, str] = {}
    start = time.perf_counter()
    if len(todo) > 1:
        runs = [r for _, r in todo]
        try:
            trainer = StackTrainer([c for c, _ in todo], runs, progress=_fault_hook(runs[0], fault))
            trainer.train(resume=any(r.exists() for r in runs))
            todo = []
        except Exception as exc:
            if _aborts(exc):
                raise
            # members at different steps, one diverged, or another error: train them one by one below, so that
            # each member fails or succeeds on its own
    for config, run in todo:
        if is_trained(run, config.steps):
            continue
        try:
            Trainer(config, run, progress=_fault_hook(run, fault)).train(resume=run.exists() or latest_step(run) > 0)
        except Exception as exc:
            if _aborts(exc):
                raise
            failures[str(run.path)] = _reason(exc)
    return failures, time.perf_counter() - start


def evaluate_member(run: RunDir, evaluation: dict, device: str) -> tuple[dict, float]:
    """Evaluate what results.json still lacks; returns (the run's results, wall seconds)."""
    from untwine.evaluation import evaluate_run

    start = time.perf_counter()
    seed = evaluation.get("eval_seed", 0)
    for rep, names in missing_evaluations(run.read_results(), evaluation).items():
        options = {m: evaluation["options"][m] for m in names if m in evaluation["options"]}
        evaluate_run(run, names, [rep], options=options, device=device, eval_seed=seed)
    for regime, names in missing_label_noise(run.read_results(), evaluation).items():
        options = {m: {**evaluation["options"].get(m, {}), "label_noise": regime} for m in names}
        evaluate_run(run, names, ["mean"], options=options, device=device, eval_seed=seed)
    return run.read_results(), time.perf_counter() - start


def run_unit(
    unit: dict,
    evaluation: dict,
    study_dir: str | Path,
    report: Callable[[dict], None],
    device: str = "cpu",
    fault: str | None = None,
) -> None:
    """Train and evaluate the models of `unit` ({"models": [{"model_id", "config", "run_dir"}, ...]}, run_dir
    relative to `study_dir`) and `report` each one as it finishes."""
    members = []
    for model in unit["models"]:
        run = RunDir(Path(study_dir) / model["run_dir"])
        config = TrainConfig.build(**{**model["config"], "device": device})
        members.append((model["model_id"], config, run, None if is_trained(run, config.steps) else latest_step(run)))
    try:
        failures, train_s = train_unit([(c, r) for _, c, r, _ in members], fault)
    except Exception as exc:
        if not _aborts(exc):
            raise
        for model_id, *_ in members:
            report({"model_id": model_id, "status": "aborted", "reason": _reason(exc)})
        return
    per_model_train_s = train_s / max(1, len(members))
    for model_id, _, run, resumed in members:
        base = {"model_id": model_id, "train_s": per_model_train_s, "resumed_from_step": resumed}
        if str(run.path) in failures:
            report({**base, "status": "failed", "reason": failures[str(run.path)]})
            continue
        try:
            results, eval_s = evaluate_member(run, evaluation, device)
        except Exception as exc:
            status = "aborted" if _aborts(exc) else "failed"
            report({**base, "status": status, "reason": f"evaluation: {_reason(exc)}"})
            if status == "aborted":
                return
            continue
        report({**base, "status": "done", "results": results, "eval_s": eval_s})
