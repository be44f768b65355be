import math

import pytest
import torch
from torch import nn

from untwine.nn import ConvEncoder, DeconvDecoder, GaussianVAE


def test_conv_architecture_matches_reference_table():
    enc = ConvEncoder(1, 10)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (4, 4), (2, 2)),
        (32, (4, 4), (2, 2)),
        (64, (2, 2), (2, 2)),
        (64, (2, 2), (2, 2)),
    ]
    x = torch.zeros(2, 1, 64, 64)
    shapes = []
    h = x
    for layer in enc.features:
        h = layer(h)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(32, 32, 32), (32, 16, 16), (64, 8, 8), (64, 4, 4)]
    dec = DeconvDecoder(3, 10)
    deconvs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.out_channels, d.kernel_size, d.stride) for d in deconvs] == [
        (64, (4, 4), (2, 2)),
        (32, (4, 4), (2, 2)),
        (32, (4, 4), (2, 2)),
        (3, (4, 4), (2, 2)),
    ]
    assert dec(torch.zeros(5, 10)).shape == (5, 3, 64, 64)


def test_parameter_count_is_the_reference_one():
    model = GaussianVAE((1, 64, 64), 10)
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    dense = lambda i, o: i * o + o  # noqa: E731
    encoder = (
        conv(1, 32, 4) + conv(32, 32, 4) + conv(32, 64, 2) + conv(64, 64, 2) + dense(1024, 256) + 2 * dense(256, 10)
    )
    decoder = dense(10, 256) + dense(256, 1024) + conv(64, 64, 4) + conv(64, 32, 4) + conv(32, 32, 4) + conv(32, 1, 4)
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder


@pytest.mark.parametrize("architecture,shape", [("conv", (1, 64, 64)), ("conv", (3, 64, 64)), ("fc", (1, 64, 64))])
def test_shapes_and_outputs(architecture, shape):
    model = GaussianVAE(shape, 10, architecture, generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, *shape)
    mean, logvar, z, logits = model(x, torch.Generator().manual_seed(1))
    assert mean.shape == logvar.shape == z.shape == (4, 10)
    assert logits.shape == (4, *shape)
    assert logits.min() < 0 < logits.max(), "logits, not probabilities"


def test_glorot_uniform_init_and_zero_bias():
    model = GaussianVAE((1, 64, 64), 10, generator=torch.Generator().manual_seed(0))
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight
            receptive = w[0, 0].numel() if w.ndim == 4 else 1
            if isinstance(m, nn.ConvTranspose2d):
                fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
            else:
                fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= limit
            assert w.abs().max() > 0.9 * limit, "uniform over the whole Glorot range"
            if w.numel() > 1000:
                assert abs(w.std().item() - limit / math.sqrt(3)) < 0.05 * limit
            assert torch.count_nonzero(m.bias) == 0


def test_init_is_seeded():
    a = GaussianVAE(generator=torch.Generator().manual_seed(0)).state_dict()
    b = GaussianVAE(generator=torch.Generator().manual_seed(0)).state_dict()
    c = GaussianVAE(generator=torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_reparameterization_uses_log_variance():
    mean = torch.zeros(200_000, 1)
    logvar = torch.full((200_000, 1), math.log(4.0))  # variance 4, std 2
    z = GaussianVAE.reparameterize(mean, logvar, torch.Generator().manual_seed(0))
    assert abs(z.std().item() - 2.0) < 0.02
