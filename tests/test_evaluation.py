import numpy as np
import pytest
import torch
from factories import PixelModel, factor_pixels_dataset, read_pixels
from sklearn.metrics import mutual_info_score

from untwine.data.base import FactorDataset
from untwine.errors import InvalidInputError
from untwine.evaluation import evaluate_model, metric_names, representation, sample_codes
from untwine.evaluation.evaluate import _generator, parse_option, scaled_options
from untwine.metrics import PROTOCOLS
from untwine.nn import GaussianVAE

mig_protocol = PROTOCOLS["mig"]  # `untwine.metrics.mig` is the array-level function


def test_mig_protocol_on_a_perfect_representation():
    data = factor_pixels_dataset()
    g = torch.Generator().manual_seed(0)
    result = mig_protocol(read_pixels, data, g, num_train=10_000)
    # each code, in 20 bins, takes its factor's values one per bin: its MI with its own factor is that factor's
    # entropy, and the runner-up is the sample's MI between the two (independent) factors
    f = data.sample_factors(10_000, torch.Generator().manual_seed(0)).numpy()  # the protocol's first draw
    entropy = np.array([mutual_info_score(f[:, k], f[:, k]) for k in range(2)])
    expected = np.mean((entropy - mutual_info_score(f[:, 0], f[:, 1])) / entropy)
    assert result["discrete_mig"] == pytest.approx(expected, abs=1e-12) and 0.99 < expected < 1.0
    swapped = mig_protocol(lambda x: read_pixels(x)[:, ::-1], data, torch.Generator().manual_seed(0))
    assert swapped == result, "MIG does not depend on the order of the code dimensions"


def test_sample_codes_pairs_codes_with_their_factors():
    data = factor_pixels_dataset()
    codes, factors = sample_codes(read_pixels, data, 1000, torch.Generator().manual_seed(0), batch_size=64)
    assert codes.shape == (1000, 2) and factors.shape == (1000, 2)
    assert np.array_equal(codes, factors)


def test_evaluate_model_keys_and_shared_seeds(dsprites):
    model = GaussianVAE(generator=torch.Generator().manual_seed(0))
    options = {"mig": {"num_train": 300}}
    a = evaluate_model(model, dsprites, ["mig"], options=options)
    b = evaluate_model(model, dsprites, "mig", options=options)
    assert {k for k in a if k.startswith("eval.") and not k.endswith("elapsed_s")} == {
        "eval.mean.mig.discrete_mig",
        "eval.sampled.mig.discrete_mig",
    }
    # the same values under the reference's namespaced keys (spec §7.2)
    assert a["reference.mean.mig.evaluation_results.discrete_mig"] == a["eval.mean.mig.discrete_mig"]
    assert "reference.sampled.mig.evaluation_results.elapsed_time" in a
    assert a["eval.mean.mig.discrete_mig"] == b["eval.mean.mig.discrete_mig"]
    assert a["eval.sampled.mig.discrete_mig"] == b["eval.sampled.mig.discrete_mig"], "the sampled noise is seeded"


def test_mean_and_sampled_representations():
    model = GaussianVAE(generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 1, 64, 64)
    mean = representation(model, "mean")(x)
    sampled = representation(model, "sampled", torch.Generator().manual_seed(0))(x)
    expected_mean, logvar = model.encode(x)
    assert np.allclose(mean, expected_mean.detach().numpy())
    assert sampled.shape == mean.shape and not np.allclose(sampled, mean)
    with pytest.raises(InvalidInputError, match="unknown representation"):
        representation(model, "median")


def test_sampled_representation_is_mean_plus_std_times_seeded_noise():
    class Known(torch.nn.Module):  # per-point, per-code log-variances: the std is exp(lv / 2), not exp(lv)
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def encode(self, x):
            mean = x.flatten(1)[:, :3] * 10.0
            logvar = torch.log(torch.tensor([[0.25, 4.0, 9.0]])) + x.flatten(1)[:, 3:6]
            return mean, logvar

    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sampled = representation(Known(), "sampled", torch.Generator().manual_seed(7))(x)
    mean, logvar = x.flatten(1)[:, :3].double() * 10.0, np.log([0.25, 4.0, 9.0]) + x.flatten(1)[:, 3:6].double().numpy()
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(7)).double().numpy()
    expected = mean.numpy() + np.sqrt(np.exp(logvar)) * eps
    assert sampled.dtype == np.float32
    assert np.allclose(sampled, expected, rtol=1e-6, atol=1e-6)


def test_reference_keys_leave_out_fixed_bugs():
    data = factor_pixels_dataset()
    options = {"factor_vae": {"num_variance_estimate": 200, "num_train": 100, "num_eval": 50}}
    results = evaluate_model(PixelModel(), data, ["factor_vae"], ["mean"], options=options)
    assert results["eval.mean.factor_vae.num_active_dims"] == 2
    assert "reference.mean.factor_vae_metric.evaluation_results.num_active_dims" not in results
    assert (
        results["reference.mean.factor_vae_metric.evaluation_results.eval_accuracy"]
        == results["eval.mean.factor_vae.eval_accuracy"]
    )


def test_metric_names():
    assert metric_names("all") == list(PROTOCOLS)
    assert metric_names("mig,mig") == ["mig"]
    with pytest.raises(InvalidInputError, match="unknown metric"):
        metric_names(["nope"])


def test_factor_vae_prune_threshold_reaches_the_metric():
    data = factor_pixels_dataset()  # factor a: 5 values (std 1.41), factor b: 8 values (std 2.29)
    # code 2 is 0.02 x factor a: std ~0.028, inactive at the study's 0.05, active at 0.01
    model = PixelModel(weights=(1.0, 1.0, 0.02))
    small = {"num_variance_estimate": 500, "num_train": 100, "num_eval": 50}

    def active(**extra):
        options = {"factor_vae": {**small, **extra}}
        return evaluate_model(model, data, ["factor_vae"], ["mean"], options=options)

    assert active()["eval.mean.factor_vae.num_active_dims"] == 2
    assert active(prune_threshold=0.01)["eval.mean.factor_vae.num_active_dims"] == 3
    assert active(prune_threshold=2.0)["eval.mean.factor_vae.num_active_dims"] == 1  # only factor b's code
    nothing = active(prune_threshold=10.0)
    assert [nothing[f"eval.mean.factor_vae.{k}"] for k in ("num_active_dims", "train_accuracy", "eval_accuracy")] == [
        0,
        0.0,
        0.0,
    ]


def test_evaluation_streams_are_independent():
    """The data stream of seed s + 1 and the noise stream of seed s must not coincide (nor any other pair)."""

    def draws(seed, stream, rep="sampled", metric="mig"):
        return tuple(torch.rand(64, generator=_generator(seed, stream, rep, metric, "cpu")).tolist())

    streams = {(seed, stream): draws(seed, stream) for seed in range(4) for stream in ("data", "noise")}
    assert len(set(streams.values())) == len(streams), "two evaluation streams share their draws"
    assert draws(0, "noise") != draws(1, "data")
    assert draws(0, "data", "mean") != draws(0, "data", "sampled")
    assert draws(0, "data", metric="dci") != draws(0, "data")
    assert draws(2, "noise") == draws(2, "noise"), "each stream is reproducible"


def test_noise_of_one_seed_is_not_the_data_stream_of_the_next(monkeypatch):
    """Through evaluate_model: the sampled representation's eps for eval_seed s are not the draws that the metric's
    data generator of eval_seed s + 1 makes (the two streams are derived independently)."""
    seen = {}

    def probe(represent, dataset, generator):  # a metric that records its generator and the codes it is given
        state = generator.get_state()
        seen[len(seen)] = (state, represent(torch.zeros(16, 1, 1, 2)))
        return {"value": 0.0}

    class StandardNormal(torch.nn.Module):  # mean 0, log-variance 0: the sampled codes are eps itself
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def encode(self, x):
            return torch.zeros(x.shape[0], 3), torch.zeros(x.shape[0], 3)

    monkeypatch.setitem(PROTOCOLS, "probe", probe)
    for seed in (0, 1, 0):
        evaluate_model(StandardNormal(), factor_pixels_dataset(), ["probe"], ["sampled"], eval_seed=seed)
    (_, eps0), (data_state1, eps1), (_, eps0_again) = seen.values()
    assert np.array_equal(eps0, eps0_again), "the noise is seeded"
    assert not np.array_equal(eps0, eps1)
    data_draws1 = torch.randn(16, 3, generator=torch.Generator().set_state(data_state1)).numpy()
    assert not np.allclose(eps0, data_draws1), "seed 0's noise repeats seed 1's data stream"


def test_parse_option_by_hand():
    metrics = ["dci", "downstream_logistic_regression", "mig"]
    assert parse_option("dci.importance=lightgbm", metrics) == ("dci", "importance", "lightgbm")
    assert parse_option(" mig.num_bins = 5 ", metrics) == ("mig", "num_bins", 5)
    value = parse_option("downstream_logistic_regression.num_train=10,100", metrics)
    assert value == ("downstream_logistic_regression", "num_train", [10, 100])
    metric, key, rate = parse_option("dci.n_jobs=1", metrics)
    assert (metric, key, rate, type(rate)) == ("dci", "n_jobs", 1, int)
    with pytest.raises(InvalidInputError, match="expected an integer"):
        parse_option("mig.num_bins=2.5", metrics)  # checked against the default's type
    assert parse_option("dci.importance=a=b", metrics) == ("dci", "importance", "a=b")  # the first "=" splits
    for bad, message in (
        ("dci.importance", "metric.setting=value"),
        ("importance=gbt", "metric.setting=value"),
        ("dci.=gbt", "metric.setting=value"),
        ("sap.num_train=5", "not among those evaluated"),
        ("mig.importance=gbt", "mig has no setting 'importance'"),
        ("mig.generator=1", "mig has no setting 'generator'"),
        ("mig.dataset=1", "has no setting"),
        ("mig.representation=1", "has no setting"),
        ("mig.num.bins=3", "mig has no setting 'num.bins'"),  # the first "." splits
    ):
        with pytest.raises(InvalidInputError, match=message):
            parse_option(bad, metrics)


def test_scaled_options_by_hand():
    assert scaled_options("mig", 500) == {"num_train": 500}
    assert scaled_options("dci", 500) == {"num_train": 500, "num_test": 250}
    assert scaled_options("beta_vae", 301) == {"num_train": 301, "num_eval": 150}
    assert scaled_options("factor_vae", 400) == {"num_variance_estimate": 400, "num_train": 400, "num_eval": 200}
    # a list of training sizes keeps those <= num_points, or num_points alone if none is
    assert scaled_options("downstream_logistic_regression", 500) == {"num_train": (10, 100), "num_test": 250}
    assert scaled_options("downstream_boosted_trees", 1000) == {"num_train": (10, 100, 1000), "num_test": 500}
    assert scaled_options("downstream_logistic_regression", 5) == {"num_train": (5,), "num_test": 2}
    assert scaled_options("fairness", 600) == {"num_train": 600}
    assert scaled_options("mig", 3) == {"num_train": 3}
    assert scaled_options("dci", 3) == {"num_train": 3, "num_test": 1}
    assert scaled_options("dci", 2) == {"num_train": 2, "num_test": 1}
    with pytest.raises(InvalidInputError, match="at least 2"):
        scaled_options("mig", 1)


# the study's metric settings (spec §5.15 table, §5.9 fairness, §5.10 IRS; the classifier flavours of spec §10
# items 14, 15 and 17), written out by hand: each protocol's defaults must be these
STUDY_DEFAULTS = {
    "beta_vae": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "logistic": "liblinear_ovr"},
    "factor_vae": {
        "batch_size": 64,
        "num_variance_estimate": 10_000,
        "num_train": 10_000,
        "num_eval": 5_000,
        "prune_threshold": 0.05,
    },
    "mig": {"num_train": 10_000, "num_bins": 20, "estimator": "histogram"},
    "mig_posterior": {"num_train": 10_000, "estimator": "posterior"},
    "dci": {"num_train": 10_000, "num_test": 5_000, "importance": "gbt"},
    "sap": {"num_train": 10_000, "num_test": 5_000, "continuous_factors": False, "dual": True},
    "modularity_explicitness": {"num_train": 10_000, "num_test": 5_000, "num_bins": 20, "logistic": "liblinear_ovr"},
    "irs": {"num_train": 10_000, "num_bins": 20, "diff_quantile": 0.99},
    "unsupervised": {"num_train": 10_000, "num_bins": 20},
    "downstream_logistic_regression": {
        "num_train": (10, 100, 1000, 10_000),
        "num_test": 5_000,
        "predictor": "logistic_regression",
        "logistic": "ovr",
    },
    "downstream_boosted_trees": {"num_train": (10, 100, 1000, 10_000), "num_test": 5_000, "predictor": "boosted_trees"},
    "fairness": {"num_train": 10_000, "num_test_points_per_class": 100, "predictor": "boosted_trees"},
}


def test_protocol_defaults_are_the_study_settings():
    import inspect

    assert set(STUDY_DEFAULTS) == set(PROTOCOLS)
    for name, expected in STUDY_DEFAULTS.items():
        parameters = inspect.signature(PROTOCOLS[name]).parameters
        got = {key: parameters[key].default for key in expected}
        assert got == expected, name
        assert all(type(got[k]) is type(v) for k, v in expected.items()), name  # 0.05, not 0 or "0.05"


def test_array_level_defaults_are_the_study_settings():
    import importlib
    import inspect

    modules = "beta_vae_score dci factor_vae_score irs mig modularity sap unsupervised utils".split()
    # the modules themselves (untwine.metrics exports functions of some of the same names)
    beta_vae_score, dci, factor_vae_score, irs, mig, modularity, sap, unsupervised, utils = (
        importlib.import_module(f"untwine.metrics.{m}") for m in modules
    )
    expected = {
        mig.mig: {"num_bins": 20},
        utils.histogram_discretize: {"num_bins": 20},
        sap.sap: {"continuous_factors": False, "dual": True},
        sap.sap_score_matrix: {"continuous_factors": False, "dual": True},
        dci.dci: {"importance": "gbt"},
        dci.importance_matrix: {"importance": "gbt"},
        modularity.modularity_explicitness: {"num_bins": 20, "logistic": "liblinear_ovr"},
        modularity.explicitness_per_factor: {"logistic": "liblinear_ovr"},
        irs.irs: {"num_bins": 20, "diff_quantile": 0.99},
        irs.irs_matrix: {"diff_quantile": 0.99},
        unsupervised.unsupervised: {"num_bins": 20},
        factor_vae_score.active_dims: {"prune_threshold": 0.05},
        beta_vae_score.beta_vae_score_from_features: {"logistic": "liblinear_ovr"},
        beta_vae_score.sample_features: {"batch_size": 64},
    }
    for function, defaults in expected.items():
        parameters = inspect.signature(function).parameters
        assert {key: parameters[key].default for key in defaults} == defaults, function.__name__


class Recording(FactorDataset):
    """`factor_pixels_dataset(sizes)` that records the generator of every draw, with observation noise drawn from it
    (so that a draw from any other generator would also change the numbers)."""

    def __init__(self, sizes=(3, 4)):
        self.base = factor_pixels_dataset(sizes)
        self.name, self.factor_sizes, self.observation_shape = "recording", self.base.factor_sizes, (1, 1, len(sizes))
        self.generators = []

    def sample_factors(self, n, generator):
        self.generators.append(generator)
        return self.base.sample_factors(n, generator)

    def _observations(self, factors, generator):
        self.generators.append(generator)
        noise = torch.rand(factors.shape[0], 1, 1, factors.shape[1], generator=generator) * (0.2 / 255)
        return self.base.observations(factors, generator) + noise


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_draw_comes_from_the_protocols_generator(name):
    data, generator = Recording(), torch.Generator().manual_seed(0)
    import inspect

    options = scaled_options(name, 80)
    if name == "fairness":
        options["num_test_points_per_class"] = 5
    if "n_jobs" in inspect.signature(PROTOCOLS[name]).parameters:
        options["n_jobs"] = 1  # no process pool to start
    PROTOCOLS[name](representation(PixelModel(), "mean"), data, generator, **options)
    assert data.generators and all(g is generator for g in data.generators), name


def _same_draws(seed=3):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "name, options, array_function",
    [
        ("mig", {"num_bins": 3}, "mig"),
        ("irs", {"num_bins": 2, "diff_quantile": 0.5}, "irs"),
        ("unsupervised", {"num_bins": 3}, "unsupervised"),
    ],
)
def test_protocol_options_reach_the_array_level_metric(name, options, array_function):
    """protocol(options) == array-level metric(options) on the protocol's own sample (`sample_codes` first), and the
    options change the number."""
    import importlib

    function = getattr(importlib.import_module(f"untwine.metrics.{array_function}"), array_function)
    rep = lambda x: read_pixels(x) + 0.3 * np.sin(7 * read_pixels(x)[:, ::-1])  # noqa: E731  informative, entangled
    data = factor_pixels_dataset((5, 8))
    result = PROTOCOLS[name](rep, data, _same_draws(), num_train=400, **options)
    codes, factors = sample_codes(rep, data, 400, _same_draws())
    assert result == (function(codes, factors, **options) if name != "unsupervised" else function(codes, **options))
    assert result != PROTOCOLS[name](rep, data, _same_draws(), num_train=400), "the options change the result"


def test_evaluate_run_merges_trained_and_untrained_results(tmp_path, dsprites):
    from untwine.config import TrainConfig
    from untwine.evaluation import evaluate_run
    from untwine.runs import RunDir
    from untwine.training import Trainer

    config = TrainConfig(steps=2, batch_size=4, architecture="fc", learning_rate=1e-2)
    Trainer(config, tmp_path / "run", dataset=dsprites).train()
    run = RunDir(tmp_path / "run")
    options = {"mig": {"num_train": 300, "num_bins": 7}}
    trained = evaluate_run(run.path, ["mig"], ["mean"], options=options, eval_seed=2)
    untrained = evaluate_run(run.path, "mig", ["mean"], untrained=True, options=options, eval_seed=2)
    key = "eval.mean.mig.discrete_mig"
    for results, which in ((trained, "final"), (untrained, "untrained")):
        direct = evaluate_model(run.load_model(which), dsprites, ["mig"], ["mean"], eval_seed=2, options=options)
        prefix = "untrained." if which == "untrained" else ""
        assert results[prefix + key] == direct[key]
    assert set(untrained) == {f"untrained.{k}" for k in trained}
    stored = run.read_results()
    assert stored[key] == trained[key] and stored["untrained." + key] == untrained["untrained." + key]
    assert stored["train.global_step"] == 2, "earlier results are kept"
    assert trained[key] != untrained["untrained." + key]


@pytest.mark.parametrize(
    "name, options",
    [
        ("sap", {"continuous_factors": True}),
        ("sap", {"dual": False}),
        ("modularity_explicitness", {"num_bins": 3, "logistic": "lbfgs"}),
        ("dci", {"importance": "lightgbm", "n_jobs": 1}),
    ],
)
def test_train_test_protocol_options_reach_the_array_level_metric(name, options):
    """protocol(options) == array-level metric(options, random_state) replayed on the same generator: train sample,
    test sample (`sample_train_test`), then the classifiers' seed; and the options change the number."""
    import importlib

    from untwine.evaluation.representation import sample_train_test
    from untwine.metrics.predictors import sklearn_seed

    module = importlib.import_module(f"untwine.metrics.{name.split('_')[0]}")
    function = getattr(module, name)
    mixing = np.array([[1.0, 0.6], [0.3, 1.0]])
    rep = lambda x: 40 * np.sin(read_pixels(x) @ mixing) + 1000  # noqa: E731  entangled, far from 0 (SVM dual)
    data = factor_pixels_dataset((5, 8))
    sizes = {"num_train": 300, "num_test": 150}
    result = PROTOCOLS[name](rep, data, _same_draws(), **sizes, **options)
    g = _same_draws()
    samples = sample_train_test(rep, data, 300, 150, g)
    assert result == function(*samples, **options, random_state=sklearn_seed(g))
    defaults = {"n_jobs": 1} if name == "dci" else {}
    assert result != PROTOCOLS[name](rep, data, _same_draws(), **sizes, **defaults), "the options change the result"
