import numpy as np
import pytest
import torch
from factories import balanced_grid, factor_pixels_dataset

from untwine.errors import InvalidInputError
from untwine.evaluation import evaluate_model
from untwine.metrics import PROTOCOLS, mig_posterior
from untwine.metrics.mig_posterior import posterior_mutual_info


def _gen():
    return torch.Generator().manual_seed(0)


def test_aligned_duplicated_and_noise_codes():
    f = balanced_grid(5, 8, repeat=50)
    sharp = np.full((len(f), 2), np.log(1e-4))
    assert mig_posterior(f.astype(float), sharp, f, _gen())["posterior_mig"] == pytest.approx(1.0, abs=1e-6)
    duplicated = np.c_[f[:, 0], f[:, 0], f[:, 1]].astype(float)
    assert mig_posterior(duplicated, np.c_[sharp, sharp[:, :1]], f, _gen())["posterior_mig"] == pytest.approx(
        0.5, abs=1e-6
    )
    noise = np.random.default_rng(0).normal(size=(len(f), 3))
    assert mig_posterior(noise, np.zeros((len(f), 3)), f, _gen())["posterior_mig"] < 0.01


def test_mutual_information_of_a_sharp_code_is_the_factor_entropy():
    f = balanced_grid(4, 2, repeat=100)
    mi = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1e-4)), f, _gen())
    assert mi[0, 0] == pytest.approx(np.log(4), abs=1e-6) and mi[1, 1] == pytest.approx(np.log(2), abs=1e-6)
    assert abs(mi[0, 1]) < 1e-6 and abs(mi[1, 0]) < 1e-6


def test_broad_posteriors_carry_less_information():
    f = balanced_grid(4, 4, repeat=100)
    sharp = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1e-4)), f, _gen())[0, 0]
    broad = posterior_mutual_info(f.astype(float), np.full(f.shape, np.log(1.0)), f, _gen())[0, 0]
    assert 0 < broad < 0.8 * sharp


def test_protocol_with_a_model_and_validation(dsprites):
    from untwine.nn import GaussianVAE

    model = GaussianVAE(generator=torch.Generator().manual_seed(0))
    results = evaluate_model(
        model,
        dsprites,
        ["mig", "mig_posterior"],
        ["mean"],
        options={"mig": {"num_train": 500}, "mig_posterior": {"num_train": 500}},
    )
    assert 0 <= results["eval.mean.mig_posterior.posterior_mig"] <= 1
    assert not any(k.startswith("reference.mean.mig_posterior") for k in results), "no reference counterpart"
    with pytest.raises(InvalidInputError, match="Gaussian encoder"):
        PROTOCOLS["mig_posterior"](lambda x: x.flatten(1).numpy(), factor_pixels_dataset(), _gen())
    with pytest.raises(InvalidInputError, match="unknown MIG estimator"):
        PROTOCOLS["mig"](lambda x: x.flatten(1).numpy(), factor_pixels_dataset(), _gen(), estimator="kde")
    with pytest.raises(InvalidInputError, match="differ in shape"):
        mig_posterior(np.zeros((10, 3)), np.zeros((10, 2)), np.tile([[0], [1]], (5, 1)), _gen())
