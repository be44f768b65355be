"""Label noise (Holtz et al. 2022, Tables 2-3): the perturbation has the stated probabilities (statistical tests with
a fixed seed), the wrapper hands metrics noisy labels of clean observations, and the evaluation plumbing."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from factories import factor_pixels_dataset

from untwine.cli import main
from untwine.config import TrainConfig
from untwine.data.dsprites import FACTOR_NAMES, FACTOR_SIZES
from untwine.errors import InvalidInputError
from untwine.evaluation import evaluate_model
from untwine.evaluation.evaluate import parse_option
from untwine.runs import RunDir
from untwine.selection.label_noise import NoisyLabels, factor_noise, perturb_factors, with_label_noise
from untwine.training import Trainer

# Holtz et al. Table 2, per dSprites factor (shape, scale, orientation, position x, position y)
TABLE_2 = {1: [0.05, 0.1, 0.05, 0.05, 0.05], 2: [0.1, 0.2, 0.1, 0.1, 0.1], 3: [0.3, 0.3, 0.3, 0.3, 0.3]}
N = 200_000


def _normal_cdf(x, std):
    return 0.5 * (1 + math.erf(x / (std * math.sqrt(2))))


def _move_probabilities(std, low, high):
    """P(round(N(0, std)) = s) for s in low..high."""
    return np.array([_normal_cdf(s + 0.5, std) - _normal_cdf(s - 0.5, std) for s in range(low, high + 1)])


def _expected_change_rate(size, p, discrete, std):
    """P(label changes) averaged over uniform labels: p (1 - 1/n) if resampled uniformly; for a clipped rounded
    Gaussian move from value v: p (1 - P(v + move clipped == v))."""
    if discrete:
        return p * (1 - 1 / size)
    stay = []
    for v in range(size):
        low = _normal_cdf(-0.5, std) if v > 0 else 0.0  # moves <= -1 stay only at v = 0 (clipped back)
        high = _normal_cdf(0.5, std) if v < size - 1 else 1.0
        stay.append(high - low)
    return p * (1 - np.mean(stay))


@pytest.mark.parametrize("regime", [1, 2, 3])
def test_dsprites_regimes_are_table_2(regime):
    probabilities, discrete, stds = factor_noise(FACTOR_NAMES, FACTOR_SIZES, regime)
    assert probabilities == TABLE_2[regime]
    assert discrete == [True, False, False, False, False]  # shape resampled; the others moved
    assert stds == pytest.approx([0.2, 0.5, 3.9, 3.1, 3.1])  # 0.1 of each range


@pytest.mark.parametrize("regime", [1, 2, 3])
def test_perturbation_has_the_stated_probabilities(regime):
    generator = torch.Generator().manual_seed(regime)
    labels = torch.stack([torch.randint(n, (N,), generator=generator) for n in FACTOR_SIZES], dim=1)
    probabilities, discrete, stds = factor_noise(FACTOR_NAMES, FACTOR_SIZES, regime)
    noisy, applied = perturb_factors(labels, FACTOR_SIZES, probabilities, discrete, stds, generator)
    assert torch.equal(noisy[~applied], labels[~applied]), "entries left alone are unchanged"
    for k, (size, p) in enumerate(zip(FACTOR_SIZES, probabilities)):
        # 1. each entry is perturbed with probability p_k (binomial, two-sided, alpha 1e-4)
        count = int(applied[:, k].sum())
        assert scipy.stats.binomtest(count, N, p).pvalue > 1e-4, (k, count / N, p)
        # 2. the label changes at the rate implied by p_k and the perturbation
        changed = int((noisy[:, k] != labels[:, k]).sum())
        rate = _expected_change_rate(size, p, discrete[k], stds[k])
        assert scipy.stats.binomtest(changed, N, rate).pvalue > 1e-4, (k, changed / N, rate)
        new, old = noisy[applied[:, k], k].numpy(), labels[applied[:, k], k].numpy()
        if discrete[k]:
            # 3a. a resampled discrete factor is uniform over its values (chi-square, alpha 1e-4)
            counts = np.bincount(new, minlength=size)
            assert scipy.stats.chisquare(counts).pvalue > 1e-4
        else:
            # 3b. an ordinal factor away from its ends moves by round(N(0, std)): zero mean, Gaussian frequencies
            span = int(math.ceil(4 * stds[k]))
            interior = (old >= span) & (old <= size - 1 - span)
            moves = new[interior] - old[interior]
            assert abs(moves.mean()) < 4 * moves.std() / math.sqrt(len(moves))
            expected = _move_probabilities(stds[k], -span, span)
            observed = np.array([(moves == s).sum() for s in range(-span, span + 1)])
            keep = expected * len(moves) >= 5  # chi-square needs expected counts >= 5
            expected = expected[keep] / expected[keep].sum() * observed[keep].sum()
            assert scipy.stats.chisquare(observed[keep], expected).pvalue > 1e-4


def test_other_data_sets_get_kinds_by_factor_name():
    names = ("object_color", "object_shape", "object_size", "camera_height", "first_dof", "floor_hue", "factor_3")
    probabilities, discrete, _ = factor_noise(names, (6, 6, 2, 3, 40, 10, 5), 1)
    assert discrete == [True, True, False, False, False, True, True]
    assert probabilities == [0.05, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05]
    with pytest.raises(InvalidInputError, match="label_noise must be 1, 2 or 3"):
        factor_noise(names, (6, 6, 2, 3, 40, 10, 5), 4)


def test_wrapper_hands_clean_labels_and_observations_of_perturbed_factors():
    data = factor_pixels_dataset((5, 8))
    noisy = NoisyLabels(data, 3, torch.Generator().manual_seed(7))
    labels, observations = noisy.sample(500, torch.Generator().manual_seed(1))
    assert torch.equal(labels, data.sample_factors(500, torch.Generator().manual_seed(1)))
    again, _ = perturb_factors(
        labels, (5, 8), noisy.probabilities, noisy.discrete, noisy.stds, torch.Generator().manual_seed(7)
    )
    assert torch.equal(observations, data.observations(again))  # the pixels are the perturbed factors
    seen = (observations.flatten(1) * 255).round().long()
    assert 0.1 < (seen != labels).any(dim=1).float().mean() < 0.5
    assert noisy.factor_sizes == (5, 8) and noisy.num_factors == 2 and len(noisy) == 40


class PixelModel(torch.nn.Module):  # an "encoder" whose mean reads the factor pixels: perfectly disentangled
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(255.0))

    def encode(self, x):
        mean = x.flatten(1) * self.scale
        return mean, torch.full_like(mean, -20.0)


def test_evaluate_model_scores_noisy_labels_beside_clean_ones():
    data = factor_pixels_dataset((5, 8))
    clean = evaluate_model(PixelModel(), data, ["mig"], ["mean"], options={"mig": {"num_train": 2000}})
    options = {"mig": {"num_train": 2000, "label_noise": 3}}
    noisy = evaluate_model(PixelModel(), data, ["mig"], ["mean"], options=options)
    assert clean["eval.mean.mig.discrete_mig"] > 0.99
    assert noisy["eval.mean.mig_label_noise3.discrete_mig"] < clean["eval.mean.mig.discrete_mig"] - 0.1
    assert not any(k.startswith("reference.") for k in noisy), "noisy scores are not the reference's"
    assert "eval.mean.mig.discrete_mig" not in noisy
    again = evaluate_model(PixelModel(), data, ["mig"], ["mean"], options=options)
    key = "eval.mean.mig_label_noise3.discrete_mig"
    assert again[key] == noisy[key], "seeded: the same noisy score again"
    assert options["mig"]["label_noise"] == 3, "the caller's options are left alone"


def test_label_noise_option_parsing_and_errors():
    assert parse_option("mig.label_noise=2", ["mig"]) == ("mig", "label_noise", 2)
    data = factor_pixels_dataset((5, 8))
    with pytest.raises(InvalidInputError, match="not to 'unsupervised'"):
        with_label_noise(data, "unsupervised", 1, 0, "mean")
    with pytest.raises(InvalidInputError, match="label_noise must be 1, 2 or 3"):
        evaluate_model(PixelModel(), data, ["mig"], ["mean"], options={"mig": {"label_noise": 5}})
    assert with_label_noise(data, "mig", 0, 0, "mean") == (data, "mig")


def test_cli_option(tmp_path, capsys):
    config = TrainConfig(steps=1, dataset="dummy_data", batch_size=8, latent_dim=3)
    Trainer(config, tmp_path / "run").train()
    args = ["evaluate", str(tmp_path / "run"), "--metrics", "mig", "--num-points", "200", "--representation", "mean"]
    assert main(args + ["--option", "mig.label_noise=1"]) == 0
    assert "eval.mean.mig_label_noise1.discrete_mig" in RunDir(tmp_path / "run").read_results()
    assert main(args + ["--option", "mig.label_noise=4"]) == 2
    assert "label_noise must be 1, 2 or 3" in capsys.readouterr().err
