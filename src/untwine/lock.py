"""An exclusive lock on a directory that names its holder: one process at a time trains or evaluates a run.

`DirectoryLock(path, purpose)` takes `fcntl.flock` on `<path>/.lock` for the duration of a `with` block, and writes
its holder into the file (pid, host, purpose, command, start time) so that a refused process can say who holds it,
in one line (`RunInUseError`). The kernel releases a flock when its holder exits or is killed (kill -9 included):
the file outlives its holder, the lock does not, so a dead process never blocks a run. The lock is re-entrant
within a process (a study runner may lock a run directory and train it through `Trainer`, which locks it again).
flock is per host; on NFS, Linux emulates it with POSIX byte-range locks, which NFS servers share across hosts.

The directory is created if missing (a clear `StorageError` when it cannot be: a file in the way, a read-only
mount...). A directory that this lock created and that holds nothing but the lock file when it is released is
removed again, so a refused or failed command leaves nothing behind.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
from pathlib import Path

from untwine.errors import RunInUseError, StorageError

LOCK_FILE = ".lock"
_held: dict[str, list] = {}  # resolved directory -> [fd, depth] of the locks this process holds
_guard = threading.Lock()


def storage_error(exc: OSError, action: str, path: str | Path) -> StorageError:
    """A one-line StorageError for an OSError met while doing `action` ("create", "write"...) on `path`."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR:
        parent = next((p for p in Path(path).parents if p.is_file()), None)
        reason = f"{parent} is a file, not a directory" if parent else reason
    elif exc.errno == errno.EEXIST and Path(path).exists() and not Path(path).is_dir():
        reason = "a file of that name is in the way"
    return StorageError(f"cannot {action} {path}: {reason}")


def ensure_directory(path: str | Path) -> bool:
    """Create `path` (and its parents) if missing; True if it was created. A clear StorageError otherwise."""
    path = Path(path)
    if path.is_dir():
        return False
    if path.exists() or path.is_symlink():
        raise StorageError(f"cannot use {path} as a directory: it exists and is a file")
    try:
        path.mkdir(parents=True)
        return True
    except FileExistsError:
        if path.is_dir():
            return False  # made by another process just now
        raise StorageError(f"cannot use {path} as a directory: it exists and is a file") from None
    except OSError as exc:
        raise storage_error(exc, "create", path) from None


def read_holder(path: str | Path) -> dict:
    """The holder recorded in `<path>/.lock` ({} if none or unreadable)."""
    try:
        holder = json.loads((Path(path) / LOCK_FILE).read_text() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    what = f"{holder.get('purpose', 'working')}: {holder.get('command', '?')}"
    return f"{where} ({what}) since {holder.get('since', '?')}"


class DirectoryLock:
    """`with DirectoryLock(path, "training"):` — exclusive use of the directory `path` by this process."""

    def __init__(self, path: str | Path, purpose: str = "working"):
        self.path = Path(path)
        self.purpose = purpose
        self._key: str | None = None
        self._created = False

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        created = ensure_directory(self.path)
        key = str(self.path.resolve())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return
            fd = self._lock_file(key)
            _held[key] = [fd, 1]
        self._key, self._created = key, created
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "command": " ".join([Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]])[:300],
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            pass  # the lock holds without the note (e.g. a full disk); refusals then say "another process"

    def _lock_file(self, key: str) -> int:
        lock_path = Path(key) / LOCK_FILE
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise storage_error(exc, "write to", self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunInUseError(
                        f"{self.path} is in use by {describe_holder(read_holder(key))}; wait for it to finish "
                        "or use another directory"
                    ) from None
                raise storage_error(exc, "lock", self.path) from None
            try:  # the file may have been removed by a holder that released it just now: lock the new one
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                ensure_directory(self.path)
            os.close(fd)

    def release(self) -> None:
        if self._key is None:
            return
        with _guard:
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                if self._created:
                    self._remove_if_empty()
                os.close(entry[0])
        self._key = None

    def _remove_if_empty(self) -> None:
        try:
            if [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                (self.path / LOCK_FILE).unlink()
                self.path.rmdir()
        except OSError:
            pass


def is_locked(path: str | Path) -> bool:
    """Whether some process holds the lock of `path` (this one included)."""
    key = str(Path(path).resolve())
    if key in _held:
        return True
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
