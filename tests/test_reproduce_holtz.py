"""`untwine reproduce holtz2022`: the study grids of its scales, the comparison report on a synthetic frame whose
numbers are known by construction, and (slow) the whole pipeline at the test scale."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pandas as pd
import pytest

from untwine.cli import main
from untwine.errors import InvalidInputError
from untwine.reproduce import holtz2022
from untwine.reproduce.holtz2022 import SCALES, _definition, adopt_runs, comparison_report, extend_study, study_toml
from untwine.study.definition import toml_study
from untwine.study.store import ResultStore
from untwine.study.studydir import StudyDir


@pytest.mark.parametrize("scale, models", [("paper", 625), ("cpu", 80), ("tiny", 6)])
def test_each_scale_is_a_traced_study_grid(tmp_path, scale, models):
    path = tmp_path / "grid.toml"
    path.write_text(study_toml(SCALES[scale]))
    definition = toml_study(path)
    assert len(definition.models) == models == SCALES[scale].num_models
    configs = [m.config for m in definition.models]
    assert all(c.trace_every == SCALES[scale].trace_every > 0 and c.method == "beta_vae" for c in configs)
    assert {c.beta for c in configs} == set(SCALES[scale].betas)
    assert {c.latent_dim for c in configs} == set(SCALES[scale].latent_dims)
    assert definition.evaluation["metrics"] == ["beta_vae", "factor_vae", "mig", "fairness"]
    # label noise for Table 3's metrics only, not for the unfairness (Table 4)
    assert definition.evaluation["label_noise"] == {"regimes": [1, 2, 3], "metrics": ["beta_vae", "factor_vae", "mig"]}
    if scale == "paper":
        assert configs[0].steps == 300_000 and definition.evaluation["num_points"] is None
    if scale == "cpu":
        assert definition.evaluation["options"]["beta_vae"] == {"num_train": 100, "num_eval": 50}
        assert definition.evaluation["options"]["fairness"] == {"num_train": 500}
        assert {c.seed for c in configs} == set(range(5))  # Table 1 by seeds: n = 2, 3, 4, 5


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


def seeds_frame() -> pd.DataFrame:
    """beta {1, 4, 16} x latent size {2, 4} x 3 seeds, x = beta + 0.1 d: MIG = -x, unfairness = x. The dynamics
    score (lower = better) is stored for each pair and for all three seeds: -x for seeds (0, 1), x otherwise, so
    it agrees with MIG except with the first two seeds."""
    rows = []
    for beta, dim, seed in itertools.product((1.0, 4.0, 16.0), (2, 4), (0, 1, 2)):
        x = beta + 0.1 * dim
        subsets = [{"seeds": [0, 1], "score": -x}, {"seeds": [0, 2], "score": x}, {"seeds": [1, 2], "score": x},
                   {"seeds": [0, 1, 2], "score": x}]  # fmt: skip
        rows.append({"model_id": f"{beta}-{dim}-{seed}", "method": "beta_vae", "dataset": "dsprites", "seed": seed,
                     "status": "done", "seed_group": f"{beta}-{dim}", "value": beta, "value_index": 0,
                     "config": json.dumps({"beta": beta, "latent_dim": dim, "seed": seed}),
                     "eval.mean.mig.discrete_mig": -x, "eval.mean.fairness.mean_fairness:mean_pred:mean_sens": x,
                     "dynamics.score": x, "dynamics.subsets": subsets})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_report_has_table_1_by_seeds_and_table_4():
    text = comparison_report(seeds_frame(), "tiny", 60.0)
    assert "| metric | score | n = 2 | n = 3 | paper, n = 5 | paper, n = 10 | paper, n = 25 |" in text
    # n = 2: draws (0, 1), (0, 2), (1, 2) give -1, 1, 1: mean 1/3, std 1.15, first two seeds -1; n = 3: 1
    assert "| MIG | training dynamics | 0.33 ± 1.15 (-1.00) | 1.00 | 0.60 ± 0.07 | 0.65 ± 0.03 | 0.69 ± 0.02 |" in text
    # Table 4: the dynamics score (oriented: -x) and MIG (-x) both fall as the unfairness (x) grows
    assert "| training dynamics | -1.00 | -0.72 | -0.59 |" in text and "| MIG | -1.00 | -0.66 | -0.48 |" in text
    assert "not reproduced" in text


def _fake_study(study, definition, ids) -> None:
    """A finished study of `definition`'s models stored under the model ids `ids` (as before ba6ce1e changed the
    config hash), each run directory holding one file."""
    with StudyDir(study).open(definition.describe(), definition.fingerprint()) as store:
        store.register({**m.row(), "model_id": i, "run_dir": f"runs/{i}"} for m, i in zip(definition.models, ids))
        for m, i in zip(definition.models, ids):
            (study / "runs" / i).mkdir(parents=True)
            (study / "runs" / i / "trained.txt").write_text(f"seed {m.config.seed}")
            store.finish(i, {"eval.mean.mig.discrete_mig": 0.5})


def test_more_seeds_extend_a_reproduction_and_reuse_its_models(tmp_path):
    out = tmp_path / "h"
    old = _definition(study_toml(SCALES["tiny"]))
    _fake_study(out / "study", old, [f"old{i}" for i in range(len(old.models))])
    grown = dataclasses.replace(SCALES["tiny"], seeds=3)
    new = _definition(study_toml(grown))
    assert {m.model_id for m in old.models} < {m.model_id for m in new.models}  # the same identities, and 3 more
    lines = []
    extend_study(out / "study", new, "tiny", lines.append)
    aside = out / f"study-superseded-{old.fingerprint()}"
    assert (aside / "study.sqlite").exists() and not (out / "study").exists() and "extending" in lines[0]
    assert adopt_runs(out / "study", new, lines.append) == 6
    for m in old.models:  # each old run now where the new study keeps its model
        assert (out / "study" / m.run_dir / "trained.txt").read_text() == f"seed {m.config.seed}"
    with StudyDir(out / "study").store() as store:
        assert store.meta("fingerprint") == new.fingerprint()
    assert adopt_runs(out / "study", new) == 0  # idempotent
    extend_study(out / "study", new, "tiny")  # the same study now: nothing to do
    assert (out / "study" / "study.sqlite").exists()


def test_the_cpu_scale_holds_the_models_of_the_earlier_cpu_scale():
    earlier = dataclasses.replace(
        SCALES["cpu"], betas=(1.0, 4.0, 16.0), latent_dims=(2, 4, 16), seeds=3, metrics=holtz2022.METRICS
    )
    old, new = _definition(study_toml(earlier)), _definition(study_toml(SCALES["cpu"]))
    assert len(old.models) == 27 and {m.model_id for m in old.models} < {m.model_id for m in new.models}
    assert holtz2022.evaluation_changes(old.evaluation, new.evaluation) == []  # the unfairness is only added


def test_a_reproduction_is_not_extended_by_another_grid_or_evaluation(tmp_path):
    out = tmp_path / "h"
    old = _definition(study_toml(SCALES["tiny"]))
    _fake_study(out / "study", old, [m.model_id for m in old.models])
    longer = _definition(study_toml(dataclasses.replace(SCALES["tiny"], seeds=3, steps=30)))
    with pytest.raises(InvalidInputError, match="another scale .6 of its 6 models are not in the tiny grid"):
        extend_study(out / "study", longer, "tiny")
    options = {**SCALES["tiny"].options, "beta_vae": {"num_train": 30, "num_eval": 10}}
    other = _definition(study_toml(dataclasses.replace(SCALES["tiny"], seeds=3, options=options)))
    with pytest.raises(InvalidInputError, match="evaluated otherwise: beta_vae has other options"):
        extend_study(out / "study", other, "tiny")
    assert sorted(p.name for p in out.iterdir()) == ["study"]  # nothing moved
    assert holtz2022.evaluation_changes({"label_noise": {"regimes": [1, 2]}}, {"label_noise": {"regimes": [1]}})


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
def test_the_reproduction_runs_end_to_end_at_the_test_scale(tmp_path, capsys, monkeypatch):
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
    # a third seed: the study is extended, its 6 models reused (not trained again), 3 trained
    finals = {p: p.stat().st_mtime_ns for p in (out / "study" / "runs").glob("*/checkpoints/final/state.json")}
    monkeypatch.setitem(SCALES, "tiny", dataclasses.replace(SCALES["tiny"], seeds=3))
    assert main(["reproduce", "holtz2022", "--scale", "tiny", "--out", str(out), "--cpus", "2"]) == 0
    printed = capsys.readouterr().out
    assert "reusing 6 trained model(s)" in printed and "9 models (9 done, 0 failed)" in printed
    before = {p.parent.parent.parent.name: t for p, t in finals.items()}
    after = {p.parent.parent.parent.name: p.stat().st_mtime_ns
             for p in (out / "study" / "runs").glob("*/checkpoints/final/state.json")}  # fmt: skip
    assert len(before) == 6 and len(after) == 9 and all(after[name] == t for name, t in before.items())
    with ResultStore(out / "study" / "study.sqlite") as store:
        frame = store.frame()
    assert len(frame) == 9 and (frame["dynamics.num_realisations"] == 3).all()
    assert "| MIG | training dynamics |" in (out / "report.md").read_text()  # Table 1 by seeds: n = 2, 3
