"""The Locatello et al. 2019 objectives against independent computations (numpy loops, np.cov, hand values)."""

import math

import numpy as np
import pytest
import torch

from untwine.errors import InvalidInputError
from untwine.methods import (
    annealed_vae_loss,
    beta_tcvae_loss,
    beta_vae_loss,
    capacity,
    covariance_of_means,
    dip_covariance,
    dip_vae_loss,
    discriminator_loss,
    factor_vae_loss,
    gaussian_log_density,
    permute_dims,
    total_correlation,
)
from untwine.methods.objective import objective_terms
from untwine.nn.discriminator import FactorDiscriminator

REFERENCE_KEYS = {"loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo"}


def _batch(seed=0, n=6, d=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, 4, 4, generator=g, dtype=dtype)
    targets = torch.rand(n, 1, 4, 4, generator=g, dtype=dtype)
    mean = torch.randn(n, d, generator=g, dtype=dtype)
    logvar = 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(n, d, generator=g, dtype=dtype)
    return logits, targets, mean, logvar, z


# --- beta-TCVAE ------------------------------------------------------------------------------------------------


def _np_normal_pdf(x, mu, logvar):
    var = math.exp(logvar)
    return math.exp(-((x - mu) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def _np_tc(z, mean, logvar, weight):
    """Brute force: mean_j [log sum_i w(j,i) prod_l q(z_jl|x_i) - sum_l log sum_i w(j,i) q(z_jl|x_i)]."""
    m, d = z.shape
    values = []
    for j in range(m):
        joint = 0.0
        marginals = np.zeros(d)
        for i in range(m):
            dens = [_np_normal_pdf(z[j, c], mean[i, c], logvar[i, c]) for c in range(d)]
            joint += weight(j, i) * np.prod(dens)
            marginals += weight(j, i) * np.array(dens)
        values.append(math.log(joint) - np.log(marginals).sum())
    return float(np.mean(values))


def test_gaussian_log_density_matches_closed_form():
    s, mu, lv = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([0.1, 0.5]), torch.tensor([-0.4, 0.7])
    expected = [math.log(_np_normal_pdf(a, b, c)) for a, b, c in zip(s.tolist(), mu.tolist(), lv.tolist())]
    assert np.allclose(gaussian_log_density(s, mu.double(), lv.double()).numpy(), expected)


def test_tc_reference_estimator_is_mws_without_constants():
    _, _, mean, logvar, z = _batch(seed=1, n=7, d=4)
    args = z.numpy(), mean.numpy(), logvar.numpy()
    expected = _np_tc(*args, weight=lambda j, i: 1.0)  # logsumexp minus nothing
    assert math.isclose(total_correlation(z, mean, logvar).item(), expected, rel_tol=1e-10)


def test_tc_mws_with_dataset_size_adds_chen_constants():
    _, _, mean, logvar, z = _batch(seed=2, n=5, d=3)
    n_data, m = 1000, 5
    expected = _np_tc(z.numpy(), mean.numpy(), logvar.numpy(), weight=lambda j, i: 1.0 / (n_data * m))
    got = total_correlation(z, mean, logvar, dataset_size=n_data).item()
    assert math.isclose(got, expected, rel_tol=1e-10)
    offset = got - total_correlation(z, mean, logvar).item()
    assert math.isclose(offset, (3 - 1) * math.log(n_data * m), rel_tol=1e-10)


def test_tc_minibatch_stratified_sampling():
    _, _, mean, logvar, z = _batch(seed=3, n=6, d=3)
    n_data, m_other = 50, 5  # batch of 6 = n* plus M' = 5 others

    def weight(j, i):
        if i == j:
            return 1.0 / n_data
        if i == (j + 1) % 6:
            return (n_data - m_other) / (n_data * m_other)
        return 1.0 / m_other

    assert all(math.isclose(sum(weight(j, i) for i in range(6)), 1.0) for j in range(6))
    expected = _np_tc(z.numpy(), mean.numpy(), logvar.numpy(), weight=weight)
    got = total_correlation(z, mean, logvar, dataset_size=n_data, sampling="mss").item()
    assert math.isclose(got, expected, rel_tol=1e-10)


def test_tc_validation():
    _, _, mean, logvar, z = _batch()
    with pytest.raises(InvalidInputError, match="sampling"):
        total_correlation(z, mean, logvar, sampling="bogus")
    with pytest.raises(InvalidInputError, match="dataset_size"):
        total_correlation(z, mean, logvar, sampling="mss")
    with pytest.raises(InvalidInputError, match="shape"):
        total_correlation(z[:, :2], mean, logvar)


def test_beta_tcvae_terms_and_beta_one_is_plain_vae():
    logits, x, mean, logvar, z = _batch(seed=4)
    vae = beta_vae_loss(logits, x, mean, logvar, beta=1.0)
    one = beta_tcvae_loss(logits, x, mean, logvar, z, beta=1.0)
    for key in REFERENCE_KEYS:
        assert torch.allclose(one[key], vae[key]), key
    six = beta_tcvae_loss(logits, x, mean, logvar, z, beta=6.0)
    tc = total_correlation(z, mean, logvar)
    assert torch.allclose(six["total_correlation"], tc)
    assert torch.allclose(six["regularizer"], vae["kl_loss"] + 5.0 * tc)
    assert torch.allclose(six["loss"], vae["reconstruction_loss"] + vae["kl_loss"] + 5.0 * tc)
    assert torch.allclose(six["elbo"], vae["elbo"])
    assert set(six) == REFERENCE_KEYS | {"total_correlation"}


# --- DIP-VAE ---------------------------------------------------------------------------------------------------


def _np_penalty(cov, lambda_od, lambda_d):
    off = cov - np.diag(np.diag(cov))
    return lambda_od * (off**2).sum() + lambda_d * ((np.diag(cov) - 1) ** 2).sum()


def test_dip_covariances_match_numpy_biased_cov():
    _, _, mean, logvar, _ = _batch(seed=5, n=9, d=4)
    cov_mu = np.cov(mean.numpy(), rowvar=False, bias=True)
    assert np.allclose(covariance_of_means(mean).numpy(), cov_mu)
    assert np.allclose(dip_covariance(mean, logvar, "i").numpy(), cov_mu)
    expected_ii = cov_mu + np.diag(np.exp(logvar.numpy()).mean(0))
    assert np.allclose(dip_covariance(mean, logvar, "ii").numpy(), expected_ii)


@pytest.mark.parametrize("dip_type, factor", [("i", 10.0), ("ii", 1.0)])
def test_dip_penalties_and_study_defaults(dip_type, factor):
    logits, x, mean, logvar, _ = _batch(seed=6, n=8, d=3)
    cov = np.cov(mean.numpy(), rowvar=False, bias=True)
    if dip_type == "ii":
        cov = cov + np.diag(np.exp(logvar.numpy()).mean(0))
    vae = beta_vae_loss(logits, x, mean, logvar)
    terms = dip_vae_loss(logits, x, mean, logvar, lambda_od=5.0, dip_type=dip_type)  # default lambda_d_factor
    penalty = _np_penalty(cov, 5.0, factor * 5.0)
    assert np.isclose(terms["dip_regularizer"].item(), penalty)
    assert np.isclose(terms["regularizer"].item(), vae["kl_loss"].item() + penalty)
    assert np.isclose(terms["loss"].item(), vae["reconstruction_loss"].item() + vae["kl_loss"].item() + penalty)
    explicit = dip_vae_loss(logits, x, mean, logvar, lambda_od=5.0, lambda_d_factor=3.0, dip_type=dip_type)
    assert np.isclose(explicit["dip_regularizer"].item(), _np_penalty(cov, 5.0, 15.0))
    assert set(terms) == REFERENCE_KEYS | {"dip_regularizer"}


def test_dip_lambda_zero_is_plain_vae_and_bad_type_raises():
    logits, x, mean, logvar, _ = _batch(seed=7)
    vae = beta_vae_loss(logits, x, mean, logvar)
    for dip_type in ("i", "ii"):
        terms = dip_vae_loss(logits, x, mean, logvar, lambda_od=0.0, dip_type=dip_type)
        for key in REFERENCE_KEYS:
            assert torch.allclose(terms[key], vae[key]), key
    with pytest.raises(InvalidInputError, match="dip_type"):
        dip_vae_loss(logits, x, mean, logvar, lambda_od=1.0, dip_type="iii")


# --- AnnealedVAE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step, expected", [(0, 0.0), (25_000, 6.25), (50_000, 12.5), (100_000, 25.0), (250_000, 25.0)])
def test_capacity_ramp(step, expected):
    assert capacity(25.0, 100_000, step).item() == pytest.approx(expected)
    assert capacity(torch.tensor(25.0), 100_000, torch.tensor(step)).item() == pytest.approx(expected)


def test_annealed_terms():
    logits, x, mean, logvar, _ = _batch(seed=8)
    vae = beta_vae_loss(logits, x, mean, logvar)
    kl = vae["kl_loss"].item()
    for step, c in [(0, 0.0), (30_000, 0.3 * 2 * kl), (500_000, 2 * kl)]:  # c_max = 2 KL: KL - C changes sign
        terms = annealed_vae_loss(
            logits, x, mean, logvar, gamma=1000.0, c_max=2 * kl, iteration_threshold=100_000, step=step
        )
        assert terms["capacity"].item() == pytest.approx(c)
        assert terms["regularizer"].item() == pytest.approx(1000.0 * abs(kl - c))
        assert terms["loss"].item() == pytest.approx(vae["reconstruction_loss"].item() + 1000.0 * abs(kl - c))
        assert torch.allclose(terms["elbo"], vae["elbo"])
    assert set(terms) == REFERENCE_KEYS | {"capacity"}
    with pytest.raises(InvalidInputError, match="iteration_threshold"):
        capacity(5.0, 0, 1)


# --- FactorVAE -------------------------------------------------------------------------------------------------


def test_permute_dims_keeps_columns_and_is_reproducible():
    z = torch.arange(40.0).view(8, 5)
    a = permute_dims(z, torch.Generator().manual_seed(3))
    b = permute_dims(z, torch.Generator().manual_seed(3))
    c = permute_dims(z, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for col in range(5):
        assert sorted(a[:, col].tolist()) == z[:, col].tolist()
    orders = [tuple(((a[:, col] - col) / 5).long().tolist()) for col in range(5)]
    assert len(set(orders)) > 1, "columns are permuted independently"
    stacked = permute_dims(torch.stack([z, z]), torch.Generator().manual_seed(3))  # leading model axis
    assert stacked.shape == (2, 8, 5) and not torch.equal(stacked[0], stacked[1])
    assert sorted(stacked[1, :, 2].tolist()) == z[:, 2].tolist()


def test_discriminator_architecture():
    d = FactorDiscriminator(latent_dim=10, generator=torch.Generator().manual_seed(0))
    linears = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 1000)] + [(1000, 1000)] * 5 + [(1000, 2)]
    assert sum(p.numel() for p in d.parameters()) == 10 * 1000 + 1000 + 5 * (1000 * 1000 + 1000) + 1000 * 2 + 2
    slopes = {m.negative_slope for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    assert all(torch.all(m.bias == 0) for m in linears)
    limit = math.sqrt(6 / (1000 + 1000))
    assert linears[1].weight.abs().max() <= limit and linears[1].weight.abs().max() > 0.9 * limit
    assert d(torch.zeros(3, 10)).shape == (3, 2)
    again = FactorDiscriminator(latent_dim=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.logits.weight, d.logits.weight)


class _FixedDiscriminator(torch.nn.Module):
    """logits = z @ W + b with a known W, b (so TC and the discriminator loss can be hand-computed)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[1.0, -0.5], [0.25, 2.0], [-1.0, 0.0]], dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor([0.1, -0.2], dtype=torch.float64))

    def forward(self, z):
        return z @ self.w + self.b


def test_factor_vae_terms_with_fixed_discriminator():
    logits, x, mean, logvar, z = _batch(seed=9, n=5, d=3)
    z.requires_grad_(True)
    disc = _FixedDiscriminator()
    w, b, zn = disc.w.detach().numpy(), disc.b.detach().numpy(), z.detach().numpy()
    per_sample = [(zn[k] @ w[:, 0] + b[0]) - (zn[k] @ w[:, 1] + b[1]) for k in range(5)]
    tc = float(np.mean(per_sample))
    vae = beta_vae_loss(logits, x, mean, logvar)
    terms = factor_vae_loss(logits, x, mean, logvar, z, gamma=30.0, discriminator=disc)
    assert terms["total_correlation"].item() == pytest.approx(tc)
    assert terms["regularizer"].item() == pytest.approx(vae["kl_loss"].item() + 30.0 * tc)
    assert terms["loss"].item() == pytest.approx(vae["reconstruction_loss"].item() + vae["kl_loss"].item() + 30 * tc)
    assert set(terms) == {"loss", "reconstruction_loss", "kl_loss", "regularizer", "total_correlation"}
    terms["loss"].backward()
    w = disc.w.detach()
    assert torch.allclose(z.grad, (30.0 / 5) * (w[:, 0] - w[:, 1]).expand(5, 3)), "TC gradient flows into z"


def test_discriminator_loss_hand_computed_with_clipping():
    disc = _FixedDiscriminator()
    z = torch.tensor([[0.2, -0.1, 0.4], [1.0, 0.5, -0.3]], dtype=torch.float64, requires_grad=True)
    z_perm = torch.tensor([[40.0, -10.0, 0.0], [0.0, 0.3, 1.0]], dtype=torch.float64)  # row 0 saturates p_1 -> 1e-6

    def probs(row):
        logit = row @ disc.w.detach().numpy() + disc.b.detach().numpy()
        e = np.exp(logit - logit.max())
        return np.clip(e / e.sum(), 1e-6, 1 - 1e-6)

    real = [np.log(probs(r)[0]) for r in z.detach().numpy()]
    permuted = [np.log(probs(r)[1]) for r in z_perm.numpy()]
    assert permuted[0] == pytest.approx(math.log(1e-6))
    objective = 0.5 * np.mean(real) + 0.5 * np.mean(permuted)
    terms = discriminator_loss(disc, z, z_perm)
    assert terms["discriminator_loss"].item() == pytest.approx(objective)
    assert terms["loss"].item() == pytest.approx(-objective)
    terms["loss"].backward()
    assert z.grad is None, "the discriminator step sends no gradient into the encoder"
    assert disc.w.grad is not None


# --- the dispatch the trainers use: method name + hyperparameters -> the method's regularizer -------------------


def _np_kl(mean, logvar):
    return float(np.mean(0.5 * (mean**2 + np.exp(logvar) - logvar - 1).sum(1)))


def _hand_regularizer(method, h, mean, logvar, z, step, dataset_size, tc_estimator):
    """Each method's regularizer from its paper's formula, in numpy (see the method sections above)."""
    kl = _np_kl(mean, logvar)
    if method in ("vae", "beta_vae"):
        return h["beta"] * kl
    if method == "annealed_vae":
        c = min(h["c_max"], h["c_max"] * step / h["iteration_threshold"])
        return h["gamma"] * abs(kl - c)
    if method == "beta_tcvae":
        n, m = dataset_size, z.shape[0]
        weights = {
            "reference": lambda j, i: 1.0,
            "mws": lambda j, i: 1.0 / (n * m),
            "mss": lambda j, i: 1 / n if i == j else ((n - m + 1) / (n * (m - 1)) if i == (j + 1) % m else 1 / (m - 1)),
        }[tc_estimator]
        return kl + (h["beta"] - 1) * _np_tc(z, mean, logvar, weights)
    if method in ("dip_vae_i", "dip_vae_ii"):
        cov = np.cov(mean, rowvar=False, bias=True)
        if method == "dip_vae_ii":
            cov = cov + np.diag(np.exp(logvar).mean(0))
        return kl + _np_penalty(cov, h["lambda_od"], h["lambda_d_factor"] * h["lambda_od"])
    if method == "factor_vae":
        w, b = _FixedDiscriminator().w.detach().numpy(), _FixedDiscriminator().b.detach().numpy()
        logits = z @ w + b
        return kl + h["gamma"] * float(np.mean(logits[:, 0] - logits[:, 1]))
    raise AssertionError(method)


@pytest.mark.parametrize(
    "method, hyperparameters, tc_estimator",
    [
        ("beta_vae", {"beta": 6.0}, "reference"),
        ("vae", {"beta": 1.0}, "reference"),
        ("annealed_vae", {"gamma": 1000.0, "c_max": 25.0, "iteration_threshold": 50_000}, "reference"),
        ("beta_tcvae", {"beta": 6.0}, "reference"),
        ("beta_tcvae", {"beta": 6.0}, "mws"),
        ("beta_tcvae", {"beta": 6.0}, "mss"),
        ("dip_vae_i", {"lambda_od": 2.0, "lambda_d_factor": 7.0}, "reference"),
        ("dip_vae_ii", {"lambda_od": 5.0, "lambda_d_factor": 0.5}, "reference"),
        ("factor_vae", {"gamma": 30.0}, "reference"),
    ],
)
def test_objective_terms_gives_each_method_its_regularizer(method, hyperparameters, tc_estimator):
    """`objective_terms` (what Trainer and StackTrainer call) with distinct values for every hyperparameter, so that
    a swapped or dropped one shows; the step (20,000) sits inside the AnnealedVAE ramp."""
    logits, x, mean, logvar, z = _batch(seed=30, n=6, d=3)
    terms = objective_terms(
        method,
        logits,
        x,
        mean,
        logvar,
        z,
        20_000.0,
        hyperparameters,
        discriminator=_FixedDiscriminator(),
        tc_estimator=tc_estimator,
        dataset_size=500,
    )
    args = mean.numpy(), logvar.numpy(), z.numpy()
    expected = _hand_regularizer(method, hyperparameters, *args, 20_000.0, 500, tc_estimator)
    assert terms["regularizer"].item() == pytest.approx(expected, rel=1e-10)
    recon = float(_np_sigmoid_xent(logits.numpy(), x.numpy()).reshape(6, -1).sum(1).mean())
    assert terms["loss"].item() == pytest.approx(recon + expected, rel=1e-10)


def _np_sigmoid_xent(logits, targets):
    return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


def test_objective_terms_validation():
    logits, x, mean, logvar, z = _batch()
    with pytest.raises(InvalidInputError, match="needs the data set's size"):
        objective_terms("beta_tcvae", logits, x, mean, logvar, z, 0, {"beta": 2.0}, tc_estimator="mss")
    with pytest.raises(InvalidInputError, match="unknown tc_estimator"):
        objective_terms("beta_tcvae", logits, x, mean, logvar, z, 0, {"beta": 2.0}, tc_estimator="exact")
    with pytest.raises(InvalidInputError, match="discriminator"):
        objective_terms("factor_vae", logits, x, mean, logvar, z, 0, {"gamma": 2.0})
    with pytest.raises(InvalidInputError, match="unknown method"):
        objective_terms("gan", logits, x, mean, logvar, z, 0, {})


# --- vmap over a stack of models with per-model hyperparameters ------------------------------------------------


def _stack(k=3):
    parts = [_batch(seed=20 + s, n=5, d=3, dtype=torch.float32) for s in range(k)]
    return [torch.stack(t) for t in zip(*parts)]


def _assert_vmap_equals_loop(fn, hyper, stacked):
    batched = torch.func.vmap(fn)(hyper, *stacked)
    for s in range(hyper.shape[0]):
        single = fn(hyper[s], *(t[s] for t in stacked))
        for key, value in single.items():
            assert torch.allclose(batched[key][s], value, rtol=1e-5, atol=1e-5), key


def test_vmap_beta_tcvae_per_model_beta():
    betas = torch.tensor([1.0, 4.0, 10.0])
    _assert_vmap_equals_loop(lambda b, lo, x, m, lv, z: beta_tcvae_loss(lo, x, m, lv, z, beta=b), betas, _stack())
    _assert_vmap_equals_loop(
        lambda b, lo, x, m, lv, z: beta_tcvae_loss(lo, x, m, lv, z, beta=b, dataset_size=100, sampling="mss"),
        betas,
        _stack(),
    )
    # and the loop itself matches plain float betas
    logits, x, mean, logvar, z = (t[1] for t in _stack())
    assert torch.allclose(
        beta_tcvae_loss(logits, x, mean, logvar, z, beta=4.0)["loss"],
        beta_tcvae_loss(logits, x, mean, logvar, z, beta=betas[1])["loss"],
    )


def test_vmap_other_objectives_per_model_hyperparameters():
    stacked = _stack()
    _assert_vmap_equals_loop(
        lambda c, lo, x, m, lv, z: annealed_vae_loss(lo, x, m, lv, 1000.0, c, 100_000, torch.tensor(40_000)),
        torch.tensor([5.0, 25.0, 100.0]),
        stacked,
    )
    for dip_type in ("i", "ii"):
        _assert_vmap_equals_loop(
            lambda lam, lo, x, m, lv, z, t=dip_type: dip_vae_loss(lo, x, m, lv, lambda_od=lam, dip_type=t),
            torch.tensor([1.0, 10.0, 50.0]),
            stacked,
        )
    disc = FactorDiscriminator(latent_dim=3, hidden=8, layers=2, generator=torch.Generator().manual_seed(0))
    _assert_vmap_equals_loop(
        lambda gam, lo, x, m, lv, z: factor_vae_loss(lo, x, m, lv, z, gamma=gam, discriminator=disc),
        torch.tensor([10.0, 40.0, 100.0]),
        stacked,
    )
