"""Export and import: untwine's csv / parquet round trip, and disentanglement_lib's aggregated JSON both ways.

The dislib-json file is written here as disentanglement_lib's `aggregate_results_to_json` writes it (spec §7.3):
one dict per evaluation (the merged results/aggregate/evaluation.json: train_config.*, train_results.*,
postprocess_config.*, postprocess_results.*, evaluation_config.*, evaluation_results.*, with gin's text values for
configs) plus "path", then `pandas.DataFrame(dicts).to_json(path)` (orient="columns").
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from untwine.config import TrainConfig
from untwine.study.definition import ModelSpec
from untwine.study.exchange import export_study, import_study
from untwine.study.studydir import StudyDir


def make_study(path, with_failed: bool = True):
    """A study of 3 models (2 done with results, 1 failed) built through the store API."""
    specs = [
        ModelSpec(str(n), TrainConfig(method="beta_tcvae", beta=b, seed=s, steps=100), "beta", b, i, n)
        for n, (i, b, s) in zip((1400, 1401, 1450), [(0, 1.0, 0), (0, 1.0, 1), (1, 2.0, 0)])
    ]
    description = {
        "kind": "preset",
        "name": "t",
        "spec": {},
        "evaluation": {"metrics": ["mig", "factor_vae"], "options": {"mig": {"num_train": 500}}},
    }
    study = StudyDir(path)
    with study.open(description, "fp") as store:
        store.register(s.row() for s in specs)
        for k, spec in enumerate(specs[:2]):
            results = {"train.loss": 50.0 + k, "train.global_step": 100, "train.elapsed_s": 9.5}
            for rep in ("mean", "sampled"):
                mig, acc = 0.1 * (k + 1) + (rep == "sampled"), 0.6 + 0.1 * k
                results[f"eval.{rep}.mig.discrete_mig"] = mig
                results[f"eval.{rep}.mig.elapsed_s"] = 1.5
                results[f"reference.{rep}.mig.evaluation_results.discrete_mig"] = mig
                results[f"reference.{rep}.mig.evaluation_results.elapsed_time"] = 1.5
                results[f"eval.{rep}.factor_vae.eval_accuracy"] = acc
                results[f"eval.{rep}.factor_vae.num_active_dims"] = 7
                results[f"reference.{rep}.factor_vae_metric.evaluation_results.eval_accuracy"] = acc
            store.finish(spec.model_id, results, train_s=9.5, eval_s=3.0)
        if with_failed:
            store.fail(specs[2].model_id, "training diverged at step 3")
    return study


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_frame_round_trip(tmp_path, fmt):
    study = make_study(tmp_path / "s")
    path = tmp_path / f"out.{fmt}"
    assert export_study(study.path, fmt, path) == 3
    assert import_study(path, tmp_path / "s2") == 3
    with study.store() as a, StudyDir(tmp_path / "s2").store() as b:
        left, right = a.frame(), b.frame()
        assert b.meta("study")["kind"] == "imported"
    keys = [c for c in left.columns if c.startswith(("eval.", "train.", "reference."))]
    pd.testing.assert_frame_equal(left[keys], right[keys], check_dtype=False)
    for column in ("model_id", "method", "dataset", "seed", "value", "value_index", "status", "reason", "config"):
        assert left[column].tolist() == right[column].tolist(), column


def dislib_evaluation(model_num, name, gin_model, beta_key, beta, seed, rep, metric, results):
    """One evaluation's aggregate/evaluation.json as dlib_reproduce writes it (gin's text for config values)."""
    row = {
        "train_config.dataset.name": "'dsprites_full'",
        "train_config.encoder.num_latent": "10",
        "train_config.encoder.encoder_fn": "@conv_encoder",
        "train_config.model.batch_size": "64",
        "train_config.model.model": gin_model,
        "train_config.model.name": f"'{name}'",
        "train_config.model.model_num": str(model_num),
        "train_config.model.random_seed": str(seed),
        "train_config.model.training_steps": "300000",
        f"train_config.{beta_key}": repr(float(beta)),
        "train_config.vae/AdamOptimizer.learning_rate": "0.0001",
        "train_results.loss": 30.5,
        "train_results.reconstruction_loss": 25.0,
        "train_results.global_step": 300000,
        "train_results.elapsed_time": 3600.0,
        "train_results.uuid": "5f0b7e1e-0000-4000-8000-000000000000",
        "postprocess_config.postprocess.name": f"'{rep}'",
        "postprocess_config.postprocess.postprocess_fn": f"@{rep}_representation",
        "postprocess_config.postprocess.random_seed": "2357136044",
        "postprocess_results.elapsed_time": 1.25,
        "evaluation_config.evaluation.name": f"'{metric}'",
        "evaluation_config.evaluation.random_seed": "3638918503",
        "evaluation_results.elapsed_time": 12.0,
        "evaluation_results.uuid": "6a1c2e3f-0000-4000-8000-000000000000",
    }
    row.update({f"evaluation_results.{k}": v for k, v in results.items()})
    row["path"] = f"output/unsupervised_study_v1/{model_num}/metrics/{rep}/{metric}/results/aggregate/evaluation.json"
    return row


def test_import_of_disentanglement_lib_aggregated_json(tmp_path):
    rows = []
    models = [
        (1400, "beta_tc_vae", "@beta_tc_vae()", "beta_tc_vae.beta", 1.0, 0),
        (302, "factor_vae", "@factor_vae()", "factor_vae.gamma", 20.0, 2),
    ]
    for k, (num, name, fn, key, value, seed) in enumerate(models):
        for rep in ("mean", "sampled"):
            rows.append(dislib_evaluation(num, name, fn, key, value, seed, rep, "mig", {"discrete_mig": 0.1 + k}))
            results = {"train_accuracy": 0.9, "eval_accuracy": 0.8 - k / 10, "num_active_dims": 10}
            rows.append(dislib_evaluation(num, name, fn, key, value, seed, rep, "factor_vae_metric", results))
    path = tmp_path / "results.json"
    pd.DataFrame(rows).to_json(path)  # aggregate_results_to_json: pandas' default orient="columns"
    assert json.loads(path.read_text())["path"]["0"].endswith(
        "/1400/metrics/mean/mig/results/aggregate/evaluation.json"
    )

    assert import_study(path, tmp_path / "s") == 2
    with StudyDir(tmp_path / "s").store() as store:
        frame = store.frame().set_index("model_id")
    assert sorted(frame.index) == ["1400", "302"]
    tc = frame.loc["1400"]
    assert (tc["method"], tc["dataset"], tc["seed"], tc["hyperparameter"], tc["value"], tc["value_index"]) == (
        "beta_tcvae", "dsprites", 0, "beta", 1.0, 0
    )  # fmt: skip
    fv = frame.loc["302"]
    assert (fv["method"], fv["seed"], fv["value"], fv["value_index"], fv["model_num"]) == (
        "factor_vae",
        2,
        20.0,
        1,
        302,
    )
    assert tc["eval.mean.mig.discrete_mig"] == 0.1 and fv["eval.sampled.mig.discrete_mig"] == 1.1
    assert fv["eval.mean.factor_vae.eval_accuracy"] == pytest.approx(0.7)
    assert tc["reference.mean.factor_vae_metric.evaluation_results.num_active_dims"] == 10
    assert "eval.mean.factor_vae.num_active_dims" not in frame.columns  # the reference's key means something else
    assert tc["eval.mean.mig.elapsed_s"] == 12.0 and tc["train.elapsed_s"] == 3600.0 and tc["train.loss"] == 30.5
    assert json.loads(tc["config"])["steps"] == 300000


def test_export_to_dislib_json_reads_back_with_the_reference_loader(tmp_path):
    study = make_study(tmp_path / "s")
    path = tmp_path / "dlib.json"
    # 2 done models x 2 representations x 2 metric configs with reference keys; the failed model has none
    assert export_study(study.path, "dislib-json", path) == 8
    frame = pd.read_json(path, orient="columns")  # disentanglement_lib's load_aggregated_json_results
    assert len(frame) == 8
    mig = frame[frame["evaluation_config.evaluation.name"] == "'mig'"]
    assert sorted(mig["evaluation_results.discrete_mig"]) == pytest.approx([0.1, 0.2, 1.1, 1.2])
    assert set(frame["train_config.model.name"]) == {"'beta_tc_vae'"}
    assert set(frame["train_config.dataset.name"]) == {"'dsprites_full'"}
    assert sorted(set(frame["train_config.model.model_num"].astype(str))) == ["1400", "1401"]
    assert set(frame["train_config.beta_tc_vae.beta"].astype(str)) == {"1.0"}
    assert set(mig["evaluation_config.mig.num_train"].astype(float)) == {500.0}  # the sample size used
    fv = frame[frame["evaluation_config.evaluation.name"] == "'factor_vae_metric'"]
    assert fv["evaluation_config.factor_vae_score.num_train"].astype(float).tolist() == [10000.0] * 4
    assert "evaluation_results.num_active_dims" not in frame.columns
    assert all(p.endswith("/results/aggregate/evaluation.json") for p in frame["path"])
    # and back: the imported study holds the same scores
    import_study(path, tmp_path / "back")
    with StudyDir(tmp_path / "back").store() as store:
        back = store.frame().set_index("model_id")
    with study.store() as store:
        original = store.frame().set_index("model_id").loc[["1400", "1401"]]
    for key in ("eval.mean.mig.discrete_mig", "eval.sampled.factor_vae.eval_accuracy", "train.loss"):
        assert np.allclose(back.loc[original.index, key], original[key]), key


def test_import_refuses_what_it_cannot_read(tmp_path):
    from untwine.errors import InvalidInputError

    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"a": {"0": 1}}))
    with pytest.raises(InvalidInputError, match="no train_config.model.name"):
        import_study(bad, tmp_path / "s")
    text = tmp_path / "x.txt"
    text.write_text("hello")
    with pytest.raises(InvalidInputError, match="cannot tell the format"):
        import_study(text, tmp_path / "s")
    study = make_study(tmp_path / "made")
    export_study(study.path, "csv", tmp_path / "made.csv")
    with pytest.raises(InvalidInputError, match="already holds a study"):
        import_study(tmp_path / "made.csv", study.path)
    assert not (tmp_path / "s").exists()
