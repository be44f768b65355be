import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from untwine.config import TrainConfig
from untwine.errors import CheckpointError, InvalidInputError, TrainingDivergedError
from untwine.runs import RunDir
from untwine.training import Trainer


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
