"""A PBT member (selection/member.py): evolved hyperparameters, sample-counted intervals, BatchNorm modes, and the
state an exploit copies (a copy trains exactly as its source; save/load round trip)."""

from __future__ import annotations

import pytest
import torch

from untwine.config import TrainConfig
from untwine.data import StoredDataset
from untwine.errors import InvalidInputError
from untwine.evaluation.representation import representation
from untwine.selection.member import Member
from untwine.selection.pbt_schedule import Hyperparameters
from untwine.training.trainer import Trainer


def squares() -> StoredDataset:
    images = torch.zeros(4, 4, 1, 64, 64, dtype=torch.uint8)
    for i in range(4):
        for j in range(4):
            images[i, j, :, 8 + 10 * i : 20 + 10 * i, 8 + 10 * j : 20 + 10 * j] = 255
    return StoredDataset("squares", images.view(16, 1, 64, 64), (4, 4), ("x", "y"), (1, 64, 64))


def make_member(tmp_path, seed, hyper=Hyperparameters(1e-3, 4, 2), architecture="rpu_conv", name=None):
    config = TrainConfig(method="beta_tcvae", architecture=architecture, seed=seed, learning_rate=1e-4, batch_size=8)
    trainer = Trainer(config, tmp_path / (name or f"m{seed}"), dataset=squares())
    return Member(trainer, hyper)


def states_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b


def test_hyperparameters_go_where_the_trainer_reads_them(tmp_path):
    member = make_member(tmp_path, 0, Hyperparameters(0.02, 16, 7))
    trainer = member.trainer
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.02]
    assert trainer.config.batch_size == 16 and trainer.hyperparameters["beta"] == 7 and trainer.config.beta == 7.0
    assert member.hyperparameters == Hyperparameters(0.02, 16, 7)
    with pytest.raises(InvalidInputError, match="batch_size >= 2"):
        member.set_hyperparameters(Hyperparameters(0.02, 1, 7))
    config = TrainConfig(method="factor_vae", architecture="fc")
    with pytest.raises(InvalidInputError, match="has no beta"):
        Member(Trainer(config, tmp_path / "f", dataset=squares()))


def test_an_interval_counts_samples_and_trains_in_training_mode(tmp_path):
    member = make_member(tmp_path, 0)
    representation(member.model, "mean")  # evaluation puts the model in eval mode and leaves it there
    assert not member.model.training
    bn = member.model.encoder.features[1]
    summary = member.train_samples(10)  # batch 4: batches 4, 4, 2
    assert (summary["steps"], summary["samples"]) == (3, 10) and member.samples == 10
    assert member.trainer.step == 3 and int(bn.num_batches_tracked) == 3  # BatchNorm trained on all three
    assert member.trainer.config.batch_size == 4  # the cut-short batch size was temporary
    assert member.train_samples(9)["samples"] == 8  # 9 mod 4 == 1: one sample fewer (no batch of one)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    with member.evaluation() as model:
        assert not model.training
    assert member.model.training  # restored


def test_a_copy_holds_its_sources_state_and_trains_exactly_as_it(tmp_path):
    source = make_member(tmp_path, 0, Hyperparameters(1e-3, 4, 2))
    target = make_member(tmp_path, 1, Hyperparameters(1e-2, 8, 30))
    source.train_samples(8)
    source.record(round=0, score=0.4)
    target.train_samples(8)
    assert not states_equal(target.state_dict(), source.state_dict())

    target.copy_from(source)
    a, b = source.state_dict(), target.state_dict()
    assert states_equal(a, b)  # weights + BatchNorm buffers, Adam (moments, step, lr), generators, fields
    assert any("running_var" in k for k in b["model"]) and b["optimizers"]["vae"]["param_groups"][0]["lr"] == 1e-3
    assert b["history"] == [
        {"round": 0, "score": 0.4, "hyperparameters": {"lr": 1e-3, "batch_size": 4, "beta": 2}, "step": 2, "samples": 8}
    ]

    # the same interval from the same state: bit-identical (same batches and noise: the generators were copied)
    source.train_samples(8)
    target.train_samples(8)
    assert states_equal(source.state_dict()["model"], target.state_dict()["model"])

    # the copy is independent: exploring and training it leaves the source's state untouched
    before = source.state_dict()
    target.set_hyperparameters(Hyperparameters(2e-3, 5, 3))
    target.train_samples(5)
    assert states_equal(source.state_dict(), before)
    assert target.hyperparameters == Hyperparameters(2e-3, 5, 3)
    with pytest.raises(InvalidInputError, match="itself"):
        target.copy_from(target)


def test_save_and_load_round_trip_and_continue_identically(tmp_path):
    member = make_member(tmp_path, 0, Hyperparameters(1e-3, 4, 5))
    member.train_samples(6)
    member.record(round=0, score=0.1)
    member.save(tmp_path / "ckpt")
    reloaded = make_member(tmp_path, 3, Hyperparameters(0.5, 8, 1), name="other")
    reloaded.load(tmp_path / "ckpt")
    assert states_equal(reloaded.state_dict(), member.state_dict())
    member.train_samples(6)
    reloaded.train_samples(6)
    assert states_equal(member.state_dict()["model"], reloaded.state_dict()["model"])
    plain = Trainer(TrainConfig(method="beta_tcvae", architecture="rpu_conv"), tmp_path / "plain", dataset=squares())
    plain.save()
    kept = reloaded.state_dict()
    with pytest.raises(InvalidInputError, match="not a PBT member"):
        reloaded.load(plain.run.checkpoints.latest())
    assert states_equal(reloaded.state_dict(), kept)  # a refused load changes nothing


def test_reseed_gives_fresh_streams(tmp_path):
    member = make_member(tmp_path, 0, architecture="fc")
    before = {name: g.get_state().clone() for name, g in member.trainer.generators.items()}
    member.reseed(99)
    assert all(not torch.equal(before[name], g.get_state()) for name, g in member.trainer.generators.items())
