"""Headline scores (untwine.metrics.headline) and the matrices the metrics store beside their scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import factor_pixels_dataset

from untwine.evaluation import evaluate_model
from untwine.evaluation.arrays import arrays_path, read_arrays, write_arrays
from untwine.metrics import PROTOCOLS
from untwine.metrics.dci import completeness, disentanglement
from untwine.metrics.downstream import downstream_scores, with_sample_efficiency
from untwine.metrics.headline import (
    COLUMNS,
    HEADLINES,
    METRIC_LABELS,
    headline_keys,
    headline_table,
    parse_result_key,
    result_key,
    used_columns,
)
from untwine.metrics.modularity import modularity


def test_every_protocol_names_its_headline_scores():
    """A metric added to PROTOCOLS without headline keys (or a label) fails here."""
    for metric in PROTOCOLS:
        assert HEADLINES.get(metric), f"{metric} names no headline keys in untwine.metrics.headline.HEADLINES"
        assert metric in METRIC_LABELS, f"{metric} has no display name in METRIC_LABELS"
        for headline in HEADLINES[metric]:
            assert headline.metric == metric and headline.better in ("higher", "lower") and headline.label
    assert set(HEADLINES) == set(PROTOCOLS), "headline keys of a metric that does not exist"
    labels = [h.label for hs in HEADLINES.values() for h in hs]
    assert len(labels) == len(set(labels)), "two headline scores share a label"


def test_headline_keys_as_the_issue_lists_them():
    assert headline_keys("beta_vae") == ("eval_accuracy",) and headline_keys("factor_vae") == ("eval_accuracy",)
    assert headline_keys("mig") == ("discrete_mig",) and headline_keys("mig_posterior") == ("posterior_mig",)
    assert headline_keys("dci") == ("disentanglement", "completeness", "informativeness_test")
    assert headline_keys("modularity_explicitness") == ("modularity_score", "explicitness_score_test")
    assert headline_keys("fairness") == ("mean_fairness:mean_pred:mean_sens",)
    assert headline_keys("unsupervised") == ("gaussian_total_correlation",)
    assert headline_keys("nope") == ()


def test_downstream_headline_keys_are_keys_the_protocol_writes():
    # at training sizes 100 and 10,000 (the reference's include both) the two headline keys exist
    scores = {}
    for size in (100, 10_000):
        scores.update(downstream_scores(np.array([0.5, 0.7]), np.array([0.4, 0.6 + size / 1e5]), size))
    scores = with_sample_efficiency(scores)
    for metric in ("downstream_logistic_regression", "downstream_boosted_trees"):
        assert set(headline_keys(metric)) <= set(scores)
    assert scores["sample_efficiency"] == pytest.approx(((0.4 + 0.601) / 2) / ((0.4 + 0.7) / 2))


def test_headline_table_rows_and_columns():
    results = {
        "eval.mean.mig.discrete_mig": 0.25,
        "eval.sampled.mig.discrete_mig": 0.125,
        "untrained.eval.mean.mig.discrete_mig": 0.03,
        "eval.mean.mig.elapsed_s": 1.5,
        "eval.mean.dci.disentanglement": 0.5,
        "eval.mean.dci.informativeness_train": 0.9,
        "reference.mean.mig.evaluation_results.discrete_mig": 0.25,
        "train.steps": 10,
    }
    rows = headline_table(results)
    assert [(r.metric, r.headline.key) for r in rows] == [
        ("mig", "discrete_mig"),
        ("dci", "disentanglement"),
        ("dci", "completeness"),
        ("dci", "informativeness_test"),
    ]
    mig = rows[0].values
    assert mig[("trained", "mean")] == 0.25 and mig[("trained", "sampled")] == 0.125
    assert mig[("untrained", "mean")] == 0.03 and mig[("untrained", "sampled")] is None
    assert rows[2].values[("trained", "mean")] is None  # completeness absent: a gap, not a crash
    assert used_columns(rows) == [("trained", "mean"), ("trained", "sampled"), ("untrained", "mean")]
    assert headline_table({"train.steps": 3}) == []
    assert len(COLUMNS) == 4
    assert result_key("sap", "SAP_score", "sampled", "untrained") == "untrained.eval.sampled.sap.SAP_score"
    assert parse_result_key("untrained.eval.sampled.sap.SAP_score") == ("untrained", "sampled", "sap", "SAP_score")
    key = "eval.mean.fairness.mean_fairness:pred0:sens1"
    assert parse_result_key(key) == ("trained", "mean", "fairness", "mean_fairness:pred0:sens1")
    assert parse_result_key("reference.mean.mig.evaluation_results.discrete_mig") is None
    assert parse_result_key("train.steps") is None


class PixelModel(torch.nn.Module):
    """A "model" whose encoder mean reads the factor pixels: latent i is factor i (perfectly disentangled)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(255.0))

    def encode(self, x):
        mean = x.flatten(1) * self.scale
        return mean, torch.full_like(mean, -20.0)


@pytest.fixture(scope="module")
def disentangled_results():
    """MIG, modularity and DCI of a code where latent i is factor i (factor sizes 5, 8, 4)."""
    data = factor_pixels_dataset((5, 8, 4))
    options = {
        "mig": {"num_train": 2000},
        "modularity_explicitness": {"num_train": 1000, "num_test": 500},
        "dci": {"num_train": 400, "num_test": 200, "n_jobs": 1},
    }
    metrics = ["mig", "modularity_explicitness", "dci"]
    return data, evaluate_model(PixelModel(), data, metrics, ["mean"], options=options)


def test_stored_matrices_are_the_ones_the_scores_come_from(disentangled_results, tmp_path):
    data, results = disentangled_results
    assert not any(isinstance(v, np.ndarray) for v in results.values()), "results stay scalar (results.json)"
    write_arrays(tmp_path, results.arrays, data.factor_names)
    assert arrays_path(tmp_path, "mig", "mean").is_file()
    mig = read_arrays(tmp_path, "mig", "mean")
    mi, entropy = mig["mutual_info"], mig["factor_entropy"]
    assert mi.shape == (3, 3) and list(mig["factor_names"]) == ["a", "b", "c"]
    # latent i takes factor i's values, each in its own histogram bin: I(z_i; v_i) = H(v_i) exactly
    np.testing.assert_allclose(np.diag(mi), entropy, rtol=1e-12)
    assert np.all(entropy > np.log([5, 8, 4]) - 0.05)  # near-uniform samples: H close to log(size)
    assert np.all(mi[~np.eye(3, dtype=bool)] < 0.05)  # independent factors: plug-in MI near zero
    top = np.sort(mi, axis=0)[::-1]
    assert np.mean((top[0] - top[1]) / entropy) == pytest.approx(results["eval.mean.mig.discrete_mig"], abs=1e-15)
    modularity_mi = read_arrays(tmp_path, "modularity_explicitness", "mean")["mutual_info"]
    assert modularity(modularity_mi) == results["eval.mean.modularity_explicitness.modularity_score"]
    dci = read_arrays(tmp_path, "dci", "mean")
    assert disentanglement(dci["importance"]) == results["eval.mean.dci.disentanglement"]
    assert completeness(dci["importance"]) == results["eval.mean.dci.completeness"]
    assert np.mean(dci["accuracy_test"]) == results["eval.mean.dci.informativeness_test"]
    assert list(dci["importance"].argmax(axis=1)) == [0, 1, 2]  # each latent matters for its own factor
    assert read_arrays(tmp_path, "mig", "sampled") is None  # not evaluated: None, not an error
