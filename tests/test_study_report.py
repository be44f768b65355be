"""`untwine study analyze`: figures, tables and the self-contained report, and the report in headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_report_browser import driver  # noqa: F401  (the headless Chromium fixture of the run report's test)
from test_study_analysis import synthetic

from untwine.cli import main
from untwine.study.analysis import ANALYSES
from untwine.study.studydir import StudyDir
from untwine.viz.study_report import write_study_report

RESULT_PREFIXES = ("eval.", "train.")


def study_from_frame(path, frame: pd.DataFrame, evaluation: dict | None = None) -> StudyDir:
    """A study directory holding `frame`'s models and results, written through the store API."""
    study = StudyDir(path)
    description = {"kind": "preset", "name": "synthetic", "spec": {}, "evaluation": evaluation or {"metrics": ["mig"]}}
    with study.open(description, "fp") as store:
        rows = []
        for _, model in frame.iterrows():
            config = {"method": model["method"], "seed": int(model["seed"]), "dataset": model["dataset"]}
            rows.append(
                {
                    **{k: model[k] for k in ("model_id", "method", "dataset", "seed", "value", "value_index")},
                    "hyperparameter": "h",
                    "seed_group": model["seed_group"],
                    "config": json.dumps({**config, "h": model["value_index"]}),
                }
            )
        store.register(rows)
        for _, model in frame.iterrows():
            if model["status"] == "done":
                results = {k: v for k, v in model.items() if k.startswith(RESULT_PREFIXES) and v == v}
                store.finish(model["model_id"], results)
            else:
                store.fail(model["model_id"], "training diverged at step 3")
    return study


def rich_frame() -> pd.DataFrame:
    """3 methods x 3 values x 3 seeds x 2 data sets with six scores, TC of both representations and downstream."""
    rng = np.random.default_rng(0)
    noise = rng.random((6, 2, 3, 3, 3))
    lr = "eval.mean.downstream_logistic_regression"
    frame = synthetic(
        methods=("beta_vae", "factor_vae", "dip_vae_i"),
        seeds=3,
        **{
            "eval.mean.mig.discrete_mig": lambda m, h, s, d: 0.05 * h + 0.1 * noise[0, d, m, h, s],
            "eval.mean.dci.disentanglement": lambda m, h, s, d: 0.08 * h + 0.1 * noise[1, d, m, h, s],
            "eval.mean.beta_vae.eval_accuracy": lambda m, h, s, d: 0.6 + 0.1 * noise[2, d, m, h, s],
            "eval.mean.factor_vae.eval_accuracy": lambda m, h, s, d: 0.5 + 0.1 * h * noise[3, d, m, h, s],
            "eval.mean.sap.SAP_score": lambda m, h, s, d: 0.02 * m + 0.05 * noise[4, d, m, h, s],
            "eval.mean.modularity_explicitness.modularity_score": lambda m, h, s, d: 0.8 + 0.1 * noise[5, d, m, h, s],
            "eval.sampled.unsupervised.gaussian_total_correlation": lambda m, h, s, d: 5.0 - h + noise[0, d, m, h, s],
            "eval.mean.unsupervised.gaussian_total_correlation": lambda m, h, s, d: 1.0 + h + noise[1, d, m, h, s],
            "train.reconstruction_loss": lambda m, h, s, d: 30.0 + 2 * h + noise[2, d, m, h, s],
            f"{lr}.100:mean_test_accuracy": lambda m, h, s, d: 0.3 + 0.1 * noise[3, d, m, h, s],
            f"{lr}.1000:mean_test_accuracy": lambda m, h, s, d: 0.6 + 0.1 * noise[4, d, m, h, s],
        },
    )
    frame.loc[5, "status"] = "failed"
    return frame


def test_analyze_writes_figures_tables_and_a_report(tmp_path, capsys):
    study = study_from_frame(tmp_path / "s", rich_frame())
    assert main(["study", "analyze", str(study.path)]) == 0
    assert "report:" in capsys.readouterr().out
    text = study.report_path.read_text()
    for analysis in ANALYSES:
        assert f'id="{analysis(rich_frame()).key}"' in text
    assert "53 models" in text  # 54 minus the failed one
    figures = sorted(p.name for p in study.figures_dir.glob("*.png"))
    assert "tc_vs_regularisation.png" in figures and "scores_by_hyperparameter_color_dsprites.png" in figures
    assert len(figures) == 12  # with the selection correlations and by seeds (the TC as an unsupervised score)
    assert "selection_by_seeds.png" in figures
    transfer = pd.read_csv(study.tables_dir / "selection_transfer.csv")
    assert list(transfer["paper"]) == [0.807, 0.593, 0.626, 0.549]
    assert (transfer["draws"] > 0).all()
    assert "training diverged at step 3" in text  # the failed model is listed


def test_a_thin_study_gets_a_report_with_notes(tmp_path):
    frame = synthetic(seeds=1, datasets=("dsprites",), **{"eval.mean.mig.discrete_mig": lambda m, h, s, d: 0.1 * h})
    study = study_from_frame(tmp_path / "s", frame)
    text = write_study_report(study.path).read_text()
    assert text.count('class="note"') >= 6
    assert "Needs a second seed of every setting" in text
    assert "evaluate the &#x27;unsupervised&#x27; metric" in text
    assert "untwine select udr S" in text and "--label-noise" in text  # the selection analyses' notes


@pytest.mark.browser
def test_study_report_renders_in_chromium(tmp_path, driver):  # noqa: F811
    study = study_from_frame(tmp_path / "s", rich_frame())
    report = write_study_report(study.path)
    driver.get(report.resolve().as_uri())
    assert driver.title == "untwine study report \u2014 synthetic"
    assert driver.execute_script("return document.readyState") == "complete"
    assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
    images = driver.execute_script(
        "return Array.from(document.images).map(i => "
        "({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, src: i.src.slice(0, 22)}))"
    )
    assert len(images) == 12
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["src"].startswith("data:image/png"), image
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in fetched), fetched
    sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert sections[0] == "models" and len(sections) == 1 + len(ANALYSES)
    captions = driver.execute_script(
        "return Array.from(document.querySelectorAll('figcaption')).map(c => c.textContent)"
    )
    assert captions and all("model" in c for c in captions)
    assert "80.7%" in driver.find_element("id", "selection_transfer").text


def test_models_left_running_by_a_dead_driver_show_as_pending(tmp_path):
    frame = synthetic(seeds=2, datasets=("dsprites",), **{"eval.mean.mig.discrete_mig": lambda m, h, s, d: 0.1 * h})
    frame.loc[frame.index[:2], "status"] = "failed"  # then started again: running
    study = study_from_frame(tmp_path / "s", frame)
    with study.store() as store:
        store.mark_running(list(frame["model_id"][:2]))
    models = lambda text: text.split('id="models"')[1].split("</table>")[0]  # noqa: E731  the Models section
    assert ">running<" not in models(write_study_report(study.path).read_text()), "no driver: they are pending"
    study.lock()  # a live driver: they are running
    try:
        assert ">running<" in models(write_study_report(study.path).read_text())
    finally:
        study.unlock()
