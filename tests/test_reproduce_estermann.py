"""`untwine reproduce estermann2020` without Ray: its table assembled from finished PBT runs made in process
(tests/pbt_runs.py), the paper's claims beside the measured means, a rerun that changes nothing, and the sizing of
its CPU scale (the sample counts docs/design-notes.md works from)."""

from __future__ import annotations

import math

import pytest
from pbt_runs import stored_pbt

from untwine.reproduce.estermann2020 import (
    APPROACHES,
    DCI_KEY,
    MIG_KEY,
    claims,
    load_table,
    planned_samples,
    reproduce_estermann2020,
    scale_settings,
    table_markdown,
)
from untwine.runs import RunDir
from untwine.selection.pbt import export_final, final_evaluation, load_records

PBT_APPROACHES = ("pbt_s", "pbt_s_1000", "pbt_u", "random_search")


def finished_runs(out):
    """One finished, exported tiny run per PBT approach, in the directories the reproduction uses."""
    settings = {}
    for name, fitness, models, exploit in (
        ("pbt_s", "mig:100", None, True),
        ("pbt_s_1000", "mig:50", None, True),
        ("pbt_u", "udr:40", 2, True),
        ("random_search", "mig:100", None, False),
    ):
        where = out / f"{name}-s0"
        s, driver, _ = stored_pbt(where, fitness=fitness, models=models, exploit=exploit)
        assert driver.explorer.stopped
        export_final(where, s, driver.best)
        settings[name] = s
    settings["evaluation"] = final_evaluation(["mig", "dci"], 200, representations=("mean",))
    return settings


def test_the_table_holds_each_final_model_scores_and_its_generations_times(tmp_path):
    out = tmp_path / "e"
    settings = finished_runs(out)
    rows = reproduce_estermann2020(out, seeds=[0], approaches=PBT_APPROACHES, settings=settings)
    assert [r["approach"] for r in rows] == list(PBT_APPROACHES) and {r["seed"] for r in rows} == {0}
    for row in rows:
        where = out / f"{row['approach']}-s0"
        results = RunDir(where / "final").read_results()
        assert row["mig"] == results[MIG_KEY] and row["dci"] == results[DCI_KEY]
        assert row["fitness"] == results["pbt.fitness"] and row["export_fitness"] == results["pbt.export_fitness"]
        generations = load_records(where).query("key == 'generation'").value.tolist()
        assert row["generations"] == 2
        assert row["cpu_s"] == pytest.approx(sum(g["cpu_s"] for g in generations))
        assert row["wall_s"] == pytest.approx(sum(g["generation_wall_s"] for g in generations))
        assert row["cpu_per_generation_s"] == pytest.approx(sum(g["cpu_s"] for g in generations) / 2)
        assert (where / "report.html").exists()
    assert load_table(out) == rows
    text = table_markdown(rows)
    assert "PBT-U-VAE (UDR)" in text and "Fig. 1b" in text and "Fig. 2" in text and "Fig. 4a" in text
    report = (out / "report.md").read_text()
    assert text in report and "scale `cpu`" in report
    # a rerun (what a killed reproduction's rerun does once everything is done) evaluates nothing again
    stamps = {n: (out / f"{n}-s0" / "final" / "results.json").stat().st_mtime_ns for n in PBT_APPROACHES}
    assert reproduce_estermann2020(out, seeds=[0], approaches=PBT_APPROACHES, settings=settings) == rows
    assert {n: (out / f"{n}-s0" / "final" / "results.json").stat().st_mtime_ns for n in PBT_APPROACHES} == stamps


def _row(approach, mig, dci, captured=()):
    return {"approach": approach, "seed": 0, "mig": mig, "dci": dci, "captured": list(captured)}


def test_claims_compare_the_measured_means_with_the_paper():
    rows = [
        _row("pbt_s", 0.40, 0.6),
        _row("pbt_s", 0.30, 0.5),  # mean 0.35 over the two seeds
        _row("pbt_s_1000", 0.30, 0.4),
        _row("random_search", 0.20, 0.3),
        _row("pbt_u", 0.10, 0.2, ["position_x", "position_y"]),
        _row("rpu", 0.33, 0.5),
    ]
    assert [c["holds"] for c in claims(rows)] == ["yes", "yes", "yes", "yes", "yes"]
    found = {c["figure"]: c for c in claims(rows)}  # the last of the two Fig. 4a claims: close to PBT-S
    assert "MIG 0.350 > 0.300 > 0.200" in found["Fig. 1b"]["measured"]
    assert "position_x, position_y" in found["Fig. 2"]["measured"]
    rows[2] = _row("pbt_s_1000", 0.10, 0.4)  # 1000-PBT below random search: Fig. 1b does not hold
    rows[4] = _row("pbt_u", 0.10, 0.2, ["scale", "shape", "orientation", "position_x", "position_y"])
    found = {c["figure"]: c for c in claims(rows)}
    assert found["Fig. 1b"]["holds"] == "no" and found["Fig. 2"]["holds"] == "no"
    assert found["Fig. 4a"]["holds"] == "yes" and "(94%)" in found["Fig. 4a"]["measured"]
    # rPU above PBT-U in MIG but not in DCI, and far below PBT-S: neither Fig. 4a claim holds
    rows[5] = _row("rpu", 0.15, 0.1)
    assert [c["holds"] for c in claims(rows)][3:] == ["no", "no"]
    missing = [c["holds"] for c in claims([r for r in rows if r["approach"] != "rpu"])]
    assert missing[3:] == ["-", "-"]


def test_cpu_scale_plans_3_4_million_training_samples():
    settings = scale_settings("cpu")
    planned = planned_samples(settings)
    # supervised: 6 members x 6 generations x 12,000; PBT-U: 4 members x 5 VAEs x 6 x 6,000; rPU: the same x-run,
    # one trained leaf level (4 x 5 x 6 x 4,000) and the final run (6 members, then 3, for 5 generations x 10,000)
    assert planned == {
        "pbt_s": 6 * 6 * 12_000,
        "pbt_s_1000": 6 * 6 * 12_000,
        "pbt_u": 4 * 5 * 6 * 6_000,
        "rpu": 4 * 5 * 6 * 6_000 + 4 * 5 * 6 * 4_000 + (6 + 3 * 4) * 10_000,
        "random_search": 6 * 6 * 12_000,
    }
    assert sum(planned.values()) == 3_396_000
    assert settings["random_search"].exploit is False and settings["pbt_u"].failure_threshold == 0.0
    paper = planned_samples(scale_settings("paper"))
    assert paper["pbt_s"] == 480_000 * (56 + 27 * 28)  # the spec's (56 + 28 x 27) x 480k, §1.8
    assert set(paper) == set(APPROACHES) and math.isclose(paper["pbt_s"], 3.9e8, rel_tol=0.01)
