"""`untwine reproduce holtz2022`: the study grids of its scales, the comparison report on a synthetic frame whose
numbers are known by construction, and (slow) the whole pipeline at the test scale."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from untwine.cli import main
from untwine.reproduce.holtz2022 import SCALES, comparison_report, study_toml
from untwine.study.definition import toml_study
from untwine.study.store import ResultStore


@pytest.mark.parametrize("scale, models", [("paper", 625), ("cpu", 27), ("tiny", 6)])
def test_each_scale_is_a_traced_study_grid(tmp_path, scale, models):
    path = tmp_path / "grid.toml"
    path.write_text(study_toml(SCALES[scale]))
    definition = toml_study(path)
    assert len(definition.models) == models == SCALES[scale].num_models
    configs = [m.config for m in definition.models]
    assert all(c.trace_every == SCALES[scale].trace_every > 0 and c.method == "beta_vae" for c in configs)
    assert {c.beta for c in configs} == set(SCALES[scale].betas)
    assert {c.latent_dim for c in configs} == set(SCALES[scale].latent_dims)
    assert definition.evaluation["metrics"] == ["beta_vae", "factor_vae", "mig"]
    assert definition.evaluation["label_noise"] == {"regimes": [1, 2, 3], "metrics": ["beta_vae", "factor_vae", "mig"]}
    if scale == "paper":
        assert configs[0].steps == 300_000 and definition.evaluation["num_points"] is None
    if scale == "cpu":
        assert definition.evaluation["options"]["beta_vae"] == {"num_train": 100, "num_eval": 50}


def synthetic_frame() -> pd.DataFrame:
    """beta {1, 4, 16} x latent size {2, 4} x 2 seeds. MIG = -(beta + 0.1 d) + 0.01 seed, so a specification's
    mean is -(beta + 0.1 d) + 0.005; dynamics score = beta + 0.1 d (lower = better): the two rank the 6
    specifications alike, Spearman 1. Noisy MIG (regime 1) = 2 MIG: Pearson 1."""
    rows = []
    for beta, dim, seed in itertools.product((1.0, 4.0, 16.0), (2, 4), (0, 1)):
        mig = -(beta + 0.1 * dim) + 0.01 * seed
        rows.append(
            {
                "model_id": f"{beta}-{dim}-{seed}",
                "method": "beta_vae",
                "dataset": "dsprites",
                "seed": seed,
                "status": "done",
                "seed_group": f"{beta}-{dim}",
                "value": beta,
                "value_index": 0,
                "config": json.dumps({"beta": beta, "latent_dim": dim, "seed": seed}),
                "eval.mean.mig.discrete_mig": mig,
                "eval.mean.mig_label_noise1.discrete_mig": 2 * mig,
                "dynamics.score": beta + 0.1 * dim,
                "dynamics.elapsed_s": 3.0,
                "train.elapsed_s": 100.0 + seed,
            }
        )
    return pd.DataFrame(rows)


def test_the_comparison_report_puts_the_findings_beside_the_paper():
    text = comparison_report(synthetic_frame(), "tiny", 90.0, ["udr (lasso): group beta=16.0: no informative latent"])
    table1 = next(line for line in text.splitlines() if line.startswith("| MIG |"))
    # dynamics agrees with MIG across the 6 specifications: Spearman 1; no UDR here; the paper's n = 5, 10, 25
    assert table1.split(" | ")[1:3] == ["1.00", "-"]
    assert "0.60 ± 0.07" in table1 and "0.69 ± 0.02" in table1
    assert "correlates positively with 1 of the 1 metrics" in text
    # Fig. 4a: the score by latent size (rows) and beta (columns)
    assert "| 2 | 1.20000 | 4.20000 | 16.20000 |" in text and "| 4 | 1.40000 | 4.40000 | 16.40000 |" in text
    noise = next(line for line in text.splitlines() if line.startswith("| MIG |") and "0.86 / 0.76 / 0.67" in line)
    assert noise.split(" | ")[1:4] == ["1.00", "-", "-"]  # noisy = 2 x clean: Pearson 1; regimes 2, 3 absent
    assert "| training (with traces) | 100.5 |" in text and "| training-dynamics score | 3.00 |" in text
    assert "no informative latent" in text and "12 models (12 done, 0 failed); this run took 1.5 min" in text


def test_a_report_without_scores_says_so():
    frame = synthetic_frame().drop(columns=["dynamics.score", "eval.mean.mig_label_noise1.discrete_mig"])
    text = comparison_report(frame, "tiny", 1.0)
    assert "untwine select dynamics S" in text and "No noisy-label scores in this study." in text


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert main(["reproduce", "holtz2022", "--scale", "huge", "--out", str(tmp_path / "h")]) == 2
    assert "error: unknown scale 'huge'; choose cpu or paper" in capsys.readouterr().err
    (tmp_path / "h" / "study").mkdir(parents=True)
    (tmp_path / "h" / "study" / "study.sqlite").write_text("")
    (tmp_path / "h" / "holtz2022.toml").write_text(study_toml(SCALES["paper"]))
    assert main(["reproduce", "holtz2022", "--scale", "cpu", "--out", str(tmp_path / "h")]) == 2
    assert "at another scale" in capsys.readouterr().err
    assert (tmp_path / "h" / "holtz2022.toml").read_text() == study_toml(SCALES["paper"])  # left as it was


@pytest.mark.slow
def test_the_reproduction_runs_end_to_end_at_the_test_scale(tmp_path, capsys):
    out = tmp_path / "holtz"
    assert main(["reproduce", "holtz2022", "--scale", "tiny", "--out", str(out), "--cpus", "2"]) == 0
    printed = capsys.readouterr().out
    text = (out / "report.md").read_text()
    assert "# Reproduction of Holtz" in printed and text in printed.replace("\n\n", "\n\n")  # printed and written
    assert "6 models (6 done, 0 failed)" in text
    with ResultStore(out / "study" / "study.sqlite") as store:
        frame = store.frame()
    assert frame["dynamics.score"].notna().all() and frame.groupby("seed_group")["dynamics.score"].nunique().eq(1).all()
    assert frame["udr.lasso.model_score"].notna().sum() + text.count("udr (lasso): group") >= 4
    for regime in (1, 2, 3):
        assert frame[f"eval.mean.mig_label_noise{regime}.discrete_mig"].between(0, 1).all()
    table1 = next(line for line in text.splitlines() if line.startswith("| MIG |"))
    assert table1.split(" | ")[1] != "-"  # the dynamics correlation over the 3 specifications was computed
    assert (out / "study" / "report.html").exists() and "Unsupervised selection scores" in (
        out / "study" / "report.html"
    ).read_text()
    # rerun: nothing trained or scored again
    assert main(["reproduce", "holtz2022", "--scale", "tiny", "--out", str(out), "--cpus", "2"]) == 0
    assert "nothing to do: 6 of the 6 models are done" in capsys.readouterr().out
