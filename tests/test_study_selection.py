"""Unsupervised selection on a study (`untwine select udr|dynamics S`), on a real traced study run through Ray Tune:
traced models are trained (one at a time) with their traces, label noise is evaluated beside the clean scores,
every seed group is scored and the scores land in the store (frame columns) and in the runs' results.json; a
rerun scores nothing twice, --force does; groups of one seed are skipped and named."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from untwine.cli import main
from untwine.errors import InvalidInputError
from untwine.runs import RunDir
from untwine.selection.dynamics import dynamics_for_runs
from untwine.selection.udr import udr_for_runs
from untwine.study.definition import toml_study
from untwine.study.runner import plan_units, ray_session, run_study
from untwine.study.selection import select_study
from untwine.study.store import ResultStore
from untwine.training.trace import has_trace, read_trace

TOML = """
[study]
name = "traced"
metrics = ["mig"]
num_points = 200
representations = ["mean"]
label_noise = [1, 3]

[train]
dataset = "dummy_data"
method = "beta_vae"
beta = [1.0, 8.0]
seed = [0, 1]
steps = 20
architecture = "fc"
batch_size = 8
log_every = 5
checkpoint_every = 10
trace_every = 5
trace_samples = 12
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The 4-model traced study (2 betas x 2 seeds), run once through Ray Tune with --stack-size 2."""
    root = tmp_path_factory.mktemp("selection")
    (root / "study.toml").write_text(TOML)
    definition = toml_study(root / "study.toml")
    temp = Path(tempfile.mkdtemp(prefix="us-", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        with ray_session(None, 2, temp, temp / "ray.log"):
            summary = run_study(definition, root / "s", stack_size=2)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert summary.stored == 4 and summary.failed == 0
    return root / "s", definition


def _frame(out: Path):
    with ResultStore(out / "study.sqlite") as store:
        return store.frame()


def test_a_traced_study_trains_traces_and_noisy_label_scores(study):
    out, definition = study
    # traced models are never stacked, whatever the stack size
    models = [{"model_id": m.model_id, "config": m.row()["config"], "run_dir": m.run_dir} for m in definition.models]
    assert all(len(unit["models"]) == 1 for unit in plan_units(models, stack_size=2))
    frame = _frame(out)
    for _, row in frame.iterrows():
        run = RunDir(out / row["run_dir"])
        assert has_trace(run.path)
        steps, trace = read_trace(run.path)
        assert steps.tolist() == [0, 5, 10, 15, 20] and trace.shape[:2] == (5, 12)
        for regime in (1, 3):
            assert 0.0 <= row[f"eval.mean.mig_label_noise{regime}.discrete_mig"] <= 1.0
        assert 0.0 <= row["eval.mean.mig.discrete_mig"] <= 1.0
        assert "eval.mean.mig_label_noise2.discrete_mig" not in frame.columns


def test_udr_on_a_study_stores_each_groups_scores_once(study):
    out, _ = study
    seen = []
    outcomes = select_study(out, "udr", on_group=seen.append, num_points=100)
    assert [o.status for o in outcomes] == ["scored", "scored"] and seen == outcomes
    assert sorted(o.label for o in outcomes) == ["beta=1.0", "beta=8.0"]
    frame = _frame(out)
    for outcome in outcomes:
        runs = [out / frame.set_index("model_id").loc[i, "run_dir"] for i in outcome.model_ids]
        direct = udr_for_runs(runs, num_points=100, store=False)
        for model_id, run, expected in zip(outcome.model_ids, runs, direct["model_scores"]):
            row = frame.set_index("model_id").loc[model_id]
            assert row["udr.lasso.model_score"] == pytest.approx(expected)  # each model got its own score
            assert row["udr.lasso.num_models"] == 2
            assert RunDir(run).read_results()["udr.lasso.model_score"] == pytest.approx(expected)
        # each model's column of the pairwise matrix, by the other model's seed (for Table 1 by seeds)
        pairwise = direct["pairwise_disentanglement_scores"]
        for i, model_id in enumerate(outcome.model_ids):
            other = 1 - i
            seed = int(frame.set_index("model_id").loc[outcome.model_ids[other], "seed"])
            pairs = frame.set_index("model_id").loc[model_id, "udr.lasso.pair_scores"]
            assert pairs == pytest.approx({str(seed): pairwise[other, i]})
    # a rerun keeps every group; --force scores them again
    again = select_study(out, "udr", num_points=100)
    assert [o.status for o in again] == ["kept", "kept"]
    assert _frame(out)["udr.lasso.elapsed_s"].tolist() == frame["udr.lasso.elapsed_s"].tolist()
    # a group scored before the pair scores were stored is scored again
    with ResultStore(out / "study.sqlite") as store:
        store.add_results(outcomes[0].model_ids[0], {"udr.lasso.pair_scores": None})
    assert [o.status for o in select_study(out, "udr", num_points=100)] == ["scored", "kept"]
    forced = select_study(out, "udr", force=True, num_points=100)
    assert [o.status for o in forced] == ["scored", "scored"]
    assert {i: v for o in forced for i, v in o.scores.items()} == pytest.approx(
        {i: v for o in outcomes for i, v in o.scores.items()}
    )


def test_dynamics_on_a_study_and_on_the_command_line(study, capsys):
    out, _ = study
    assert main(["select", "dynamics", str(out), "--t", "2", "--components", "3"]) == 0
    text = capsys.readouterr().out
    assert "beta=1.0" in text and "beta=8.0" in text and "scored" in text
    frame = _frame(out)
    for _, group in frame.groupby("seed_group"):
        runs = [out / r for r in group["run_dir"]]
        direct = dynamics_for_runs(runs, store=False, t=2, n_components=3)
        assert group["dynamics.score"].tolist() == pytest.approx([direct["score"]] * 2)
        assert group["dynamics.realisation_score"].tolist() == pytest.approx(list(direct["realisation_scores"]))
        # two seeds: one subset, the full set (Table 1 by seeds)
        seeds = sorted(int(seed) for seed in group["seed"])
        for subsets in group["dynamics.subsets"]:
            assert [s["seeds"] for s in subsets] == [seeds]
            assert subsets[0]["score"] == pytest.approx(direct["score"])
    assert main(["select", "dynamics", str(out), "--t", "2", "--components", "3"]) == 0
    assert "kept" in capsys.readouterr().out


def test_a_group_of_one_seed_is_skipped_and_untraced_models_are_named(study, tmp_path):
    out, definition = study
    frame = _frame(out)
    # a second study holding three of the models (one group loses a seed), each run copied
    copy = tmp_path / "s2"
    store = ResultStore.create(copy / "study.sqlite", {"name": "copy"}, "f")
    keep = frame.iloc[:3]
    rows = {m.model_id: m.row() for m in definition.models}
    store.register(rows[i] for i in keep["model_id"])
    for _, row in keep.iterrows():
        shutil.copytree(out / row["run_dir"], copy / row["run_dir"])
        store.finish(row["model_id"], RunDir(copy / row["run_dir"]).read_results())
    store.close()
    outcomes = select_study(copy, "udr", force=True, num_points=100)  # the copies may hold scores already
    assert sorted(o.status for o in outcomes) == ["scored", "skipped"]
    skipped = next(o for o in outcomes if o.status == "skipped")
    assert "1 finished model" in skipped.reason and skipped.model_ids[0] in skipped.reason
    for row in keep.itertuples():
        shutil.rmtree(copy / row.run_dir / "trace")
    with pytest.raises(InvalidInputError, match="trace_every"):
        select_study(copy, "dynamics")
    with pytest.raises(InvalidInputError, match="not a study directory"):
        select_study(tmp_path, "udr")


def test_group_labels_name_the_method_and_only_the_settings_that_vary_within_it():
    from untwine.selection.groups import group_labels

    base_f = {"method": "factor_vae", "dataset": "dsprites", "beta": None, "discriminator_learning_rate": 1e-4}
    base_b = {"method": "beta_vae", "dataset": "dsprites", "gamma": None, "discriminator_learning_rate": None}
    specs = {
        "f10": {**base_f, "gamma": 10.0},
        "f40": {**base_f, "gamma": 40.0},
        "b1": {**base_b, "beta": 1.0},
        "b4": {**base_b, "beta": 4.0},
    }
    labels = group_labels(specs)
    assert labels["f10"] == "method=factor_vae, gamma=10.0"
    assert labels["b4"] == "method=beta_vae, beta=4.0"
    assert len(set(labels.values())) == 4
    # one method: the labels name only what varies, as before
    one = group_labels({"a": {**base_b, "beta": 1.0}, "b": {**base_b, "beta": 4.0}})
    assert one == {"a": "beta=1.0", "b": "beta=4.0"}
