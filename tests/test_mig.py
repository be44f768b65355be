import numpy as np
import pytest
from factories import balanced_grid

from untwine.errors import InvalidInputError
from untwine.metrics import mig
from untwine.metrics.utils import discrete_entropy, discrete_mutual_info, histogram_discretize


def _mi_by_hand(a, b):
    """Plug-in MI in nats from the joint histogram (independent of sklearn)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def test_histogram_discretizer_is_equal_width_over_sample_range():
    codes = np.array([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0], [0.26, 5.0]])
    out = histogram_discretize(codes, num_bins=2)
    # edges [0, 0.5, 1]: digitize against [0, 0.5] -> 0 and 0.26 in bin 1; 0.5 and the maximum 1.0 in bin 2
    assert out[:, 0].tolist() == [1, 2, 2, 1]
    assert out[:, 1].tolist() == [2, 2, 2, 2]  # constant column: numpy's [min - .5, max + .5] edges


def test_mutual_information_and_entropy_match_hand_computation():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 500)
    b = (a + rng.integers(0, 2, 500)) % 4
    m = discrete_mutual_info(a[:, None], b[:, None])
    assert np.isclose(m[0, 0], _mi_by_hand(a, b))
    counts = np.bincount(a) / 500
    assert np.isclose(discrete_entropy(a[:, None])[0], -(counts * np.log(counts)).sum())


def test_perfectly_aligned_codes_score_one():
    factors = balanced_grid(5, 7)
    codes = factors.astype(float)
    assert mig(codes, factors)["discrete_mig"] == pytest.approx(1.0)
    # monotone rescaling and an extra constant code change nothing
    codes = np.c_[3 * codes[:, ::-1] - 1, np.zeros(len(codes))]
    assert mig(codes, factors)["discrete_mig"] == pytest.approx(1.0)


def test_duplicated_code_halves_the_score():
    factors = balanced_grid(4, 6)
    codes = np.c_[factors[:, 0], factors[:, 0], factors[:, 1]].astype(float)
    # factor 0: two equally informative codes, gap 0; factor 1: gap 1
    assert mig(codes, factors)["discrete_mig"] == pytest.approx(0.5)


def test_rotation_lowers_the_score():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 20, size=(10_000, 2))
    aligned = factors + rng.uniform(-0.3, 0.3, size=factors.shape)
    angle = np.pi / 4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert mig(aligned, factors)["discrete_mig"] > 0.9
    assert mig(aligned @ rotation, factors)["discrete_mig"] < 0.1


def test_noise_codes_score_near_zero():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 10, size=(10_000, 3))
    assert mig(rng.normal(size=(10_000, 10)), factors)["discrete_mig"] < 0.01


def test_small_hand_computed_case():
    factors = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0], [0.1, 1.0], [0.9, 0.0], [1.0, 1.0]])
    # code 0 with 20 bins over [0, 1]: 0 -> 1, 0.1 -> 3, 0.9 -> 19, 1.0 -> 20; each bin determines the factor,
    # so I(code 0; f) = H(f) = log 2.  Code 1 is independent of the factor: MI 0.  MIG = (log 2 - 0) / log 2 = 1
    assert mig(codes, factors)["discrete_mig"] == pytest.approx(1.0)
    codes = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])  # both codes independent of the factor
    assert mig(codes, factors)["discrete_mig"] == pytest.approx(0.0)


def test_bad_input_is_rejected():
    f = np.zeros((10, 2), dtype=int)
    f[5:, 0] = 1
    f[::2, 1] = 1
    with pytest.raises(InvalidInputError, match="NaN"):
        mig(np.full((10, 3), np.nan), f)
    with pytest.raises(InvalidInputError, match=r"shape \[N, d\]"):
        mig(np.zeros(10), f)
    with pytest.raises(InvalidInputError, match="rows"):
        mig(np.zeros((9, 3)), f)
    with pytest.raises(InvalidInputError, match="integer"):
        mig(np.zeros((10, 3)), f + 0.5)
    with pytest.raises(InvalidInputError, match="single value"):
        mig(np.random.default_rng(0).normal(size=(10, 3)), np.zeros((10, 2), dtype=int))
    with pytest.raises(InvalidInputError, match="at least 2 code"):
        mig(np.zeros((10, 1)), f)
