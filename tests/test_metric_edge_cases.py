"""Metrics never return a silent NaN or inf: degenerate or overflowing inputs are a clear InvalidInputError."""

import numpy as np
import pytest
import torch

from untwine import metrics
from untwine.errors import InvalidInputError
from untwine.metrics.mig_posterior import mig_posterior
from untwine.metrics.utils import histogram_discretize

RNG = np.random.default_rng(0)
FACTORS = RNG.integers(0, 4, size=(200, 3))
CODES = RNG.normal(size=(200, 4))


@pytest.mark.parametrize("scale", [1e300, 1e39])
def test_codes_beyond_float32_are_rejected_by_every_metric(scale):
    big = CODES * scale
    half = (big[:100], FACTORS[:100], big[100:], FACTORS[100:])
    calls = {
        "irs": lambda: metrics.irs(big, FACTORS),
        "sap continuous": lambda: metrics.sap(*half, continuous_factors=True),
        "mig": lambda: metrics.mig(big, FACTORS),
        "unsupervised": lambda: metrics.unsupervised(big),
        "modularity": lambda: metrics.modularity_explicitness(*half),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidInputError, match="beyond float32's range"):
            call()
            pytest.fail(f"{name} accepted codes of magnitude {scale}")


def test_codes_at_the_float32_limit_give_finite_scores():
    """|x| <= 3.4e38 is accepted, and the float64 arithmetic of the metrics stays finite there."""
    big = np.clip(CODES, -1, 1) * 3.4e38
    half = (big[:100], FACTORS[:100], big[100:], FACTORS[100:])
    values = [
        *metrics.irs(big, FACTORS).values(),
        *metrics.sap(*half, continuous_factors=True).values(),
        *metrics.mig(big, FACTORS).values(),
        *metrics.unsupervised(big).values(),
    ]
    assert all(np.isfinite(values))
    # scaling every code by the same factor changes no rank-, bin- or correlation-based score
    assert metrics.mig(big, FACTORS) == pytest.approx(metrics.mig(np.clip(CODES, -1, 1), FACTORS))
    assert metrics.irs(big, FACTORS)["IRS"] == pytest.approx(metrics.irs(np.clip(CODES, -1, 1), FACTORS)["IRS"])


@pytest.mark.parametrize("bins", [2.5, "abc", 0, -3, True, None])
def test_num_bins_must_be_a_positive_integer(bins):
    with pytest.raises(InvalidInputError, match="num_bins must be a positive integer"):
        metrics.mig(CODES, FACTORS, num_bins=bins)


def test_an_integral_float_number_of_bins_is_that_integer():
    assert metrics.mig(CODES, FACTORS, num_bins=20.0) == metrics.mig(CODES, FACTORS, num_bins=20)


def test_a_range_too_narrow_for_its_magnitude_is_an_error_not_numpys():
    # float64 spacing at 1e16 is 2: a column spanning [1e16, 1e16 + 6] cannot hold 20 distinct bin edges
    codes = 1e16 + np.repeat(np.arange(4.0), 50)[:, None] * 2 + np.zeros((200, 2))
    with pytest.raises(InvalidInputError, match="too narrow for its magnitude to make 20 distinct bins"):
        histogram_discretize(codes, 20)
    assert histogram_discretize(codes, 3).max() == 3  # 3 bins fit


@pytest.mark.parametrize("logvar", [1e4, -1e4, 701.0])
def test_posterior_mig_rejects_log_variances_whose_exp_overflows(logvar):
    with pytest.raises(InvalidInputError, match=r"\|log-variance\| <= 700"):
        mig_posterior(CODES, np.full_like(CODES, logvar), FACTORS, torch.Generator().manual_seed(0))


def test_posterior_mig_with_huge_variances_is_finite_or_an_error():
    # at log-variance 700 every posterior is almost flat: the MI estimates vanish, and the score is finite
    score = mig_posterior(CODES, np.full_like(CODES, 700.0), FACTORS, torch.Generator().manual_seed(0))
    assert np.isfinite(score["posterior_mig"]) and abs(score["posterior_mig"]) < 1e-6
    with pytest.raises(InvalidInputError, match="overflow"):
        mig_posterior(CODES * 1e30, np.full_like(CODES, -700.0), FACTORS, torch.Generator().manual_seed(0))
