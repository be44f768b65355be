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
