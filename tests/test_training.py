import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from untwine.config import TrainConfig
from untwine.errors import CheckpointError, InvalidInputError, RunInUseError, TrainingDivergedError
from untwine.runs import RunDir
from untwine.training import Trainer
from untwine.training.checkpoint import load_checkpoint


def _weights(run_path, which="final"):
    return load_file(RunDir(run_path).checkpoint_path(which) / "model.safetensors")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_seeded_and_writes_the_run_dir(tmp_path, dsprites):
    config = TrainConfig(steps=12, log_every=4, checkpoint_every=5, beta=4.0, batch_size=16)
    Trainer(config, tmp_path / "a", dataset=dsprites).train()
    Trainer(config, tmp_path / "b", dataset=dsprites).train()
    Trainer(config.model_copy(update={"seed": 1}), tmp_path / "c", dataset=dsprites).train()
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))
    run = RunDir(tmp_path / "a")
    assert run.config() == config
    assert [r["step"] for r in run.read_log()] == [4, 8, 12]
    assert {"loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo", "elapsed_s"} <= set(run.read_log()[0])
    assert any(p.name.startswith("events.out.tfevents") for p in run.tb_dir.iterdir())
    results = run.read_results()
    assert results["train.global_step"] == 12 and results["train.loss"] == run.read_log()[-1]["loss"]
    assert (run.checkpoints_dir / "latest").read_text() == "step-00000010"
    assert RunDir(tmp_path / "a").load_model().training is False
    # an untrained model is rebuilt from the seed, and differs from the trained one
    untrained = run.load_model("untrained").state_dict()
    assert not _same(untrained, _weights(tmp_path / "a"))


@pytest.mark.parametrize(
    "architecture, batch_size",
    [("fc", 32), pytest.param("conv", 64, marks=pytest.mark.slow)],  # the study's network and batch
)
def test_training_reduces_the_loss(architecture, batch_size, tmp_path, dsprites):
    config = TrainConfig(
        steps=60,
        log_every=10,
        checkpoint_every=100,
        learning_rate=1e-3,
        architecture=architecture,
        batch_size=batch_size,
    )
    Trainer(config, tmp_path / "a", dataset=dsprites).train()
    log = RunDir(tmp_path / "a").read_log()
    assert log[-1]["reconstruction_loss"] < 0.5 * log[0]["reconstruction_loss"]


def test_existing_run_is_not_overwritten(tmp_path, dsprites):
    config = TrainConfig(steps=2, log_every=1, checkpoint_every=1)
    Trainer(config, tmp_path / "a", dataset=dsprites).train()
    with pytest.raises(InvalidInputError, match="--resume"):
        Trainer(config, tmp_path / "a", dataset=dsprites).train()
    with pytest.raises(InvalidInputError, match="different config"):
        Trainer(config.model_copy(update={"beta": 2.0}), tmp_path / "a", dataset=dsprites).train(resume=True)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, dsprites):
    # a learning rate of 1e3 blows the loss up within a few steps
    config = TrainConfig(steps=200, log_every=1, checkpoint_every=1, learning_rate=1e3, divergence_threshold=1e6)
    trainer = Trainer(config, tmp_path / "a", dataset=dsprites)
    with pytest.raises(TrainingDivergedError, match="diverged at step") as info:
        trainer.train()
    run = RunDir(tmp_path / "a")
    latest = run.checkpoints.latest()
    assert latest is not None and str(latest) in str(info.value)
    saved = json.loads((latest / "state.json").read_text())["step"]
    # step `saved` + 1 diverged: its update was not applied, and the checkpoint of every good step was written
    assert saved == trainer.step >= 1 and f"diverged at step {saved + 1}:" in str(info.value)
    kept = _weights(tmp_path / "a", "latest")
    assert all(torch.isfinite(v).all() for v in kept.values())
    assert not run.checkpoints.final.exists()
    # the kept weights are those of `saved` good steps: a fresh run of that length ends with the same weights
    Trainer(config.model_copy(update={"steps": saved}), tmp_path / "b", dataset=dsprites).train()
    assert _same(kept, _weights(tmp_path / "b"))


def test_threshold_divergence_message(tmp_path, dsprites):
    config = TrainConfig(steps=5, divergence_threshold=10.0)
    with pytest.raises(TrainingDivergedError, match="exceeded 10.*no checkpoint was written yet"):
        Trainer(config, tmp_path / "a", dataset=dsprites).train()


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, dsprites):
    Trainer(TrainConfig(steps=2, log_every=1), tmp_path / "a", dataset=dsprites).train()
    path = RunDir(tmp_path / "a").checkpoints.final / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt weights"):
        RunDir(tmp_path / "a").load_model()


def _train_cmd(out, steps):
    return [
        sys.executable,
        "-m",
        "untwine.cli",
        "train",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--checkpoint-every",
        "5",
        "--log-every",
        "5",
        "--seed",
        "3",
    ]


@pytest.mark.slow  # three training processes; in-process resumes are tested in the fast suite
def test_killed_run_resumes_to_bit_identical_weights(tmp_path):
    """SIGKILL as soon as a checkpoint exists (a file-watch trigger, not a sleep), wherever the run then is, even
    inside its next checkpoint write; resumed to a few steps past its last checkpoint, it must end with the weights
    of an uninterrupted run of that length, and log each step once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process
    killed = tmp_path / "killed"
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(_train_cmd(killed, 100_000), env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        latest = killed / "checkpoints" / "latest"
        deadline = time.monotonic() + 600
        while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        running = proc.poll() is None
        proc.kill()
        proc.wait()
    assert running and latest.exists(), f"no checkpoint appeared: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
    run = RunDir(killed)
    assert not run.checkpoints.final.exists()
    killed_at = json.loads((run.checkpoints.latest() / "state.json").read_text())["step"]
    assert killed_at >= 5 and killed_at % 5 == 0
    steps = killed_at + 10
    subprocess.run(_train_cmd(killed, steps) + ["--resume"], check=True, env=env, capture_output=True)
    subprocess.run(_train_cmd(tmp_path / "full", steps), check=True, env=env, capture_output=True)
    assert _same(_weights(tmp_path / "full"), _weights(killed))
    assert [r["step"] for r in run.read_log()] == list(range(5, steps + 1, 5)), "each step logged once"


# --- run directories: resume semantics, locks, damaged checkpoints, interrupted writes, full disks (issue 10) ---

TINY = dict(batch_size=4, log_every=2, seed=3)


def _files(path):
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def _log(path):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in RunDir(path).read_log()]


def test_a_finished_run_is_left_alone_never_shrunk_and_extended_with_fresh_results(tmp_path, dsprites):
    config = TrainConfig(steps=4, checkpoint_every=4, **TINY)  # no step checkpoint: final/ only
    path = tmp_path / "a"
    Trainer(config, path, dataset=dsprites).train()
    run = RunDir(path)
    run.update_results({"eval.mean.mig.discrete_mig": 0.5, "reference.mean.mig.x": 0.5, "untrained.eval.mean.x": 0.1})
    run.figures_dir.mkdir()
    (run.figures_dir / "samples.png").write_bytes(b"png")
    stored = _files(path)
    again = Trainer(config, path, dataset=dsprites)
    summary = again.train(resume=True)
    assert again.already_finished and summary["train.global_step"] == 4
    assert _files(path) == stored, "a finished run resumed with the same steps is left alone"
    with pytest.raises(InvalidInputError, match="stands at step 4, beyond the 2 steps.*never shrunk"):
        Trainer(config.model_copy(update={"steps": 2}), path, dataset=dsprites).train(resume=True)
    assert _files(path) == stored
    longer = config.model_copy(update={"steps": 8})
    assert Trainer(longer, path, dataset=dsprites).train(resume=True)["train.global_step"] == 8
    Trainer(longer, tmp_path / "straight", dataset=dsprites).train()
    assert _same(_weights(path), _weights(tmp_path / "straight"))
    assert _log(path) == _log(tmp_path / "straight")
    results = run.read_results()
    assert not [k for k in results if k.startswith(("eval.", "reference."))], "results of the old weights dropped"
    assert results["untrained.eval.mean.x"] == 0.1 and results["train.global_step"] == 8
    assert not run.figures_dir.exists()


def test_resume_needs_a_run_and_a_run_without_checkpoint_restarts_with_a_warning(tmp_path, dsprites):
    config = TrainConfig(steps=2, checkpoint_every=10, **TINY)
    with pytest.raises(InvalidInputError, match="holds no run to resume"):
        Trainer(config, tmp_path / "none", dataset=dsprites).train(resume=True)
    assert not (tmp_path / "none").exists(), "a refused command leaves nothing behind"
    path = tmp_path / "a"
    path.mkdir()
    RunDir(path).write_config(config)  # a run killed before its first checkpoint
    with pytest.warns(UserWarning, match="no checkpoint yet: training from step 0"):
        Trainer(config, path, dataset=dsprites).train(resume=True)
    Trainer(config, tmp_path / "b", dataset=dsprites).train()
    assert _same(_weights(path), _weights(tmp_path / "b"))


def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, dsprites):
    config = TrainConfig(steps=9, checkpoint_every=3, **TINY)
    Trainer(config, tmp_path / "straight", dataset=dsprites).train()
    path = tmp_path / "a"
    Trainer(config, path, dataset=dsprites).train()
    checkpoints = RunDir(path).checkpoints
    shutil.rmtree(checkpoints.final)  # the run now stands at step-6 (and step-3)
    model = checkpoints.path / "step-00000006" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    (checkpoints.path / "latest").write_text("garbage\n")
    with pytest.warns(UserWarning, match="skipped damaged step-00000006.*resuming from step-00000003 at step 3"):
        Trainer(config, path, dataset=dsprites).train(resume=True)
    assert _same(_weights(path), _weights(tmp_path / "straight"))
    assert _log(path) == _log(tmp_path / "straight")


def test_a_state_without_optimizers_is_a_clear_checkpoint_error(tmp_path, dsprites):
    config = TrainConfig(steps=2, checkpoint_every=1, **TINY)
    Trainer(config, tmp_path / "a", dataset=dsprites).train()
    final = RunDir(tmp_path / "a").checkpoints.final
    state = json.loads((final / "state.json").read_text())
    del state["optimizers"]
    (final / "state.json").write_text(json.dumps(state))
    trainer = Trainer(config, tmp_path / "b", dataset=dsprites)
    with pytest.raises(CheckpointError, match="lacks 'optimizers'"):
        load_checkpoint(final, trainer.model, trainer.optimizers, trainer.generators)


def test_what_killed_writes_left_is_cleaned_up_or_put_back(tmp_path, dsprites):
    config = TrainConfig(steps=4, checkpoint_every=2, **TINY)
    path = tmp_path / "a"
    Trainer(config, path, dataset=dsprites).train()
    checkpoints = RunDir(path).checkpoints.path
    for leftover in (".step-00000004.k3j2", ".final.x8d1"):
        (checkpoints / leftover).mkdir()
        (checkpoints / leftover / "model.safetensors").write_bytes(b"half")
    (checkpoints / ".latest.abc.tmp").write_text("step-0000")
    (path / ".results.json.q1.tmp").write_text("{")
    os.rename(checkpoints / "final", checkpoints / ".final.zz9.old")  # killed while final/ was being replaced
    summary = Trainer(config, path, dataset=dsprites).train(resume=True)
    assert summary["train.global_step"] == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == ["final", "latest", "step-00000002"]
    assert not list(path.glob(".*.tmp"))


def test_two_trainings_into_one_directory_one_is_refused_naming_the_holder(tmp_path, dsprites):
    """A trains and pauses at its first logged step (a pipe, not a sleep); B, started meanwhile, is refused."""
    from forks import run_forked

    config = TrainConfig(steps=4, checkpoint_every=2, **TINY)
    path = tmp_path / "cc"
    paused_r, paused_w = os.pipe()
    go_r, go_w = os.pipe()

    def first(step, steps, values):
        if step == 2:
            os.write(paused_w, b"1")
            os.read(go_r, 1)

    pid = os.fork()
    if pid == 0:  # process A
        code = run_forked(lambda: Trainer(config, path, dataset=dsprites, progress=first).train())
        os._exit(code)
    assert os.read(paused_r, 1) == b"1"
    with pytest.raises(RunInUseError, match=r"cc is in use by pid \d+ on .* \(training: .*\) since "):
        Trainer(config, path, dataset=dsprites).train(resume=True)
    with pytest.raises(RunInUseError):
        Trainer(config, path, dataset=dsprites).train()
    os.write(go_w, b"1")
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert [r["step"] for r in RunDir(path).read_log()] == [2, 4], "one record per step: nothing interleaved"


def test_a_dead_holder_does_not_block_the_run(tmp_path, dsprites):
    from forks import kill_holding_lock, lock_held_elsewhere

    from untwine.lock import is_locked

    path = tmp_path / "a"
    with lock_held_elsewhere(path):
        assert is_locked(path)
    assert not is_locked(path)
    dead = kill_holding_lock(path)
    assert not is_locked(path), "the kernel released the lock of the killed holder"
    Trainer(TrainConfig(steps=2, checkpoint_every=2, **TINY), path, dataset=dsprites).train()
    holder = json.loads((path / ".lock").read_text())
    assert holder["pid"] == os.getpid() != dead


def test_sigint_exits_130_with_its_message(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "untwine.cli", "train", "--out", str(tmp_path / "r"), "--steps", "400"]
    proc = subprocess.Popen(
        [*command, "--batch-size", "4", "--log-every", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = proc.stdout.readline()  # a progress line at each tenth of the run: training is under way
    assert b"step" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert err.decode().strip().splitlines()[-1].startswith("interrupted: ")


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs (root only): room for four checkpoints of the reference network (8.3 MB each)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], capture_output=True)


def _fill(path, leave: int = 0) -> None:
    """Append zeros to `path` until its file system is full, then give back `leave` bytes."""
    with open(path, "ab", buffering=0) as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
    os.truncate(path, max(0, path.stat().st_size - leave))


def test_a_full_disk_stops_training_and_evaluation_losing_nothing(tmp_path, dsprites, small_disk):
    from untwine.errors import StorageError
    from untwine.evaluation import evaluate_run

    config = TrainConfig(steps=2, checkpoint_every=1, **TINY)
    path = small_disk / "run"
    Trainer(config, path, dataset=dsprites).train()  # step-1 and final
    stored = _files(path)
    filler = small_disk / "filler"
    _fill(filler, leave=2**20)  # room for the config and the log, not for a checkpoint
    longer = config.model_copy(update={"steps": 4})
    with pytest.raises(StorageError, match="No space left on device.*training stopped at step 3.*step-00000001"):
        Trainer(longer, path, dataset=dsprites).train(resume=True)
    assert not list((path / "checkpoints").glob(".*")), "the half-written checkpoint is removed"
    after = _files(path)
    for name in ("checkpoints/final/model.safetensors", "checkpoints/final/state.json", "results.json"):
        assert after[name] == stored[name], name
    # evaluating on a disk with no byte left: the computed results are kept elsewhere, and the error says where
    _fill(filler)
    with pytest.raises(StorageError, match=r"saved to (\S+\.json)") as info:
        evaluate_run(path, ["mig"], ["mean"], options={"mig": {"num_train": 200}})
    saved = json.loads(Path(re.search(r"saved to (\S+\.json)", str(info.value)).group(1)).read_text())
    assert 0.0 <= saved["eval.mean.mig.discrete_mig"] <= 1.0
    assert "eval.mean.mig.discrete_mig" not in RunDir(path).read_results()
    filler.unlink()
    Trainer(longer, path, dataset=dsprites).train(resume=True)
    Trainer(longer, tmp_path / "straight", dataset=dsprites).train()
    assert _same(_weights(path), _weights(tmp_path / "straight"))
