"""`untwine study`: bad input gives one `error:` line, exit status 2 and loses nothing; status, export, import."""

from __future__ import annotations

import json
import socket
import sqlite3
import time

import pytest
from test_study_exchange import make_study

from untwine.cli import main
from untwine.study import runner, store
from untwine.study.definition import preset_study

TINY = ["--methods", "beta_vae", "--value-indices", "0", "--seeds", "0", "--datasets", "dsprites", "--steps", "5"]


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(path):
    """Every file under `path` (but the driver's lock file) and its bytes."""
    return {
        p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".driver.lock"
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "study_v9"], "unknown preset 'study_v9'"),
        (["--preset", "cpu_study", "--methods", "vae_x"], "cpu_study has no method 'vae_x'"),
        (["--preset", "cpu_study", "--metrics", "mig,nope"], "unknown metric 'nope'"),
        (["--preset", "cpu_study", "--seeds", "0-7"], "cpu_study has no seed 5"),
        (["--preset", "cpu_study", "--datasets", "cars3d"], "cpu_study has no data set 'cars3d'"),
        (["--preset", "cpu_study", "--value-indices", "3"], "has no value index 3"),
        (["--preset", "cpu_study", "--set", "colour=red"], "--set colour: not a TrainConfig field"),
        (["--preset", "cpu_study", "--option", "mig.bins=3"], "mig has no setting 'bins'"),
        (["--preset", "cpu_study", "--config", "x.toml"], "give exactly one of --preset and --config"),
        (["--config", "missing.toml"], "no study config at missing.toml"),
    ],
)
def test_bad_study_definitions(tmp_path, capsys, args, message):
    code, _, err = run_cli(["study", "run", "--out", str(tmp_path / "s"), *args], capsys)
    assert code == 2
    assert message in one_error(err)
    assert not (tmp_path / "s").exists()  # nothing created


def test_a_directory_holding_a_different_study_is_refused(tmp_path, capsys):
    definition = preset_study("cpu_study", steps=5)
    study = runner.StudyDir(tmp_path / "s")
    study.open(definition.describe(), definition.fingerprint()).close()
    before = snapshot(study.path)
    code, _, err = run_cli(["study", "run", "--out", str(study.path), "--preset", "cpu_study", "--steps", "7"], capsys)
    assert code == 2
    assert "holds a different study (cpu_study): spec (overrides) differ" in one_error(err)
    code, _, err = run_cli(["study", "run", "--out", str(study.path), "--preset", "unsupervised_study_v1"], capsys)
    assert code == 2 and "holds a different study" in one_error(err)
    assert snapshot(study.path) == before


def test_a_directory_with_other_files_is_not_taken(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["study", "run", "--out", str(tmp_path / "s"), "--preset", "cpu_study"], capsys)
    assert code == 2 and "is not empty and holds no study" in one_error(err)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt"]


def test_a_corrupt_store_is_refused_by_every_command(tmp_path, capsys):
    study = make_study(tmp_path / "s")
    garbage = b"SQLite format 3\x00" + b"\xff" * 4000
    study.store_path.write_bytes(garbage)
    for args in (
        ["study", "run", "--out", str(study.path), "--preset", "cpu_study", *TINY],
        ["study", "status", str(study.path)],
        ["study", "analyze", str(study.path)],
        ["study", "export", str(study.path), "-o", str(tmp_path / "x.csv")],
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2, args
        assert "study.sqlite" in one_error(err)
    assert study.store_path.read_bytes() == garbage


def test_a_locked_store_fails_within_the_timeout(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.3)
    definition = preset_study(
        "cpu_study", methods=["beta_vae"], value_indices=[0], seeds=[0], datasets=["dsprites"], steps=5
    )
    study = runner.StudyDir(tmp_path / "s")
    study.open(definition.describe(), definition.fingerprint()).close()
    before = snapshot(study.path)
    other = sqlite3.connect(study.store_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        start = time.perf_counter()
        code, _, err = run_cli(["study", "run", "--out", str(study.path), "--preset", "cpu_study", *TINY], capsys)
        assert time.perf_counter() - start < 10
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 2 and "is locked by another process" in one_error(err)
    assert snapshot(study.path) == before


def test_an_unreachable_cluster_is_an_error_within_seconds(tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    code, _, err = run_cli(
        [
            "study",
            "run",
            "--out",
            str(tmp_path / "s"),
            "--preset",
            "cpu_study",
            *TINY,
            "--address",
            f"127.0.0.1:{port}",
        ],
        capsys,
    )
    assert time.perf_counter() - start < 15
    assert code == 2 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in one_error(err)


def test_no_disk_space_is_an_error_before_anything_runs(tmp_path, capsys, monkeypatch):
    class Usage:
        free = 5 * 2**20

    monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: Usage())
    code, _, err = run_cli(["study", "run", "--out", str(tmp_path / "s"), "--preset", "cpu_study", *TINY], capsys)
    assert code == 2 and "no space to train: 5 MB free" in one_error(err)
    with runner.StudyDir(tmp_path / "s").store() as s:
        assert s.counts()["pending"] == 1  # registered, nothing lost or half-done


def test_status_reports_counts_and_failures(tmp_path, capsys):
    study = make_study(tmp_path / "s")
    with study.store() as s:
        s.register([{**s.models()[0], "model_id": "9999", "seed": 9}])
        s.mark_running(["9999"])  # left 'running' by a driver that is gone
    code, out, _ = run_cli(["study", "status", str(study.path), "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["counts"] == {"done": 2, "running": 0, "failed": 1, "pending": 1}
    assert info["driver_pid"] is None and info["eta_s"] is None
    assert info["failed"] == [
        {"model_id": "1450", "model": "beta_tcvae beta=2 seed 0 dsprites", "reason": "training diverged at step 3"}
    ]
    code, out, _ = run_cli(["study", "status", str(study.path)], capsys)
    assert "4 models: 2 done, 0 running, 1 failed, 1 pending" in out.replace("\n", " ")
    assert "not running" in out


def test_status_of_a_directory_without_a_study(tmp_path, capsys):
    code, _, err = run_cli(["study", "status", str(tmp_path)], capsys)
    assert code == 2 and "is not a study directory" in one_error(err)


def test_export_and_import_on_the_command_line(tmp_path, capsys):
    study = make_study(tmp_path / "s")
    code, out, _ = run_cli(
        ["study", "export", str(study.path), "--format", "dislib-json", "-o", str(tmp_path / "r.json")], capsys
    )
    assert code == 0 and "wrote 8 rows (dislib-json)" in out
    code, out, _ = run_cli(["study", "import", str(tmp_path / "r.json"), "--out", str(tmp_path / "s2")], capsys)
    assert code == 0 and "imported 2 models" in out
    code, _, err = run_cli(["study", "export", str(study.path), "--format", "xls", "-o", str(tmp_path / "r.x")], capsys)
    assert code == 2 and "unknown format 'xls'" in one_error(err)


def test_presets_lists_the_presets(capsys):
    code, out, _ = run_cli(["study", "presets"], capsys)
    assert code == 0
    assert "unsupervised_study_v1: 12600 models = 7 data sets" in out
    assert "cpu_study: 180 models (72 with the default seeds 0, 1) = 2 data sets" in out


def test_a_model_line_names_every_axis_of_a_toml_grid():
    from untwine.cli.study import _describe

    grid = {"method": "beta_vae", "hyperparameter": "beta,latent_dim", "value": 1.0, "seed": 1, "dataset": "dsprites"}
    assert _describe({**grid, "config": json.dumps({"beta": 4.0, "latent_dim": 16})}) == (
        "beta_vae beta=4 latent_dim=16 seed 1 dsprites"
    )
    sweep = {"method": "factor_vae", "hyperparameter": "gamma", "value": 10.0, "seed": 0, "dataset": "dsprites"}
    assert _describe(sweep) == "factor_vae gamma=10 seed 0 dsprites"
