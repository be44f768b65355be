"""Encode once (issue 11): every protocol gives the same numbers with the code cache as without it."""

import numpy as np
import pytest
import torch

from untwine.data import StoredDataset, get_dataset
from untwine.errors import InvalidInputError
from untwine.evaluation import evaluate_model
from untwine.evaluation.code_cache import CodeCache, CodeCacheMismatchError, planned_encodings, worthwhile
from untwine.evaluation.representation import encode_factors, representation
from untwine.metrics import PROTOCOLS
from untwine.nn import GaussianVAE

GRID = (2, 3, 4, 5)  # storage order; dimension 1 is a nuisance factor (as SmallNORB's instance)
LATENT = (0, 2, 3)

# small sample counts: every protocol encodes more observations than the 120 stored images
OPTIONS = {
    "beta_vae": {"batch_size": 4, "num_train": 40, "num_eval": 20},
    "factor_vae": {"batch_size": 4, "num_variance_estimate": 100, "num_train": 40, "num_eval": 20},
    "mig": {"num_train": 200},
    "mig_posterior": {"num_train": 200},
    "dci": {"num_train": 100, "num_test": 50, "n_jobs": 1},  # n_jobs=1: no worker pool to start
    "sap": {"num_train": 200, "num_test": 100},
    "modularity_explicitness": {"num_train": 200, "num_test": 100},
    "irs": {"num_train": 200},
    "unsupervised": {"num_train": 200},
    "downstream_logistic_regression": {"num_train": (40,), "num_test": 30, "n_jobs": 1},
    "downstream_boosted_trees": {"num_train": (20, 60), "num_test": 30, "n_jobs": 1},
    "fairness": {"num_train": 100, "num_test_points_per_class": 5, "n_jobs": 1},
}


def stored_images(grid=GRID, latent=LATENT, seed=0) -> StoredDataset:
    """Random 64 x 64 images, one per grid point; the grid dimensions outside `latent` are nuisance factors."""
    g = torch.Generator().manual_seed(seed)
    storage = torch.randint(256, (int(np.prod(grid)), 1, 64, 64), generator=g, dtype=torch.uint8)
    names = tuple("abcdefg"[: len(grid)])
    return StoredDataset("tiny", storage, grid, names, (1, 64, 64), latent_indices=latent)


@pytest.fixture(scope="module")
def model():
    return GaussianVAE(generator=torch.Generator().manual_seed(0), latent_dim=4)


@pytest.fixture(scope="module")
def data():
    return stored_images()


# the classifier-heavy protocols run on the sampled representation only (the mean one takes the same code path)
HEAVY = ("dci", "downstream_logistic_regression", "downstream_boosted_trees", "fairness")


def both_ways(model, data, names, representations):
    cache = CodeCache.build(model, data)
    cached = evaluate_model(model, data, names, representations, options=OPTIONS, code_cache=cache, eval_seed=3)
    direct = evaluate_model(model, data, names, representations, options=OPTIONS, code_cache=False, eval_seed=3)
    keys = {k for k in direct if not k.endswith(("elapsed_s", "elapsed_time"))}
    assert keys == {k for k in cached if not k.endswith(("elapsed_s", "elapsed_time"))}
    for rep in representations:
        for name in names:
            assert any(k.startswith(f"eval.{rep}.{name}.") for k in keys), (rep, name)
    return {k: (cached[k], direct[k]) for k in keys if not np.isclose(cached[k], direct[k], rtol=1e-9, atol=1e-12)}


def test_every_protocol_gives_the_same_numbers_with_and_without_the_cache(model, data):
    assert set(OPTIONS) == set(PROTOCOLS), "every protocol is tested both ways"
    light = [name for name in PROTOCOLS if name not in HEAVY]
    assert not both_ways(model, data, light, ["mean", "sampled"])
    assert not both_ways(model, data, list(HEAVY), ["sampled"])


def test_cached_codes_equal_encoded_codes_and_consume_the_same_draws(model, data):
    cache = CodeCache.build(model, data)
    factors = data.sample_factors(300, torch.Generator().manual_seed(1))
    for kind in ("mean", "sampled"):
        outputs, states = [], []
        for c in (cache, None):
            data_gen, noise_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
            rep = representation(model, kind, noise_gen, cache=c)
            outputs.append(encode_factors(rep, data, factors, data_gen, batch_size=64))
            states.append((data_gen.get_state(), noise_gen.get_state()))
        assert outputs[0].shape == (300, 4) and outputs[0].dtype == np.float32
        np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)
        # the nuisance factor drew 300 numbers on both paths; the sampled noise 300 x 4 on both
        assert torch.equal(states[0][0], states[1][0]) and torch.equal(states[0][1], states[1][1])
        assert not torch.equal(states[0][0], torch.Generator().manual_seed(5).get_state())
    means = [
        encode_factors(
            representation(model, "mean", cache=c), data, factors, torch.Generator().manual_seed(5), gaussian=True
        )
        for c in (cache, None)
    ]
    np.testing.assert_allclose(means[0][1], means[1][1], atol=1e-5)  # log-variances too


def test_the_cache_picks_the_image_the_nuisance_draw_picks():
    """A model whose code is the first pixel: the cached code is the stored image's own value."""

    class FirstPixel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(255.0))

        def encode(self, x):
            value = x.flatten(1)[:, :1] * self.scale
            return torch.cat([value, -value], 1), torch.zeros(x.shape[0], 2)

    grid = (3, 4, 5)  # middle dimension a nuisance factor, images hold their own grid index
    storage = torch.arange(60, dtype=torch.uint8).view(60, 1, 1, 1).expand(60, 1, 2, 2).contiguous()
    data = StoredDataset("indexed", storage, grid, ("a", "b", "c"), (1, 2, 2), latent_indices=(0, 2))
    model = FirstPixel()
    cache = CodeCache.build(model, data)
    factors = torch.tensor([[0, 0], [2, 4], [1, 3]] * 10)
    codes = encode_factors(representation(model, "mean", cache=cache), data, factors, torch.Generator().manual_seed(0))
    nuisance = torch.randint(4, (30,), generator=torch.Generator().manual_seed(0))
    expected = factors[:, 0] * 20 + nuisance * 5 + factors[:, 1]  # row-major index over (a, b, c)
    assert np.array_equal(codes[:, 0], expected.numpy().astype(np.float32))


def test_the_cache_refuses_another_model_data_set_or_changed_weights(model, data):
    cache = CodeCache.build(model, data)
    other = GaussianVAE(generator=torch.Generator().manual_seed(1), latent_dim=4)
    with pytest.raises(CodeCacheMismatchError, match="another model"):
        representation(other, "mean", cache=cache)
    rep = representation(model, "mean", cache=cache)
    factors = torch.zeros(3, 3, dtype=torch.long)
    with pytest.raises(CodeCacheMismatchError, match="cannot serve"):
        encode_factors(rep, stored_images(seed=1), factors, torch.Generator())
    with pytest.raises(CodeCacheMismatchError, match="cannot serve"):  # the same images on another grid
        encode_factors(rep, stored_images(grid=(4, 3, 2, 5)), factors, torch.Generator())
    with pytest.raises(InvalidInputError, match="factor indices out of range"):
        encode_factors(rep, data, torch.tensor([[0, 0, 5]]), torch.Generator())
    copy = GaussianVAE(latent_dim=4)
    copy.load_state_dict(model.state_dict())
    trained = CodeCache.build(copy, data)
    with torch.no_grad():
        next(copy.parameters()).add_(1.0)
    with pytest.raises(CodeCacheMismatchError, match="weights changed"):
        representation(copy, "mean", cache=trained)
    assert isinstance(CodeCacheMismatchError("x"), InvalidInputError)


def test_random_observations_are_not_cached(model):
    noisy = get_dataset("dummy_data")  # observations are noise drawn per sample: no stored set
    with pytest.raises(InvalidInputError, match="drawn at random"):
        CodeCache.build(model, noisy)
    assert not worthwhile(10**9, model, noisy)


def test_evaluate_model_builds_the_cache_when_it_pays(model, data):
    small = {"mig": {"num_train": 50}}  # 2 x 50 encodings < 120 stored images
    assert "eval.code_cache.elapsed_s" not in evaluate_model(model, data, ["mig"], options=small)
    large = {"mig": {"num_train": 70}}  # 2 x 70 > 120
    assert "eval.code_cache.elapsed_s" in evaluate_model(model, data, ["mig"], options=large)
    assert "eval.code_cache.elapsed_s" in evaluate_model(model, data, ["mig"], ["mean"], options=small, code_cache=True)
    assert "eval.code_cache.elapsed_s" not in evaluate_model(model, data, ["mig"], options=large, code_cache=False)
    with pytest.raises(InvalidInputError, match="drawn at random"):
        evaluate_model(model, get_dataset("dummy_data"), ["mig"], options=small, code_cache=True)
    assert worthwhile(121, model, data) and not worthwhile(120, model, data)
    assert not worthwhile(121, model, data, max_bytes=120 * 4 * 2 * 4 - 1), "memory bound"


def test_planned_encodings_are_the_reference_sample_counts():
    sizes = (3, 6, 40, 32, 32)

    class Grid:
        factor_sizes = sizes

    assert planned_encodings("beta_vae", Grid) == 2 * 64 * (10_000 + 5_000)
    assert planned_encodings("factor_vae", Grid) == 10_000 + 64 * (10_000 + 5_000)
    assert planned_encodings("mig", Grid) == 10_000
    assert planned_encodings("dci", Grid) == 10_000 + 5_000
    assert planned_encodings("downstream_boosted_trees", Grid) == 10 + 100 + 1_000 + 10_000 + 4 * 5_000
    # 10,000 training points, then for each of the 5 targets every value of the 4 other factors x 100 points
    expected_fairness = 10_000 + sum(sum(sizes) - sizes[i] for i in range(5)) * 100
    assert planned_encodings("fairness", Grid) == expected_fairness
    assert planned_encodings("beta_vae", Grid, {"num_train": 10, "num_eval": 5, "batch_size": 2}) == 60


def test_label_noise_is_served_from_the_cache_with_the_same_numbers(model, data):
    """A NoisyLabels wrapper is gathered from the wrapped storage, perturbing the factors exactly as without it."""
    options = {
        "mig": {"num_train": 300, "label_noise": 3},
        "sap": {"num_train": 200, "num_test": 100, "label_noise": 1},
    }
    cache = CodeCache.build(model, data)
    cached = evaluate_model(model, data, ["mig", "sap"], ["sampled"], options=options, code_cache=cache, eval_seed=2)
    direct = evaluate_model(model, data, ["mig", "sap"], ["sampled"], options=options, code_cache=False, eval_seed=2)
    noisy = {k: v for k, v in direct.items() if "_label_noise" in k and not k.endswith("elapsed_s")}
    assert noisy and "eval.sampled.mig_label_noise3.discrete_mig" in noisy
    for key, value in noisy.items():
        assert cached[key] == pytest.approx(value, abs=1e-9), key
