"""The failure corpus: every way a user can make a command fail (issue 10's list and more) prints exactly one line
`error: ...` on stderr, no traceback, exits with status 2, and leaves what was stored before untouched.

Each case returns the argv to run; cases that work on a trained run get their own copy of it, whose files are
compared byte for byte before and after the command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from forks import lock_held_elsewhere

from untwine.cli import main
from untwine.config import TrainConfig
from untwine.training import Trainer

CASES = {}


def case(fragment: str, needs: str | None = None):
    """Register a corpus case: `fragment` must appear in the error line; `needs` names a requirement (skip)."""

    def register(fn):
        CASES[fn.__name__] = (fn, fragment, needs)
        return fn

    return register


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, dsprites):
    path = tmp_path_factory.mktemp("corpus") / "run"
    config = TrainConfig(steps=4, batch_size=4, log_every=2, checkpoint_every=2, seed=3)
    Trainer(config, path, dataset=dsprites).train()
    return path


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (the lock file aside) with its bytes."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@contextlib.contextmanager
def read_only(path: Path):
    """`path` as a read-only mount (as root: a read-only bind mount; otherwise: no write permission)."""
    if os.geteuid() != 0:
        folders = [path, *(p for p in path.rglob("*") if p.is_dir())]
        for folder in folders:
            folder.chmod(0o555)
        try:
            yield path
        finally:
            for folder in folders:
                folder.chmod(0o755)
        return
    target = path.with_name(path.name + "-ro")
    target.mkdir()
    bind = subprocess.run(["mount", "--bind", str(path), str(target)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {bind.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", "--lazy", str(target)], capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m"):
    """A tmpfs of `size` at `path` (root only): room for a config and a log, not for a checkpoint."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


# --- train: where the run goes -------------------------------------------------------------------------------


@case("exists and is a file")
def train_out_is_a_file(ctx):
    (ctx.tmp / "file").write_text("x")
    return ["train", "--out", str(ctx.tmp / "file"), "--steps", "2"]


@case("is a file, not a directory")
def train_out_under_a_file(ctx):
    (ctx.tmp / "file").write_text("x")
    return ["train", "--out", str(ctx.tmp / "file" / "run"), "--steps", "2"]


@case("cannot create /proc/untwine-corpus")
def train_out_under_proc(ctx):
    return ["train", "--out", "/proc/untwine-corpus/run", "--steps", "2"]


@case("Read-only file system")
def train_out_on_read_only_mount(ctx):
    (ctx.tmp / "volume").mkdir()
    mount = ctx.enter(read_only(ctx.tmp / "volume"))
    return ["train", "--out", str(mount / "run"), "--steps", "2"]


@case("No space left on device")
def train_out_on_full_disk(ctx):
    disk = ctx.enter(small_disk(ctx.tmp / "disk"))
    return ["train", "--out", str(disk / "run"), "--steps", "4", "--checkpoint-every", "2", "--batch-size", "4"]


@case("is not empty but holds no run")
def train_into_a_foreign_directory(ctx):
    (ctx.tmp / "photos").mkdir()
    (ctx.tmp / "photos" / "cat.jpg").write_bytes(b"...")
    ctx.keep(ctx.tmp / "photos")
    return ["train", "--out", str(ctx.tmp / "photos"), "--steps", "2"]


@case("already holds a run: use --resume")
def train_over_a_run(ctx):
    return ["train", "--out", str(ctx.run()), "--steps", "4"]


# --- train: resume --------------------------------------------------------------------------------------------


@case("a run is never shrunk")
def resume_with_fewer_steps(ctx):
    return ["train", "--out", str(ctx.run()), "--resume", "--steps", "2"]


@case("holds no run to resume")
def resume_a_missing_run(ctx):
    return ["train", "--out", str(ctx.tmp / "nothing"), "--resume", "--steps", "2"]


@case("holds a run with a different config (beta)")
def resume_with_another_config(ctx):
    return ["train", "--out", str(ctx.run()), "--resume", "--beta", "2"]


@case("no intact checkpoint to resume from")
def resume_when_every_checkpoint_is_damaged(ctx):
    import json

    run = ctx.run(keep=False)
    for step in run.glob("checkpoints/step-*"):
        shutil.rmtree(step)
    state = run / "checkpoints" / "final" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "optimizers"}))
    ctx.keep(run)
    return ["train", "--out", str(run), "--resume", "--steps", "6"]


@case("holds none of these runs to resume")
def resume_a_sweep_that_never_started(ctx):
    return ["train", "--out", str(ctx.tmp / "sweep"), "--seeds", "0-1", "--resume", "--steps", "2"]


@case("is in use by pid")
def train_a_run_in_use(ctx):
    run = ctx.run()
    ctx.enter(lock_held_elsewhere(run))
    return ["train", "--out", str(run), "--resume", "--steps", "6"]


# --- train and demo: arguments --------------------------------------------------------------------------------


@case("unknown device 'tpu'")
def train_on_tpu(ctx):
    return ["train", "--out", str(ctx.tmp / "r"), "--steps", "2", "--device", "tpu"]


@case("unknown device 'tpu'")
def demo_on_tpu(ctx):
    return ["demo", "--out", str(ctx.tmp / "d"), "--steps", "2", "--device", "tpu"]


@case("--eval-points must be at least 2")
def demo_with_negative_eval_points(ctx):
    ctx.absent(ctx.tmp / "d")  # refused before training
    return ["demo", "--out", str(ctx.tmp / "d"), "--steps", "2", "--eval-points", "-5"]


@case("lists run beta_vae-beta1-seed1 twice")
def train_a_repeated_seed(ctx):
    return ["train", "--out", str(ctx.tmp / "s"), "--seeds", "1,1", "--steps", "2"]


@case("give --seed or --seeds, not both")
def train_seed_and_seeds(ctx):
    return ["train", "--out", str(ctx.tmp / "s"), "--seed", "5", "--seeds", "0-1", "--steps", "2"]


@case("--stack-size must be at least 1")
def train_a_stack_of_zero(ctx):
    return ["train", "--out", str(ctx.tmp / "s"), "--seeds", "0-1", "--stack-size", "0", "--steps", "2"]


@case("no config at")
def train_with_a_missing_config_file(ctx):
    return ["train", "--out", str(ctx.tmp / "r"), "--config", str(ctx.tmp / "none.toml")]


@case("is not valid TOML")
def train_with_a_garbled_config_file(ctx):
    (ctx.tmp / "bad.toml").write_text("steps = = 3\n")
    return ["train", "--out", str(ctx.tmp / "r"), "--config", str(ctx.tmp / "bad.toml")]


@case("is not a readable .mat file")
def train_on_a_garbage_cars3d_file(ctx):
    (ctx.tmp / "data" / "cars").mkdir(parents=True)
    (ctx.tmp / "data" / "cars" / "car.mat").write_bytes(b"garbage")
    return ["train", "--out", str(ctx.tmp / "r"), "--dataset", "cars3d", "--data-dir", str(ctx.tmp / "data")]


# --- evaluate and report --------------------------------------------------------------------------------------


@case("unknown device 'tpu'")
def evaluate_on_tpu(ctx):
    return ["evaluate", str(ctx.run()), "--device", "tpu"]


@case("CUDA is not available", needs="no_cuda")
def evaluate_on_missing_cuda(ctx):
    return ["evaluate", str(ctx.run()), "--device", "cuda"]


@case("expected an integer")
def evaluate_with_a_word_for_a_number(ctx):
    return ["evaluate", str(ctx.run()), "--option", "mig.num_bins=abc"]


@case("expected true or false")
def evaluate_with_a_word_for_a_flag(ctx):
    return ["evaluate", str(ctx.run()), "--metrics", "sap", "--option", "sap.continuous_factors=maybe"]


@case("num_points must be at least 2")
def evaluate_with_zero_points(ctx):
    return ["evaluate", str(ctx.run()), "--num-points", "0"]


@case("unknown representation 'median'")
def evaluate_an_unknown_representation(ctx):
    return ["evaluate", str(ctx.run()), "--representation", "median", "--num-points", "100"]


@case("holds a JSON list, not an object")
def evaluate_with_a_results_list(ctx):
    run = ctx.run(keep=False)
    (run / "results.json").write_text("[1, 2]")
    ctx.keep(run)
    return ["evaluate", str(run), "--num-points", "100"]


@case("holds a JSON list, not an object")
def report_with_a_results_list(ctx):
    run = ctx.run(keep=False)
    (run / "results.json").write_text("[1, 2]")
    ctx.keep(run)
    return ["report", str(run)]


@case("has no final checkpoint")
def evaluate_an_unfinished_run(ctx):
    run = ctx.run(keep=False)
    shutil.rmtree(run / "checkpoints" / "final")
    ctx.keep(run)
    return ["evaluate", str(run), "--num-points", "100"]


@case("Read-only file system")
def evaluate_a_read_only_run(ctx):
    mount = ctx.enter(read_only(ctx.run().parent))
    return ["evaluate", str(mount / "run"), "--num-points", "100"]


@case("is in use by pid")
def evaluate_a_run_in_use(ctx):
    run = ctx.run()
    ctx.enter(lock_held_elsewhere(run))
    return ["evaluate", str(run), "--num-points", "100"]


# --- datasets -------------------------------------------------------------------------------------------------


@case("is a directory")
def datasets_show_into_a_directory(ctx):
    return ["datasets", "show", "dsprites", "-o", str(ctx.tmp)]


@case("does not exist")
def datasets_show_into_a_missing_directory(ctx):
    return ["datasets", "show", "dsprites", "-o", str(ctx.tmp / "no" / "sheet.png")]


@case("unknown image extension")
def datasets_show_with_an_unknown_extension(ctx):
    return ["datasets", "show", "dsprites", "-o", str(ctx.tmp / "sheet.xyz")]


class Context:
    def __init__(self, tmp: Path, trained: Path, stack: contextlib.ExitStack):
        self.tmp, self.trained, self.stack = tmp, trained, stack
        self.kept: list[Path] = []
        self.missing: list[Path] = []

    def run(self, keep: bool = True) -> Path:
        """A private copy of the trained run (watched for changes unless keep=False: call keep() after editing)."""
        copy = self.tmp / "runs" / "run"
        if not copy.exists():
            shutil.copytree(self.trained, copy, ignore=shutil.ignore_patterns(".lock"))
            if keep:
                self.keep(copy)
        return copy

    def keep(self, path: Path) -> None:
        self.kept.append(path)

    def absent(self, path: Path) -> None:
        """`path` must not exist after the command."""
        self.missing.append(path)

    def enter(self, manager):
        return self.stack.enter_context(manager)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case_is_one_error_line(name, tmp_path, trained_run, capsys, monkeypatch):
    fn, fragment, needs = CASES[name]
    if needs == "no_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    with contextlib.ExitStack() as stack:
        ctx = Context(tmp_path, trained_run, stack)
        argv = fn(ctx)
        before = {str(p): tree(p) for p in ctx.kept}
        capsys.readouterr()
        status = main(argv)
        out, err = capsys.readouterr()
        after = {str(p): tree(p) for p in ctx.kept}
    assert status == 2, f"{argv}: exit {status}; stderr {err!r}"
    assert err.count("\n") == 1 and err.startswith("error: "), f"one error line, got: {err!r}"
    assert fragment in err, err
    assert "Traceback" not in out + err and "Warning" not in out + err
    assert after == before, "the command changed what was stored"
    assert not [p for p in ctx.missing if p.exists()], "the command left something behind"


def test_the_corpus_covers_the_issue():
    assert len(CASES) >= 35
    for argv_word in ("train", "demo", "evaluate", "report", "datasets"):
        assert any(argv_word in name for name in CASES), argv_word
