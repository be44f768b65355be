"""Studies on Ray Tune end to end, on tiny settings: a 4-model study, the idempotent rerun, resuming an unfinished
model, a killed worker retried from its checkpoint, a model that fails for good, and the driver killed with
kill -9 and started again (a subprocess, with the deterministic fault hook `UNTWINE_STUDY_FAULT`).

One local Ray session serves every in-process test of this module (Ray takes seconds to start).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from untwine.runs import RunDir
from untwine.study.definition import preset_study, toml_study
from untwine.study.runner import ray_session, run_study
from untwine.study.store import ResultStore
from untwine.study.studydir import StudyDir
from untwine.training import Trainer

TINY = {"architecture": "fc", "batch_size": 8, "log_every": 5, "checkpoint_every": 10}
STEPS = 20
METRICS = "mig,unsupervised"
POINTS = 200


def tiny_preset(**filters):
    """4 models of cpu_study: beta-VAE and FactorVAE at their first value, seeds 0 and 1, on dSprites."""
    values = dict(methods=["beta_vae", "factor_vae"], value_indices=[0], seeds=[0, 1], datasets=["dsprites"])
    values.update(filters)
    return preset_study("cpu_study", steps=STEPS, settings=TINY, metrics=METRICS, num_points=POINTS, **values)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TOML = """
[study]
name = "tiny"
metrics = ["mig"]
num_points = 200

[train]
dataset = "dummy_data"
method = "beta_vae"
beta = [1.0, 4.0]
seed = [0, 1]
steps = 20
architecture = "fc"
batch_size = 8
log_every = 5
checkpoint_every = 10
"""


@pytest.fixture(scope="module")
def ray_cluster():
    temp = Path(tempfile.mkdtemp(prefix="ur-", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        with ray_session(None, 2, temp, temp / "ray.log"):
            yield
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _interrupt_at(at: int):
    def progress(step, steps, values):
        if step == at:
            raise KeyboardInterrupt  # as Ctrl-C

    return progress


@pytest.fixture(scope="module")
def finished_study(ray_cluster, tmp_path_factory):
    """The 4-model study, run once; model 1 was interrupted by hand at step 15 before (checkpoint at step 10)."""
    out = tmp_path_factory.mktemp("study") / "s"
    definition = tiny_preset()
    StudyDir(out).open(definition.describe(), definition.fingerprint()).close()  # the study, nothing run yet
    spec = next(m for m in definition.models if m.model_id == "1")
    with pytest.raises(KeyboardInterrupt):
        Trainer(spec.config, out / spec.run_dir, progress=_interrupt_at(15)).train()
    summary = run_study(definition, out)
    return out, summary


def _mtimes(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("runs/*/checkpoints/final/*"))}


def test_four_model_study_end_to_end(finished_study):
    out, summary = finished_study
    assert summary.scheduled == 4 and summary.stored == 4 and summary.failed == 0
    with ResultStore(out / "study.sqlite") as store:
        frame = store.frame()
        assert store.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    # ids are cpu_study model numbers (3 values x 5 seeds per method): beta_vae h=0 -> 0, 1; factor_vae -> 15, 16
    assert sorted(frame["model_id"], key=int) == ["0", "1", "15", "16"]
    assert set(frame["method"]) == {"beta_vae", "factor_vae"} and set(frame["seed"]) == {0, 1}
    for _, row in frame.iterrows():
        run = RunDir(out / row["run_dir"])
        assert (run.checkpoints.final / "state.json").exists()
        stored = {k: v for k, v in row.items() if isinstance(k, str) and k.startswith(("eval.", "train.")) and v == v}
        on_disk = {k: v for k, v in run.read_results().items() if k.startswith(("eval.", "train."))}
        assert stored == pytest.approx(on_disk)  # the store holds exactly the run's results
        assert row["train.global_step"] == STEPS
        assert 0.0 <= row["eval.mean.mig.discrete_mig"] <= 1.0
        assert row["eval.sampled.unsupervised.gaussian_total_correlation"] >= 0.0
        assert row["attempts"] == 1
        # the interrupted model resumed from its checkpoint, the others started afresh
        assert row["resumed_from_step"] == (10 if row["model_id"] == "1" else 0)
    # models equal but for the seed share their seed group
    groups = frame.groupby("seed_group")["seed"].apply(sorted).tolist()
    assert groups == [[0, 1], [0, 1]]


def test_rerun_trains_nothing_and_stores_nothing_new(finished_study):
    out, _ = finished_study
    before = _mtimes(out)
    with ResultStore(out / "study.sqlite") as store:
        rows_before = store.con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    summary = run_study(tiny_preset(), out)
    assert summary.scheduled == 0 and summary.stored == 0
    assert _mtimes(out) == before  # no checkpoint rewritten
    with ResultStore(out / "study.sqlite") as store:
        assert store.con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == rows_before
        assert store.counts()["done"] == 4


def test_more_seeds_extend_the_study(finished_study):
    out, _ = finished_study
    summary = run_study(tiny_preset(methods=["beta_vae"], seeds=[0, 1, 2]), out)
    assert summary.scheduled == 1 and summary.stored == 1  # only seed 2 is new
    with ResultStore(out / "study.sqlite") as store:
        assert [m["model_id"] for m in store.models()] == ["0", "1", "15", "16", "2"]
        assert store.counts()["done"] == 5


def test_a_killed_worker_is_retried_from_its_checkpoint(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("UNTWINE_STUDY_FAULT", "worker_kill_at_step=15")  # after the checkpoint at step 10
    out = tmp_path / "s"
    summary = run_study(tiny_preset(methods=["beta_vae"], seeds=[0]), out, max_failures=2)
    assert summary.stored == 1
    with ResultStore(out / "study.sqlite") as store:
        (model,) = store.models()
    assert model["status"] == "done"
    assert model["attempts"] == 2  # the first worker died, the retry finished
    assert model["resumed_from_step"] == 10  # from the checkpoint written before the kill
    run = RunDir(out / model["run_dir"])
    assert (run.path / ".fault-worker-killed").exists()
    assert run.read_results()["train.global_step"] == STEPS


def test_a_worker_that_keeps_dying_marks_its_model_failed(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("UNTWINE_STUDY_FAULT", "worker_kill_at_step=15")
    out = tmp_path / "s"
    summary = run_study(tiny_preset(methods=["beta_vae"], seeds=[0]), out, max_failures=0)
    assert summary.failed == 1 and summary.stored == 0
    with ResultStore(out / "study.sqlite") as store:
        (model,) = store.models()
    assert model["status"] == "failed"
    assert model["reason"].startswith("the trial failed 1 time(s): ")
    assert "\n" not in model["reason"]


def test_failed_models_are_stored_with_their_reason_and_the_study_goes_on(ray_cluster, tmp_path):
    """A TOML grid of 4 models in 2 stacks; one stack's models diverge (a tiny divergence threshold)."""
    grid = write_toml(
        tmp_path / "grid.toml",
        TOML.replace("seed = [0, 1]", "seed = 0\ndivergence_threshold = [1e-3, 1e10]"),
    )
    definition = toml_study(grid)
    assert len(definition.models) == 4 and all(len(m.model_id) == 12 for m in definition.models)
    assert [m.value_index for m in definition.models] == [0, 1, 2, 3]  # (beta, threshold) combinations
    summary = run_study(definition, tmp_path / "s", stack_size=2)
    assert summary.stored == 2 and summary.failed == 2
    with ResultStore(tmp_path / "s" / "study.sqlite") as store:
        models = store.models()
        frame = store.frame()
    failed = [m for m in models if m["status"] == "failed"]
    assert {json.loads(m["config"])["divergence_threshold"] for m in failed} == {1e-3}
    for model in failed:
        assert model["reason"].startswith("training diverged at step 1: loss exceeded 0.001")
    done = frame[frame["status"] == "done"]
    assert (done["train.global_step"] == 20).all() and done["eval.mean.mig.discrete_mig"].notna().all()
    # a rerun leaves the failed models alone unless asked
    assert run_study(definition, tmp_path / "s").scheduled == 0
    assert run_study(definition, tmp_path / "s", retry_failed=True).scheduled == 2


def _cli(out: Path, env: dict) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "untwine.cli",
        "study",
        "run",
        "--out",
        str(out),
        "--config",
        str(out.parent / "g.toml"),
    ]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def test_driver_killed_and_rerun_loses_nothing_and_duplicates_nothing(tmp_path):
    write_toml(tmp_path / "g.toml", TOML)
    out = tmp_path / "s"
    env = {**os.environ, "UNTWINE_STUDY_FAULT": "driver_kill_before_store=3"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    first = _cli(out, env)
    assert first.returncode == -9, first.stderr[-2000:]
    with ResultStore(out / "study.sqlite") as store:
        stored = {m["model_id"] for m in store.models("done")}
    assert len(stored) == 2  # killed while storing the third
    finished_on_disk = {p.parts[-4] for p in out.glob("runs/*/checkpoints/final/state.json")}
    unstored = finished_on_disk - stored
    assert unstored  # at least the model whose result the driver was about to store
    before = {m: (out / "runs" / m / "checkpoints/final/state.json").stat().st_mtime_ns for m in finished_on_disk}
    env.pop("UNTWINE_STUDY_FAULT")
    second = _cli(out, env)
    assert second.returncode == 0, second.stderr[-2000:]
    with ResultStore(out / "study.sqlite") as store:
        assert store.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
        rows = store.con.execute("SELECT model_id, COUNT(*) FROM results GROUP BY model_id").fetchall()
        keys = store.con.execute("SELECT COUNT(*), COUNT(DISTINCT model_id || key) FROM results").fetchone()
    assert len(rows) == 4 and len({n for _, n in rows}) == 1  # every model has the same number of keys
    assert keys[0] == keys[1]  # no key stored twice
    after = {m: (out / "runs" / m / "checkpoints/final/state.json").stat().st_mtime_ns for m in finished_on_disk}
    assert after == before  # models finished before the kill were collected, not retrained


@pytest.mark.slow
def test_a_study_runs_on_an_existing_cluster_given_by_address(tmp_path):
    """A Ray head in another process (killed by pid afterwards); the study joins it with --address."""
    head = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ray, sys, time; ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1]); "
            "print(ray.get_runtime_context().gcs_address, flush=True); time.sleep(600)",
            tempfile.mkdtemp(prefix="urh-", dir="/tmp"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        address = head.stdout.readline().strip()
        write_toml(tmp_path / "g.toml", TOML)
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
        args = [sys.executable, "-m", "untwine.cli", "study", "run", "--out", str(tmp_path / "s"), "--config"]
        done = subprocess.run(
            [*args, str(tmp_path / "g.toml"), "--address", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Ray start-up" in done.stdout
        with ResultStore(tmp_path / "s" / "study.sqlite") as store:
            assert store.counts()["done"] == 4
    finally:
        head.kill()
        head.wait()


def test_trials_run_at_the_priority_of_the_command(ray_cluster):
    """Ray's workers default to niceness 15; a study's trials are the command's own work (runner.RAY_ENV)."""
    import ray

    @ray.remote(num_cpus=1)
    def niceness():
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)
