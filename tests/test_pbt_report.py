"""A PBT run's export and report without Ray: a tiny population of real models trained and scored in the test
(the members' work of `selection.pbt`'s Tune trainable, done in process), its generations stored by the run's own
driver (`_Driver.barrier`), the best member exported and re-scored (`export_final`, spec §1.4a step 5), the
exported model evaluated (`evaluate_final`) and the PBT and rPU-VAE reports written. (On Ray: test_pbt_ray.py.
In a browser: test_report_browser.py.)"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pbt_runs import CPU, SMALL_EVALUATION, exported_and_evaluated, stored_pbt, stored_rpu

from untwine.runs import RunDir
from untwine.selection.pbt import (
    FINAL_KIND,
    STORE_FILE,
    evaluate_final,
    export_final,
    final_evaluation,
    generation_timing,
    load_records,
)
from untwine.study.store import ResultStore


def _exported_model(out: Path, models: int) -> int:
    """Which model of P/best P/final holds (its weights file compared byte for byte)."""
    final = (out / "final" / "checkpoints" / "final" / "model.safetensors").read_bytes()
    (index,) = [i for i in range(models) if (out / "best" / f"model-{i}" / "model.safetensors").read_bytes() == final]
    return index


def _final_records(out: Path) -> dict:
    with contextlib.closing(ResultStore(out / STORE_FILE)) as store:
        records = store.records(FINAL_KIND)
    return {row.key: row.value for _, row in records.iterrows()}


# --- export: the best member re-scored (spec §1.4a step 5) ---------------------------------------------------------


def test_export_rescores_the_stored_best_member_and_exports_the_argmax_udr_model(tmp_path):
    out = tmp_path / "p"
    settings, driver, found = stored_pbt(out, fitness="udr:40", models=3)
    best = dict(driver.best)
    selected = found[best["member"]][best["round"]]  # the member's in-memory score when it was selected
    assert best["fitness"] == selected["fitness"]
    # the stored checkpoint, loaded anew and scored with the same images, gives the same u_i (CPU is deterministic)
    argmax = int(np.argmax(selected["model_scores"]))
    wrong = (argmax + 1) % 3  # pretend the selection round had named another model: the re-score decides
    export_final(out, settings, {**best, "model": wrong})
    results = RunDir(out / "final").read_results()
    assert results["pbt.export_fitness"] == pytest.approx(selected["fitness"], abs=1e-9)
    assert results["pbt.export_model_scores"] == pytest.approx(selected["model_scores"], abs=1e-9)
    assert results["pbt.model"] == argmax and _exported_model(out, 3) == argmax
    assert results["pbt.fitness"] == best["fitness"] and results["pbt.member"] == best["member"]
    stored = _final_records(out)
    assert stored["export_fitness"] == pytest.approx(selected["fitness"], abs=1e-9) and stored["model"] == argmax
    assert not (out / "final.tmp").exists()
    config = RunDir(out / "final").read_config()
    assert config["beta"] == best["hyperparameters"]["beta"] and config["batch_size"] == 16


def test_export_of_a_one_model_member_rescores_it_on_the_same_labelled_images(tmp_path):
    out = tmp_path / "p"
    settings, driver, found = stored_pbt(out, fitness="mig:100")
    best = driver.best
    (out / "final.tmp").mkdir()  # what a killed export leaves: replaced
    export_final(out, settings, best)
    results = RunDir(out / "final").read_results()
    assert results["pbt.export_fitness"] == pytest.approx(found[best["member"]][best["round"]]["fitness"], abs=1e-9)
    assert results["pbt.model"] == 0 and _exported_model(out, 1) == 0
    # the exported run directory holds the best member's weights as an ordinary run (untwine evaluate P/final)
    model = RunDir(out / "final").load_model("final")
    best_model = RunDir(out / "best" / "model-0").build_model(RunDir(out / "final").config())
    from untwine.training.checkpoint import load_weights

    load_weights(best_model, out / "best" / "model-0")
    for a, b in zip(model.state_dict().values(), best_model.state_dict().values()):
        assert torch.equal(a, b)


# --- wall and CPU time per generation --------------------------------------------------------------------------------


def test_generation_timing_sums_the_members_cpu_and_adds_the_driver():
    results = {0: {"cpu_s": 2.0, "train_cpu_s": 1.5, "score_cpu_s": 0.25}, 1: {"cpu_s": 3.0, "train_cpu_s": 2.0}}
    timing = generation_timing(results, wall_s=4.5, driver_cpu_s=0.5)
    assert timing == {
        "generation_wall_s": 4.5,
        "cpu_s": 5.5,
        "train_cpu_s": 3.5,
        "score_cpu_s": 0.25,
        "driver_cpu_s": 0.5,
    }


def test_each_generation_stores_its_wall_and_cpu_time(tmp_path):
    out = tmp_path / "p"
    stored_pbt(out)
    records = load_records(out)
    generations = records[records.key == "generation"].value.tolist()
    assert len(generations) == 2
    for g in generations:  # 4 members x the CPU they reported, plus the driver's own
        assert g["train_cpu_s"] == 4 * CPU["train_cpu_s"] and g["score_cpu_s"] == 4 * CPU["score_cpu_s"]
        assert g["cpu_s"] == pytest.approx(4 * CPU["cpu_s"] + g["driver_cpu_s"]) and g["driver_cpu_s"] >= 0
        assert g["generation_wall_s"] > 0
    # the second generation's wall is the time between the two barriers: at most the whole run's
    assert generations[1]["generation_wall_s"] <= generations[1]["wall_s"]
    per_member = records[records.key == "cpu_s"]
    assert len(per_member) == 8 and set(per_member.value) == {CPU["cpu_s"]}


# --- the final model's evaluation and the report ------------------------------------------------------------------


def test_final_evaluation_defaults_to_the_study_metric_list():
    from untwine.study.grid import CPU_STUDY

    default = final_evaluation()
    assert default["metrics"] == list(CPU_STUDY.metrics) and default["num_points"] == 1000
    assert default["per_representation"]["sampled"] == ["mig", "unsupervised"]
    assert default["options"]["beta_vae"]["num_train"] == 200 and default["options"]["mig"]["num_train"] == 1000
    asked = final_evaluation(["mig", "dci"], 500, {"mig": {"num_train": 700}}, representations=("mean",))
    assert asked["metrics"] == ["mig", "dci"] and asked["representations"] == ["mean"]
    assert asked["options"]["mig"]["num_train"] == 700 and asked["options"]["dci"]["num_train"] == 500
    assert final_evaluation(["mig"])["options"] == {}  # the reference's sizes
    with_option = final_evaluation(options={"mig": {"num_train": 5000}})
    assert with_option["options"]["mig"]["num_train"] == 5000 and with_option["options"]["beta_vae"]["num_eval"] == 100


def test_evaluate_final_goes_through_untwine_evaluation_and_stores_the_scores(tmp_path):
    from untwine.evaluation import evaluate_run

    out = tmp_path / "p"
    results = exported_and_evaluated(out)
    mig = results["eval.mean.mig.discrete_mig"]
    assert 0.0 <= mig <= 1.0 and "eval.sampled.dci.disentanglement" in results
    assert RunDir(out / "final").read_results()["eval.mean.mig.discrete_mig"] == mig
    assert _final_records(out)["eval.mean.mig.discrete_mig"] == mig
    # the same numbers as `untwine evaluate` on a copy of the exported run (the same path, the same seeds)
    import shutil

    shutil.copytree(out / "final", tmp_path / "copy")
    (tmp_path / "copy" / "results.json").unlink()
    again = evaluate_run(tmp_path / "copy", ["mig"], ["mean"], options=SMALL_EVALUATION["options"])
    assert again["eval.mean.mig.discrete_mig"] == mig
    # what is there is not evaluated again
    before = (out / "final" / "results.json").stat().st_mtime_ns
    evaluate_final(out, SMALL_EVALUATION, figures=False)
    assert (out / "final" / "results.json").stat().st_mtime_ns == before
    assert (out / "final" / "figures" / "traversals.png").exists()


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def test_pbt_report_shows_generations_times_export_scores_and_traversals(tmp_path):
    from untwine.viz.pbt_report import write_pbt_report

    out = tmp_path / "p"
    results = exported_and_evaluated(out)
    page = write_pbt_report(out).read_text()
    sections = _sections(page)
    for wanted in ("population", "generations", "export", "headline", "latents", "traversals", "details"):
        assert wanted in sections, wanted
    assert sections.index("generations") < sections.index("headline") < sections.index("traversals")
    generations = page[page.index('id="generations"') : page.index('id="export"')]
    assert "wall s" in generations and "CPU s" in generations and generations.count("<tr>") == 1 + 2
    cpu = load_records(out).query("key == 'generation'").value.iloc[0]["cpu_s"]
    assert f'<td class="num">{cpu:.4g}</td>' in generations
    assert "fitness re-scored at export" in page
    assert f"{results['eval.mean.mig.discrete_mig']:.3f}" in page[page.index('id="headline"') :]
    assert 'alt="Latent traversals"' in page and "data:image/png;base64," in page
    assert (out / "report.png").stat().st_size > 1000


def test_pbt_report_of_an_unfinished_run_says_so(tmp_path):
    from untwine.viz.pbt_report import write_pbt_report

    out = tmp_path / "p"
    stored_pbt(out)
    page = write_pbt_report(out).read_text()
    assert "No exported model yet" in page and "generations" in _sections(page)


def test_rpu_report_shows_each_level_subset_its_model_and_the_final_model(tmp_path):
    from untwine.viz.pbt_report import write_rpu_report

    root = tmp_path / "r"
    summary = stored_rpu(root)
    assert summary["levels"][1]["fixed"] == ["a"]  # from the true labels: a is 2 on every image of the subset
    evaluate_final(root / "final", SMALL_EVALUATION)
    page = write_rpu_report(root).read_text()
    sections = _sections(page)
    for wanted in ("levels", "level-models", "pbt-runs", "headline", "traversals"):
        assert wanted in sections, wanted
    levels = page[page.index('id="levels"') : page.index('id="level-models"')]
    assert '<td class="num">60</td>' in levels and '<td class="num">20</td>' in levels and "<td>a</td>" in levels
    assert "<td>a 3, b 20</td>" in levels and "<td>a 1, b 20</td>" in levels  # values per true factor
    models = page[page.index('id="level-models"') : page.index('id="pbt-runs"')]
    assert models.count("<img") == 2 and "x-model (level 0)" in models and "leaf run 0, level 1" in models
    runs = page[page.index('id="pbt-runs"') :]
    for name in ("x-run", "leaf-0/level-1", "final"):
        assert f"<td>{name}</td>" in runs


def test_cli_pbt_report_evaluates_and_writes_the_report(tmp_path, capsys):
    from untwine.cli import main

    out = tmp_path / "p"
    settings, driver, _ = stored_pbt(out)
    export_final(out, settings, driver.best)
    code = main(["pbt", "report", str(out), "--metrics", "mig", "--num-points", "200"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "final model:" in printed and "MIG" in printed and (out / "report.html").exists()
    assert "eval.mean.mig.discrete_mig" in RunDir(out / "final").read_results()
    assert "eval.mean.dci.disentanglement" not in RunDir(out / "final").read_results()
