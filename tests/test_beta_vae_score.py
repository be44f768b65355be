import importlib

import numpy as np
import pytest
import scipy.stats
import torch
from factories import factor_pixels_dataset, read_pixels

from untwine.data.base import FactorDataset
from untwine.errors import InvalidInputError
from untwine.metrics.beta_vae_score import beta_vae_score_from_features, sample_features
from untwine.metrics.predictors import logistic_regression

# the module (untwine.metrics may export a function of the same name)
beta_vae_score = importlib.import_module("untwine.metrics.beta_vae_score")

SMALL = {"num_train": 200, "num_eval": 100}


def noise_representation(seed=0, dims=4):
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), dims))


def test_features_share_the_labelled_factor():
    data = factor_pixels_dataset((4, 5, 6))
    features, labels = sample_features(read_pixels, data, torch.Generator().manual_seed(0), 50, batch_size=16)
    assert features.shape == (50, 3) and labels.shape == (50,) and labels.dtype == np.int64
    assert set(labels.tolist()) == {0, 1, 2}
    rows = np.arange(50)
    assert np.all(features[rows, labels] == 0), "the fixed factor's code never differs within a pair"
    others = np.ones_like(features, dtype=bool)
    others[rows, labels] = False
    assert np.all(features[others] > 0)


class TwoBatches(FactorDataset):
    """Each BetaVAE point samples two batches of factor vectors: here the first batch is all zeros and the second
    holds 0, 1, ..., B - 1 in every factor (B = 8), so |r1 - r2| over a batch is 0, 1, ..., 7 for every code
    except the fixed factor's (0: the protocol copies that factor into the second batch)."""

    name = "two_batches"
    factor_sizes = (8, 8, 8)
    observation_shape = (1, 1, 3)

    def __init__(self):
        self.calls = 0

    def sample_factors(self, n, generator):
        self.calls += 1
        if self.calls % 2:
            return torch.zeros(n, 3, dtype=torch.long)
        return (torch.arange(n) % 8)[:, None].repeat(1, 3)

    def _observations(self, factors, generator):
        return factors.float().view(-1, 1, 1, 3)


def test_features_are_the_batch_mean_of_absolute_differences():
    data, calls = TwoBatches(), []

    def represent(x):
        calls.append(len(x))
        return x.flatten(1).numpy()

    features, labels = sample_features(represent, data, torch.Generator().manual_seed(0), 256, 8)
    expected = np.full((256, 3), np.mean(np.arange(8)))  # mean |0 - b| over b = 0..7: 3.5 (the batch max: 7)
    expected[np.arange(256), labels] = 0.0
    assert np.array_equal(features, expected)
    # 256 points of 2 x 8 vectors fill exactly one encoding call of ENCODE_BATCH_SIZE = 4096 images
    assert data.calls == 2 and calls == [4096]


def test_the_fixed_factor_is_drawn_uniformly():
    data = factor_pixels_dataset((2, 2, 2, 2, 2))
    _, labels = sample_features(read_pixels, data, torch.Generator().manual_seed(4), 5000, batch_size=2)
    counts = np.bincount(labels, minlength=5)
    assert counts.size == 5 and counts.min() > 0
    # chi-square goodness of fit to the uniform distribution over the 5 factors (fixed seed: a fixed outcome)
    assert scipy.stats.chisquare(counts).pvalue > 0.01
    assert (
        scipy.stats.chisquare(counts, [0.3 * 5000, 0.175 * 5000, 0.175 * 5000, 0.175 * 5000, 0.175 * 5000]).pvalue
        < 1e-6
    )


def test_perfect_representation_scores_one():
    data = factor_pixels_dataset((4, 5, 6))
    result = beta_vae_score.evaluate(read_pixels, data, torch.Generator().manual_seed(0), **SMALL)
    assert set(result) == {"train_accuracy", "eval_accuracy"}
    assert result["train_accuracy"] == pytest.approx(1.0) and result["eval_accuracy"] == pytest.approx(1.0)
    lbfgs = beta_vae_score.evaluate(read_pixels, data, torch.Generator().manual_seed(0), logistic="lbfgs", **SMALL)
    assert lbfgs["eval_accuracy"] == pytest.approx(1.0)


def test_noise_representation_scores_chance():
    data = factor_pixels_dataset((4, 5, 6))
    g = torch.Generator().manual_seed(0)
    result = beta_vae_score.evaluate(noise_representation(), data, g, batch_size=16, **SMALL)
    assert 0.15 < result["eval_accuracy"] < 0.55  # chance is 1/3


def test_protocol_is_features_then_classifier():
    """evaluate = training features (num_train points of `batch_size` pairs), the classifier's seed, evaluation
    features, then the classifier: replayed step by step on the same generator, with non-default settings."""
    from untwine.metrics.predictors import sklearn_seed

    data = factor_pixels_dataset((4, 5, 6))
    mixing = np.array([[1, 0.8, 0.3], [0.5, 1, 0.9], [0.2, 0.7, 1]])
    rep = lambda x: np.sin(1.3 * read_pixels(x) @ mixing)  # noqa: E731  entangled codes: accuracies near 0.4
    options = {"batch_size": 3, "num_train": 150, "num_eval": 70, "logistic": "lbfgs"}
    result = beta_vae_score.evaluate(rep, data, torch.Generator().manual_seed(8), **options)
    g = torch.Generator().manual_seed(8)
    train = sample_features(rep, data, g, 150, batch_size=3)
    seed = sklearn_seed(g)
    evaluation = sample_features(rep, data, g, 70, batch_size=3)
    assert result == beta_vae_score_from_features(*train, *evaluation, logistic="lbfgs", random_state=seed)
    assert result != beta_vae_score.evaluate(
        rep, data, torch.Generator().manual_seed(8), **{**options, "batch_size": 4}
    )
    assert result != beta_vae_score.evaluate(
        rep, data, torch.Generator().manual_seed(8), **{**options, "logistic": "liblinear_ovr"}
    )


def test_deterministic_for_a_seed():
    data = factor_pixels_dataset()
    run = lambda seed: beta_vae_score.evaluate(  # noqa: E731
        noise_representation(), data, torch.Generator().manual_seed(seed), batch_size=8, **SMALL
    )
    assert run(3) == run(3)


def test_core_on_hand_made_features():
    train_x = np.array([[0.0, 1.0], [0.1, 1.2], [1.0, 0.0], [1.1, 0.2]] * 5)
    train_y = np.array([0, 0, 1, 1] * 5)
    eval_x = np.array([[0.0, 1.1], [1.2, 0.1], [0.9, 0.0]])
    result = beta_vae_score_from_features(train_x, train_y, eval_x, np.array([0, 1, 0]), random_state=0)
    assert result == {"train_accuracy": 1.0, "eval_accuracy": pytest.approx(2 / 3)}


def ordered_classes(n, seed, noise=0.35):
    """One feature, three ordered classes: one-vs-rest and multinomial logistic regression disagree here (a linear
    one-vs-rest model cannot single out the middle class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (y + rng.normal(0, noise, n))[:, None], y


def one_vs_rest_predictions(x_train, y_train, x):
    """The study's sklearn (<= 0.21) default LogisticRegression(): liblinear, one binary model per class; the class
    with the largest sigmoid wins."""
    from sklearn.linear_model import LogisticRegression

    scores = [
        LogisticRegression(solver="liblinear").fit(x_train, y_train == c).decision_function(x)
        for c in np.unique(y_train)
    ]
    return np.argmax(scores, axis=0)


def test_default_classifier_is_the_study_one_vs_rest_liblinear():
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = ordered_classes(90, 0)
    eval_x, eval_y = ordered_classes(300, 1)
    sets = ((train_x, train_y), (eval_x, eval_y))
    ovr = [np.mean(one_vs_rest_predictions(train_x, train_y, x) == y) for x, y in sets]
    multinomial = LogisticRegression().fit(train_x, train_y)
    today = [np.mean(multinomial.predict(x) == y) for x, y in sets]
    assert ovr[1] < today[1] - 0.03, "the case separates the two flavours"
    result = beta_vae_score_from_features(train_x, train_y, eval_x, eval_y, random_state=0)
    assert [result["train_accuracy"], result["eval_accuracy"]] == pytest.approx(ovr, abs=1e-12)
    # the factory's default is that flavour too
    default = logistic_regression().fit(train_x, train_y).predict(eval_x)
    assert np.array_equal(default, one_vs_rest_predictions(train_x, train_y, eval_x))
    lbfgs = beta_vae_score_from_features(train_x, train_y, eval_x, eval_y, logistic="lbfgs", random_state=0)
    assert [lbfgs["train_accuracy"], lbfgs["eval_accuracy"]] == pytest.approx(today, abs=1e-12)


def test_bad_input_is_rejected():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(InvalidInputError, match="train_features contains NaN"):
        beta_vae_score_from_features(np.full((4, 2), np.nan), y, x, y)
    with pytest.raises(InvalidInputError, match="eval_features contains NaN"):
        beta_vae_score_from_features(x, y, np.full((4, 2), np.nan), y)
    with pytest.raises(InvalidInputError, match=r"train_labels must have shape \[4\]"):
        beta_vae_score_from_features(x, y[:3], x, y)
    with pytest.raises(InvalidInputError, match=r"eval_labels must have shape \[4\]"):
        beta_vae_score_from_features(x, y, x, y[:3])
    with pytest.raises(InvalidInputError, match="columns"):
        beta_vae_score_from_features(x, y, np.zeros((4, 3)), y)
    with pytest.raises(InvalidInputError, match="train_labels must be integer"):
        beta_vae_score_from_features(x, y + 0.5, x, y)
    with pytest.raises(InvalidInputError, match="single value"):
        beta_vae_score_from_features(x, np.zeros(4, dtype=int), x, y)
    data = factor_pixels_dataset()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InvalidInputError, match="flavour"):
        beta_vae_score.evaluate(read_pixels, data, g, logistic="newton", **SMALL)
    with pytest.raises(InvalidInputError, match="expected"):
        beta_vae_score.evaluate(lambda x: np.zeros(len(x)), data, g, **SMALL)
    with pytest.raises(InvalidInputError, match="representation output contains NaN"):
        beta_vae_score.evaluate(lambda x: np.full((len(x), 2), np.nan), data, g, **SMALL)
    with pytest.raises(InvalidInputError, match="num_points must be positive"):
        beta_vae_score.evaluate(read_pixels, data, g, num_train=0)
    with pytest.raises(InvalidInputError, match="batch_size must be positive"):
        sample_features(read_pixels, data, g, 5, batch_size=0)


def test_smallest_inputs_are_accepted():
    data = factor_pixels_dataset((4, 5, 6))
    g = torch.Generator().manual_seed(0)
    # one pair per point (|r1 - r2| itself), one evaluation point, one training point per feature matrix row
    features, labels = sample_features(read_pixels, data, g, 30, batch_size=1)
    assert features.shape == (30, 3) and np.all(features == np.round(features)), "single differences of integers"
    result = beta_vae_score.evaluate(read_pixels, data, g, batch_size=2, num_train=20, num_eval=1)
    assert result["eval_accuracy"] in (0.0, 1.0)
    single = beta_vae_score_from_features(features, labels, features[:1], labels[:1], random_state=0)
    assert single["eval_accuracy"] in (0.0, 1.0)


def test_encoding_is_chunked_and_keeps_every_row():
    from untwine.metrics.beta_vae_score import ENCODE_BATCH_SIZE, encode_factors

    sizes = []

    def recording(x):
        sizes.append(len(x))
        return read_pixels(x)

    data = factor_pixels_dataset((4, 5, 6))
    factors = data.sample_factors(2 * ENCODE_BATCH_SIZE + 1, torch.Generator().manual_seed(0))
    codes = encode_factors(recording, data, factors, torch.Generator().manual_seed(0))
    assert sizes == [ENCODE_BATCH_SIZE, ENCODE_BATCH_SIZE, 1]  # the last chunk holds a single observation
    assert np.array_equal(codes, factors.numpy())
