"""The rPU-VAE code's network (architecture "rpu_conv", model-selection-methods.md §1.2): layers, parameter count,
the log-sigma head, PyTorch's default initialisation, BatchNorm train/eval behaviour, training and resuming."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from untwine.config import TrainConfig
from untwine.data import StoredDataset
from untwine.errors import InvalidInputError
from untwine.evaluation.representation import representation
from untwine.nn import GaussianVAE, RPUConvDecoder, RPUConvEncoder
from untwine.nn.stack import ModelStack, stackable
from untwine.runs import RunDir
from untwine.training.trainer import Trainer


def squares_dataset(channels: int = 1) -> StoredDataset:
    """4 x 4 positions x 2 sizes of a white square on black, 64 x 64: 32 images."""
    images = torch.zeros(4, 4, 2, channels, 64, 64, dtype=torch.uint8)
    for i in range(4):
        for j in range(4):
            for s, size in enumerate((8, 16)):
                images[i, j, s, :, 8 + 10 * i : 8 + 10 * i + size, 8 + 10 * j : 8 + 10 * j + size] = 255
    storage = images.view(32, channels, 64, 64)
    return StoredDataset("squares", storage, (4, 4, 2), ("x", "y", "size"), (channels, 64, 64))


def test_encoder_and_decoder_layers_follow_the_spec_table():
    enc, dec = RPUConvEncoder(3, 10), RPUConvDecoder(3, 10)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 32, (4, 4), (2, 2), (1, 1)),
        (32, 32, (4, 4), (2, 2), (1, 1)),
        (32, 64, (4, 4), (2, 2), (1, 1)),
        (64, 64, (4, 4), (2, 2), (1, 1)),
        (64, 512, (4, 4), (1, 1), (0, 0)),  # valid
        (512, 20, (1, 1), (1, 1), (0, 0)),  # 2 * z_dim
    ]
    deconvs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels, d.kernel_size, d.stride) for d in deconvs] == [
        (10, 512, (1, 1), (1, 1)),
        (512, 64, (4, 4), (1, 1)),
        (64, 64, (4, 4), (2, 2)),
        (64, 32, (4, 4), (2, 2)),
        (32, 32, (4, 4), (2, 2)),
        (32, 3, (4, 4), (2, 2)),
    ]
    # BatchNorm + ReLU after every layer but the last, in both networks
    for seq, last in ((enc.features, None), (dec.net, dec.net[-1])):
        layers = list(seq)
        body = layers[:-1] if last is not None else layers
        assert [type(m) for m in body] == [type(body[0]), nn.BatchNorm2d, nn.ReLU] * (len(body) // 3)
    assert isinstance(dec.net[-1], nn.ConvTranspose2d)
    # spatial sizes: encoder 64 -> 32 -> 16 -> 8 -> 4 -> 1, decoder 1 -> 4 -> 8 -> 16 -> 32 -> 64
    h, sizes = torch.zeros(2, 3, 64, 64), []
    for layer in enc.features:
        h = layer(h)
        if isinstance(layer, nn.Conv2d):
            sizes.append(h.shape[-1])
    assert sizes == [32, 16, 8, 4, 1]
    h, sizes = torch.zeros(2, 10, 1, 1), []
    for layer in dec.net:
        h = layer(h)
        if isinstance(layer, nn.ConvTranspose2d):
            sizes.append(h.shape[-1])
    assert sizes == [1, 4, 8, 16, 32, 64] and h.shape == (2, 3, 64, 64)


@pytest.mark.parametrize("channels", [1, 3])
def test_parameter_count_is_the_hand_count(channels):
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731  (kernel + bias; every conv has a bias)
    bn = lambda c: 2 * c  # noqa: E731  (weight + bias; running statistics are buffers)
    c = channels
    encoder = (
        conv(c, 32, 4) + bn(32) + conv(32, 32, 4) + bn(32) + conv(32, 64, 4) + bn(64) + conv(64, 64, 4) + bn(64)
    ) + (conv(64, 512, 4) + bn(512) + conv(512, 20, 1))
    decoder = (
        conv(10, 512, 1) + bn(512) + conv(512, 64, 4) + bn(64) + conv(64, 64, 4) + bn(64) + conv(64, 32, 4) + bn(32)
    ) + (conv(32, 32, 4) + bn(32) + conv(32, c, 4))
    model = GaussianVAE((c, 64, 64), 10, "rpu_conv")
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    if c == 1:
        assert encoder + decoder == 1_298_581
    # 10 BatchNorm layers (5 + 5), each with running_mean, running_var and num_batches_tracked
    assert len(list(model.buffers())) == 3 * 10


def test_head_is_mean_and_log_sigma_pairs_turned_into_log_variance():
    model = GaussianVAE((1, 64, 64), 3, "rpu_conv").eval()
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        model.encoder.head.bias.copy_(torch.arange(6.0))  # channels (mean_0, ls_0, mean_1, ls_1, mean_2, ls_2)
    x = torch.rand(2, 1, 64, 64)
    mean, log_sigma = model.encoder.mean_log_sigma(x)
    assert torch.equal(mean, torch.tensor([[0.0, 2.0, 4.0]] * 2))
    assert torch.equal(log_sigma, torch.tensor([[1.0, 3.0, 5.0]] * 2))
    mean, logvar = model.encode(x)
    assert torch.equal(logvar, torch.tensor([[2.0, 6.0, 10.0]] * 2))
    # the reparameterisation uses sigma = exp(logvar / 2) = exp(log sigma) exactly
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    z = model.reparameterize(mean, logvar, torch.Generator().manual_seed(5))
    assert torch.equal(z, mean + torch.exp(log_sigma) * eps)


def test_initialisation_is_pytorchs_default_drawn_from_the_generator():
    """The rPU code keeps PyTorch's default init: with one seed, GaussianVAE's seeded init equals the modules'
    own reset_parameters() under torch.manual_seed (construction order: encoder, then decoder)."""
    torch.manual_seed(11)
    encoder, decoder = RPUConvEncoder(1, 10), RPUConvDecoder(1, 10)
    model = GaussianVAE((1, 64, 64), 10, "rpu_conv", torch.Generator().manual_seed(11))
    reference = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}}
    reference.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    mine = model.state_dict()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    # and it is not the Glorot init of the reference conv: a 512 -> 20 head has Glorot bound sqrt(6 / 532) = 0.106,
    # PyTorch's bound is 1 / sqrt(512) = 0.0442
    assert model.encoder.head.weight.abs().max() <= 1 / 512**0.5
    assert model.encoder.head.bias.abs().max() > 0  # biases are drawn, not zero


def test_batchnorm_train_and_eval_modes():
    model = GaussianVAE((1, 64, 64), 10, "rpu_conv", torch.Generator().manual_seed(0))
    x = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    bn = model.encoder.features[1]
    before = bn.running_mean.clone()
    model.train()
    with torch.no_grad():
        batch_mean, _ = model.encode(x)
        half_mean, _ = model.encode(x[:4])
    # training mode: batch statistics, so an image's code depends on the rest of its batch; running stats move
    assert not torch.allclose(batch_mean[:4], half_mean)
    assert not torch.equal(bn.running_mean, before) and int(bn.num_batches_tracked) == 2
    model.eval()
    moved = bn.running_mean.clone()
    with torch.no_grad():
        batch_mean, _ = model.encode(x)
        single_mean, _ = model.encode(x[:1])
    # evaluation mode: running statistics; codes are per image, and nothing is updated
    assert torch.allclose(batch_mean[:1], single_mean, atol=1e-5)
    assert torch.equal(bn.running_mean, moved) and int(bn.num_batches_tracked) == 2


def test_the_evaluation_representation_switches_to_eval_mode():
    model = GaussianVAE((1, 64, 64), 10, "rpu_conv", torch.Generator().manual_seed(0)).train()
    x = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    represent = representation(model, "mean")
    assert not model.training
    codes = represent(x)
    assert codes.shape == (6, 10)
    assert torch.allclose(torch.from_numpy(represent(x[2:3])), torch.from_numpy(codes[2:3]), atol=1e-5)


def test_a_run_dir_loads_the_model_in_eval_mode_with_its_running_statistics(tmp_path):
    config = TrainConfig(method="beta_tcvae", beta=4.0, architecture="rpu_conv", batch_size=8, steps=4)
    trainer = Trainer(config, tmp_path / "r", dataset=squares_dataset())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.train()
    assert summary["train.global_step"] == 4 and torch.isfinite(torch.tensor(summary["train.loss"]))
    after = trainer.model.state_dict()
    assert not torch.equal(after["encoder.features.0.weight"], before["encoder.features.0.weight"])
    assert not torch.equal(after["encoder.features.1.running_var"], before["encoder.features.1.running_var"])
    assert int(after["decoder.net.1.num_batches_tracked"]) == 4
    stored = load_file(RunDir(tmp_path / "r").checkpoint_path("final") / "model.safetensors")
    assert set(stored) == set(after)  # buffers included
    loaded = RunDir(tmp_path / "r").load_model("final")
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_is_bit_identical_including_running_statistics(tmp_path):
    data = squares_dataset()
    small = dict(method="beta_tcvae", beta=3.0, architecture="rpu_conv", batch_size=6, dataset="dsprites")
    config = TrainConfig(steps=6, checkpoint_every=3, log_every=1, learning_rate=1e-3, **small)
    Trainer(config, tmp_path / "straight", dataset=data).train()

    def kill_at_step_5(step, total, values):
        if step == 5:
            raise _Killed

    with pytest.raises(_Killed):  # killed after step 5; the latest checkpoint is step 3
        Trainer(config, tmp_path / "resumed", dataset=data, progress=kill_at_step_5).train()
    assert RunDir(tmp_path / "resumed").checkpoints.latest().name == "step-00000003"
    resumed = Trainer(config, tmp_path / "resumed", dataset=data)
    steps = []
    resumed.progress = lambda step, total, values: steps.append(step)
    resumed.train(resume=True)
    assert steps == [4, 5, 6]  # it really continued from step 3
    a = load_file(RunDir(tmp_path / "straight").checkpoint_path("final") / "model.safetensors")
    b = load_file(RunDir(tmp_path / "resumed").checkpoint_path("final") / "model.safetensors")
    assert any("running_mean" in k for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_stack_refuses_the_batchnorm_network():
    assert stackable("conv") and stackable("fc") and not stackable("rpu_conv")
    models = [GaussianVAE((1, 64, 64), 10, "rpu_conv", torch.Generator().manual_seed(s)) for s in (0, 1)]
    with pytest.raises(InvalidInputError, match="cannot stack the 'rpu_conv' architecture.*BatchNorm"):
        ModelStack(models)


def test_config_accepts_rpu_conv_and_rejects_what_it_cannot_train():
    assert TrainConfig(architecture="rpu_conv").architecture == "rpu_conv"
    with pytest.raises(InvalidInputError, match="unknown architecture 'resnet'; choose conv, fc, rpu_conv"):
        TrainConfig.build(architecture="resnet")
    with pytest.raises(InvalidInputError, match="batch_size >= 2"):
        TrainConfig.build(architecture="rpu_conv", batch_size=1)
    with pytest.raises(ValueError, match="rpu_conv architecture needs 64 x 64"):
        GaussianVAE((1, 32, 32), 10, "rpu_conv")
