"""ResultStore: a study's results in one SQLite file (`S/study.sqlite`, WAL mode), written by the driver only.

Tables (schema version 1):
    meta     key -> value (JSON): schema_version, study (the definition's description), fingerprint, created_at
    models   one row per model: identity (model_id, model_num), method, data set, seed, swept hyperparameter and
             value, seed group, resolved config (JSON), run directory (relative to the study), status
             (pending / running / done / failed) with the failure's one-line reason, attempts, timings
    results  (model_id, key) -> value: the keys of the run's results.json (`train.*`, `eval.<rep>.<metric>.<key>`,
             `reference.<rep>.<metric config>.evaluation_results.<key>`) and any added later (`add_results`, e.g.
             `udr.<correlation>.model_score`); numbers in `value`, anything else as JSON in `text`
    records  a generic log of per-step / per-generation rows: (kind, model_id, step, key, value | text), e.g.
             kind "pbt" with a member's score, hyperparameters and parent per generation

A finished model is stored in one transaction (`finish`): after a crash the store holds all of its rows or none.
`frame()` is the pandas view: one row per model, one column per key.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from untwine.errors import UntwineError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's lock before giving up
STATUSES = ("pending", "running", "done", "failed")
MODEL_COLUMNS = (
    "model_id",
    "model_num",
    "method",
    "dataset",
    "seed",
    "hyperparameter",
    "value",
    "value_index",
    "seed_group",
    "config",
    "run_dir",
    "status",
    "reason",
    "attempts",
    "resumed_from_step",
    "registered_at",
    "started_at",
    "finished_at",
    "train_s",
    "eval_s",
)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    model_id TEXT PRIMARY KEY,
    model_num INTEGER,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    hyperparameter TEXT,
    value REAL,
    value_index INTEGER,
    seed_group TEXT NOT NULL,
    config TEXT NOT NULL,
    run_dir TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    resumed_from_step INTEGER,
    registered_at REAL,
    started_at REAL,
    finished_at REAL,
    train_s REAL,
    eval_s REAL
);
CREATE TABLE results (
    model_id TEXT NOT NULL REFERENCES models(model_id),
    key TEXT NOT NULL,
    value REAL,
    text TEXT,
    PRIMARY KEY (model_id, key)
) WITHOUT ROWID;
CREATE TABLE records (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    model_id TEXT,
    step INTEGER,
    key TEXT NOT NULL,
    value REAL,
    text TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX records_by_kind ON records (kind, model_id, step);
"""


class StudyStoreError(UntwineError):
    """The study store cannot be read or written (corrupt, locked, full, another study's, too new)."""


def _split(value) -> tuple[float | None, str | None]:
    """A result value as (number, None) or (None, JSON text)."""
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, (int, float)):
        return float(value), None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return float(value.item()), None
    if hasattr(value, "tolist"):
        value = value.tolist()
    return None, json.dumps(value)


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class ResultStore:
    """The SQLite store of one study. `ResultStore(path)` opens an existing store; `ResultStore.create` makes one.

    >>> ResultStore("S/study.sqlite").frame()    # one row per model, one column per result key
    """

    def __init__(self, path: str | Path, timeout: float | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise StudyStoreError(f"no study store at {self.path}")
        self._connect(timeout)
        version = self.meta("schema_version")
        if version is None:
            raise StudyStoreError(f"{self.path} is an SQLite file but not an untwine study store (no schema version)")
        if int(version) > SCHEMA_VERSION:
            raise StudyStoreError(
                f"{self.path} has schema version {version}; this untwine reads up to {SCHEMA_VERSION} (upgrade untwine)"
            )

    def _connect(self, timeout: float | None) -> None:
        self.timeout = BUSY_TIMEOUT_S if timeout is None else timeout
        try:
            self.con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self.con.execute("PRAGMA foreign_keys = ON")
            self.con.execute("PRAGMA synchronous = FULL")
            mode = self.con.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                self.con.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from None

    @classmethod
    def create(cls, path: str | Path, study: dict, fingerprint: str, timeout: float | None = None) -> "ResultStore":
        """A new store at `path` (which must not exist) for the study described by `study`."""
        path = Path(path)
        if path.exists():
            raise StudyStoreError(f"{path} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        tmp.unlink(missing_ok=True)
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            con.executescript(SCHEMA)
            values = {
                "schema_version": SCHEMA_VERSION,
                "study": study,
                "fingerprint": fingerprint,
                "created_at": time.time(),
            }
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])
            con.close()
            tmp.rename(path)  # a store either exists complete or not at all
        except sqlite3.Error as exc:
            tmp.unlink(missing_ok=True)
            raise StudyStoreError(f"cannot create {path}: {_one_line(exc)}") from None
        return cls(path, timeout)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- errors and transactions ---------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, doing: str) -> StudyStoreError:
        text = _one_line(exc)
        if "locked" in text or "busy" in text:
            return StudyStoreError(
                f"{self.path} is locked by another process (waited {self.timeout:g} s to {doing}); nothing was changed"
            )
        if "full" in text:
            return StudyStoreError(f"{self.path}: {text} while trying to {doing}; nothing stored was lost")
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
            return StudyStoreError(f"{self.path} is not a readable study store ({text}); it was left untouched")
        return StudyStoreError(f"{self.path}: cannot {doing} ({text})")

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE .. COMMIT); rolled back on any error."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from None
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as exc:
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, doing) from None
            raise

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self.con.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None

    # --- meta ----------------------------------------------------------------------------------------------

    def meta(self, key: str):
        try:
            row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                return None
            raise self._error(exc, "read") from None
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value) -> None:
        with self._write("write meta") as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # --- models --------------------------------------------------------------------------------------------

    def register(self, rows: Iterable[dict]) -> int:
        """Add models (dicts with `models` columns) that are not yet in the store as pending; returns how many
        were new. A known model_id whose config differs from the stored one is an error (another study's)."""
        rows = list(rows)
        known = {r[0]: r[1] for r in self._read("SELECT model_id, config FROM models")}
        for row in rows:
            stored = known.get(row["model_id"])
            if stored is None:
                continue
            old, new = json.loads(stored), json.loads(row["config"])
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))  # absent = None (unset)
            if differ:
                raise StudyStoreError(
                    f"model {row['model_id']} is stored with a different config ({', '.join(differ)}): "
                    f"{self.path.parent} holds a different study"
                )
        new = [r for r in rows if r["model_id"] not in known]
        now = time.time()
        with self._write("register models") as con:
            for row in new:
                values = {c: row[c] for c in MODEL_COLUMNS if row.get(c) is not None and c != "status"}
                values.setdefault("registered_at", now)
                con.execute(
                    f"INSERT INTO models ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )
        return len(new)

    def models(self, status: str | None = None) -> list[dict]:
        """The models (as dicts of `models` columns) in registration order, optionally of one status."""
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._read(f"SELECT {', '.join(MODEL_COLUMNS)} FROM models {where} ORDER BY rowid", params)
        return [dict(zip(MODEL_COLUMNS, row)) for row in rows]

    def seed_groups(self, status: str | None = "done") -> dict[str, list[str]]:
        """seed group -> ids of its models (of one status; None: all), the models equal but for the seed."""
        groups: dict[str, list[str]] = {}
        for model in self.models(status):
            groups.setdefault(model["seed_group"], []).append(model["model_id"])
        return groups

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(dict(self._read("SELECT status, COUNT(*) FROM models GROUP BY status")))
        return counts

    def mark_running(self, model_ids: Iterable[str]) -> None:
        """Models a trial started on: status running, one more attempt, the start time."""
        ids = list(model_ids)
        with self._write("mark models running") as con:
            con.executemany(
                "UPDATE models SET status = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE model_id = ? AND status != 'done'",
                [(time.time(), i) for i in ids],
            )

    def reset_running(self) -> int:
        """Models left 'running' by a driver that died: back to pending. Returns how many."""
        with self._write("reset interrupted models") as con:
            return con.execute("UPDATE models SET status = 'pending' WHERE status = 'running'").rowcount

    def finish(self, model_id: str, results: dict, **timings) -> bool:
        """Store a finished model's results and mark it done, in one transaction. A model already done is left
        as it is (returns False), so a result delivered twice is stored once."""
        rows = [(model_id, key, *_split(value)) for key, value in results.items()]
        fields = {k: v for k, v in timings.items() if k in ("train_s", "eval_s", "resumed_from_step", "started_at")}
        with self._write(f"store model {model_id}") as con:
            status = con.execute("SELECT status FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if status is None:
                raise StudyStoreError(f"{self.path}: no model {model_id!r} to store results for")
            if status[0] == "done":
                return False
            con.execute("DELETE FROM results WHERE model_id = ?", (model_id,))
            con.executemany("INSERT INTO results VALUES (?, ?, ?, ?)", rows)
            sets = ", ".join(f"{k} = ?" for k in fields)
            con.execute(
                f"UPDATE models SET status = 'done', reason = NULL, finished_at = ?{', ' + sets if sets else ''} "
                "WHERE model_id = ?",
                (time.time(), *fields.values(), model_id),
            )
        return True

    def fail(self, model_id: str, reason: str) -> None:
        """Record that a model failed for good, with its one-line reason (a done model stays done)."""
        line = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
        with self._write(f"mark model {model_id} failed") as con:
            con.execute(
                "UPDATE models SET status = 'failed', reason = ?, finished_at = ? WHERE model_id = ? "
                "AND status != 'done'",
                (line[:500], time.time(), model_id),
            )

    def add_results(self, model_id: str, values: dict) -> None:
        """Add or replace result keys of a stored model in one transaction (e.g. UDR's
        `udr.<correlation>.model_score`, computed after the study)."""
        with self._write(f"add results to model {model_id}") as con:
            if con.execute("SELECT 1 FROM models WHERE model_id = ?", (model_id,)).fetchone() is None:
                raise StudyStoreError(f"{self.path}: no model {model_id!r}")
            con.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                [(model_id, k, *_split(v)) for k, v in values.items()],
            )

    def results(self, model_id: str) -> dict:
        rows = self._read("SELECT key, value, text FROM results WHERE model_id = ?", (model_id,))
        return {k: (json.loads(t) if t is not None else v) for k, v, t in rows}

    # --- records -------------------------------------------------------------------------------------------

    def add_records(self, kind: str, rows: Iterable[dict], meta: dict | None = None) -> int:
        """Append per-step / per-generation records in one transaction. Each row: {"key", "value"} and
        optionally "model_id" and "step"; a value that is not a number is stored as JSON text. `meta` entries
        (key -> JSON value) are written in the same transaction (e.g. a PBT explorer's state after the generation
        the rows describe: after a crash the store holds both or neither)."""
        now = time.time()
        items = []
        for row in rows:
            value, text = _split(row["value"])
            items.append((kind, row.get("model_id"), row.get("step"), row["key"], value, text, now))
        with self._write(f"add {kind} records") as con:
            con.executemany(
                "INSERT INTO records (kind, model_id, step, key, value, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                items,
            )
            for key, value in (meta or {}).items():
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        return len(items)

    def records(self, kind: str | None = None):
        """The records (of one kind) as a DataFrame: kind, model_id, step, key, value (numbers or decoded JSON)."""
        import pandas as pd

        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self._read(f"SELECT kind, model_id, step, key, value, text FROM records {where} ORDER BY id", params)
        data = [(k, m, s, key, json.loads(t) if t is not None else v) for k, m, s, key, v, t in rows]
        return pd.DataFrame(data, columns=["kind", "model_id", "step", "key", "value"])

    # --- the frame -----------------------------------------------------------------------------------------

    def frame(self):
        """One row per model (registration order): the `models` columns, then one column per result key."""
        import pandas as pd

        models = pd.DataFrame(self.models(), columns=list(MODEL_COLUMNS))
        rows = self._read("SELECT model_id, key, value, text FROM results")
        if not rows:
            return models
        results = pd.DataFrame(rows, columns=["model_id", "key", "value", "text"])
        numeric = results[results["text"].isna()]
        wide = numeric.pivot(index="model_id", columns="key", values="value")
        texts = results[results["text"].notna()]
        if len(texts):
            decoded = texts.assign(value=texts["text"].map(json.loads))
            wide = wide.join(decoded.pivot(index="model_id", columns="key", values="value"), how="outer")
        wide = wide[sorted(wide.columns)]
        wide.columns.name = None
        return models.merge(wide, left_on="model_id", right_index=True, how="left")
