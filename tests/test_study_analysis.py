"""The study analyses on synthetic frames whose answers are known by construction (derived by hand below)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from untwine.study import analysis

METHODS = ("beta_vae", "factor_vae", "beta_tcvae")


def synthetic(methods=METHODS, values=3, seeds=4, datasets=("dsprites", "color_dsprites"), **columns) -> pd.DataFrame:
    """One row per model of the full grid; `columns` maps a result key to f(method index, value index, seed,
    data set index) -> value."""
    rows = []
    for d, dataset in enumerate(datasets):
        for m, method in enumerate(methods):
            for h in range(values):
                for s in range(seeds):
                    row = {
                        "model_id": f"{dataset}-{method}-{h}-{s}",
                        "method": method,
                        "dataset": dataset,
                        "seed": s,
                        "value_index": h,
                        "value": float(2**h),
                        "status": "done",
                        "seed_group": f"{dataset}-{method}-{h}",
                    }
                    row.update({key: f(m, h, s, d) for key, f in columns.items()})
                    rows.append(row)
    return pd.DataFrame(rows)


MIG = "eval.mean.mig.discrete_mig"
DCI = "eval.mean.dci.disentanglement"
BETA = "eval.mean.beta_vae.eval_accuracy"


def test_seed_groups_are_the_models_equal_but_for_the_seed():
    frame = synthetic(seeds=3)
    groups = analysis.seed_groups(frame)
    assert len(groups) == 2 * 3 * 3
    assert groups["dsprites-factor_vae-2"] == [
        "dsprites-factor_vae-2-0",
        "dsprites-factor_vae-2-1",
        "dsprites-factor_vae-2-2",
    ]


def test_tc_of_sampled_falls_and_of_mean_rises_with_the_regularisation():
    frame = synthetic(
        methods=(*METHODS, "annealed_vae"),
        **{
            "eval.sampled.unsupervised.gaussian_total_correlation": lambda m, h, s, d: 10.0 - h + 0.1 * s,
            "eval.mean.unsupervised.gaussian_total_correlation": lambda m, h, s, d: 1.0 + 2 * h + m,
        },
    )
    result = analysis.tc_vs_regularisation(frame)
    assert result.note is None
    trends = result.tables["tc_trends"]
    assert "annealed_vae" not in set(trends["method"])  # left out, as in the paper
    assert np.allclose(trends.loc[trends["representation"] == "sampled", "spearman"], -1.0)
    assert np.allclose(trends.loc[trends["representation"] == "mean", "spearman"], 1.0)
    curves = result.tables["tc_curves"]
    row = curves[(curves["dataset"] == "dsprites") & (curves["representation"] == "sampled")]
    row = row[(row["method"] == "beta_vae") & (row["value_index"] == 1)].iloc[0]
    assert row["median"] == pytest.approx(9.0 + 0.1 * 1.5)  # median of 9.0, 9.1, 9.2, 9.3
    assert row["n"] == 4
    assert result.n_models == 2 * 3 * 3 * 4
    assert "72 models" in result.caption


def test_metric_rank_correlations_per_data_set():
    rng = np.random.default_rng(0)
    noise = rng.random(200)
    frame = synthetic(
        **{
            MIG: lambda m, h, s, d: noise[(m * 3 + h) * 4 + s + 36 * d],
            DCI: lambda m, h, s, d: noise[(m * 3 + h) * 4 + s + 36 * d] ** 3,  # monotone in MIG
            BETA: lambda m, h, s, d: -noise[(m * 3 + h) * 4 + s + 36 * d],  # reversed
        }
    )
    result = analysis.metric_rank_correlations(frame)
    table = result.tables["metric_correlations"].set_index(["dataset", "metric_a", "metric_b"])["spearman"]
    for dataset in ("dsprites", "color_dsprites"):
        assert table[(dataset, "MIG", "DCI Disentanglement")] == pytest.approx(1.0)
        assert table[(dataset, "MIG", "BetaVAE")] == pytest.approx(-1.0)
        assert table[(dataset, "BetaVAE", "BetaVAE")] == pytest.approx(1.0)
    assert result.n_models == 72


def test_score_distributions_and_hyperparameter_medians():
    frame = synthetic(**{MIG: lambda m, h, s, d: 0.1 * m + 0.01 * h + 0.001 * s})
    result = analysis.score_distributions(frame)
    by_method = result.tables["scores_by_method"].set_index("method")
    # method m: values 0.1 m + {0, .01, .02} + {0, .001, .002, .003}, both data sets: median 0.1 m + 0.01 + 0.0015
    for m, method in enumerate(METHODS):
        assert by_method.loc[method, "median"] == pytest.approx(0.1 * m + 0.0115)
        assert by_method.loc[method, "n"] == 24
    per_value = analysis.scores_by_hyperparameter(frame).tables["scores_by_hyperparameter"]
    row = per_value[(per_value["method"] == "factor_vae") & (per_value["value_index"] == 2)].iloc[0]
    assert row["median"] == pytest.approx(0.1 + 0.02 + 0.0015) and row["n"] == 4
    assert row["q25"] == pytest.approx(0.12 + 0.00075) and row["q75"] == pytest.approx(0.12 + 0.00225)


def test_variance_explained_matches_the_sums_of_squares():
    # score = a[method] + b[value] + e[seed]: a = 0, 1; b = 0, 0.5; e = -0.25, +0.25 (2 x 2 x 2 models).
    # Grand mean 0.75. SS_method = 8 * 0.5^2 = 2; SS_value = 8 * 0.25^2 = 0.5; SS_seed = 8 * 0.25^2 = 0.5; total 3.
    frame = synthetic(
        methods=("beta_vae", "beta_tcvae"),
        values=2,
        seeds=2,
        datasets=("dsprites",),
        **{MIG: lambda m, h, s, d: 1.0 * m + 0.5 * h + (0.25 if s else -0.25)},
    )
    table = analysis.variance_explained(frame).tables["variance_explained"].iloc[0]
    assert table["r2_method"] == pytest.approx(2 / 3)
    assert table["r2_method_hyperparameter"] == pytest.approx(2.5 / 3)
    assert table["method"] == pytest.approx(2 / 3)
    assert table["hyperparameter"] == pytest.approx(0.5 / 3)
    assert table["seed"] == pytest.approx(0.5 / 3)


def test_transfer_of_model_selection_when_the_setting_decides_everything():
    # the score depends on the setting only, identically on every metric, data set and seed: the selected setting
    # is the best everywhere, so it beats or ties any random choice in every cell
    quality = {key: i for i, key in enumerate(itertools.product(range(3), range(3)))}
    frame = synthetic(**{MIG: lambda m, h, s, d: quality[(m, h)], DCI: lambda m, h, s, d: 2 * quality[(m, h)]})
    table = analysis.selection_transfer(frame, draws=2000).tables["selection_transfer"]
    assert np.allclose(table["probability"], 1.0)
    assert (table["draws"] == 2000).all()


def _exact_transfer(cube: np.ndarray, metric_kind: str, dataset_kind: str) -> float:
    """Table 1's probability for the score array cube[metric, data set, setting, seed], by enumerating every draw."""
    num_m, num_d, num_h, num_s = cube.shape
    outcomes = []
    for m, d, s in itertools.product(range(num_m), range(num_d), range(num_s)):
        chosen = int(np.argmax(cube[m, d, :, s]))
        for m2 in [m] if metric_kind == "same" else [x for x in range(num_m) if x != m]:
            for d2 in [d] if dataset_kind == "same" else [x for x in range(num_d) if x != d]:
                wins = [
                    cube[m2, d2, chosen, s2] >= cube[m2, d2, h, s2]
                    for s2 in range(num_s)
                    if s2 != s
                    for h in range(num_h)
                ]
                outcomes.append(np.mean(wins))  # every (m, d, s) is equally likely, then every target
    return float(np.mean(outcomes))


def test_transfer_of_model_selection_on_noise_matches_enumeration_and_chance():
    rng = np.random.default_rng(1)
    cube = rng.random((2, 2, 3, 3, 6))  # metric, data set, method, value, seed
    frame = synthetic(
        seeds=6,
        **{MIG: lambda m, h, s, d: cube[0, d, m, h, s], DCI: lambda m, h, s, d: cube[1, d, m, h, s]},
    )
    draws = 20_000
    result = analysis.selection_transfer(frame, draws=draws, seed=3)
    table = result.tables["selection_transfer"].set_index(["metric", "dataset"])
    settings_cube = cube.reshape(2, 2, 9, 6)
    for (metric_kind, dataset_kind), row in table.iterrows():
        exact = _exact_transfer(settings_cube, metric_kind, dataset_kind)
        assert abs(row["probability"] - exact) < 4 * np.sqrt(exact * (1 - exact) / draws)
        # independent scores: chance is 1/H + (1 - 1/H) / 2 = 1/2 + 1/(2H) = 0.556 for H = 9, up to the cube's noise
        assert abs(exact - (0.5 + 1 / 18)) < 0.05
    assert "chance is 55.6%" in result.caption


def test_transfer_cells_that_need_a_second_data_set_get_a_note():
    frame = synthetic(datasets=("dsprites",), **{MIG: lambda m, h, s, d: m + h + 0.1 * s})
    result = analysis.selection_transfer(frame, draws=500)
    table = result.tables["selection_transfer"].set_index(["metric", "dataset"])
    assert table.loc[("same", "same"), "probability"] == 1.0  # the best setting is best on every seed
    assert np.isnan(table.loc[("same", "other"), "probability"]) and table.loc[("same", "other"), "draws"] == 0
    assert "second data set" in result.note and "second metric" in result.note
    one_seed = analysis.selection_transfer(synthetic(seeds=1, **{MIG: lambda m, h, s, d: h}))
    assert not one_seed.tables and "second seed" in one_seed.note


def test_downstream_accuracy_and_sample_efficiency_correlations():
    lr = "eval.mean.downstream_logistic_regression"
    x = {key: i for i, key in enumerate(itertools.product(range(3), range(3), range(4)))}
    frame = synthetic(
        **{
            MIG: lambda m, h, s, d: x[(m, h, s)],
            f"{lr}.100:mean_test_accuracy": lambda m, h, s, d: 0.5,
            f"{lr}.1000:mean_test_accuracy": lambda m, h, s, d: 0.9 - 0.01 * x[(m, h, s)],  # falls with MIG
        }
    )
    result = analysis.downstream_correlations(frame)
    table = result.tables["downstream_correlations"].set_index(["dataset", "metric", "downstream"])["spearman"]
    # efficiency 0.5 / (0.9 - 0.01 x) rises with MIG; accuracy at 1000 falls; accuracy at 100 is constant
    assert table[("dsprites", "MIG", "LR efficiency (100/1000)")] == pytest.approx(1.0)
    assert table[("dsprites", "MIG", "LR accuracy (1000)")] == pytest.approx(-1.0)
    assert np.isnan(table[("dsprites", "MIG", "LR accuracy (100)")])


def test_unsupervised_scores_against_the_metrics():
    frame = synthetic(
        **{
            MIG: lambda m, h, s, d: m * 12 + h * 4 + s,
            "train.reconstruction_loss": lambda m, h, s, d: 100.0 - (m * 12 + h * 4 + s),
        }
    )
    table = analysis.unsupervised_vs_scores(frame).tables["unsupervised_vs_scores"]
    assert table["spearman"].tolist() == pytest.approx([-1.0, -1.0])  # one per data set


def test_a_thin_study_gets_notes_not_crashes():
    """One data set, one seed, one metric, no unsupervised or downstream scores, and a failed model."""
    frame = synthetic(seeds=1, datasets=("dsprites",), **{MIG: lambda m, h, s, d: 0.1 * m + 0.01 * h})
    frame.loc[0, "status"] = "failed"
    frame.loc[0, MIG] = np.nan
    results = {a.key: a for a in analysis.run_all(frame)}
    assert len(results) == len(analysis.ANALYSES)
    assert "unsupervised" in results["tc_vs_regularisation"].note
    assert "two disentanglement metrics" in results["metric_correlations"].note
    assert "second seed" in results["selection_transfer"].note
    assert "second seed" in results["scores_by_seed"].note
    assert "downstream" in results["downstream_correlations"].note
    assert "second seed" in results["variance_explained"].note
    assert results["score_distributions"].n_models == 8  # the failed model is left out
    empty = analysis.run_all(frame.iloc[0:0])
    assert all(a.note for a in empty)


def test_models_without_a_value_index_are_ranked_by_their_value():
    frame = synthetic(seeds=2, datasets=("dsprites",), **{MIG: lambda m, h, s, d: float(h)})
    frame["value_index"] = np.nan  # as imported results off the reference grid
    done = analysis.finished(frame)
    assert (done["value_index"] == done["value"].map({1.0: 0, 2.0: 1, 4.0: 2})).all()
    table = analysis.scores_by_hyperparameter(frame).tables["scores_by_hyperparameter"]
    assert table.groupby("value_index")["median"].first().tolist() == [0.0, 1.0, 2.0]
