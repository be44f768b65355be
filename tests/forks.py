"""Child processes for the reliability tests: run a function in a forked child (which may SIGKILL itself at a
crash point), and hold a run directory's lock from another process. Forking keeps the imported modules and the
session's data set, so a child starts in milliseconds; a killed child is exactly a `kill -9`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback


def run_forked(fn, env: dict[str, str] | None = None) -> int:
    """Run `fn()` in a forked child with `env` added to its environment and one intra-op thread (the same in
    every child, so floating-point results are bit-identical across them). Returns the exit status as
    subprocess does: 0 on success, 1 if `fn` raised (its traceback on stderr), -9 if the child was SIGKILLed."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            import torch

            from untwine.training import faults

            torch.set_num_threads(1)
            faults._seen.clear()
            os.environ.update(env or {})
            fn()
            code = 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


@contextlib.contextmanager
def lock_held_elsewhere(path, purpose: str = "training"):
    """Hold `path`'s run-directory lock in a forked child for the duration of the block; yields the child's pid."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            from untwine.lock import DirectoryLock

            with DirectoryLock(path, purpose):
                os.write(ready_w, b"1")
                os.read(done_r, 1)  # blocks until the parent's block ends
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"1", "the child could not take the lock"
        yield pid
    finally:
        os.write(done_w, b"1")
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def kill_holding_lock(path) -> int:
    """A child that takes `path`'s lock and is then SIGKILLed while holding it; returns its (dead) pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            from untwine.lock import DirectoryLock

            DirectoryLock(path, "training").acquire()
            os.write(ready_w, b"1")
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    os.waitpid(pid, 0)
    return pid
