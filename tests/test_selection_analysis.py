"""The selection analyses (study/analysis.py) on synthetic frames whose answers are derived by hand: the rank
correlation of the unsupervised scores with the metrics, the quality of selecting by them, and the metrics'
robustness to label noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_study_analysis import synthetic

from untwine.study import analysis

MIG = "eval.mean.mig.discrete_mig"
DYN = "dynamics.score"
UDR = "udr.lasso.model_score"


def selection_frame() -> pd.DataFrame:
    """One method x 5 values x 2 seeds on dSprites: MIG = h + 0.1 s (group means h + 0.05); the training-dynamics
    score 10 - h per group (lower = better: agrees with MIG); UDR -(h + 0.1 s) per model (disagrees)."""
    return synthetic(
        methods=("beta_vae",),
        values=5,
        seeds=2,
        datasets=("dsprites",),
        **{
            MIG: lambda m, h, s, d: h + 0.1 * s,
            DYN: lambda m, h, s, d: 10.0 - h,
            UDR: lambda m, h, s, d: -(h + 0.1 * s),
        },
    )


def _row(table: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(table), dtype=bool)
    for key, value in where.items():
        mask &= table[key] == value
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_rank_correlations_are_oriented_and_per_level():
    result = analysis.selection_correlations(selection_frame())
    table = result.tables["selection_correlations"]
    dyn = _row(table, level="specification", unsupervised="training dynamics", metric="MIG")
    assert dyn["spearman"] == pytest.approx(1.0) and dyn["n"] == 5 and dyn["seeds"] == 2
    assert dyn["paper"] == 0.60 and dyn["paper_seeds"] == 5  # Holtz Table 1, nearest seed count to 2
    udr_spec = _row(table, level="specification", unsupervised="UDR (lasso)", metric="MIG")
    udr_model = _row(table, level="model", unsupervised="UDR (lasso)", metric="MIG")
    assert udr_spec["spearman"] == pytest.approx(-1.0) and udr_model["spearman"] == pytest.approx(-1.0)
    assert udr_model["n"] == 10
    # the training-dynamics score is one value per group: no model-level row
    assert table[(table["level"] == "model") & (table["unsupervised"] == "training dynamics")].empty
    matrix, count = result.data["matrices"]["dsprites"]
    assert matrix.loc["training dynamics", "MIG"] == pytest.approx(1.0) and count == 10
    assert result.note is None


def test_selecting_by_the_score_finds_the_best_or_the_worst():
    table = analysis.selection_quality(selection_frame()).tables["selection_quality"]
    dyn = _row(table, level="specification", unsupervised="training dynamics", metric="MIG")
    # picks h = 4 (mean MIG 4.05): the best of 0.05, 1.05, ..., 4.05; random = mean = 2.05
    assert dyn["chosen"] == pytest.approx(4.05) and dyn["best"] == pytest.approx(4.05)
    assert dyn["random"] == pytest.approx(2.05) and dyn["rank"] == 1 and dyn["p_at_least_random"] == 1.0
    assert dyn["regret"] == pytest.approx(0.0)
    udr = _row(table, level="model", unsupervised="UDR (lasso)", metric="MIG")
    # picks the model with MIG 0.0, the worst of 10: at least as good as a random model 1 time in 10
    assert udr["chosen"] == pytest.approx(0.0) and udr["worst"] == pytest.approx(0.0)
    assert udr["rank"] == 10 and udr["p_at_least_random"] == pytest.approx(0.1)
    assert udr["regret"] == pytest.approx(4.1)


def test_ties_in_the_unsupervised_score_are_averaged():
    quality = analysis.select_by(np.array([1.0, 1.0, 0.0]), np.array([3.0, 1.0, 2.0]))
    # tied picks score 3 (rank 1, beats or ties all 3) and 1 (rank 3, ties itself only: 1/3)
    assert quality["chosen"] == pytest.approx(2.0) and quality["random"] == pytest.approx(2.0)
    assert quality["rank"] == pytest.approx(2.0) and quality["p_at_least_random"] == pytest.approx(2 / 3)


def test_label_noise_pearson_per_regime_against_the_paper():
    clean = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    shuffled = {0: 1.0, 1: 3.0, 2: 2.0, 3: 4.0}  # Pearson with clean: sum of products 4 / 5 = 0.8
    frame = synthetic(
        methods=("beta_vae",),
        values=4,
        seeds=1,
        datasets=("dsprites",),
        **{
            MIG: lambda m, h, s, d: clean[h],
            "eval.mean.mig_label_noise1.discrete_mig": lambda m, h, s, d: 2 * clean[h] + 1,
            "eval.mean.mig_label_noise3.discrete_mig": lambda m, h, s, d: shuffled[h],
        },
    )
    table = analysis.label_noise_robustness(frame).tables["label_noise"]
    assert list(table["regime"]) == [1, 3] and list(table["n"]) == [4, 4]
    assert table["pearson"].tolist() == pytest.approx([1.0, 0.8])
    assert table["paper"].tolist() == [0.86, 0.67]  # Holtz et al. Table 3, MIG


def test_missing_scores_give_notes_not_errors():
    frame = synthetic(seeds=2, **{MIG: lambda m, h, s, d: 0.1 * h})
    for function in (analysis.selection_correlations, analysis.selection_quality):
        result = function(frame)
        assert not result.tables and "untwine select udr S" in result.note and "trace_every" in result.note
    assert "--label-noise" in analysis.label_noise_robustness(frame).note
    # UDR present, dynamics missing: computed, with a note naming the missing score
    partial = synthetic(seeds=2, **{MIG: lambda m, h, s, d: 0.1 * h, UDR: lambda m, h, s, d: 0.1 * s})
    result = analysis.selection_correlations(partial)
    assert result.tables and "training dynamics" in result.note and "UDR" not in result.note


# --- Holtz Table 1 as the number of seeds grows -----------------------------------------------------------------

TC = "eval.mean.unsupervised.gaussian_total_correlation"


def seeds_frame() -> pd.DataFrame:
    """4 specifications g = 0..3 x 3 seeds, built so that each draw of seeds gives a known ranking:
    - UDR: pairwise[j, i] = 3 - g between seeds 0 and 1, g for pairs with seed 2. Draw (0, 1) scores 3 - g (rho -1
      with MIG = g); draws (0, 2), (1, 2) score g (+1); all three: each of seeds 0, 1 has median((3 - g + g) / 2)
      and seed 2 has g, mean (3 + g) / 3 (+1).
    - training dynamics (lower = better): stored subset scores g for (0, 1) (-1), 3 - g otherwise (+1).
    - TC (lower = better) -g per model, against BetaVAE = g for seeds 0, 1 and 10 - 3g for seed 2: the draw means
      are g for (0, 1) (+1), 5 - g for (0, 2) and (1, 2) (-1), (10 - g) / 3 for all three (-1)."""

    def pairs(h, s):
        return {str(j): float(3 - h if {s, j} == {0, 1} else h) for j in range(3) if j != s}

    def subsets(h):
        return [{"seeds": [0, 1], "score": float(h)}, {"seeds": [0, 2], "score": 3.0 - h},
                {"seeds": [1, 2], "score": 3.0 - h}, {"seeds": [0, 1, 2], "score": 3.0 - h}]  # fmt: skip

    return synthetic(
        methods=("beta_vae",),
        values=4,
        seeds=3,
        datasets=("dsprites",),
        **{
            MIG: lambda m, h, s, d: float(h),
            "eval.mean.beta_vae.eval_accuracy": lambda m, h, s, d: float(h if s < 2 else 10 - 3 * h),
            UDR: lambda m, h, s, d: 0.0,  # present; the subsets use the pair scores
            "udr.lasso.pair_scores": lambda m, h, s, d: pairs(h, s),
            DYN: lambda m, h, s, d: 3.0 - h,
            "dynamics.subsets": lambda m, h, s, d: subsets(h),
            TC: lambda m, h, s, d: -float(h),
        },
    )


def test_seeds_grow_recomputes_each_score_from_each_draw_of_seeds():
    result = analysis.selection_by_seeds(seeds_frame())
    table = result.tables["selection_by_seeds"]
    spread = np.std([-1.0, 1.0, 1.0], ddof=1)
    for label in ("UDR (lasso)", "training dynamics"):
        two = _row(table, unsupervised=label, metric="MIG", seeds=2)
        assert two["draws"] == 3 and two["specifications"] == 4
        assert two["spearman_mean"] == pytest.approx(1 / 3) and two["spearman_std"] == pytest.approx(spread)
        assert two["spearman_first"] == pytest.approx(-1.0)  # the first two seeds
        three = _row(table, unsupervised=label, metric="MIG", seeds=3)
        assert three["draws"] == 1 and three["spearman_mean"] == pytest.approx(1.0)
        assert np.isnan(three["spearman_std"])
    # the supervised side is the mean over the draw's models too
    tc_two = _row(table, unsupervised="TC (Gaussian)", metric="BetaVAE", seeds=2)
    assert tc_two["spearman_first"] == pytest.approx(1.0) and tc_two["spearman_mean"] == pytest.approx(-1 / 3)
    assert _row(table, unsupervised="TC (Gaussian)", metric="BetaVAE", seeds=3)["spearman_mean"] == pytest.approx(-1)
    # the paper's column only for the training-dynamics score at its seed counts (none here: 2 and 3 seeds)
    assert table["paper_mean"].isna().all()
    draws = result.tables["selection_by_seeds_draws"]
    assert len(draws[(draws["unsupervised"] == "UDR (lasso)") & (draws["metric"] == "MIG")]) == 4


def test_seeds_grow_shows_the_paper_at_five_seeds_and_skips_stale_scores():
    frame = synthetic(
        methods=("beta_vae",),
        values=3,
        seeds=5,
        datasets=("dsprites",),
        **{MIG: lambda m, h, s, d: float(h), TC: lambda m, h, s, d: -float(h + 0.1 * s), DYN: lambda m, h, s, d: 1.0},
    )
    # dynamics subsets stored when the groups had other seeds (7 is not a seed of any group): not used
    frame["dynamics.subsets"] = [[{"seeds": [0, 7], "score": 1.0}]] * len(frame)
    table = analysis.selection_by_seeds(frame).tables["selection_by_seeds"]
    assert sorted(table.loc[table["unsupervised"] == "TC (Gaussian)", "seeds"]) == [2, 3, 4, 5]
    assert (table["unsupervised"] != "training dynamics").all()
    five = _row(table, unsupervised="TC (Gaussian)", metric="MIG", seeds=5)
    assert five["spearman_mean"] == pytest.approx(1.0) and five["specifications"] == 3
    assert _row(table, unsupervised="TC (Gaussian)", metric="MIG", seeds=2)["draws"] == 10


def test_seeds_grow_with_the_paper_column():
    frame = synthetic(
        methods=("beta_vae",),
        values=3,
        seeds=5,
        datasets=("dsprites",),
        **{MIG: lambda m, h, s, d: float(h), DYN: lambda m, h, s, d: 3.0 - h},
    )
    frame["dynamics.subsets"] = [[{"seeds": [0, 1, 2, 3, 4], "score": 3.0 - h}] for h in frame["value_index"]]
    row = _row(analysis.selection_by_seeds(frame).tables["selection_by_seeds"], unsupervised="training dynamics")
    assert row["seeds"] == 5 and row["spearman_mean"] == pytest.approx(1.0)
    assert (row["paper_mean"], row["paper_std"]) == (0.60, 0.07)  # Holtz Table 1, MIG at n = 5


# --- Holtz Table 4: unfairness ----------------------------------------------------------------------------------

UNFAIR = "eval.mean.fairness.mean_fairness:mean_pred:mean_sens"


def test_scores_against_unfairness_are_oriented_and_beside_the_paper():
    unfair = {0: 0.3, 1: 0.1, 2: 0.2, 3: 0.0}
    frame = synthetic(
        methods=("beta_vae",),
        values=4,
        seeds=2,
        datasets=("dsprites",),
        **{
            MIG: lambda m, h, s, d: float(h),
            UNFAIR: lambda m, h, s, d: unfair[h] + 0.01 * s,
            DYN: lambda m, h, s, d: float(h),  # lower = better: oriented -h
        },
    )
    result = analysis.selection_fairness(frame)
    table = result.tables["selection_fairness"]
    # MIG ranks (0, 1, 2, 3) against unfairness ranks (3, 1, 2, 0): sum d^2 = 18, rho = 1 - 6 * 18 / (4 * 15) = -0.8
    mig = _row(table, level="specification", score="MIG")
    assert mig["spearman"] == pytest.approx(-0.8) and mig["kind"] == "supervised" and mig["n"] == 4
    assert mig["paper_unfairness"] == -0.66 and mig["paper_clustering"] == -0.48
    dyn = _row(table, level="specification", score="training dynamics")
    assert dyn["spearman"] == pytest.approx(0.8) and dyn["kind"] == "unsupervised"
    assert dyn["paper_unfairness"] == -0.72
    assert table[(table["level"] == "model") & (table["score"] == "training dynamics")].empty
    assert _row(table, level="model", score="MIG")["n"] == 8
    matrix, count = result.data["matrices"]["dsprites"]
    assert matrix.loc["MIG", "unfairness"] == pytest.approx(-0.8) and count == 8
    # without the fairness metric: a note saying how to get it
    assert "fairness" in analysis.selection_fairness(frame.drop(columns=[UNFAIR])).note


def test_equal_means_tie_whichever_way_they_are_summed():
    # BetaVAE accuracies of 5 seeds whose group means are 0.58, 0.58, 0.6, 0.6, but whose float sums depend on the
    # order (pandas' groupby mean compensates, numpy's does not): the ranking must see the ties, so the seeds-grow
    # table with every seed gives the headline's correlation
    accuracies = [(0.58, 0.61, 0.55, 0.57, 0.59), (0.55, 0.59, 0.58, 0.61, 0.57), (0.61, 0.57, 0.59, 0.62, 0.61),
                  (0.62, 0.61, 0.61, 0.59, 0.57)]  # fmt: skip
    frame = synthetic(
        methods=("beta_vae",),
        values=4,
        seeds=5,
        datasets=("dsprites",),
        **{
            "eval.mean.beta_vae.eval_accuracy": lambda m, h, s, d: accuracies[h][s],
            TC: lambda m, h, s, d: [1.0, 0.0, 3.0, 2.0][h],
        },
    )
    headline = analysis.selection_correlations(frame).tables["selection_correlations"]
    row = _row(headline, level="specification", unsupervised="TC (Gaussian)", metric="BetaVAE")
    assert row["spearman"] == pytest.approx(-2 / np.sqrt(5))  # ranks (3, 4, 1, 2) against (1.5, 1.5, 3.5, 3.5)
    seeds = analysis.selection_by_seeds(frame).tables["selection_by_seeds"]
    assert _row(seeds, unsupervised="TC (Gaussian)", metric="BetaVAE", seeds=5)["spearman_mean"] == row["spearman"]
