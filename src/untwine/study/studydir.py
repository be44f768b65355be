"""The study directory: where a study keeps its store, its models' run directories, its report and its lock.

S/study.sqlite       the ResultStore (models, results, records)
S/runs/<id>/         one run directory per model (RunDir: config, checkpoints, logs, results.json)
S/report.html        `untwine study analyze S`: the analyses on one self-contained page
S/figures/, tables/  the analyses' PNG figures and CSV tables
S/logs/              the driver's Ray log (Ray's own chatter goes there, not to the terminal)
S/.driver.lock       held (flock) by the one driver running the study
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from untwine.errors import InvalidInputError
from untwine.study.store import ResultStore, StudyStoreError


class StudyDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.store_path = self.path / "study.sqlite"
        self.runs_dir = self.path / "runs"
        self.report_path = self.path / "report.html"
        self.figures_dir = self.path / "figures"
        self.tables_dir = self.path / "tables"
        self.logs_dir = self.path / "logs"
        self.lock_path = self.path / ".driver.lock"
        self._lock_fd: int | None = None

    def exists(self) -> bool:
        return self.store_path.is_file()

    def store(self, timeout: float | None = None) -> ResultStore:
        """The study's store; an error if the directory holds no study."""
        if not self.path.is_dir():
            raise InvalidInputError(f"no study directory at {self.path}")
        if not self.exists():
            raise InvalidInputError(f"{self.path} is not a study directory (no study.sqlite)")
        return ResultStore(self.store_path, timeout)

    def open(self, study: dict, fingerprint: str, timeout: float | None = None) -> ResultStore:
        """The store of the study `study` here: created in an empty or new directory, else checked to be the same
        study (same fingerprint). A directory with other contents and no store is refused, never written."""
        if self.path.exists() and not self.path.is_dir():
            raise InvalidInputError(f"{self.path} exists and is not a directory")
        if self.exists():
            store = ResultStore(self.store_path, timeout)
            stored = store.meta("fingerprint")
            if stored != fingerprint:
                raise StudyStoreError(_difference(self.path, store, study))  # closes the store
            return store
        if self.path.exists() and any(p.name not in (".driver.lock", "logs") for p in self.path.iterdir()):
            raise InvalidInputError(
                f"{self.path} is not empty and holds no study (no study.sqlite); choose an empty or new --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        return ResultStore.create(self.store_path, study, fingerprint, timeout)

    # --- the driver lock -----------------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the driver lock, or fail at once if another driver holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInputError(
                f"another driver (pid {pid}) is running the study in {self.path}; wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def driver_pid(self) -> int | None:
        """The pid of the driver running the study now, or None when none is."""
        if not self.lock_path.exists():
            return None
        fd = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)


def _difference(path: Path, store: ResultStore, study: dict) -> str:
    stored = store.meta("study") or {}
    store.close()
    differ = []
    for key in ("kind", "name", "spec", "evaluation"):
        old, new = stored.get(key), study.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            differ.append(f"{key} ({', '.join(keys)})")
        else:
            differ.append(f"{key} ({old!r} here, {new!r} asked)")
    what = "; ".join(differ) or "its fingerprint"
    return f"{path} holds a different study ({stored.get('name', '?')}): {what} differ; use another --out"
