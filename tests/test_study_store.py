"""ResultStore: one transaction per model, the frame, results and records added later, and the store's errors."""

from __future__ import annotations

import json
import sqlite3

import pytest

from untwine.study.store import SCHEMA_VERSION, ResultStore, StudyStoreError


def model_row(model_id: str, seed: int = 0, method: str = "beta_vae", beta: float = 1.0) -> dict:
    config = {"method": method, "beta": beta, "seed": seed, "dataset": "dsprites", "steps": 10}
    return {
        "model_id": model_id,
        "method": method,
        "dataset": "dsprites",
        "seed": seed,
        "hyperparameter": "beta",
        "value": beta,
        "value_index": 0,
        "seed_group": f"g{beta}",
        "config": json.dumps(config, sort_keys=True),
        "run_dir": f"runs/{model_id}",
    }


@pytest.fixture
def store(tmp_path):
    store = ResultStore.create(tmp_path / "study.sqlite", {"name": "t"}, "fp")
    store.register([model_row("a", 0), model_row("b", 1), model_row("c", 0, beta=4.0)])
    yield store
    store.close()


def test_a_new_store_is_wal_with_a_schema_version(store):
    assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.meta("schema_version") == SCHEMA_VERSION
    assert store.meta("fingerprint") == "fp"
    assert store.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0}


def test_finish_stores_a_model_once_and_the_frame_has_one_row_per_model(store):
    assert store.finish("a", {"eval.mean.mig.discrete_mig": 0.25, "train.loss": 10.0, "eval.mean.irs.parents": [1, 0]})
    assert not store.finish("a", {"eval.mean.mig.discrete_mig": 0.99})  # delivered twice: stored once
    store.finish("b", {"eval.mean.mig.discrete_mig": 0.5}, train_s=3.0)
    store.fail("c", "training diverged at step 7\nTraceback ...")
    frame = store.frame()
    assert list(frame["model_id"]) == ["a", "b", "c"]
    assert frame.set_index("model_id")["eval.mean.mig.discrete_mig"].to_dict() == {
        "a": 0.25,
        "b": 0.5,
        "c": pytest.approx(float("nan"), nan_ok=True),
    }
    assert frame.loc[0, "eval.mean.irs.parents"] == [1, 0]  # a list comes back as a list
    assert frame.loc[1, "train_s"] == 3.0
    assert frame.loc[2, "status"] == "failed" and frame.loc[2, "reason"] == "training diverged at step 7"
    assert store.con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4


def test_a_full_disk_during_finish_leaves_all_of_the_model_or_none(store):
    store.finish("a", {"eval.mean.mig.discrete_mig": 0.25})
    pages = store.con.execute("PRAGMA page_count").fetchone()[0]
    store.con.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own "disk full"
    many = {f"eval.mean.x.key_{i:05d}": float(i) for i in range(5000)}
    with pytest.raises(StudyStoreError, match="full"):
        store.finish("b", many)
    assert store.results("b") == {}  # nothing of b
    assert store.models("pending")[0]["model_id"] == "b"
    assert store.results("a") == {"eval.mean.mig.discrete_mig": 0.25}  # a untouched


def test_add_results_and_records_for_later_work(store):
    store.finish("a", {"eval.mean.mig.discrete_mig": 0.25})
    store.add_results("a", {"udr.spearman.model_score": 0.7, "eval.mean.mig.discrete_mig": 0.3})
    assert store.results("a") == {"eval.mean.mig.discrete_mig": 0.3, "udr.spearman.model_score": 0.7}
    with pytest.raises(StudyStoreError, match="no model 'zz'"):
        store.add_results("zz", {"x": 1.0})
    rows = [
        {"model_id": "a", "step": 0, "key": "score", "value": 0.1},
        {"model_id": "a", "step": 0, "key": "parent", "value": None},
        {"model_id": "a", "step": 1, "key": "hyperparameters", "value": {"beta": 4.0}},
    ]
    assert store.add_records("pbt", rows) == 3
    store.add_records("dynamics", [{"key": "mmd", "value": 0.5}])
    pbt = store.records("pbt")
    assert list(pbt["key"]) == ["score", "parent", "hyperparameters"]
    assert pbt.loc[2, "value"] == {"beta": 4.0} and pbt.loc[0, "value"] == 0.1
    assert len(store.records()) == 4


def test_register_refuses_a_known_id_with_another_config(store):
    assert store.register([model_row("a", 0), model_row("d", 2)]) == 1  # a known and equal, d new
    with pytest.raises(StudyStoreError, match="model a is stored with a different config \\(beta, seed\\)"):
        store.register([model_row("a", 5, beta=2.0)])


def test_a_model_stored_before_a_new_optional_field_is_still_the_same_model(store):
    """TrainConfig gaining an optional field (None = the old behaviour) must not make a study "another study"."""
    row = model_row("a", 0)
    grown = {**row, "config": json.dumps({**json.loads(row["config"]), "kl_estimator": None})}
    assert store.register([grown]) == 0
    set_field = {**row, "config": json.dumps({**json.loads(row["config"]), "kl_estimator": "sample"})}
    with pytest.raises(StudyStoreError, match=r"different config \(kl_estimator\)"):
        store.register([set_field])


def test_an_unset_field_is_not_part_of_a_models_identity():
    from untwine.config import TrainConfig
    from untwine.study.definition import config_hash, identity, seed_group

    plain = TrainConfig.build(method="beta_tcvae", beta=6.0)
    assert "kl_estimator" not in identity(plain) and None not in identity(plain).values()
    chosen = TrainConfig.build(method="beta_tcvae", beta=6.0, kl_estimator="sample")
    assert identity(chosen)["kl_estimator"] == "sample"
    assert config_hash(chosen) != config_hash(plain) and seed_group(chosen) != seed_group(plain)


def test_seed_groups_are_models_equal_but_for_the_seed(store):
    store.finish("a", {})
    store.finish("b", {})
    assert store.seed_groups() == {"g1.0": ["a", "b"]}
    assert store.seed_groups(None) == {"g1.0": ["a", "b"], "g4.0": ["c"]}


def test_running_models_of_a_dead_driver_go_back_to_pending(store):
    store.mark_running(["a", "b"])
    assert store.counts()["running"] == 2
    assert {m["attempts"] for m in store.models("running")} == {1}
    assert store.reset_running() == 2
    assert store.counts()["pending"] == 3


def test_unreadable_stores_are_refused_and_left_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StudyStoreError, match="not a readable study store"):
        ResultStore(corrupt)
    assert corrupt.read_bytes() == b"this is not a database" * 100
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StudyStoreError, match="not an untwine study store"):
        ResultStore(foreign)
    newer = ResultStore.create(tmp_path / "newer.sqlite", {}, "fp")
    newer.set_meta("schema_version", SCHEMA_VERSION + 1)
    newer.close()
    with pytest.raises(StudyStoreError, match="upgrade untwine"):
        ResultStore(tmp_path / "newer.sqlite")


def test_a_locked_store_fails_a_write_quickly_and_changes_nothing(store, tmp_path):
    other = sqlite3.connect(tmp_path / "study.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        slow = ResultStore(tmp_path / "study.sqlite", timeout=0.2)
        with pytest.raises(StudyStoreError, match="locked by another process"):
            slow.finish("a", {"x": 1.0})
        assert slow.counts()["pending"] == 3  # reading works meanwhile (WAL)
        slow.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.results("a") == {}
