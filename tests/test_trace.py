"""Trace recording (training/trace.py): what is recorded, that it leaves training untouched, and that a run killed
at a deterministic point and resumed has the uninterrupted run's trace bit for bit."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from untwine.config import TrainConfig
from untwine.data import get_dataset
from untwine.errors import InvalidInputError
from untwine.nn import GaussianVAE
from untwine.runs import RunDir
from untwine.training import Trainer
from untwine.training.stack_trainer import StackTrainer
from untwine.training.trace import TRACE_DIR, TraceRecorder, decoder_activations, read_trace, trace_generator

SMALL = {"dataset": "dummy_data", "batch_size": 8, "log_every": 1, "latent_dim": 4}


def _weights(path):
    return load_file(RunDir(path).checkpoint_path("final") / "model.safetensors")


def _contents(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_activations_are_the_pooled_hidden_units():
    model = GaussianVAE((1, 64, 64), 4, "conv", torch.Generator().manual_seed(0)).eval()
    x = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    features, widths = decoder_activations(model, x)
    assert widths == [256, 1024, 64, 32, 32] and features.shape == (5, 1408)
    with torch.no_grad():  # by hand, layer by layer
        z, _ = model.encode(x)
        d = model.decoder
        h1 = torch.relu(d.dense[0](z))
        h2 = torch.relu(d.dense[2](h1))
        c1 = torch.relu(d.deconv[0](h2.view(-1, 64, 4, 4)))
        c2 = torch.relu(d.deconv[2](c1))
        c3 = torch.relu(d.deconv[4](c2))
    expected = torch.cat([h1, h2, c1.mean(dim=(2, 3)), c2.mean(dim=(2, 3)), c3.mean(dim=(2, 3))], dim=1)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    assert model.training is False
    fc = GaussianVAE((1, 64, 64), 4, "fc", torch.Generator().manual_seed(0)).train()
    features, widths = decoder_activations(fc, x)
    assert widths == [1200, 1200, 1200] and fc.training is True  # mode restored


def test_tracing_does_not_change_training_and_records_every_n_steps(tmp_path):
    config = TrainConfig(steps=9, checkpoint_every=4, **SMALL)
    Trainer(config, tmp_path / "plain").train()
    traced = config.model_copy(update={"trace_every": 4, "trace_samples": 6})
    Trainer(traced, tmp_path / "traced").train()
    assert _same(_weights(tmp_path / "plain"), _weights(tmp_path / "traced"))
    assert not (tmp_path / "plain" / TRACE_DIR).exists()
    steps, activations = read_trace(tmp_path / "traced")
    assert steps.tolist() == [0, 4, 8] and activations.shape == (3, 6, 1408)
    # the traced observations come from the evaluation seed, and the entry at step 0 is the untrained network's
    data = get_dataset("dummy_data")
    factors, observations = data.sample(6, trace_generator(0))
    stored = load_file(tmp_path / "traced" / TRACE_DIR / "samples.safetensors")["factors"]
    assert torch.equal(stored, factors)
    untrained_model = RunDir(tmp_path / "traced").load_model("untrained").to(memory_format=torch.channels_last)
    untrained, _ = decoder_activations(untrained_model, observations)  # channels_last as in training
    np.testing.assert_array_equal(activations[0], untrained.to(torch.float16).float().numpy())
    assert not np.array_equal(activations[0], activations[2])
    # another seed traces the same observations
    Trainer(traced.model_copy(update={"seed": 5, "steps": 1}), tmp_path / "other").train()
    other = load_file(tmp_path / "other" / TRACE_DIR / "samples.safetensors")["factors"]
    assert torch.equal(other, factors)


def test_start_drops_entries_after_the_resumed_step(tmp_path):
    data = get_dataset("dummy_data")
    model = RunDir(tmp_path).build_model(TrainConfig(**SMALL))
    recorder = TraceRecorder(tmp_path, data, every=2, samples=3)
    for step in (0, 2, 4, 6):
        recorder.record(model, step)
    (tmp_path / TRACE_DIR / ".step-00000008.safetensors.x.tmp").write_bytes(b"partial")
    recorder.start(model, 4)
    assert sorted(p.name for p in (tmp_path / TRACE_DIR).iterdir()) == [
        "samples.safetensors",
        "step-00000000.safetensors",
        "step-00000002.safetensors",
        "step-00000004.safetensors",
    ]


def test_missing_trace_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no training trace.*--trace-every"):
        read_trace(tmp_path)


def test_traced_runs_are_not_stacked(tmp_path):
    configs = [TrainConfig(steps=2, seed=s, trace_every=1, **SMALL) for s in (0, 1)]
    with pytest.raises(InvalidInputError, match="traced runs"):
        StackTrainer(configs, [tmp_path / "a", tmp_path / "b"])


# --- kill -9 at a deterministic point, then --resume -----------------------------------------------------------------

KILLER = """
import os, signal, sys
from untwine.training import trace

record = trace.TraceRecorder.record


def record_then_die(self, model, step):
    record(self, model, step)
    if step == int(os.environ["KILL_AT_TRACE_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # right after this trace entry, before the next checkpoint


trace.TraceRecorder.record = record_then_die
from untwine.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _train_args(out):
    return ["train", "--out", str(out), "--dataset", "dummy_data", "--steps", "12", "--batch-size", "8"] + [
        "--latent-dim", "4", "--checkpoint-every", "5", "--trace-every", "3", "--trace-samples", "5", "--seed", "2"
    ]  # fmt: skip


def test_killed_and_resumed_trace_equals_the_uninterrupted_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT_TRACE_STEP": "9"}
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    cli = [sys.executable, "-m", "untwine.cli"]
    subprocess.run(cli + _train_args(tmp_path / "full"), check=True, env=env, capture_output=True)
    killed = subprocess.run([sys.executable, str(script)] + _train_args(tmp_path / "killed"), env=env)
    assert killed.returncode == -signal.SIGKILL
    run = RunDir(tmp_path / "killed")
    assert run.checkpoints.latest().name == "step-00000005" and not run.checkpoints.final.exists()
    assert read_trace(run.path)[0].tolist() == [0, 3, 6, 9]  # two entries beyond the checkpoint
    resumed = subprocess.run(cli + _train_args(run.path) + ["--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    steps_full, trace_full = read_trace(tmp_path / "full")
    steps_resumed, trace_resumed = read_trace(run.path)
    assert steps_full.tolist() == steps_resumed.tolist() == [0, 3, 6, 9, 12]
    files = sorted(p.name for p in (tmp_path / "full" / TRACE_DIR).iterdir())
    assert files == sorted(p.name for p in (run.path / TRACE_DIR).iterdir())
    for name in files:  # bit for bit, file by file (tensors and metadata; safetensors orders metadata keys freely)
        full, again = _contents(tmp_path / "full" / TRACE_DIR / name), _contents(run.path / TRACE_DIR / name)
        assert full[1] == again[1] and full[0].keys() == again[0].keys()
        assert all(torch.equal(full[0][k], again[0][k]) for k in full[0])
    np.testing.assert_array_equal(trace_full, trace_resumed)
    assert _same(_weights(tmp_path / "full"), _weights(run.path))
