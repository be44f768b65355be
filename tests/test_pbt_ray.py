"""PBT-VAE and rPU-VAE on Ray Tune end to end, on tiny settings (slow: minutes on 2 cores): the stored
generations, exploits checked against their sources, a member whose loss always diverges (the fault hook
`UNTWINE_PBT_FAULT=nan_member=1`), the exported model, the report, the driver killed with kill -9 after a generation
and started again (a subprocess), and a tiny rPU-VAE recursion."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from untwine.data import StoredDataset
from untwine.runs import RunDir
from untwine.selection.pbt import PBTSettings, load_records, run_pbt
from untwine.selection.pbt_schedule import PERTURB_FACTORS

pytestmark = pytest.mark.slow

TINY = dict(
    fitness="mig:200",
    population=4,
    generations=3,
    interval_samples=64,
    dataset="dummy_data",
    architecture="fc",
    latent_dim=4,
)
CLI_OPTIONS = [
    "--fitness", "mig:200", "--population", "4", "--generations", "3", "--interval-samples", "64",
    "--dataset", "dummy_data", "--architecture", "fc", "--latent-dim", "4", "--num-cpus", "2",
]  # fmt: skip


def _ray_temp(tmp: Path) -> Path:
    return Path("/tmp") / f"upbt-{os.getpid()}-{tmp.name[-6:]}"  # Ray's socket paths must stay short


@pytest.fixture(scope="module")
def finished_pbt(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbt") / "p"
    os.environ["UNTWINE_PBT_FAULT"] = "nan_member=1"
    try:
        result = run_pbt(out, PBTSettings(**TINY), num_cpus=2, temp_dir=_ray_temp(out.parent))
    finally:
        os.environ.pop("UNTWINE_PBT_FAULT", None)
    return out, result


def _values(records, key):
    part = records[records.key == key]
    return {(row.model_id, int(row.step)): row.value for _, row in part.iterrows()}


def test_every_member_is_scored_once_per_generation_and_the_run_stops_after_its_generations(finished_pbt):
    out, result = finished_pbt
    records = load_records(out)
    fitness = records[records.key == "fitness"]
    assert sorted(fitness.groupby(["model_id", "step"]).size().to_dict().values()) == [1] * 12  # 4 members x 3
    generations = records[records.key == "generation"]
    assert generations.step.tolist() == [0, 1, 2]
    assert [g["stop"] for g in generations.value] == [None, None, "max_epoch"] and result.stop == "max_epoch"
    # wall and CPU time per generation: the members' CPU (measured in their Ray processes) plus the driver's
    for step, g in zip(generations.step, generations.value):
        cpu = records[(records.key == "cpu_s") & (records.step == step)].value
        train = records[(records.key == "train_cpu_s") & (records.step == step)].value
        assert len(cpu) == 4 and (cpu.to_numpy() > 0).all() and (cpu.to_numpy() >= train.to_numpy()).all()
        assert g["cpu_s"] == pytest.approx(cpu.sum() + g["driver_cpu_s"]) and g["train_cpu_s"] > 0
        assert 0 < g["generation_wall_s"] <= g["wall_s"]


def test_exploits_copy_the_best_member_and_perturb_its_values_by_the_factors(finished_pbt):
    out, _ = finished_pbt
    records = load_records(out)
    fitness, exploits = _values(records, "fitness"), _values(records, "exploit")
    assert {step for _, step in exploits} == {0, 1}  # k = ceil(0.2 x 4) = 1 exploit per generation but the last
    for (target, step), event in exploits.items():
        scores = {m: v for (m, s), v in fitness.items() if s == step}
        assert scores[f"m{event['source']}"] == max(scores.values())  # k = 1: the top member
        assert scores[target] == min(scores.values())
        source = {key: _values(records, key)[(f"m{event['source']}", step)] for key in ("lr", "batch_size", "beta")}
        f = event["factors"]
        assert set(f.values()) <= set(PERTURB_FACTORS)
        new = event["hyperparameters"]
        assert new["lr"] == pytest.approx(source["lr"] * f["lr"])
        assert new["batch_size"] == min(math.ceil(f["batch_size"] * source["batch_size"]), 1024)
        assert new["beta"] == math.ceil(f["beta"] * source["beta"])
        # the target trains the next generation with the explored values ...
        for key in ("lr", "batch_size", "beta"):
            assert _values(records, key)[(target, step + 1)] == pytest.approx(new[key])
    # ... from the source's state: the copy carries the source's history (the rPU code's training_params/scores)
    (target, step), event = max(exploits.items(), key=lambda item: item[0][1])
    member = json.loads((out / "members" / target / "round-002" / "model-0" / "state.json").read_text())["member"]
    source = json.loads((out / "members" / f"m{event['source']}" / "round-001" / "model-0" / "state.json").read_text())
    assert member["history"][:2] == source["member"]["history"]
    assert not (out / "members" / target / "round-000").exists()  # only the last two rounds are kept


def test_a_member_that_always_diverges_is_retried_then_scored_zero_with_its_reason(finished_pbt):
    out, _ = finished_pbt
    records = load_records(out)
    errors = _values(records, "error")
    assert [step for (m, step) in errors if m == "m1"] == [0, 1, 2]
    assert all("diverged 11 times" in text for (m, _), text in errors.items() if m == "m1")
    assert {v for (m, _), v in _values(records, "fitness").items() if m == "m1"} == {0.0}
    assert {v for (m, _), v in _values(records, "retries").items() if m == "m1"} == {11}


def test_the_best_member_over_all_rounds_is_exported_as_a_run(finished_pbt):
    out, result = finished_pbt
    records = load_records(out)
    best = max(_values(records, "fitness").values())
    assert result.best["fitness"] == pytest.approx(best)
    run = RunDir(out / "final")
    assert run.read_results()["pbt.fitness"] == pytest.approx(best)
    # re-scored at export (spec §1.4a step 5): the stored checkpoint scores what the member scored in its process
    assert run.read_results()["pbt.export_fitness"] == pytest.approx(best, abs=1e-9)
    model = run.load_model("final")
    assert model.encode(torch.zeros(2, 1, 64, 64))[0].shape == (2, 4)


def test_report(finished_pbt):
    from untwine.selection.pbt import evaluate_final, final_evaluation
    from untwine.viz.pbt_report import write_pbt_report

    out, _ = finished_pbt
    results = evaluate_final(out, final_evaluation(["mig"], 200, representations=("mean",)))
    page = write_pbt_report(out).read_text()
    assert "Generations" in page and "max_epoch" in page and (out / "report.png").stat().st_size > 1000
    assert 'alt="Latent traversals"' in page and f"{results['eval.mean.mig.discrete_mig']:.3f}" in page


def _cli(out: Path, env: dict) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "untwine.cli", "pbt", "run", "--out", str(out), *CLI_OPTIONS]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)


def test_a_killed_driver_rerun_continues_and_matches_an_uninterrupted_run(finished_pbt, tmp_path):
    reference, _ = finished_pbt
    out = tmp_path / "p"
    env = {**os.environ, "UNTWINE_PBT_FAULT": "nan_member=1,driver_kill_after_generation=1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    env["TMPDIR"] = str(_ray_temp(tmp_path))
    first = _cli(out, env)
    assert first.returncode == -9, first.stderr[-2000:]
    assert load_records(out).query("key == 'generation'").step.tolist() == [0, 1]
    done = {p: p.stat().st_mtime_ns for p in out.glob("members/*/round-001/score.json")}
    assert len(done) == 4
    env["UNTWINE_PBT_FAULT"] = "nan_member=1"
    second = _cli(out, env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "best member" in second.stdout
    records = load_records(out)
    assert records.query("key == 'generation'").step.tolist() == [0, 1, 2]  # no generation stored twice
    assert {p: p.stat().st_mtime_ns for p in done} == done  # round 1 was not trained again
    # the same numbers as the uninterrupted run (CPU training and the explorer are deterministic)
    assert _values(records, "fitness") == pytest.approx(_values(load_records(reference), "fitness"))
    assert _values(records, "exploit") == _values(load_records(reference), "exploit")


def bars() -> StoredDataset:
    """a (3 values): the background grey level; b (20 values): a white bar's column. 60 images."""
    a, b = np.meshgrid(np.arange(3), np.arange(20), indexing="ij")
    images = np.zeros((60, 1, 64, 64), dtype=np.uint8)
    for i, (ai, bi) in enumerate(zip(a.ravel(), b.ravel())):
        images[i] = 40 + 100 * ai
        images[i, 0, :, 3 * bi : 3 * bi + 3] = 255
    return StoredDataset("bars", torch.from_numpy(images), (3, 20), ("a", "b"), (1, 64, 64))


def test_a_tiny_rpu_run_labels_reduces_and_trains_a_final_model(tmp_path):
    from untwine.selection.rpu import RPUSettings, final_run, run_rpu

    settings = RPUSettings(
        dataset="dummy_data",  # the network's input shape; the images are `bars`
        architecture="fc",
        population=2,
        generations=2,
        interval_samples=256,
        leaf_interval_samples=256,
        models_per_member=2,
        udr_points=60,
        leaf_runs=2,
        levels=2,
        failure_threshold=0.0,
        final_population=2,
        final_generations=2,
        final_interval_samples=256,
        final_points=60,
    )
    summary = run_rpu(tmp_path / "r", settings, dataset=bars(), num_cpus=2, temp_dir=_ray_temp(tmp_path))
    stored = json.loads((tmp_path / "r" / "rpu.json").read_text())
    assert stored["stop"] == summary["stop"]
    level0 = summary["levels"][0]
    assert level0["size"] == 60 and level0["values"] == {"a": 3, "b": 20}
    for level in summary["levels"][1:]:  # every leaf level is a subset of the grid, described by its true factors
        grid = np.load(tmp_path / "r" / f"leaf-{level['leaf']}" / f"level-{level['level']}" / "indices.npy")
        assert len(grid) == level["size"] < 60 and len(set(grid.tolist())) == len(grid)
        a_values = len({int(g) // 20 for g in grid})
        assert level["values"]["a"] == a_values and ("a" in level["fixed"]) == (a_values == 1)
    assert (tmp_path / "r" / "x" / "labelling.npz").exists() and summary["levels"][0]["label_cpu_s"] > 0
    if summary["stop"] == "done":
        assert final_run(tmp_path / "r") is not None
        records = load_records(tmp_path / "r" / "final")
        assert len(records.query("key == 'fitness'")) >= 2
        assert "pbt.export_fitness" in RunDir(final_run(tmp_path / "r")).read_results()
    from untwine.viz.pbt_report import write_rpu_report

    page = write_rpu_report(tmp_path / "r").read_text()
    assert "Labelled subsets per level" in page and "x-model (level 0)" in page
    # a rerun continues nothing and reads the labels it stored instead of encoding the data set again
    stamp = (tmp_path / "r" / "x" / "labelling.npz").stat().st_mtime_ns
    again = run_rpu(tmp_path / "r", settings, dataset=bars(), num_cpus=2, temp_dir=_ray_temp(tmp_path))
    assert again["levels"] == summary["levels"] and again["stop"] == summary["stop"]
    assert (tmp_path / "r" / "x" / "labelling.npz").stat().st_mtime_ns == stamp
