import numpy as np
import torch

from untwine.methods import bernoulli_reconstruction, beta_vae_loss, gaussian_kl


def _np_sigmoid_xent(logits, targets):
    # independent formula: -(t log s(x) + (1 - t) log(1 - s(x)))
    s = 1.0 / (1.0 + np.exp(-logits))
    return -(targets * np.log(s) + (1 - targets) * np.log(1 - s))


def test_reconstruction_is_per_image_sum_of_sigmoid_xent():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    targets = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)  # soft targets, not binarised
    expected = _np_sigmoid_xent(logits.numpy(), targets.numpy()).reshape(4, -1).sum(1)
    assert np.allclose(bernoulli_reconstruction(logits, targets).numpy(), expected)


def test_kl_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 10, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 10, generator=g, dtype=torch.float64)
    var = np.exp(logvar.numpy())
    expected = 0.5 * (mean.numpy() ** 2 + var - np.log(var) - 1).sum(1)
    assert np.allclose(gaussian_kl(mean, logvar).numpy(), expected)
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_beta_vae_terms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    x = (torch.rand(5, 1, 4, 4, generator=g) > 0.5).double()
    mean = torch.randn(5, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t1 = beta_vae_loss(logits, x, mean, logvar, beta=1.0)
    t4 = beta_vae_loss(logits, x, mean, logvar, beta=4.0)
    recon = bernoulli_reconstruction(logits, x).mean()
    kl = gaussian_kl(mean, logvar).mean()
    assert torch.allclose(t1["loss"], -t1["elbo"]), "beta = 1 is the plain VAE: loss = -ELBO"
    assert torch.allclose(t4["loss"], recon + 4 * kl)
    assert torch.allclose(t4["regularizer"], 4 * kl)
    assert torch.allclose(t4["elbo"], -(recon + kl)), "the stored ELBO ignores beta"
    assert set(t4) == {"loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo"}
